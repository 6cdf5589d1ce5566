"""Double-entry ledger postings: accounts, balanced transactions and the recipes that build them.

Model (after TigerBeetle): accounts and immutable transactions only. An account is identified by
(owner, kind, currency) and holds one currency; amounts are integer minor units (satoshi for BTC).
A transaction is a set of legs, each debiting or crediting one account; per currency the debits
equal the credits. Balances are derived from the legs (and cached on the account row).

Sign convention. Every leg has `debit >= 0` and `credit >= 0`, exactly one of them positive. Each
account kind has a normal side, and its balance is reported on that side:

- credit-normal, balance = credits - debits: what the gateway owes or has earned —
  merchant `available` (withdrawable), `pending` (authorised, not captured), `reserved` (held for
  a payout), `fees` (fees charged to the merchant, passed straight on to the gateway's income, so
  its balance stays 0 and its credit turnover is the fees charged); gateway `fee_income`,
  `payout_clearing` (paid out through a payout rail or the BTC wallet, to be settled with it),
  `exchange_fiat` (fiat taken in for exchange orders), `exchange_btc_liability` (BTC owed to
  exchange clients).
- debit-normal, balance = debits - credits: what is owed to or held for the gateway —
  gateway `acquirer_clearing` (collected by the acquirer or on a requisite card),
  `exchange_btc` (BTC sold to exchange clients: the BTC side of the exchange position whose fiat
  side is `exchange_fiat`; the rate is recorded on the transaction).

"Moving X from A to B" debits A and credits B. Merchant accounts never go negative; the service
enforces that under the accounts' row locks.

Books. Every account, the merchants' and the gateway's, belongs to one of two books: `test` (money
moved by test payments, which cost nobody anything) or `live`. A transaction posts within one book:
its legs all name accounts of the same book, so test money can never fund a live payout, and
switching a merchant between modes moves nothing between the books.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from greengate.domain.errors import BusinessRuleViolation, Conflict, InvalidRequest
from greengate.domain.money import exponent

GATEWAY = "gateway"
BTC = "BTC"


class Book(StrEnum):
    LIVE = "live"
    TEST = "test"


def book_of(testing: bool) -> Book:
    return Book.TEST if testing else Book.LIVE


class Kind(StrEnum):
    # per merchant and currency
    AVAILABLE = "available"
    PENDING = "pending"
    RESERVED = "reserved"
    FEES = "fees"
    # the gateway's own
    ACQUIRER_CLEARING = "acquirer_clearing"
    PAYOUT_CLEARING = "payout_clearing"
    FEE_INCOME = "fee_income"
    EXCHANGE_FIAT = "exchange_fiat"
    EXCHANGE_BTC = "exchange_btc"
    EXCHANGE_BTC_LIABILITY = "exchange_btc_liability"


MERCHANT_KINDS = frozenset({Kind.AVAILABLE, Kind.PENDING, Kind.RESERVED, Kind.FEES})
GATEWAY_KINDS = frozenset(Kind) - MERCHANT_KINDS
DEBIT_NORMAL = frozenset({Kind.ACQUIRER_CLEARING, Kind.EXCHANGE_BTC})

_MERCHANT_OWNER = re.compile(r"^merchant:[1-9][0-9]{0,17}$")
_REASON = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)*$")


class InvalidPosting(InvalidRequest):
    code = "invalid_posting"


class InsufficientBalance(BusinessRuleViolation):
    code = "insufficient_balance"


class AmountTooLarge(InvalidRequest):
    """More than one ledger entry (or one step of an account's stored sums) can hold."""

    code = "amount_too_large"


# The largest amount one leg may carry: account sums are stored as hi * 2**62 + lo with
# 0 <= lo < 2**62, and adding a leg below 2**62 to lo stays below 2**63 on both databases.
SUM_BASE = 2**62
MAX_LEG = SUM_BASE - 1


class LedgerConflict(Conflict):
    """The same business movement was posted before with different legs."""

    code = "ledger_conflict"


def merchant_owner(merchant_id: int) -> str:
    return f"merchant:{merchant_id}"


def owner_merchant_id(owner: str) -> int | None:
    return int(owner.split(":", 1)[1]) if _MERCHANT_OWNER.match(owner) else None


def is_debit_normal(kind: str) -> bool:
    return kind in DEBIT_NORMAL


def normal_balance(kind: str, debits: int, credits: int) -> int:
    """The balance on the account's normal side (see the module docstring)."""
    return debits - credits if is_debit_normal(kind) else credits - debits


@dataclass(frozen=True, order=True)
class AccountKey:
    owner: str  # "gateway" | "merchant:<id>"
    kind: str
    currency: str
    book: str = Book.LIVE.value

    def __post_init__(self) -> None:
        if self.book not in (Book.TEST.value, Book.LIVE.value):
            raise InvalidPosting(f"unknown book {self.book!r}")
        if self.owner == GATEWAY:
            allowed: frozenset[Kind] = GATEWAY_KINDS
        elif _MERCHANT_OWNER.match(self.owner):
            allowed = MERCHANT_KINDS
        else:
            raise InvalidPosting(f"unknown account owner {self.owner!r}")
        if self.kind not in allowed:
            raise InvalidPosting(f"{self.owner} has no {self.kind!r} account")
        exponent(self.currency)  # refuses an unknown currency
        # The BTC side of the exchange lives on the BTC ledger only; its fiat side never does.
        if self.kind in (Kind.EXCHANGE_BTC, Kind.EXCHANGE_BTC_LIABILITY) and self.currency != BTC:
            raise InvalidPosting(f"{self.kind} is kept in BTC, not {self.currency}")
        if self.kind == Kind.EXCHANGE_FIAT and self.currency == BTC:
            raise InvalidPosting("exchange_fiat is kept in a fiat currency")

    @property
    def merchant_id(self) -> int | None:
        return owner_merchant_id(self.owner)

    def __str__(self) -> str:
        return f"{self.book}:{self.owner}/{self.kind}/{self.currency}"


def merchant_account(merchant_id: int, kind: Kind, currency: str, book: Book = Book.LIVE) -> AccountKey:
    return AccountKey(merchant_owner(merchant_id), kind.value, currency, book.value)


def gateway_account(kind: Kind, currency: str, book: Book = Book.LIVE) -> AccountKey:
    return AccountKey(GATEWAY, kind.value, currency, book.value)


@dataclass(frozen=True)
class Posting:
    """One leg: a debit or a credit (never both) on one account, in that account's currency."""

    account: AccountKey
    debit: int = 0
    credit: int = 0

    @property
    def currency(self) -> str:
        return self.account.currency


@dataclass(frozen=True)
class LedgerTransactionDraft:
    reason: str
    postings: tuple[Posting, ...]
    rate: str | None = None  # decimal text, for movements between currencies

    def accounts(self) -> list[AccountKey]:
        return sorted({p.account for p in self.postings})

    def changes(self) -> dict[AccountKey, tuple[int, int]]:
        """(debits, credits) each account receives."""
        out: dict[AccountKey, tuple[int, int]] = {}
        for p in self.postings:
            d, c = out.get(p.account, (0, 0))
            out[p.account] = (d + p.debit, c + p.credit)
        return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_transaction(
    reason: str, legs: Iterable[Posting], *, rate: str | None = None
) -> LedgerTransactionDraft:
    """Validate legs into a draft: two legs or more, each one-sided and positive, balanced per currency."""
    if not _REASON.match(reason):
        raise InvalidPosting(f"reason code {reason!r} is not like 'payment.succeeded'")
    postings = tuple(legs)
    if len(postings) < 2:
        raise InvalidPosting("a transaction needs at least two legs")
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    books = {p.account.book for p in postings if isinstance(p.account, AccountKey)}
    if len(books) > 1:
        raise InvalidPosting(f"{reason} mixes the test and live books")
    for p in postings:
        if not isinstance(p.account, AccountKey):
            raise InvalidPosting("a leg must name an AccountKey")
        if p.debit > MAX_LEG or p.credit > MAX_LEG:
            raise AmountTooLarge(f"a leg on {p.account} is larger than the ledger stores in one entry")
        if not (_is_int(p.debit) and _is_int(p.credit)):
            raise InvalidPosting("amounts are integer minor units")
        if p.debit < 0 or p.credit < 0:
            raise InvalidPosting(f"negative amount on {p.account}")
        if (p.debit > 0) == (p.credit > 0):
            raise InvalidPosting(f"a leg on {p.account} must be exactly one positive debit or credit")
        totals[p.currency][0] += p.debit
        totals[p.currency][1] += p.credit
    for currency, (debits, credits) in sorted(totals.items()):
        if debits != credits:
            raise InvalidPosting(
                f"{reason} does not balance in {currency}: debits {debits}, credits {credits}"
            )
    return LedgerTransactionDraft(reason, postings, rate)


def _move(source: AccountKey, target: AccountKey, amount: int) -> list[Posting]:
    """Debit source, credit target; nothing when the amount is zero."""
    if source.currency != target.currency:
        raise InvalidPosting(f"cannot move between {source.currency} and {target.currency} directly")
    if amount == 0:
        return []
    return [Posting(source, debit=amount), Posting(target, credit=amount)]


def _require(amount: int, name: str, *, positive: bool = True) -> None:
    if not _is_int(amount) or amount < 0 or (positive and amount == 0):
        raise InvalidPosting(f"{name} must be a {'positive' if positive else 'non-negative'} integer")


def _fee_legs(merchant_id: int, fee: int, currency: str, book: Book) -> list[Posting]:
    if fee == 0:
        return []
    fees = merchant_account(merchant_id, Kind.FEES, currency, book)
    # Through the merchant's own fees account, so its credit turnover shows what it was charged.
    return [Posting(fees, credit=fee), *_move(fees, gateway_account(Kind.FEE_INCOME, currency, book), fee)]


# --- recipes ---------------------------------------------------------------------------------


def payment_succeeded(
    merchant_id: int, amount: int, currency: str, fee: int, *, book: Book = Book.LIVE
) -> LedgerTransactionDraft:
    """A one-step payment: the acquirer owes the gross amount; the merchant gets it less the fee."""
    _require(amount, "amount")
    _require(fee, "fee", positive=False)
    if fee > amount:
        raise InvalidPosting("the fee cannot exceed the amount")
    clearing = gateway_account(Kind.ACQUIRER_CLEARING, currency, book)
    available = merchant_account(merchant_id, Kind.AVAILABLE, currency, book)
    legs = [Posting(clearing, debit=amount)]
    if amount - fee:
        legs.append(Posting(available, credit=amount - fee))
    return build_transaction("payment.succeeded", legs + _fee_legs(merchant_id, fee, currency, book))


def payment_authorized(
    merchant_id: int, amount: int, currency: str, *, book: Book = Book.LIVE
) -> LedgerTransactionDraft:
    """A two-step payment's authorisation: the gross amount waits in the merchant's pending account."""
    _require(amount, "amount")
    return build_transaction(
        "payment.authorized",
        _move(
            gateway_account(Kind.ACQUIRER_CLEARING, currency, book),
            merchant_account(merchant_id, Kind.PENDING, currency, book),
            amount,
        ),
    )


def payment_captured(
    merchant_id: int, authorized: int, captured: int, currency: str, fee: int, *, book: Book = Book.LIVE
) -> LedgerTransactionDraft:
    """Capture (full or partial) of an authorisation: the captured amount less the fee becomes
    available, the fee goes to the gateway, and what was not captured goes back to the acquirer."""
    _require(authorized, "authorized")
    _require(captured, "captured")
    _require(fee, "fee", positive=False)
    if captured > authorized:
        raise InvalidPosting("cannot capture more than was authorised")
    if fee > captured:
        raise InvalidPosting("the fee cannot exceed the captured amount")
    pending = merchant_account(merchant_id, Kind.PENDING, currency, book)
    legs = [Posting(pending, debit=authorized)]
    if captured - fee:
        legs.append(
            Posting(merchant_account(merchant_id, Kind.AVAILABLE, currency, book), credit=captured - fee)
        )
    if authorized - captured:
        legs.append(
            Posting(gateway_account(Kind.ACQUIRER_CLEARING, currency, book), credit=authorized - captured)
        )
    return build_transaction("payment.captured", legs + _fee_legs(merchant_id, fee, currency, book))


def payment_voided(
    merchant_id: int, amount: int, currency: str, *, book: Book = Book.LIVE
) -> LedgerTransactionDraft:
    """An authorisation (or part of it) released before capture."""
    _require(amount, "amount")
    return build_transaction(
        "payment.voided",
        _move(
            merchant_account(merchant_id, Kind.PENDING, currency, book),
            gateway_account(Kind.ACQUIRER_CLEARING, currency, book),
            amount,
        ),
    )


def payment_refunded(
    merchant_id: int, amount: int, currency: str, *, book: Book = Book.LIVE
) -> LedgerTransactionDraft:
    """A refund (full or partial) of a settled payment, from the merchant's available balance.

    The fee charged on the payment is not returned."""
    _require(amount, "amount")
    return build_transaction(
        "payment.refunded",
        _move(
            merchant_account(merchant_id, Kind.AVAILABLE, currency, book),
            gateway_account(Kind.ACQUIRER_CLEARING, currency, book),
            amount,
        ),
    )


def payment_reversed(
    merchant_id: int, settled: int, currency: str, fee: int, refunded: int = 0, *, book: Book = Book.LIVE
) -> LedgerTransactionDraft:
    """A settled payment undone as a whole (a result the merchant rejected, a chargeback): the exact
    reverse of `payment_succeeded` (or of the capture's credit) — the fee comes back from the gateway's
    income, so the merchant gives back only what it was credited and the reversal cannot fail for lack
    of balance while that money is still there.

    `refunded` is what earlier refunds already returned from the merchant's available balance: only
    the rest goes back to the acquirer, and the fee still returns in full."""
    _require(settled, "settled")
    _require(fee, "fee", positive=False)
    _require(refunded, "refunded", positive=False)
    if fee > settled:
        raise InvalidPosting("the fee cannot exceed the settled amount")
    if refunded >= settled:
        raise InvalidPosting("nothing is left to reverse")
    rest = settled - refunded
    available = merchant_account(merchant_id, Kind.AVAILABLE, currency, book)
    legs = [Posting(gateway_account(Kind.ACQUIRER_CLEARING, currency, book), credit=rest)]
    if rest > fee:
        legs.append(Posting(available, debit=rest - fee))
    elif fee > rest:  # earlier refunds took more than the net: the fee returned covers the difference
        legs.append(Posting(available, credit=fee - rest))
    if fee:
        fees = merchant_account(merchant_id, Kind.FEES, currency, book)
        legs += [
            Posting(fees, debit=fee),
            *_move(gateway_account(Kind.FEE_INCOME, currency, book), fees, fee),
        ]
    return build_transaction("payment.reversed", legs)


def payout_reserved(
    merchant_id: int, amount: int, currency: str, *, book: Book = Book.LIVE
) -> LedgerTransactionDraft:
    _require(amount, "amount")
    return build_transaction(
        "payout.reserved",
        _move(
            merchant_account(merchant_id, Kind.AVAILABLE, currency, book),
            merchant_account(merchant_id, Kind.RESERVED, currency, book),
            amount,
        ),
    )


def payout_completed(
    merchant_id: int, amount: int, currency: str, *, book: Book = Book.LIVE
) -> LedgerTransactionDraft:
    _require(amount, "amount")
    return build_transaction(
        "payout.completed",
        _move(
            merchant_account(merchant_id, Kind.RESERVED, currency, book),
            gateway_account(Kind.PAYOUT_CLEARING, currency, book),
            amount,
        ),
    )


def payout_released(
    merchant_id: int, amount: int, currency: str, *, book: Book = Book.LIVE
) -> LedgerTransactionDraft:
    """A failed or canceled payout: the reserved money is available again."""
    _require(amount, "amount")
    return build_transaction(
        "payout.released",
        _move(
            merchant_account(merchant_id, Kind.RESERVED, currency, book),
            merchant_account(merchant_id, Kind.AVAILABLE, currency, book),
            amount,
        ),
    )


def exchange_order_paid(
    fiat_amount: int, currency: str, receivable_sat: int, rate: str
) -> LedgerTransactionDraft:
    """The client's fiat arrived: it enters the exchange position on the fiat ledger, and the BTC the
    client is owed is recorded on the BTC ledger. The rate is kept on the transaction."""
    _require(fiat_amount, "fiat_amount")
    _require(receivable_sat, "receivable_sat", positive=False)
    if currency == BTC:
        raise InvalidPosting("an exchange order is paid in fiat")
    legs = _move(
        gateway_account(Kind.ACQUIRER_CLEARING, currency),
        gateway_account(Kind.EXCHANGE_FIAT, currency),
        fiat_amount,
    ) + _move(
        gateway_account(Kind.EXCHANGE_BTC, BTC),
        gateway_account(Kind.EXCHANGE_BTC_LIABILITY, BTC),
        receivable_sat,
    )
    return build_transaction("exchange.order_paid", legs, rate=rate)


def exchange_order_completed(receivable_sat: int) -> LedgerTransactionDraft:
    """The BTC was sent: the liability to the client is settled against the payout clearing account."""
    _require(receivable_sat, "receivable_sat")
    return build_transaction(
        "exchange.order_completed",
        _move(
            gateway_account(Kind.EXCHANGE_BTC_LIABILITY, BTC),
            gateway_account(Kind.PAYOUT_CLEARING, BTC),
            receivable_sat,
        ),
    )


def apply(
    balances: Mapping[AccountKey, tuple[int, int]], draft: LedgerTransactionDraft
) -> dict[AccountKey, tuple[int, int]]:
    """(debits, credits) per account after the draft — a reference model of what the service caches."""
    out = dict(balances)
    for key, (d, c) in draft.changes().items():
        old_d, old_c = out.get(key, (0, 0))
        out[key] = (old_d + d, old_c + c)
    return out
