"""Merchant API (`pg_*`, signed with `pg_sig`): one typed call per script.

Every request is signed with a fresh random `pg_salt` (the gateway answers a byte-identical signed
request with its first answer), sends only the parameters the script knows, and every answer is
checked: its `pg_sig` must verify with the script name and the same secret, and `pg_status=error`
becomes a `MerchantApiError` carrying `pg_error_code`.

`MerchantClient` blocks, `AsyncMerchantClient` awaits; both run the same operations (see `calls`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from greengate_client.calls import (
    AsyncClientBase,
    AsyncDriver,
    Flow,
    Send,
    SyncClientBase,
    SyncDriver,
    operation,
)
from greengate_client.errors import MerchantApiError, ProtocolError, SignatureError
from greengate_client.signature import Params, as_params, first, sign, verify_signature
from greengate_client.wire import Transport, bracket_pairs, encode, parse_xml, xml_names

WIRE_TIME = "%Y-%m-%d %H:%M:%S"
UNSIGNED_CODES = frozenset({101})  # the merchant could not be identified: the gateway cannot sign
Key = Literal["payment", "payout"]
AnswerT = TypeVar("AnswerT", bound="Answer")


def _time(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.strptime(value, WIRE_TIME).replace(tzinfo=UTC) if value else None
    return value


def _empty_none(value: Any) -> Any:
    return None if value == "" else value


Time = Annotated[datetime | None, BeforeValidator(_time)]
Money = Annotated[Decimal | None, BeforeValidator(_empty_none)]
Text = Annotated[str | None, BeforeValidator(_empty_none)]
Int = Annotated[int | None, BeforeValidator(_empty_none)]
Flag = Annotated[bool | None, BeforeValidator(_empty_none)]


class Answer(BaseModel):
    """A verified answer. Fields are the `pg_` parameters without the prefix; `params` keeps them all."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    params: Params = Field(default_factory=list, repr=False)

    @classmethod
    def from_params(cls: type[AnswerT], params: Params) -> AnswerT:
        values: dict[str, Any] = {}
        for name, value in params:
            values.setdefault(name.removeprefix("pg_"), value)
        values["params"] = params
        return cls.model_validate(values)


class PaymentInit(Answer):
    payment_id: int
    redirect_url: str
    redirect_url_type: Text = None


class PaymentStatus(Answer):
    """get_status.php / get_status2.php."""

    payment_id: int
    order_id: Text = None
    transaction_status: str
    testing_mode: Flag = None
    captured: Flag = None
    create_date: Time = None
    can_reject: Flag = None
    amount: Money = None
    currency: Text = None
    payment_system: Text = None
    card_pan: Text = None
    refund_amount: Money = None
    failure_code: Int = None
    failure_description: Text = None


class Refund(Answer):
    payment_id: int
    payment_status: str
    amount: Decimal
    payment_date: Time = None
    refund_type: Text = None


class PaymentStatus3(Answer):
    """get_status3.php and card/direct."""

    payment_id: int
    order_id: Text = None
    payment_status: str
    payment_method: Text = None
    amount: Money = None
    currency: Text = None
    clearing_amount: Money = None
    revoke_amount: Money = None
    testing_mode: Flag = None
    create_date: Time = None
    payment_date: Time = None
    card_name: Text = None
    card_pan: Text = None
    card_token: Text = None
    reference: Text = None
    auth_code: Text = None
    failure_code: Int = None
    failure_description: Text = None

    @property
    def refunds(self) -> list[Refund]:
        block = first(self.params, "pg_refund_payments") or []
        return [Refund.from_params(v) for n, v in block if n == "pg_refund_payment" and isinstance(v, list)]


class RevokeResult(Answer):
    payment_id: int
    refund_payment_id: Int = None
    refund_amount: Money = None
    revoke_amount: Money = None
    transaction_status: Text = None


class CancelResult(Answer):
    payment_id: int


class CaptureResult(Answer):
    payment_id: int
    amount: Money = None
    clearing_amount: Money = None
    currency: Text = None
    captured: Flag = None


class RecurringPayment(Answer):
    payment_id: int
    order_id: Text = None
    amount: Money = None
    currency: Text = None
    transaction_status: str
    recurring_profile_id: Text = None
    recurring_profile_expiry_date: Time = None
    failure_code: Int = None
    failure_description: Text = None


class PaymentSystem(Answer):
    name: str
    description: Text = None
    amount_to_pay: Money = None
    amount_to_pay_currency: Text = None


class PayoutInit(Answer):
    """api/reg2nonreg: the recipient enters the card on `redirect_url`."""

    payment_id: int
    redirect_url: str


class Payout(Answer):
    """api/reg2reg (and the payout's state in api/payment_status)."""

    payment_id: int
    order_id: Text = None
    status: Text = None
    payment_status: Text = None
    transaction_status: Text = None
    balance: Money = None
    card_hash: Text = None
    payment_amount: Money = None
    amount: Money = None
    currency: Text = None
    payment_date: Time = None
    error_code: Int = None
    error_description: Text = None


class CardPage(Answer):
    """cardstorage/add: the payer enters the card on `redirect_url`."""

    payment_id: Int = None
    merchant_id: Int = None
    order_id: Text = None
    type: Text = None
    redirect_url: str


class SavedCard(Answer):
    status: Text = None
    merchant_id: Int = None
    card_id: str
    card_token: Text = None
    recurring_profile_id: Text = None
    card_hash: Text = None
    created_at: Time = None
    deleted_at: Time = None


class ChargeInit(Answer):
    """card/init: a payment with a saved card, then paid by `card_pay_url` or `card_direct`."""

    payment_id: int
    order_id: Text = None


def read_answer(response: httpx.Response, script: str, secret: str) -> Params:
    """The answer's parameters, its signature verified; `pg_status=error` raised as MerchantApiError."""
    if response.status_code != 200:
        raise ProtocolError(f"HTTP {response.status_code} from the Merchant API")
    params = parse_xml(response.content, root="response")
    status = first(params, "pg_status")
    code = first(params, "pg_error_code")
    signed = first(params, "pg_sig") is not None
    if status == "error" and not signed and code is not None and int(code) in UNSIGNED_CODES:
        raise MerchantApiError(int(code), str(first(params, "pg_error_description") or ""))
    if not verify_signature(script, params, secret):
        raise SignatureError(f"the {script} answer's pg_sig does not verify")
    if status == "error":
        raise MerchantApiError(int(code or 0), str(first(params, "pg_error_description") or ""))
    if status not in ("ok", "rejected"):
        raise ProtocolError(f"unexpected pg_status {status!r}")
    return params


def _fields(**values: Any) -> dict[str, Any]:
    return {f"pg_{name}": value for name, value in values.items() if value is not None}


class _MerchantOperations:
    """The Merchant API's operations, written once for both clients."""

    merchant_id: int
    secret_key: str
    payout_secret: str | None
    transport: Transport

    def _secret(self, key: Key) -> str:
        if key == "payout":
            if not self.payout_secret:
                raise ValueError("payout calls need the merchant's payout secret")
            return self.payout_secret
        return self.secret_key

    def message(
        self,
        script: str,
        fields: Mapping[str, Any] | Params,
        key: Key = "payment",
        transport: Transport | None = None,
    ) -> Params:
        """A signed message from this merchant: `pg_merchant_id` first, a fresh `pg_salt`, `pg_sig`."""
        params = as_params(fields)
        if (transport or self.transport) == "pg_xml":
            params = xml_names(params)
        if not any(n == "pg_merchant_id" for n, _ in params):
            params = [("pg_merchant_id", str(self.merchant_id)), *params]
        return sign(script, params, self._secret(key))

    def _call(self, path: str, fields: Mapping[str, Any] | Params, key: Key = "payment") -> Flow[Params]:
        script = path.rpartition("/")[2]
        method, query, body, headers = encode(self.message(script, fields, key), self.transport)
        response = yield Send(method, f"{path}?{query}" if query else path, headers, body)
        return read_answer(response, script, self._secret(key))

    def _cards_path(self, script: str) -> str:
        return f"/v1/merchant/{self.merchant_id}/{script}"

    # --- payments -------------------------------------------------------------------------------

    @operation
    def init_payment(
        self,
        amount: Decimal | str | int,
        description: str,
        *,
        order_id: str | None = None,
        currency: str | None = None,
        idempotency_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
        **pg: Any,
    ) -> Flow[PaymentInit]:
        """init_payment.php. `pg` takes other documented parameters without the prefix
        (`result_url=...`, `request_method="POST"`, `testing_mode=1`); `extra` the shop's own
        (unprefixed) parameters, echoed back in callbacks."""
        fields = _fields(
            amount=amount,
            description=description,
            order_id=order_id,
            currency=currency,
            idempotency_key=idempotency_key,
            **pg,
        )
        params = yield from self._call("/init_payment.php", {**fields, **_own(extra)})
        return PaymentInit.from_params(params)

    def payment_url(self, base_url: str, amount: Decimal | str | int, description: str, **pg: Any) -> str:
        """A signed payment.php link for the payer's browser (creates the payment when opened)."""
        params = self.message(
            "payment.php", _fields(amount=amount, description=description, **pg), transport="query"
        )
        return f"{base_url.rstrip('/')}/payment.php?{urlencode(bracket_pairs(params))}"

    def _status(self, script: str, payment_id: int | str | None, order_id: str | None) -> Flow[Params]:
        if payment_id is None and order_id is None:
            raise ValueError("give payment_id or order_id")
        return (yield from self._call(f"/{script}", _fields(payment_id=payment_id, order_id=order_id)))

    @operation
    def get_status(
        self, payment_id: int | str | None = None, *, order_id: str | None = None
    ) -> Flow[PaymentStatus]:
        """get_status.php by pg_payment_id or pg_order_id."""
        return PaymentStatus.from_params((yield from self._status("get_status.php", payment_id, order_id)))

    @operation
    def get_status2(
        self, payment_id: int | str | None = None, *, order_id: str | None = None
    ) -> Flow[PaymentStatus]:
        """get_status2.php by pg_payment_id or pg_order_id."""
        return PaymentStatus.from_params((yield from self._status("get_status2.php", payment_id, order_id)))

    @operation
    def get_status3(
        self, payment_id: int | str | None = None, *, order_id: str | None = None
    ) -> Flow[PaymentStatus3]:
        """get_status3.php: the richer status, refunds included."""
        return PaymentStatus3.from_params((yield from self._status("get_status3.php", payment_id, order_id)))

    @operation
    def revoke(
        self, payment_id: int | str, refund_amount: Decimal | str | int | None = None
    ) -> Flow[RevokeResult]:
        """revoke.php: refund the payment, wholly or `refund_amount` of it."""
        params = yield from self._call(
            "/revoke.php", _fields(payment_id=payment_id, refund_amount=refund_amount)
        )
        return RevokeResult.from_params(params)

    @operation
    def cancel(self, payment_id: int | str) -> Flow[CancelResult]:
        """cancel.php: cancel a payment not yet paid, or an authorised, uncaptured two-step one."""
        return CancelResult.from_params(
            (yield from self._call("/cancel.php", _fields(payment_id=payment_id)))
        )

    @operation
    def do_capture(
        self, payment_id: int | str, amount: Decimal | str | int | None = None
    ) -> Flow[CaptureResult]:
        """do_capture.php: capture an authorised two-step payment, wholly or `amount` of it."""
        params = yield from self._call("/do_capture.php", _fields(payment_id=payment_id, amount=amount))
        return CaptureResult.from_params(params)

    @operation
    def make_recurring_payment(
        self,
        recurring_profile: int | str,
        amount: Decimal | str | int,
        description: str,
        *,
        order_id: str | None = None,
        **pg: Any,
    ) -> Flow[RecurringPayment]:
        """make_recurring_payment.php: charge the card of a recurring profile without the payer."""
        params = yield from self._call(
            "/make_recurring_payment.php",
            _fields(
                recurring_profile=recurring_profile,
                amount=amount,
                description=description,
                order_id=order_id,
                **pg,
            ),
        )
        return RecurringPayment.from_params(params)

    @operation
    def ps_list(
        self, amount: Decimal | str | int, currency: str | None = None, *, testing_mode: bool | None = None
    ) -> Flow[list[PaymentSystem]]:
        """ps_list.php: the payment systems open to the merchant for this amount."""
        params = yield from self._call(
            "/ps_list.php", _fields(amount=amount, currency=currency, testing_mode=testing_mode)
        )
        return [PaymentSystem.from_params(v) for n, v in params if n == "pg_payment_system"]

    # --- payouts (signed with the payout secret) -------------------------------------------------

    @operation
    def payout_to_new_card(
        self,
        amount: Decimal | str | int,
        order_id: str,
        user_id: str,
        description: str,
        *,
        post_link: str | None = None,
        back_link: str | None = None,
        order_time_limit: datetime | None = None,
        **pg: Any,
    ) -> Flow[PayoutInit]:
        """api/reg2nonreg: a payout to a card the recipient enters on the hosted page."""
        limit = order_time_limit.astimezone(UTC).strftime(WIRE_TIME) if order_time_limit else None
        fields = _fields(
            amount=amount,
            order_id=order_id,
            user_id=user_id,
            description=description,
            post_link=post_link,
            back_link=back_link,
            order_time_limit=limit,
            **pg,
        )
        return PayoutInit.from_params((yield from self._call("/api/reg2nonreg", fields, "payout")))

    @operation
    def payout_to_saved_card(
        self,
        amount: Decimal | str | int,
        order_id: str,
        user_id: str,
        description: str,
        *,
        card_id: str | None = None,
        card_token: str | None = None,
        post_link: str | None = None,
        **pg: Any,
    ) -> Flow[Payout]:
        """api/reg2reg: a payout to a saved payout card (by `card_id` or `card_token`)."""
        fields = _fields(
            amount=amount,
            order_id=order_id,
            user_id=user_id,
            description=description,
            card_id=card_id,
            card_token_to=card_token,
            post_link=post_link,
            **pg,
        )
        return Payout.from_params((yield from self._call("/api/reg2reg", fields, "payout")))

    @operation
    def payout_status(
        self, payment_id: int | str | None = None, *, order_id: str | None = None
    ) -> Flow[Payout]:
        """api/payment_status: a payout by pg_payment_id or pg_order_id."""
        if payment_id is None and order_id is None:
            raise ValueError("give payment_id or order_id")
        fields = _fields(payment_id=payment_id, order_id=order_id)
        return Payout.from_params((yield from self._call("/api/payment_status", fields, "payout")))

    # --- card storage ----------------------------------------------------------------------------

    def _storage(self, payout: bool) -> tuple[str, Key]:
        return ("cardstoragepayout", "payout") if payout else ("cardstorage", "payment")

    @operation
    def add_card(
        self,
        user_id: str,
        post_link: str,
        back_link: str,
        *,
        order_id: str | None = None,
        payout: bool = False,
        **pg: Any,
    ) -> Flow[CardPage]:
        """cardstorage/add (cardstoragepayout/add with `payout=True`): the page where the payer enters
        the card; the outcome is posted to `post_link`."""
        folder, key = self._storage(payout)
        fields = _fields(user_id=user_id, post_link=post_link, back_link=back_link, order_id=order_id, **pg)
        return CardPage.from_params((yield from self._call(self._cards_path(f"{folder}/add"), fields, key)))

    @operation
    def list_cards(self, user_id: str, *, payout: bool = False) -> Flow[list[SavedCard]]:
        """cardstorage/list: the user's saved cards."""
        folder, key = self._storage(payout)
        params = yield from self._call(self._cards_path(f"{folder}/list"), _fields(user_id=user_id), key)
        return [SavedCard.from_params(v) for n, v in params if n == "card" and isinstance(v, list)]

    @operation
    def remove_card(
        self,
        user_id: str,
        *,
        card_id: str | None = None,
        card_token: str | None = None,
        payout: bool = False,
    ) -> Flow[SavedCard]:
        """cardstorage/remove: destroy a saved card (by `card_id` or `card_token`)."""
        folder, key = self._storage(payout)
        fields = _fields(user_id=user_id, card_id=card_id, card_token=card_token)
        params = yield from self._call(self._cards_path(f"{folder}/remove"), fields, key)
        card = first(params, "card")
        if not isinstance(card, list):
            raise ProtocolError("cardstorage/remove answered without a <card>")
        return SavedCard.from_params(card)

    @operation
    def card_init(
        self,
        amount: Decimal | str | int,
        order_id: str,
        user_id: str,
        description: str,
        *,
        card_id: str | None = None,
        card_token: str | None = None,
        idempotency_key: str | None = None,
        **pg: Any,
    ) -> Flow[ChargeInit]:
        """card/init: a payment with a saved card; pay it with `card_pay_url` (payer present) or
        `card_direct` (server to server)."""
        fields = _fields(
            amount=amount,
            order_id=order_id,
            user_id=user_id,
            description=description,
            card_id=card_id,
            card_token=card_token,
            idempotency_key=idempotency_key,
            **pg,
        )
        return ChargeInit.from_params((yield from self._call(self._cards_path("card/init"), fields)))

    def card_pay_url(self, base_url: str, payment_id: int | str) -> str:
        """card/pay: the signed link for the payer's browser (3-D Secure where the card asks for it)."""
        path = self._cards_path("card/pay")
        params = self.message("pay", _fields(payment_id=payment_id), transport="query")
        return f"{base_url.rstrip('/')}{path}?{urlencode(bracket_pairs(params))}"

    @operation
    def card_direct(self, payment_id: int | str) -> Flow[PaymentStatus3]:
        """card/direct: pay a card/init payment server to server, no payer present."""
        params = yield from self._call(self._cards_path("card/direct"), _fields(payment_id=payment_id))
        return PaymentStatus3.from_params(params)


def _own(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The shop's own parameters; `pg_` names are the protocol's and are refused here."""
    own = dict(extra or {})
    for name in own:
        if name.startswith("pg_"):
            raise ValueError(f"{name}: the shop's own parameters must not start with pg_")
    return own


class MerchantClient(_MerchantOperations, SyncClientBase):
    """Blocking Merchant API client. `transport` picks how requests travel (query, form, pg_xml, json)."""

    def __init__(
        self,
        base_url: str,
        merchant_id: int,
        secret_key: str,
        *,
        payout_secret: str | None = None,
        transport: Transport = "form",
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.merchant_id = merchant_id
        self.secret_key = secret_key
        self.payout_secret = payout_secret
        self.transport = transport
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._driver = SyncDriver(self._http)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MerchantClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncMerchantClient(_MerchantOperations, AsyncClientBase):
    """The same client for asyncio."""

    def __init__(
        self,
        base_url: str,
        merchant_id: int,
        secret_key: str,
        *,
        payout_secret: str | None = None,
        transport: Transport = "form",
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.merchant_id = merchant_id
        self.secret_key = secret_key
        self.payout_secret = payout_secret
        self.transport = transport
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._driver = AsyncDriver(self._http)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncMerchantClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
