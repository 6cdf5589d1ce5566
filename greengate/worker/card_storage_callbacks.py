"""Card storage jobs: the result to the merchant's `pg_post_link` (built, signed with the payment
secret for cards saved for payments or the payout secret for payout cards, sent and retried like the
other callbacks), and the lifetime of a card page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from greengate.api.exchange.wire import wire_time
from greengate.domain.params import Params
from greengate.runtime import Runtime
from greengate.services import outbox
from greengate.services.merchants import payout_secret, secret_key
from greengate.services.saved_cards import ACTIVE, expire_card
from greengate.store.models import Merchant, SavedCard
from greengate.worker import merchant_callbacks


def card_result_params(card: SavedCard) -> Params:
    success = card.status == ACTIVE
    month, _, year = (card.card_exp or "").partition("/")
    fields: Params = [
        ("pg_merchant_id", str(card.merchant_id)),
        ("pg_user_id", card.user_id),
        ("pg_order_id", card.order_id or ""),
        ("pg_payment_id", str(card.payment_id or "")),
        ("pg_card_id", str(card.id) if success else ""),
        ("pg_card_token", card.token if success else ""),
        ("pg_card_hash", card.card_masked or ""),
        ("pg_card_month", month),
        ("pg_card_year", year),
        ("pg_card_brand", card.card_brand or ""),
        ("pg_status", "success" if success else "error"),
        ("pg_testing_mode", "1" if card.testing else "0"),
        ("pg_date", wire_time(card.updated_at)),
    ]
    if not success:
        fields += [
            ("pg_failure_code", str(card.failure_code or "")),
            ("pg_failure_description", card.failure_description or ""),
        ]
    return fields


async def deliver_card_result(
    rt: Runtime, message: outbox.ClaimedMessage, *, worker: str, clock: Callable[[], datetime]
) -> None:
    async with rt.db.transaction() as session:
        card = await session.get(SavedCard, int(message.payload["saved_card_id"]))
        merchant = await session.get(Merchant, message.merchant_id)
        assert card is not None and merchant is not None
        secret = (
            payout_secret(rt.keyring, merchant)
            if card.purpose == "payout"
            else secret_key(rt.keyring, merchant)
        )
    await merchant_callbacks.deliver_message(
        rt,
        message,
        worker=worker,
        clock=clock,
        method=card.request_method,
        params=card_result_params(card),
        secret=secret,
    )


async def expire_card_page(
    rt: Runtime, message: outbox.ClaimedMessage, *, worker: str, clock: Callable[[], datetime]
) -> None:
    now = clock()
    async with rt.db.transaction() as session:
        await expire_card(session, int(message.payload["saved_card_id"]), now)
        await outbox.complete(session, message.id, worker, now)
