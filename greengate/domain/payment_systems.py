"""The payment systems a payment can use, and whether each one's connector is ready.

The operator sets a connector's state (`GREENGATE_PAYMENT_SYSTEM_STATES`, e.g.
`BANKCARD=down,MOBILE_COMMERCE=certificate_expired`) while a bank's link is broken; requests that need
a system in any state but `up` are refused with that state's error, before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from greengate.domain.errors import (
    NoPaymentSystem,
    PaymentSystemCertificateExpired,
    PaymentSystemFailure,
    PaymentSystemUnreachable,
)
from greengate.domain.payments import selected_methods

PAYMENT_SYSTEMS: dict[str, str] = {
    "BANKCARD": "Bank card",
    "MOBILE_COMMERCE": "Mobile commerce (phone balance)",
}
METHOD_SYSTEM = {"card": "BANKCARD", "phone": "MOBILE_COMMERCE"}
MAX_STATES_TEXT = 500


class ConnectorState(StrEnum):
    UP = "up"
    DOWN = "down"  # 465
    CERTIFICATE_EXPIRED = "certificate_expired"  # 466
    FAILING = "failing"  # 475


def parse_states(text: str) -> dict[str, ConnectorState]:
    """`NAME=state` pairs separated by commas; a system not named is `up`. Raises ValueError."""
    if len(text) > MAX_STATES_TEXT:
        raise ValueError("payment system states are too long")
    states = dict.fromkeys(PAYMENT_SYSTEMS, ConnectorState.UP)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, state = item.partition("=")
        name = name.strip().upper()
        if name not in PAYMENT_SYSTEMS:
            raise ValueError(f"unknown payment system {name!r}: use one of {', '.join(PAYMENT_SYSTEMS)}")
        try:
            states[name] = ConnectorState(state.strip().lower())
        except ValueError:
            names = ", ".join(s.value for s in ConnectorState)
            raise ValueError(f"payment system state must be one of {names}") from None
    return states


def ready(states: Mapping[str, ConnectorState]) -> list[str]:
    """The systems whose connector accepts requests, in the order ps_list.php lists them."""
    return [name for name in PAYMENT_SYSTEMS if states.get(name, ConnectorState.UP) is ConnectorState.UP]


def check_available(requested: str | None, states: Mapping[str, ConnectorState]) -> None:
    """Refuse a payment request no ready payment system can serve.

    `requested` is `pg_payment_system` (None when the payer chooses on the page). A value that names no
    system greengate has is 850; a chosen system whose connector is not up gets its state's code; with
    no choice, 850 when no system at all is ready.
    """
    if requested is None:
        if not ready(states):
            raise NoPaymentSystem("no payment system is ready to accept the request")
        return
    methods = selected_methods(requested)
    if len(methods) != 1:
        raise NoPaymentSystem(
            f"pg_payment_system {requested[:60]!r} is not a payment system of this gateway: "
            f"use one of {', '.join(PAYMENT_SYSTEMS)}",
            field="pg_payment_system",
        )
    system = METHOD_SYSTEM[methods[0]]
    state = states.get(system, ConnectorState.UP)
    if state is ConnectorState.DOWN:
        raise PaymentSystemUnreachable(f"payment system {system} is unreachable", field="pg_payment_system")
    if state is ConnectorState.CERTIFICATE_EXPIRED:
        raise PaymentSystemCertificateExpired(
            f"payment system {system}: its certificate has expired", field="pg_payment_system"
        )
    if state is ConnectorState.FAILING:
        raise PaymentSystemFailure(f"payment system {system} is failing", field="pg_payment_system")
