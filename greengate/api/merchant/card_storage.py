"""Merchant API card storage: `v1/merchant/{merchant_id}/cardstorage/{add,add2,list,remove}`,
`cardstoragepayout/{add,list,remove}` (signed with the payout secret) and paying with a saved card,
`card/{init,pay,direct}`. Each runs through the signed request pipeline of `protocol`."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from greengate.api.dispatch import Answer, Incoming, Script
from greengate.api.exchange.wire import wire_time
from greengate.api.merchant.payment_params import (
    parse_currency,
    parse_init,
    parse_url,
    read_choice,
    read_flag,
    read_text,
)
from greengate.api.merchant.protocol import (
    Handler,
    MerchantCall,
    process,
    reads,
    request_fingerprint,
    to_page,
    writes,
)
from greengate.api.merchant.status import status3_fields
from greengate.domain.errors import InvalidRequest
from greengate.domain.params import Params, first
from greengate.domain.payments import LANGUAGES, REQUEST_METHODS, PaymentStatus
from greengate.runtime import Runtime
from greengate.services import idempotency, saved_cards
from greengate.services.payments import find_payment, latest_attempt, page_url
from greengate.store.models import SavedCard

PREFIX = "/v1/merchant/{merchant_id}"
# Card parameters of card/init: the gateway's, never echoed back as the merchant's own.
_CARD_PARAMS = frozenset({"pg_card_id", "pg_card_token", "pg_user_id"})


def card_page_url(rt: Runtime, card: SavedCard) -> str:
    return f"{rt.settings.base_url}/cards/{card.access_token}"


def _user_id(params: Params) -> str:
    value = read_text(params, "pg_user_id", max_length=100, required=True)
    assert value is not None
    return value


def _same_merchant(call: MerchantCall) -> None:
    named = first(call.params, "pg_merchant_id")
    if named and named != str(call.merchant.id):
        raise InvalidRequest("pg_merchant_id does not match the merchant in the URL", field="pg_merchant_id")


def _link(params: Params, name: str) -> str:
    value = read_text(params, name, max_length=2000, required=True)
    assert value is not None
    return parse_url(value, name)


def card_fields(card: SavedCard, *, status: str, recurring_profile_id: int | None = None) -> Params:
    fields: Params = [
        ("pg_status", status),
        ("pg_merchant_id", str(card.merchant_id)),
        ("pg_card_id", str(card.id)),
        ("pg_card_token", card.token),
        ("pg_recurring_profile_id", "" if recurring_profile_id is None else str(recurring_profile_id)),
        ("pg_card_hash", card.card_masked or ""),
        ("pg_card_month", (card.card_exp or "").partition("/")[0]),
        ("pg_card_year", (card.card_exp or "").partition("/")[2]),
        ("created_at", wire_time(card.created_at)),
    ]
    if card.deleted_at is not None:
        fields.append(("deleted_at", wire_time(card.deleted_at)))
    return fields


# --- adding, listing and removing cards --------------------------------------------------------------


def _add(purpose: str) -> Handler:
    async def handler(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
        _same_merchant(call)
        params = call.params
        language = read_choice(params, "pg_language", LANGUAGES, "ru") or "ru"
        req = saved_cards.AddCardRequest(
            user_id=_user_id(params),
            post_link=_link(params, "pg_post_link"),
            back_link=_link(params, "pg_back_link"),
            order_id=read_text(params, "pg_order_id", max_length=50),
            currency=parse_currency(params),
            language=language,
            testing=bool(read_flag(params, "pg_testing_mode")),
            request_method=read_choice(params, "pg_request_method", REQUEST_METHODS, None),
        )
        card = await saved_cards.start_add(session, rt, call.merchant, req, call.now, purpose=purpose)
        # The card check's payment; a payout card is checked without one, so its add answers the
        # card's own id there (the pg_card_id the result to pg_post_link then carries).
        fields: Params = [("pg_payment_id", str(card.payment_id if card.payment_id is not None else card.id))]
        return [
            *fields,
            ("pg_merchant_id", str(call.merchant.id)),
            ("pg_order_id", card.order_id or ""),
            ("pg_type", "init"),
            ("pg_redirect_url", card_page_url(rt, card)),
        ]

    return handler


def _list(purpose: str) -> Handler:
    async def handler(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
        _same_merchant(call)
        cards = await saved_cards.list_cards(
            session, call.merchant.id, _user_id(call.params), purpose=purpose
        )
        profiles = await saved_cards.recurring_profiles(session, cards, call.now)
        return [
            ("card", card_fields(card, status="approved", recurring_profile_id=profiles.get(card.id)))
            for card in cards
        ]

    return handler


def _remove(purpose: str) -> Handler:
    async def handler(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
        _same_merchant(call)
        card = await saved_cards.remove_card(
            session,
            call.merchant.id,
            _user_id(call.params),
            card_id=first(call.params, "pg_card_id"),
            token=first(call.params, "pg_card_token"),
            purpose=purpose,
            now=call.now,
        )
        return [("card", card_fields(card, status="deleted"))]

    return handler


# --- paying with a saved card ----------------------------------------------------------------------


async def _init(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    _same_merchant(call)
    req = parse_init(call.params)
    req = replace(req, extras=[(n, v) for n, v in req.extras if n not in _CARD_PARAMS])
    user_id = _user_id(call.params)
    card = await saved_cards.find_card(
        session,
        call.merchant.id,
        user_id,
        card_id=first(call.params, "pg_card_id"),
        token=first(call.params, "pg_card_token"),
        purposes=("payment",),
    )
    key, fingerprint = req.idempotency_key, request_fingerprint("card_init", call.params)
    stored = None
    if key is not None:
        stored = await idempotency.lookup(session, call.merchant.id, "card_init", key, fingerprint)
    if stored is not None:
        payment = await find_payment(session, call.merchant.id, payment_id=stored.body, order_id=None)
    else:
        payment = await saved_cards.init_charge(session, rt, call.merchant, req, card, call.now)
        if key is not None:
            await idempotency.remember(
                session,
                call.merchant.id,
                "card_init",
                key,
                fingerprint,
                idempotency.StoredResponse(200, str(payment.id)),
                call.now,
            )
    return [
        ("pg_payment_id", str(payment.id)),
        ("pg_merchant_id", str(call.merchant.id)),
        ("pg_order_id", payment.order_id or ""),
    ]


async def _pay(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    _same_merchant(call)
    payment, card = await saved_cards.charge_of(
        session, call.merchant.id, first(call.params, "pg_payment_id")
    )
    if payment.status == PaymentStatus.NEW.value:
        payment = await saved_cards.pay_with_card(session, rt, payment, card, call.now, payer_present=True)
    # Whatever the payment needs next (3-D Secure) or its result is on the checkout page.
    return [("pg_payment_id", str(payment.id)), ("pg_redirect_url", page_url(rt, payment.access_token))]


async def _direct(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    _same_merchant(call)
    payment, card = await saved_cards.charge_of(
        session, call.merchant.id, first(call.params, "pg_payment_id")
    )
    payment = await saved_cards.pay_with_card(session, rt, payment, card, call.now, payer_present=False)
    attempt = await latest_attempt(session, payment.id)
    return status3_fields(payment, attempt, card_token=card.token)


async def _card_pay(rt: Runtime, request: Incoming) -> Answer:
    """The payer's browser brings the signed link: pay with the saved card, then the checkout page
    (3-D Secure where the card asks for it, else the result and the way back to the shop)."""
    outcome = await process(rt, request, _pay, writes="card/pay")
    return to_page(outcome.fields, "The payment could not be made")


def scripts() -> dict[str, Script]:
    return {
        f"{PREFIX}/{script}": made
        for script, made in {
            "cardstorage/add": writes(_add("payment"), "cardstorage/add"),
            "cardstorage/add2": writes(_add("payment"), "cardstorage/add2"),
            "cardstorage/list": reads(_list("payment")),
            "cardstorage/remove": writes(_remove("payment"), "cardstorage/remove"),
            "cardstoragepayout/add": writes(_add("payout"), "cardstoragepayout/add", "payout"),
            "cardstoragepayout/list": reads(_list("payout"), "payout"),
            "cardstoragepayout/remove": writes(_remove("payout"), "cardstoragepayout/remove", "payout"),
            "card/init": writes(_init, "card/init"),
            "card/direct": writes(_direct, "card/direct"),
            "card/pay": _card_pay,
        }.items()
    }
