"""Taking the payer back to the shop after the payment: the success or failure URL, signed.

The shop gets `pg_order_id`, `pg_payment_id` (failure adds `pg_error_code` and
`pg_error_description`), `pg_salt` and `pg_sig`, signed with the script name of that URL and the
merchant's secret key, by the method the merchant chose: GET (a link), POST (a form the payer
submits), AUTOGET / AUTOPOST (the page goes by itself). Without a success/failure URL the payer
gets a plain link to the shop's site, or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from greengate.api.merchant.codec import MalformedRequest, parse_query, render_query
from greengate.domain.params import Params, params_to_pairs
from greengate.domain.payments import PaymentStatus
from greengate.domain.signature import script_name_from_url, with_signature
from greengate.store.models import Payment

S = PaymentStatus
FAILURE_STATUSES = frozenset({S.FAILED, S.CANCELED, S.EXPIRED})
_OURS = frozenset(
    {"pg_order_id", "pg_payment_id", "pg_error_code", "pg_error_description", "pg_salt", "pg_sig"}
)


@dataclass(frozen=True)
class ReturnAction:
    """Where the "return to the shop" action goes.

    `url` is the full address to open: for GET it carries the signed query, for POST it is the form's
    action and `fields` are the signed hidden inputs. `signed` is False for the plain site link.
    """

    url: str
    method: str  # GET | POST
    auto: bool
    signed: bool
    fields: list[tuple[str, str]] = field(default_factory=list)


def outcome(payment: Payment) -> str | None:
    """ "success" or "failure" once the payer's part is over and the shop expects them back."""
    status = S(payment.status)
    if status is S.OK:
        return "success"
    if status in FAILURE_STATUSES:
        return "failure"
    return None


def redirect_params(payment: Payment, *, success: bool) -> Params:
    params: Params = [("pg_order_id", payment.order_id or ""), ("pg_payment_id", str(payment.id))]
    if not success:
        params += [
            ("pg_error_code", str(payment.failure_code) if payment.failure_code is not None else ""),
            ("pg_error_description", payment.failure_description or ""),
        ]
    return params


def return_action(payment: Payment, secret: str, salt: str) -> ReturnAction | None:
    """The way back for a finished payment; None while the payer still has something to do here, or
    when the shop gave no URL at all."""
    kind = outcome(payment)
    if kind is None:
        return _site_link(payment) if S(payment.status) is S.REVOKED else None
    success = kind == "success"
    url = payment.success_url if success else payment.failure_url
    method = ((payment.success_url_method if success else payment.failure_url_method) or "GET").upper()
    if not url or not _is_web_url(url):
        return _site_link(payment)
    auto = method.startswith("AUTO")
    params = redirect_params(payment, success=success)
    script = script_name_from_url(url)
    if method.removeprefix("AUTO") == "POST":
        signed = with_signature(script, params, secret, salt)
        return ReturnAction(url, "POST", auto, True, params_to_pairs(signed))
    # GET: the parameters already in the URL reach the shop in the same query, so they are signed too.
    parts = urlsplit(url)
    try:
        existing = [(name, value) for name, value in parse_query(parts.query) if name not in _OURS]
    except MalformedRequest:
        existing = []
    signed = with_signature(script, existing + params, secret, salt)
    return ReturnAction(urlunsplit(parts._replace(query=render_query(signed))), "GET", auto, True)


def _is_web_url(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


def _site_link(payment: Payment) -> ReturnAction | None:
    if not payment.site_url or not _is_web_url(payment.site_url):
        return None
    return ReturnAction(payment.site_url, "GET", False, False)
