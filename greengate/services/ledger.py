"""The ledger: posting balanced transactions, reading balances, and checking the books.

Everything runs in the caller's transaction. Accounts are created on first use. A post locks the
accounts it touches (SELECT ... FOR UPDATE on PostgreSQL; SQLite's single writer does the same) in
one stable order — the merchants' accounts by id, then the gateway's by id — so a guard that locked
a merchant's account first (`ensure_available`) keeps that order, and the hot gateway accounts are
held for the shortest time. Entries are only ever inserted; the account rows cache their sums.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain import ledger as domain
from greengate.domain.errors import StateForbids
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
    debits_posted: int
    credits_posted: int
    balance: int  # on the account's normal side, minor units


def _money(minor: int, currency: str) -> str:
    return format_minor(minor, currency) if currency in EXPONENTS else str(minor)


def _key_filter(keys: list[AccountKey]) -> Any:
    return or_(
        *(
            and_(
                LedgerAccount.owner == k.owner,
                LedgerAccount.kind == k.kind,
                LedgerAccount.currency == k.currency,
            )
            for k in keys
        )
    )


async def _ensure_accounts(session: AsyncSession, keys: list[AccountKey], now: datetime) -> None:
    """Insert the accounts that do not exist yet; a concurrent insert of the same account is a no-op."""
    rows = await session.execute(
        select(LedgerAccount.owner, LedgerAccount.kind, LedgerAccount.currency).where(_key_filter(keys))
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
                debits_posted=0,
                credits_posted=0,
                debits_pending=0,
                credits_pending=0,
                version=1,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["owner", "kind", "currency"])
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
            LedgerEntry.debit,
            LedgerEntry.credit,
        )
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .where(LedgerEntry.transaction_id == transaction_id)
        .order_by(LedgerEntry.id)
    )
    return [(AccountKey(o, k, c), int(d), int(cr)) for o, k, c, d, cr in rows]


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
    transaction already posted. Merchant accounts may not go negative (InsufficientBalance)."""
    existing = await _find(session, object_type, object_id, draft.reason)
    if existing is not None:
        return await _same_or_conflict(session, existing, draft)
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
                LedgerAccount.debits_posted,
                LedgerAccount.credits_posted,
            )
            .where(_key_filter(keys))
            .order_by(*_lock_order())
            .with_for_update()
        )
    )
    ids: dict[AccountKey, int] = {}
    changes = draft.changes()
    for acc_id, owner, kind, currency, debits, credits in locked:
        key = AccountKey(owner, kind, currency)
        ids[key] = acc_id
        d, c = changes[key]
        if key.merchant_id is not None and domain.normal_balance(kind, d, c) < 0:
            have = domain.normal_balance(kind, int(debits), int(credits))
            if have + domain.normal_balance(kind, d, c) < 0:
                raise InsufficientBalance(
                    f"merchant {key.merchant_id} has {_money(have, currency)} {currency} {kind}, "
                    f"less than the {_money(-domain.normal_balance(kind, d, c), currency)} needed"
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
    await session.execute(
        update(_accounts)
        .where(_accounts.c.id == bindparam("acc_id"))
        .values(
            debits_posted=_accounts.c.debits_posted + bindparam("d"),
            credits_posted=_accounts.c.credits_posted + bindparam("c"),
            version=_accounts.c.version + 1,
            updated_at=bindparam("now", type_=_accounts.c.updated_at.type),
        ),
        [{"acc_id": ids[k], "d": d, "c": c, "now": now} for k, (d, c) in changes.items()],
    )
    return tx


async def balance(session: AsyncSession, owner: str, kind: str, currency: str) -> int:
    row = (
        await session.execute(
            select(LedgerAccount.debits_posted, LedgerAccount.credits_posted).where(
                LedgerAccount.owner == owner, LedgerAccount.kind == kind, LedgerAccount.currency == currency
            )
        )
    ).first()
    return 0 if row is None else domain.normal_balance(kind, int(row[0]), int(row[1]))


async def ensure_available(session: AsyncSession, merchant_id: int, currency: str, amount: int) -> int:
    """Lock the merchant's available account and refuse unless it holds `amount`; returns the balance.

    The lock is held to the end of the transaction, so a post that follows sees the same balance."""
    owner = domain.merchant_owner(merchant_id)
    row = (
        await session.execute(
            select(LedgerAccount.debits_posted, LedgerAccount.credits_posted)
            .where(
                LedgerAccount.owner == owner,
                LedgerAccount.kind == domain.Kind.AVAILABLE.value,
                LedgerAccount.currency == currency,
            )
            .with_for_update()
        )
    ).first()
    have = 0 if row is None else domain.normal_balance(domain.Kind.AVAILABLE, int(row[0]), int(row[1]))
    if have < amount:
        raise InsufficientBalance(
            f"merchant {merchant_id} has {_money(have, currency)} {currency} available, "
            f"less than {_money(amount, currency)}"
        )
    return have


async def balances(session: AsyncSession, merchant_id: int | None = None) -> list[AccountBalance]:
    stmt = select(
        LedgerAccount.owner,
        LedgerAccount.kind,
        LedgerAccount.currency,
        LedgerAccount.debits_posted,
        LedgerAccount.credits_posted,
    ).order_by(LedgerAccount.owner, LedgerAccount.kind, LedgerAccount.currency)
    if merchant_id is not None:
        stmt = stmt.where(LedgerAccount.owner == domain.merchant_owner(merchant_id))
    return [
        AccountBalance(o, k, c, int(d), int(cr), domain.normal_balance(k, int(d), int(cr)))
        for o, k, c, d, cr in await session.execute(stmt)
    ]


async def check(session: AsyncSession) -> list[str]:
    """Recompute the books from the entries; each problem found is one line, none means consistent."""
    problems: list[str] = []
    e, t, a = LedgerEntry, LedgerTransaction, LedgerAccount
    unbalanced = await session.execute(
        select(t.id, t.reason, t.object_type, t.object_id, e.currency, func.sum(e.debit), func.sum(e.credit))
        .join(e, e.transaction_id == t.id)
        .group_by(t.id, t.reason, t.object_type, t.object_id, e.currency)
        .having(func.sum(e.debit) != func.sum(e.credit))
        .order_by(t.id)
    )
    for tx_id, reason, otype, oid, cur, d, c in unbalanced:
        problems.append(
            f"transaction {tx_id} ({reason} {otype} {oid}) does not balance in {cur}: "
            f"debits {_money(int(d), cur)}, credits {_money(int(c), cur)}"
        )
    lonely = await session.execute(
        select(t.id, t.reason, func.count(e.id))
        .outerjoin(e, e.transaction_id == t.id)
        .group_by(t.id, t.reason)
        .having(func.count(e.id) < 2)
        .order_by(t.id)
    )
    for tx_id, reason, n in lonely:
        problems.append(f"transaction {tx_id} ({reason}) has {n} entries")
    odd = await session.execute(
        select(e.id, e.transaction_id, e.currency, a.currency, e.debit, e.credit)
        .join(a, a.id == e.account_id)
        .where(
            or_(
                e.currency != a.currency,
                e.debit < 0,
                e.credit < 0,
                and_(e.debit == 0, e.credit == 0),
                and_(e.debit != 0, e.credit != 0),
            )
        )
        .order_by(e.id)
    )
    for entry_id, tx_id, entry_cur, acc_cur, d, c in odd:
        problems.append(
            f"entry {entry_id} of transaction {tx_id} is malformed: {entry_cur} on a {acc_cur} account, "
            f"debit {d}, credit {c}"
        )
    sums = (
        select(e.account_id, func.sum(e.debit).label("d"), func.sum(e.credit).label("c"))
        .group_by(e.account_id)
        .subquery()
    )
    accounts = await session.execute(
        select(
            a.owner,
            a.kind,
            a.currency,
            a.debits_posted,
            a.credits_posted,
            a.debits_pending,
            a.credits_pending,
            func.coalesce(sums.c.d, 0),
            func.coalesce(sums.c.c, 0),
        )
        .outerjoin(sums, sums.c.account_id == a.id)
        .order_by(a.owner, a.kind, a.currency)
    )
    for owner, kind, cur, dp, cp, dpend, cpend, d, c in accounts:
        name = f"{owner} {kind} {cur}"
        d, c = int(d), int(c)
        if (int(dp), int(cp)) != (d, c):
            problems.append(
                f"{name}: cached debits/credits {_money(int(dp), cur)}/{_money(int(cp), cur)} "
                f"differ from its entries {_money(d, cur)}/{_money(c, cur)}"
            )
        if int(dpend) or int(cpend):
            problems.append(f"{name}: pending amounts {dpend}/{cpend} without pending transfers")
        if domain.owner_merchant_id(owner) is not None and domain.normal_balance(kind, d, c) < 0:
            problems.append(f"{name} is negative: {_money(domain.normal_balance(kind, d, c), cur)}")
    return problems


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
    the payment as a whole, fee included (a rejected result, a chargeback)."""
    if target is PaymentStatus.OK:
        system = await fees.payment_system_of(session, payment)
        fee = await fees.fee_for(session, payment.merchant_id, system, payment.amount, payment.currency)
        if payment.two_step:
            # The fee is charged when the authorisation is captured.
            draft = domain.payment_authorized(payment.merchant_id, payment.amount, payment.currency)
        else:
            draft = domain.payment_succeeded(payment.merchant_id, payment.amount, payment.currency, fee)
        return Booking({"fee_amount": fee}, ((draft, "payment", str(payment.id)),))
    if target is PaymentStatus.REVOKED:
        refunded = int(changes.get("refunded_amount", payment.refunded_amount))
        delta = refunded - payment.refunded_amount
        if delta <= 0:
            return Booking()
        if payment.two_step and not payment.captured:
            draft = domain.payment_voided(payment.merchant_id, delta, payment.currency)
        elif reversal:
            draft = domain.payment_reversed(
                payment.merchant_id,
                refunded,
                payment.currency,
                payment.fee_amount,
                refunded=payment.refunded_amount,
            )
        else:
            await ensure_available(session, payment.merchant_id, payment.currency, delta)
            draft = domain.payment_refunded(payment.merchant_id, delta, payment.currency)
        # One transaction per step of the refunded total, so partial refunds each post once.
        return Booking({}, ((draft, "payment_refund", f"{payment.id}:{refunded}"),))
    if target is PaymentStatus.CANCELED and payment.status == PaymentStatus.OK.value:
        # cancel.php on an authorised, uncaptured two-step payment releases the authorisation.
        if not payment.two_step or payment.captured:
            raise StateForbids("only an authorisation not captured yet can be canceled after payment")
        draft = domain.payment_voided(payment.merchant_id, payment.amount, payment.currency)
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
