"""init_payment.php / payment.php parameters: wire text → a validated request, each error naming its field."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from greengate.domain.errors import InvalidRequest
from greengate.domain.money import parse_amount
from greengate.domain.params import Params, first
from greengate.domain.payments import (
    CURRENCIES,
    CURRENCY_ALIASES,
    DEFAULT_LIFETIME,
    LANGUAGES,
    MAX_LIFETIME,
    MAX_TIMEOUT_AFTER_PAYMENT,
    MIN_LIFETIME,
    REDIRECT_METHODS,
    REQUEST_METHODS,
    NewPayment,
)

URL_PARAMS = (
    "pg_check_url",
    "pg_result_url",
    "pg_refund_url",
    "pg_capture_url",
    "pg_success_url",
    "pg_failure_url",
    "pg_state_url",
    "pg_site_url",
)
# Parameters the gateway interprets; anything else is the merchant's own and is echoed in callbacks.
KNOWN = frozenset(
    {
        "pg_merchant_id",
        "pg_amount",
        "pg_description",
        "pg_salt",
        "pg_sig",
        "pg_order_id",
        "pg_currency",
        "pg_request_method",
        "pg_success_url_method",
        "pg_failure_url_method",
        "pg_state_url_method",
        "pg_payment_system",
        "pg_lifetime",
        "pg_user_phone",
        "pg_user_contact_email",
        "pg_user_email",
        "pg_user_ip",
        "pg_user_id",
        "pg_language",
        "pg_encoding",
        "pg_testing_mode",
        "pg_postpone_payment",
        "pg_postpone",
        "pg_auto_clearing",
        "pg_recurring_start",
        "pg_recurring_lifetime",
        "pg_timeout_after_payment",
        "pg_idempotency_key",
        "pg_receipt_positions",
        "pg_payment_id",
        "pg_user_cardholder",
        *URL_PARAMS,
    }
)
# The shop's own (non-pg_) parameters of one request, names and values in UTF-8 bytes.
MAX_SHOP_PARAMS_BYTES = 64 * 1024
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}$")


def read_text(
    params: Params, name: str, *, max_length: int, required: bool = False, printable: bool = False
) -> str | None:
    """A text parameter: absent or empty is None (or refused when required), longer ones refused;
    `printable` also refuses control characters."""
    value = first(params, name)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f"{name} is required", field=name)
        return None
    if len(value) > max_length:
        raise InvalidRequest(f"{name} is longer than {max_length} characters", field=name)
    if printable and not value.isprintable():
        raise InvalidRequest(f"{name} has control characters", field=name)
    return value


def read_flag(params: Params, name: str) -> bool | None:
    value = first(params, name)
    if value is None or value == "":
        return None
    if value not in ("0", "1"):
        raise InvalidRequest(f"{name} must be 0 or 1", field=name)
    return value == "1"


def read_choice(params: Params, name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    value = first(params, name)
    if value is None or value == "":
        return default
    upper = value.upper() if allowed[0].isupper() else value.lower()
    if upper not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}", field=name)
    return upper


def _int(params: Params, name: str, low: int, high: int) -> int | None:
    value = first(params, name)
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise InvalidRequest(f"{name} must be a whole number", field=name)
    number = int(value)
    if not low <= number <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", field=name)
    return number


def parse_url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > 2000:
        raise InvalidRequest(f"{name} must be an absolute http(s) URL", field=name)
    return value


def parse_money(params: Params, name: str, currency: str) -> int:
    raw = read_text(params, name, max_length=20, required=True)
    amount = parse_amount(raw, currency, field=name)
    if amount <= 0:
        raise InvalidRequest(f"{name} must be greater than 0", field=name)
    return amount


def parse_currency(params: Params) -> str:
    raw = (read_text(params, "pg_currency", max_length=3) or "KZT").upper()
    currency = CURRENCY_ALIASES.get(raw, raw)
    if currency not in CURRENCIES:
        raise InvalidRequest(
            f"pg_currency must be one of {', '.join(CURRENCIES)} (RUR means RUB)", field="pg_currency"
        )
    return currency


def parse_init(params: Params) -> NewPayment:
    currency = parse_currency(params)
    amount = parse_money(params, "pg_amount", currency)
    description = read_text(params, "pg_description", max_length=1024, required=True)
    assert description is not None
    urls = {}
    for name in URL_PARAMS:
        value = read_text(params, name, max_length=2000)
        if value is not None:
            urls[name.removeprefix("pg_").removesuffix("_url")] = parse_url(value, name)
    phone = read_text(params, "pg_user_phone", max_length=20)
    if phone is not None:
        phone = phone.lstrip("+")
        if not phone.isascii() or not phone.isdigit() or not 10 <= len(phone) <= 15:
            raise InvalidRequest(
                "pg_user_phone must be digits with the country code first",
                field="pg_user_phone",
                code="wrong_phone",
            )
    email = read_text(params, "pg_user_contact_email", max_length=200) or read_text(
        params, "pg_user_email", max_length=200
    )
    if email is not None and not _EMAIL.match(email):
        raise InvalidRequest("pg_user_contact_email is not an e-mail address", field="pg_user_contact_email")
    ip = read_text(params, "pg_user_ip", max_length=45)
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidRequest("pg_user_ip is not an IP address", field="pg_user_ip") from None
    postpone = read_flag(params, "pg_postpone_payment") or read_flag(params, "pg_postpone")
    auto_clearing = read_flag(params, "pg_auto_clearing")
    recurring_lifetime = _int(params, "pg_recurring_lifetime", 1, 156)
    language = read_choice(params, "pg_language", LANGUAGES, "ru")
    assert language is not None
    return NewPayment(
        amount=amount,
        currency=currency,
        description=description,
        order_id=read_text(params, "pg_order_id", max_length=50),
        lifetime=_int(params, "pg_lifetime", MIN_LIFETIME, MAX_LIFETIME) or DEFAULT_LIFETIME,
        urls=urls,
        request_method=read_choice(params, "pg_request_method", REQUEST_METHODS, None),
        success_url_method=read_choice(params, "pg_success_url_method", REDIRECT_METHODS, "GET") or "GET",
        failure_url_method=read_choice(params, "pg_failure_url_method", REDIRECT_METHODS, "GET") or "GET",
        state_url_method=read_choice(params, "pg_state_url_method", REDIRECT_METHODS, "GET") or "GET",
        payment_system=read_text(params, "pg_payment_system", max_length=60),
        timeout_after_payment=_int(params, "pg_timeout_after_payment", 0, MAX_TIMEOUT_AFTER_PAYMENT),
        user_phone=phone,
        user_email=email,
        user_ip=ip,
        user_id=read_text(params, "pg_user_id", max_length=100),
        language=language,
        testing=bool(read_flag(params, "pg_testing_mode")),
        two_step=bool(postpone) or auto_clearing is False,
        recurring_start=bool(read_flag(params, "pg_recurring_start")),
        recurring_lifetime=recurring_lifetime,
        idempotency_key=read_text(params, "pg_idempotency_key", max_length=200),
        receipt=_receipt(params),
        extras=shop_params(params, KNOWN),
    )


def shop_params(params: Params, known: frozenset[str]) -> list[tuple[str, str]]:
    """The shop's own parameters, kept and echoed in callbacks: at most MAX_SHOP_PARAMS_BYTES in all."""
    extras = [(name, value) for name, value in params if name not in known and isinstance(value, str)]
    size = sum(len(name.encode()) + len(value.encode()) for name, value in extras)
    if size > MAX_SHOP_PARAMS_BYTES:
        raise InvalidRequest(
            f"the shop's own parameters take {size} bytes; at most {MAX_SHOP_PARAMS_BYTES} are kept",
            field=extras[0][0],
            code="shop_params_too_large",
        )
    return extras


def _receipt(params: Params) -> list[dict[str, str]] | None:
    positions = [value for name, value in params if name == "pg_receipt_positions"]
    if not positions:
        return None
    items: list[dict[str, str]] = []
    for block in positions:
        if isinstance(block, str):
            raise InvalidRequest(
                "pg_receipt_positions must be a list of positions", field="pg_receipt_positions"
            )
        for _, position in block:
            if isinstance(position, str):
                raise InvalidRequest(
                    "pg_receipt_positions[i] must have count, name, tax_type, price",
                    field="pg_receipt_positions",
                )
            item = {k: v for k, v in position if isinstance(v, str)}
            if not {"count", "name", "price"} <= item.keys():
                raise InvalidRequest(
                    "each receipt position needs count, name and price", field="pg_receipt_positions"
                )
            items.append(item)
    return items
