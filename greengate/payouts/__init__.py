"""BTC payouts that complete exchange orders."""

from greengate.payouts.bitcoin_core import BitcoinCoreRpcPayout
from greengate.payouts.btc import (
    MAX_MONEY_SAT,
    SAT_PER_BTC,
    BtcPayoutBackend,
    BtcPayoutRequest,
    BtcPayoutResult,
    ManualPayout,
    PayoutError,
    sat_to_btc,
    validate_txid,
)

__all__ = [
    "MAX_MONEY_SAT",
    "SAT_PER_BTC",
    "BitcoinCoreRpcPayout",
    "BtcPayoutBackend",
    "BtcPayoutRequest",
    "BtcPayoutResult",
    "ManualPayout",
    "PayoutError",
    "sat_to_btc",
    "validate_txid",
]
