"""Acquirers: connectors that decide card payments, mobile payments and payouts behind one interface.

`SandboxAcquirer` serves test payments (test cards, 3-D Secure, test phones); `ManualAcquirer`
serves live payments, leaving each one to the operator.
"""

from greengate.acquiring.base import Acquirer, Decision, FailureCode, Outcome, approval_codes
from greengate.acquiring.manual import ManualAcquirer
from greengate.acquiring.sandbox import SandboxAcquirer
from greengate.acquiring.test_data import (
    PAYOUT_CARDS,
    PURCHASE_CARDS,
    TEST_PHONES,
    THREE_DS_PASSWORD,
    is_test_card,
)

__all__ = [
    "PAYOUT_CARDS",
    "PURCHASE_CARDS",
    "TEST_PHONES",
    "THREE_DS_PASSWORD",
    "Acquirer",
    "Decision",
    "FailureCode",
    "ManualAcquirer",
    "Outcome",
    "SandboxAcquirer",
    "approval_codes",
    "is_test_card",
]
