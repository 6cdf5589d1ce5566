"""The worker's payout jobs: the result callback to `pg_post_link` and the expiry of payouts whose
recipient never entered a card. (A processing payout is never resolved by the worker: the operator
resolves it.)

The callback is signed with the merchant's payout secret and the script name of the merchant's URL,
sent with the merchant's request method, and its signed answer read back like the payment callbacks;
a failed delivery is retried on the merchant callback schedule.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from greengate.api.exchange.wire import wire_time
from greengate.domain.money import format_minor
from greengate.domain.params import Params
from greengate.domain.payouts import PAYMENT_STATUS, RESULT_STATUS, PayoutStatus
from greengate.services import outbox, payouts
from greengate.services.merchants import payout_secret
from greengate.store.models import Merchant, Payout
from greengate.worker import merchant_callbacks

if TYPE_CHECKING:
    from greengate.worker.loop import Worker


def callback_params(payout: Payout) -> Params:
    status = PayoutStatus(payout.status)
    fields: Params = [
        ("pg_payment_id", str(payout.id)),
        ("pg_order_id", payout.order_id),
        ("pg_user_id", payout.user_id or ""),
        ("pg_status", RESULT_STATUS[status]),
        ("pg_payment_status", PAYMENT_STATUS[status]),
        ("pg_result", "1" if status is PayoutStatus.OK else "0"),
        ("pg_amount", format_minor(payout.amount, payout.currency)),
        ("pg_payment_amount", format_minor(payout.amount, payout.currency)),
        ("pg_currency", payout.currency),
        ("pg_description", payout.description),
        ("pg_payment_date", wire_time(payout.paid_at or payout.updated_at)),
        ("pg_card_hash", payout.card_masked or ""),
        ("pg_card_brand", payout.card_brand or ""),
        ("pg_testing_mode", "1" if payout.testing else "0"),
        ("pg_error_code", str(payout.failure_code or 0)),
        ("pg_error_description", payout.failure_description or ""),
    ]
    if payout.failure_code is not None:
        fields += [
            ("pg_failure_code", str(payout.failure_code)),
            ("pg_failure_description", payout.failure_description or ""),
        ]
    fields.extend((name, value) for name, value in json.loads(payout.extra_params))
    return fields


async def deliver_result(worker: Worker, message: outbox.ClaimedMessage) -> None:
    rt = worker.rt
    async with rt.db.transaction() as session:
        payout = await session.get(Payout, int(message.payload["payout_id"]))
        merchant = await session.get(Merchant, message.merchant_id)
        assert payout is not None and merchant is not None
        secret = payout_secret(rt.keyring, merchant)
    await merchant_callbacks.deliver_message(
        rt,
        message,
        worker=worker.name,
        clock=worker.clock,
        method=payout.request_method,
        params=callback_params(payout),
        secret=secret,
    )


async def expire(worker: Worker, message: outbox.ClaimedMessage) -> None:
    now = worker.clock()
    async with worker.rt.db.transaction() as session:
        await payouts.expire_payout(session, int(message.payload["payout_id"]), now)
        await outbox.complete(session, message.id, worker.name, now)
