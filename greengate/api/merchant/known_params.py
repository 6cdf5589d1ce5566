"""The ``pg_``-prefixed parameter names a Merchant API request may carry, on any script.

Parameter names are not signed, only values: a payer who renames ``pg_currency`` to ``pg_cz`` in a signed
``payment.php`` form keeps a valid signature. So every top-level ``pg_`` name must be one of these; the
shop's own parameters (without the prefix) stay free. The list is the spec's parameters plus every name
that published clients of this protocol family send in a request (Platron's PHP and Python SDKs, PayBox's
Android SDK, the .NET Platron.Client, laravel-paybox): names a client sends must never be refused, even
where greengate only echoes them.

Answer-only fields are refused apart (code 100): an answer posted back as a request is not a request.
"""

from __future__ import annotations

import re

from greengate.api.merchant import payment_params
from greengate.domain.params import Params

# Present in every request of the family.
_ENVELOPE = {"pg_merchant_id", "pg_salt", "pg_sig", "pg_xml"}

# Payment acceptance (init_payment.php, payment.php, card/init): the names the payment reader interprets,
# plus pg_param1..3, which it echoes as the shop's own.
_PAYMENT = set(payment_params.KNOWN) | {"pg_param1", "pg_param2", "pg_param3"}

# Status reads, cancel, refunds, captures, recurring charges, ps_list (spec).
_OPERATIONS = {
    "pg_payment_id",
    "pg_refund_amount",
    "pg_clearing_amount",
    "pg_recurring_profile",
}

# Payouts and card storage (spec, "Payouts to cards", "Card storage").
_CARDS_AND_PAYOUTS = {
    "pg_post_link",
    "pg_back_link",
    "pg_order_time_limit",
    "pg_card_id",
    "pg_card_token",
    "pg_card_id_to",
    "pg_card_token_to",
}

# Sent by published clients of the family beyond the spec's list.
_CLIENTS = {
    # Platron php-sdk / python-sdk: receipts (OFD), recurring schedules, avia data, Alfa-Click, bins,
    # moneybacks, templates, and the like.
    "pg_additional_payment_amount",
    "pg_additional_payment_type",
    "pg_agent_inn",
    "pg_agent_name",
    "pg_agent_phone",
    "pg_agent_type",
    "pg_alfaclick_client_id",
    "pg_bin",
    "pg_card_brand",
    "pg_card_number",
    "pg_comment",
    "pg_contract_id",
    "pg_customer_inn",
    "pg_customer_name",
    "pg_cvv2",
    "pg_date",
    "pg_dates",
    "pg_exp_month",
    "pg_exp_year",
    "pg_gds",
    "pg_interval",
    "pg_items",
    "pg_label",
    "pg_max_periods",
    "pg_merchant_markup",
    "pg_moneyback_id",
    "pg_moneyback_system",
    "pg_nomenclature_code",
    "pg_operation_type",
    "pg_payment_type",
    "pg_period",
    "pg_price",
    "pg_quantity",
    "pg_rec_log",
    "pg_receipt_id",
    "pg_start_date",
    "pg_template",
    "pg_ticket_agency_code",
    "pg_ticket_number",
    "pg_ticket_passenger_name",
    "pg_ticket_restricted",
    "pg_ticket_system",
    "pg_type",
    "pg_vat",
    # PayBox Android SDK and laravel-paybox.
    "pg_payment_route",
    "pg_payment_method",
}

KNOWN: frozenset[str] = frozenset(_ENVELOPE | _PAYMENT | _OPERATIONS | _CARDS_AND_PAYOUTS | _CLIENTS)
# Avia itinerary legs of the Platron SDKs: pg_tripleg_1_date, pg_tripleg_2_carrier, ...
_TRIPLEG = re.compile(
    r"pg_tripleg_[1-9][0-9]?_(?:date|carrier|class|destination_from|destination_to|stopover"
    r"|fare_basis_code|flight_number)"
)

# Fields only answers carry. A request with one of them is an answer posted back.
RESPONSE_ONLY: frozenset[str] = frozenset(
    {
        "pg_status",
        "pg_error_code",
        "pg_error_description",
        "pg_redirect_url",
        "pg_redirect_url_type",
        "pg_transaction_status",
        "pg_payment_status",
        "pg_refund_payment_id",
        "pg_revoke_amount",
        "pg_balance",
    }
)


def is_known(name: str) -> bool:
    return name in KNOWN or _TRIPLEG.fullmatch(name) is not None


def answer_fields(params: Params) -> list[str]:
    """The answer-only fields a request carries, in order."""
    return [name for name, _ in params if name in RESPONSE_ONLY]


def unknown_names(params: Params) -> list[str]:
    """Top-level ``pg_`` names that are neither known nor answer-only, in order."""
    return [
        name
        for name, _ in params
        if name.startswith("pg_") and name not in RESPONSE_ONLY and not is_known(name)
    ]
