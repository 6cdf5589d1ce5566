"""BTC payout interface used to complete exchange orders (send BTC to the client's wallet)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

SAT_PER_BTC = 100_000_000
# Consensus MAX_MONEY: bitcoind rejects anything above it as "Amount out of range".
MAX_MONEY_SAT = 21_000_000 * SAT_PER_BTC

_TXID = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class BtcPayoutRequest:
    order_id: int
    address: str
    amount_sat: int  # integer satoshi, 1..MAX_MONEY_SAT

    def __post_init__(self) -> None:
        # bool is an int subclass; True must not silently become 1 sat.
        if isinstance(self.order_id, bool) or not isinstance(self.order_id, int):
            raise TypeError("order_id must be an int")
        if isinstance(self.amount_sat, bool) or not isinstance(self.amount_sat, int):
            raise TypeError("amount_sat must be an int number of satoshi")
        if not 0 < self.amount_sat <= MAX_MONEY_SAT:
            raise ValueError(f"amount_sat must be in 1..{MAX_MONEY_SAT}, got {self.amount_sat}")
        if not isinstance(self.address, str) or not self.address or self.address != self.address.strip():
            raise ValueError("address must be a non-empty string without surrounding whitespace")


@dataclass(frozen=True)
class BtcPayoutResult:
    txid: str  # 64 lowercase hex chars


class PayoutError(Exception):
    """A payout that did not (or may not) go through.

    ``retryable``: the payout certainly was not executed and sending the same request again is safe
    and may succeed (node unreachable, node warming up).
    ``outcome_unknown``: the request may have reached the node and BTC may have been sent (timeout
    or broken reply after sending). Never retry automatically; reconcile against the wallet first
    (the transaction comment is ``greengate order <id>``).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        outcome_unknown: bool = False,
        rpc_code: int | None = None,
    ) -> None:
        if retryable and outcome_unknown:
            raise ValueError("a payout with an unknown outcome must not be retried")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.outcome_unknown = outcome_unknown
        self.rpc_code = rpc_code


@runtime_checkable
class BtcPayoutBackend(Protocol):
    name: str
    # False: the backend cannot send by itself; the operator pays and records the txid.
    automatic: bool

    async def send(self, request: BtcPayoutRequest) -> BtcPayoutResult: ...


def sat_to_btc(amount_sat: int) -> Decimal:
    """Exact satoshi -> BTC conversion; the result always has exactly 8 decimal places.

    Built from the integer's digits with exponent -8, so no context precision or rounding applies.
    """
    if isinstance(amount_sat, bool) or not isinstance(amount_sat, int):
        raise TypeError("amount_sat must be an int")
    sign, digits, _ = Decimal(amount_sat).as_tuple()
    return Decimal((sign, digits, -8))


def validate_txid(txid: str) -> str:
    """Return the txid as 64 lowercase hex chars; raise ValueError otherwise.

    Surrounding whitespace is dropped because operators paste txids from explorers and wallets.
    """
    if not isinstance(txid, str):
        raise ValueError("txid must be a string")
    candidate = txid.strip()
    if not _TXID.fullmatch(candidate):
        raise ValueError("txid must be 64 hexadecimal characters")
    return candidate.lower()


class ManualPayout:
    """The operator sends BTC from their own wallet and records the txid in greengate."""

    name: str = "manual"
    automatic: bool = False

    async def send(self, request: BtcPayoutRequest) -> BtcPayoutResult:
        raise PayoutError(
            "manual_payout",
            f"order {request.order_id}: payouts are manual; the operator sends "
            f"{sat_to_btc(request.amount_sat)} BTC to {request.address} and records the txid",
            retryable=False,
        )
