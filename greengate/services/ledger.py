"""The ledger: posting balanced transactions, reading balances, and checking the books.

Everything runs in the caller's transaction. Accounts are created on first use. A post locks the
accounts it touches (SELECT ... FOR UPDATE on PostgreSQL; SQLite's single writer does the same) in
one stable order — the merchants' accounts by id, then the gateway's by id — so a guard that locked
a merchant's account first (`ensure_available`) keeps that order, and the hot gateway accounts are
held for the shortest time. Entries are only ever inserted; the account rows cache their sums.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain import ledger as domain
from greengate.domain.errors import BusinessRuleViolation, StateForbids
from greengate.domain.exchange import OrderStatus
from greengate.domain.ledger import AccountKey, InsufficientBalance, LedgerConflict, LedgerTransactionDraft
from greengate.domain.money import EXPONENTS, format_minor
from greengate.domain.payments import PaymentStatus
from greengate.services import fees
from greengate.store.db import dialect_name
from greengate.store.models import ExchangeOrder, LedgerAccount, LedgerEntry, LedgerTransaction, Payment

_accounts = cast(Table, LedgerAccount.__table__)


@dataclass(frozen=True)
class AccountBalance:
    owner: str
    kind: str
    currency: str
    book: str  # "test" | "live"
    debits_posted: int
    credits_posted: int
    balance: int  # on the account's normal side, minor units


class LedgerStorageLimit(BusinessRuleViolation):
    """A posting that would take an account's stored sums beyond what the columns hold."""

    code = "ledger_storage_limit"


BASE = domain.SUM_BASE
MAX_HI = 2**63 - 2  # the high half may take one more carry
_SPLIT = 2**31  # entries are summed in two parts so SQLite's SUM() stays within 64 bits


def joined(lo: Any, hi: Any) -> int:
    """An account sum from its two stored halves."""
    return int(hi) * BASE + int(lo)


def _money(minor: int, currency: str) -> str:
    return format_minor(minor, currency) if currency in EXPONENTS else str(minor)


def _key_filter(keys: list[AccountKey]) -> Any:
    return or_(
        *(
            and_(
                LedgerAccount.owner == k.owner,
                LedgerAccount.kind == k.kind,
                LedgerAccount.currency == k.currency,
                LedgerAccount.book == k.book,
            )
            for k in keys
        )
    )


async def _ensure_accounts(session: AsyncSession, keys: list[AccountKey], now: datetime) -> None:
    """Insert the accounts that do not exist yet; a concurrent insert of the same account is a no-op."""
    rows = await session.execute(
        select(LedgerAccount.owner, LedgerAccount.kind, LedgerAccount.currency, LedgerAccount.book).where(
            _key_filter(keys)
        )
    )
    existing = {AccountKey(*row) for row in rows}
    insert_ = (postgresql if dialect_name(session) == "postgresql" else sqlite).insert
    for key in sorted(set(keys) - existing):  # one order for every creator
        await session.execute(
            insert_(LedgerAccount)
            .values(
                owner=key.owner,
                kind=key.kind,
                currency=key.currency,
                book=key.book,
                debits_posted=0,
                credits_posted=0,
                debits_posted_hi=0,
                credits_posted_hi=0,
                debits_pending=0,
                credits_pending=0,
                version=1,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["owner", "kind", "currency", "book"])
        )


def _lock_order() -> tuple[Any, ...]:
    return (case((LedgerAccount.owner == domain.GATEWAY, 1), else_=0), LedgerAccount.id)


async def _find(
    session: AsyncSession, object_type: str, object_id: str, reason: str
) -> LedgerTransaction | None:
    return await session.scalar(
        select(LedgerTransaction).where(
            LedgerTransaction.object_type == object_type,
            LedgerTransaction.object_id == object_id,
            LedgerTransaction.reason == reason,
        )
    )


async def entries_of(session: AsyncSession, transaction_id: int) -> list[tuple[AccountKey, int, int]]:
    rows = await session.execute(
        select(
            LedgerAccount.owner,
            LedgerAccount.kind,
            LedgerAccount.currency,
            LedgerAccount.book,
            LedgerEntry.debit,
            LedgerEntry.credit,
        )
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .where(LedgerEntry.transaction_id == transaction_id)
        .order_by(LedgerEntry.id)
    )
    return [(AccountKey(o, k, c, b), int(d), int(cr)) for o, k, c, b, d, cr in rows]


async def _same_or_conflict(
    session: AsyncSession, existing: LedgerTransaction, draft: LedgerTransactionDraft
) -> LedgerTransaction:
    posted = Counter(await entries_of(session, existing.id))
    wanted = Counter((p.account, p.debit, p.credit) for p in draft.postings)
    if posted != wanted:
        raise LedgerConflict(
            f"{existing.object_type} {existing.object_id} already has a {existing.reason} "
            "transaction with different legs"
        )
    return existing


async def post(
    session: AsyncSession,
    draft: LedgerTransactionDraft,
    *,
    object_type: str,
    object_id: str,
    now: datetime,
) -> LedgerTransaction:
    """Record a balanced transaction once per (object_type, object_id, reason); a repeat returns the
    transaction already posted. Merchant accounts may not go negative (InsufficientBalance); sums that
    would outgrow their columns are refused (LedgerStorageLimit) before anything is written."""
    existing = await _find(session, object_type, object_id, draft.reason)
    if existing is not None:
        return await _same_or_conflict(session, existing, draft)
    changes = draft.changes()
    for key, (d, c) in changes.items():
        if d > domain.MAX_LEG or c > domain.MAX_LEG:
            raise LedgerStorageLimit(f"{draft.reason} moves more through {key} than one posting can hold")
    tx = LedgerTransaction(
        reason=draft.reason, object_type=object_type, object_id=object_id, rate=draft.rate, created_at=now
    )
    try:
        async with session.begin_nested():  # flushes what is pending first, then SAVEPOINT
            session.add(tx)
            await session.flush()
    except IntegrityError:
        # The same movement was posted by a concurrent transaction that committed first.
        existing = await _find(session, object_type, object_id, draft.reason)
        if existing is None:
            raise
        return await _same_or_conflict(session, existing, draft)

    keys = draft.accounts()
    await _ensure_accounts(session, keys, now)
    locked = list(
        await session.execute(
            select(
                LedgerAccount.id,
                LedgerAccount.owner,
                LedgerAccount.kind,
                LedgerAccount.currency,
                LedgerAccount.book,
                LedgerAccount.debits_posted,
                LedgerAccount.debits_posted_hi,
                LedgerAccount.credits_posted,
                LedgerAccount.credits_posted_hi,
            )
            .where(_key_filter(keys))
            .order_by(*_lock_order())
            .with_for_update()
        )
    )
    ids: dict[AccountKey, int] = {}
    totals: dict[AccountKey, tuple[int, int]] = {}
    for acc_id, owner, kind, currency, book, dlo, dhi, clo, chi in locked:
        key = AccountKey(owner, kind, currency, book)
        ids[key] = acc_id
        d, c = changes[key]
        debits, credits = joined(dlo, dhi) + d, joined(clo, chi) + c
        if max(debits, credits) // BASE > MAX_HI:
            raise LedgerStorageLimit(
                f"{key} cannot record more turnover: its sums are at their storage limit"
            )
        totals[key] = (debits, credits)
        if key.merchant_id is not None and domain.normal_balance(kind, d, c) < 0:
            if domain.normal_balance(kind, debits, credits) < 0:
                have = domain.normal_balance(kind, joined(dlo, dhi), joined(clo, chi))
                raise InsufficientBalance(
                    f"merchant {key.merchant_id} has {_money(have, currency)} {currency} {kind} "
                    f"in the {book} book, less than the "
                    f"{_money(-domain.normal_balance(kind, d, c), currency)} needed"
                )
    await session.execute(
        insert(LedgerEntry),
        [
            {
                "transaction_id": tx.id,
                "account_id": ids[p.account],
                "debit": p.debit,
                "credit": p.credit,
                "currency": p.currency,
                "created_at": now,
            }
            for p in draft.postings
        ],
    )
    # The rows are locked: the new sums are written whole, split into their two halves.
    await session.execute(
        update(_accounts)
        .where(_accounts.c.id == bindparam("acc_id"))
        .values(
            debits_posted=bindparam("dlo", type_=_accounts.c.debits_posted.type),
            debits_posted_hi=bindparam("dhi", type_=_accounts.c.debits_posted_hi.type),
            credits_posted=bindparam("clo", type_=_accounts.c.credits_posted.type),
            credits_posted_hi=bindparam("chi", type_=_accounts.c.credits_posted_hi.type),
            version=_accounts.c.version + 1,
            updated_at=bindparam("now", type_=_accounts.c.updated_at.type),
        ),
        [
            {
                "acc_id": ids[k],
                "dlo": d % BASE,
                "dhi": d // BASE,
                "clo": c % BASE,
                "chi": c // BASE,
                "now": now,
            }
            for k, (d, c) in totals.items()
        ],
    )
    return tx


def _sums_columns() -> tuple[Any, ...]:
    return (
        LedgerAccount.debits_posted,
        LedgerAccount.debits_posted_hi,
        LedgerAccount.credits_posted,
        LedgerAccount.credits_posted_hi,
    )


async def balance(
    session: AsyncSession, owner: str, kind: str, currency: str, book: domain.Book = domain.Book.LIVE
) -> int:
    row = (
        await session.execute(
            select(*_sums_columns()).where(
                LedgerAccount.owner == owner,
                LedgerAccount.kind == kind,
                LedgerAccount.currency == currency,
                LedgerAccount.book == book.value,
            )
        )
    ).first()
    return 0 if row is None else domain.normal_balance(kind, joined(row[0], row[1]), joined(row[2], row[3]))


async def ensure_available(
    session: AsyncSession, merchant_id: int, currency: str, amount: int, book: domain.Book
) -> int:
    """Lock the merchant's available account in `book` and refuse unless it holds `amount`; returns
    the balance.

    The lock is held to the end of the transaction, so a post that follows sees the same balance."""
    owner = domain.merchant_owner(merchant_id)
    row = (
        await session.execute(
            select(*_sums_columns())
            .where(
                LedgerAccount.owner == owner,
                LedgerAccount.kind == domain.Kind.AVAILABLE.value,
                LedgerAccount.currency == currency,
                LedgerAccount.book == book.value,
            )
            .with_for_update()
        )
    ).first()
    have = (
        0
        if row is None
        else domain.normal_balance(domain.Kind.AVAILABLE, joined(row[0], row[1]), joined(row[2], row[3]))
    )
    if have < amount:
        raise InsufficientBalance(
            f"merchant {merchant_id} has {_money(have, currency)} {currency} available in the "
            f"{book.value} book, less than {_money(amount, currency)}"
        )
    return have


async def balances(
    session: AsyncSession, merchant_id: int | None = None, *, book: domain.Book | None = None
) -> list[AccountBalance]:
    """Every account's balance, live book first; one merchant's, or one book's, when asked."""
    stmt = select(
        LedgerAccount.owner, LedgerAccount.kind, LedgerAccount.currency, LedgerAccount.book, *_sums_columns()
    ).order_by(LedgerAccount.book, LedgerAccount.owner, LedgerAccount.kind, LedgerAccount.currency)
    if merchant_id is not None:
        stmt = stmt.where(LedgerAccount.owner == domain.merchant_owner(merchant_id))
    if book is not None:
        stmt = stmt.where(LedgerAccount.book == book.value)
    out = []
    for o, k, c, b, dlo, dhi, clo, chi in await session.execute(stmt):
        d, cr = joined(dlo, dhi), joined(clo, chi)
        out.append(AccountBalance(o, k, c, b, d, cr, domain.normal_balance(k, d, cr)))
    return out


def _exact(value: Any) -> int | None:
    """A stored integer as an int; None when the database holds something else (a float)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def split_sum(column: Any) -> tuple[Any, Any]:
    """SUM() of a BIGINT column in two parts, each far from 64 bits; `unsplit` joins them exactly."""
    return func.sum(column // _SPLIT), func.sum(column % _SPLIT)


def unsplit(hi: Any, lo: Any) -> int:
    return int(hi or 0) * _SPLIT + int(lo or 0)


async def _guarded(
    session: AsyncSession, what: str, problems: list[str], run: Callable[[], Awaitable[None]]
) -> None:
    """Run one part of the check; a part the database cannot answer is reported, not raised."""
    try:
        async with session.begin_nested():
            await run()
    except (SQLAlchemyError, ArithmeticError, ValueError, TypeError) as exc:
        problems.append(f"could not check {what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


async def check_books(session: AsyncSession) -> dict[str, list[str]]:
    """Recompute each book from its entries; per book, each problem found is one line.

    Sums are computed in two parts, so a corrupt or oversized amount is reported, never raised."""
    found: dict[str, list[str]] = {b.value: [] for b in domain.Book}
    general: list[str] = []
    e, t, a = LedgerEntry, LedgerTransaction, LedgerAccount

    def add(book: str, line: str) -> None:
        found.setdefault(book, []).append(line)

    async def unbalanced() -> None:
        dh, dl = split_sum(e.debit)
        ch, cl = split_sum(e.credit)
        rows = await session.execute(
            select(t.id, t.reason, t.object_type, t.object_id, a.book, e.currency, dh, dl, ch, cl)
            .join(e, e.transaction_id == t.id)
            .join(a, a.id == e.account_id)
            .group_by(t.id, t.reason, t.object_type, t.object_id, a.book, e.currency)
            .having(or_(dh != ch, dl != cl))
            .order_by(t.id)
        )
        for tx_id, reason, otype, oid, book, cur, *parts in rows:
            d, c = unsplit(parts[0], parts[1]), unsplit(parts[2], parts[3])
            if d != c:
                add(
                    book,
                    f"transaction {tx_id} ({reason} {otype} {oid}) does not balance in {cur}: "
                    f"debits {_money(d, cur)}, credits {_money(c, cur)}",
                )

    async def mixed() -> None:
        rows = await session.execute(
            select(e.transaction_id)
            .join(a, a.id == e.account_id)
            .group_by(e.transaction_id)
            .having(func.count(func.distinct(a.book)) > 1)
            .order_by(e.transaction_id)
        )
        for (tx_id,) in rows:
            general.append(f"transaction {tx_id} has entries in both the test and the live book")

    async def lonely() -> None:
        rows = await session.execute(
            select(t.id, t.reason, func.count(e.id))
            .outerjoin(e, e.transaction_id == t.id)
            .group_by(t.id, t.reason)
            .having(func.count(e.id) < 2)
            .order_by(t.id)
        )
        for tx_id, reason, n in rows:
            general.append(f"transaction {tx_id} ({reason}) has {n} entries")

    async def odd() -> None:
        rows = await session.execute(
            select(e.id, e.transaction_id, a.book, e.currency, a.currency, e.debit, e.credit)
            .join(a, a.id == e.account_id)
            .where(
                or_(
                    e.currency != a.currency,
                    e.debit < 0,
                    e.credit < 0,
                    and_(e.debit == 0, e.credit == 0),
                    and_(e.debit != 0, e.credit != 0),
                    e.debit > domain.MAX_LEG,
                    e.credit > domain.MAX_LEG,
                )
            )
            .order_by(e.id)
        )
        for entry_id, tx_id, book, entry_cur, acc_cur, d, c in rows:
            add(
                book,
                f"entry {entry_id} of transaction {tx_id} is malformed: {entry_cur} on a {acc_cur} "
                f"account, debit {d}, credit {c}",
            )

    async def accounts() -> None:
        dh, dl = split_sum(e.debit)
        ch, cl = split_sum(e.credit)
        sums = (
            select(e.account_id, dh.label("dh"), dl.label("dl"), ch.label("ch"), cl.label("cl"))
            .group_by(e.account_id)
            .subquery()
        )
        rows = await session.execute(
            select(
                a.owner,
                a.kind,
                a.currency,
                a.book,
                *_sums_columns(),
                a.debits_pending,
                a.credits_pending,
                sums.c.dh,
                sums.c.dl,
                sums.c.ch,
                sums.c.cl,
            )
            .outerjoin(sums, sums.c.account_id == a.id)
            .order_by(a.book, a.owner, a.kind, a.currency)
        )
        for owner, kind, cur, book, dlo, dhi, clo, chi, dpend, cpend, edh, edl, ech, ecl in rows:
            name = f"{owner} {kind} {cur}"
            d, c = unsplit(edh, edl), unsplit(ech, ecl)
            stored = [_exact(v) for v in (dlo, dhi, clo, chi)]
            if None in stored:
                add(book, f"{name}: stored sums {dlo}/{dhi}/{clo}/{chi} are not exact integers")
            elif not (0 <= int(dlo) < BASE and 0 <= int(clo) < BASE and int(dhi) >= 0 and int(chi) >= 0):
                add(book, f"{name}: stored sums {dlo}/{dhi}/{clo}/{chi} are out of range")
            elif (joined(dlo, dhi), joined(clo, chi)) != (d, c):
                add(
                    book,
                    f"{name}: cached debits/credits {_money(joined(dlo, dhi), cur)}/"
                    f"{_money(joined(clo, chi), cur)} differ from its entries {_money(d, cur)}/"
                    f"{_money(c, cur)}",
                )
            if dpend or cpend:
                add(book, f"{name}: pending amounts {dpend}/{cpend} without pending transfers")
            if domain.owner_merchant_id(owner) is not None and domain.normal_balance(kind, d, c) < 0:
                add(book, f"{name} is negative: {_money(domain.normal_balance(kind, d, c), cur)}")

    await _guarded(session, "that transactions balance", general, unbalanced)
    await _guarded(session, "that transactions stay in one book", general, mixed)
    await _guarded(session, "that transactions have two legs", general, lonely)
    await _guarded(session, "the entries' form", general, odd)
    await _guarded(session, "the accounts' sums", general, accounts)
    if general:
        found["both"] = general
    return found


async def check(session: AsyncSession) -> list[str]:
    """Every problem `check_books` finds, each line naming its book; none means consistent."""
    return [
        f"{'both books' if book == 'both' else book + ' book'}: {line}"
        for book, lines in (await check_books(session)).items()
        for line in lines
    ]


# --- business movements ----------------------------------------------------------------------


@dataclass(frozen=True)
class Booking:
    """What a status change means for the ledger: columns stored with the change, then postings."""

    values: dict[str, Any] = field(default_factory=dict)
    postings: tuple[tuple[LedgerTransactionDraft, str, str], ...] = ()

    async def post(self, session: AsyncSession, now: datetime) -> None:
        for draft, object_type, object_id in self.postings:
            await post(session, draft, object_type=object_type, object_id=object_id, now=now)


async def book_payment_transition(
    session: AsyncSession,
    payment: Payment,
    target: PaymentStatus,
    changes: dict[str, Any],
    *,
    reversal: bool = False,
) -> Booking:
    """Called before the payment's row changes (the caller holds its lock); `payment` is still the
    old state and `changes` the new column values. `reversal`: a refund of everything left that undoes
    the payment as a whole, fee included (a rejected result, a chargeback). A test payment posts to
    the test book, a live one to the live book."""
    book = domain.book_of(payment.testing)
    if target is PaymentStatus.OK:
        system = await fees.payment_system_of(session, payment)
        fee = await fees.fee_for(session, payment.merchant_id, system, payment.amount, payment.currency)
        if payment.two_step:
            # The fee is charged when the authorisation is captured.
            draft = domain.payment_authorized(
                payment.merchant_id, payment.amount, payment.currency, book=book
            )
        else:
            draft = domain.payment_succeeded(
                payment.merchant_id, payment.amount, payment.currency, fee, book=book
            )
        return Booking({"fee_amount": fee}, ((draft, "payment", str(payment.id)),))
    if target is PaymentStatus.REVOKED:
        refunded = int(changes.get("refunded_amount", payment.refunded_amount))
        delta = refunded - payment.refunded_amount
        if delta <= 0:
            return Booking()
        if payment.two_step and not payment.captured:
            draft = domain.payment_voided(payment.merchant_id, delta, payment.currency, book=book)
        elif reversal:
            draft = domain.payment_reversed(
                payment.merchant_id,
                refunded,
                payment.currency,
                payment.fee_amount,
                refunded=payment.refunded_amount,
                book=book,
            )
        else:
            await ensure_available(session, payment.merchant_id, payment.currency, delta, book)
            draft = domain.payment_refunded(payment.merchant_id, delta, payment.currency, book=book)
        # One transaction per step of the refunded total, so partial refunds each post once.
        return Booking({}, ((draft, "payment_refund", f"{payment.id}:{refunded}"),))
    if target is PaymentStatus.CANCELED and payment.status == PaymentStatus.OK.value:
        # cancel.php on an authorised, uncaptured two-step payment releases the authorisation.
        if not payment.two_step or payment.captured:
            raise StateForbids("only an authorisation not captured yet can be canceled after payment")
        draft = domain.payment_voided(payment.merchant_id, payment.amount, payment.currency, book=book)
        return Booking({}, ((draft, "payment", str(payment.id)),))
    return Booking()


async def post_order_transition(
    session: AsyncSession, order: ExchangeOrder, target: OrderStatus, now: datetime
) -> None:
    """Called after the order's row changed (the caller holds its lock)."""
    if target is OrderStatus.PAYED:
        fiat = order.paid_amount if order.paid_amount is not None else order.amount_payable
        draft = domain.exchange_order_paid(fiat, order.currency, order.amount_receivable, order.exchange_rate)
    elif target is OrderStatus.COMPLETED and order.amount_receivable > 0:
        draft = domain.exchange_order_completed(order.amount_receivable)
    else:
        return
    await post(session, draft, object_type="exchange_order", object_id=str(order.id), now=now)
