"""Operator's card requisites: storage (number encrypted) and allocation to exchange orders."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time

from sqlalchemy import ColumnElement, String, and_, bindparam, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.cards import mask_number, normalize_number
from greengate.domain.errors import InvalidRequest, NotFound
from greengate.domain.exchange import OrderStatus
from greengate.security.encryption import Keyring
from greengate.services.audit import record_audit
from greengate.store.links import Link, Row
from greengate.store.models import ExchangeOrder, Requisite


def _status_in(*statuses: OrderStatus) -> ColumnElement[bool]:
    """The order's status among these, with the values written into the SQL, not bound: only then can
    a prepared statement's generic plan (PostgreSQL's choice after five runs, the links' always) prove
    the predicate of a partial index, such as the one of awaiting orders, and read it."""
    values = [literal_column(f"'{status.value}'", String) for status in statuses]
    return ExchangeOrder.status == values[0] if len(values) == 1 else ExchangeOrder.status.in_(values)


def is_awaiting() -> ColumnElement[bool]:
    return _status_in(OrderStatus.AWAITING)


# The orders whose amounts count towards a requisite's turnover.
COUNTS_TOWARDS_LIMITS = _status_in(OrderStatus.AWAITING, OrderStatus.PAYED, OrderStatus.COMPLETED)


def _day_start(now: datetime) -> datetime:
    """The start of `now`'s day: a daily limit counts the orders created since."""
    return datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)


def number_aad(requisite_id: int) -> str:
    return f"requisites:{requisite_id}:number"


def number_digest(keyring: Keyring, number: str) -> str:
    # Keyed with the current encryption key so the digest does not reveal the number by brute force.
    return hmac.new(keyring.keys[0][1], normalize_number(number).encode(), hashlib.sha256).hexdigest()


async def add_requisite(
    session: AsyncSession,
    keyring: Keyring,
    *,
    payment_method: str,
    number: str,
    bank: str,
    holder: str,
    daily_limit: int | None,
    turnover_limit: int | None,
    now: datetime,
    actor: str = "cli",
) -> Requisite:
    digits = normalize_number(number)
    if not 10 <= len(digits) <= 19:
        raise InvalidRequest(
            "requisite number must be a card or phone number of 10-19 digits", field="number"
        )
    for name, limit in (("daily_limit", daily_limit), ("turnover_limit", turnover_limit)):
        if limit is not None and limit <= 0:
            raise InvalidRequest(f"{name} must be positive", field=name)
    req = Requisite(
        payment_method=payment_method,
        number_enc="",
        number_masked=mask_number(digits),
        number_digest=number_digest(keyring, digits),
        bank=bank,
        holder=holder,
        active=True,
        daily_limit=daily_limit,
        turnover_limit=turnover_limit,
        created_at=now,
        updated_at=now,
    )
    session.add(req)
    await session.flush()
    req.number_enc = keyring.encrypt(digits, number_aad(req.id))
    await record_audit(
        session,
        actor=actor,
        action="requisite.add",
        obj=("requisite", req.id),
        before=None,
        after={"payment_method": payment_method, "number": req.number_masked, "bank": bank},
        now=now,
    )
    return req


async def set_requisite_active(
    session: AsyncSession, requisite_id: int, active: bool, *, now: datetime, actor: str = "cli"
) -> Requisite:
    req = await session.scalar(select(Requisite).where(Requisite.id == requisite_id).with_for_update())
    if req is None:
        raise NotFound(f"requisite {requisite_id} not found")
    before = req.active
    req.active, req.updated_at = active, now
    await record_audit(
        session,
        actor=actor,
        action="requisite.enable" if active else "requisite.disable",
        obj=("requisite", req.id),
        before={"active": before},
        after={"active": active},
        now=now,
    )
    return req


async def requisite_numbers(session: AsyncSession, keyring: Keyring, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(select(Requisite.id, Requisite.number_enc).where(Requisite.id.in_(ids)))
    return {rid: decrypt_number(keyring, rid, enc) for rid, enc in rows}


# Every order shown names its card, and an operator has tens of cards: their numbers (handed to payers
# anyway) are kept decrypted in memory, keyed by the ciphertext, so a re-encrypted card is decrypted anew.
@functools.lru_cache(maxsize=4096)
def decrypt_number(keyring: Keyring, requisite_id: int, number_enc: str) -> str:
    return keyring.decrypt(number_enc, number_aad(requisite_id))


async def find_by_number(session: AsyncSession, keyring: Keyring, number: str) -> Requisite | None:
    return await session.scalar(
        select(Requisite).where(Requisite.number_digest == number_digest(keyring, number))
    )


@dataclass(frozen=True)
class Candidate:
    id: int
    daily_limit: int | None
    turnover_limit: int | None
    number_enc: str = ""  # read along, so that the chosen card's number needs no query of its own


# Statements built once (building one costs more than running its cached compiled form); the values
# are bound per use. A batch of the method's active cards, in turn from the one after `after` (the
# last card this process assigned) and round again, each with the amounts of a range its awaiting
# orders hold (a range probe of the partial (requisite, amount) index): one row per card and taken
# amount, or one with a null amount for a card with none taken.
_TURN = Requisite.id <= bindparam("after")
CARDS_IN_TURN = (
    select(Requisite.id, Requisite.daily_limit, Requisite.turnover_limit, Requisite.number_enc)
    .where(Requisite.payment_method == bindparam("payment_method"), Requisite.active.is_(True))
    .order_by(_TURN, Requisite.id)
    .limit(bindparam("batch"))
    .subquery()
)
SLOT_COLUMNS = (
    CARDS_IN_TURN.c.id.label("card_id"),
    CARDS_IN_TURN.c.daily_limit,
    CARDS_IN_TURN.c.turnover_limit,
    CARDS_IN_TURN.c.number_enc,
    ExchangeOrder.amount_payable.label("taken"),
)


def taken_between(low: ColumnElement[int], high: ColumnElement[int]) -> ColumnElement[bool]:
    """The join condition of a card's awaiting orders holding amounts within [low, high]."""
    return and_(
        ExchangeOrder.requisite_id == CARDS_IN_TURN.c.id,
        is_awaiting(),
        ExchangeOrder.amount_payable.between(low, high),
    )


_SLOTS = (
    select(*SLOT_COLUMNS)
    .select_from(CARDS_IN_TURN)
    .outerjoin(ExchangeOrder, taken_between(bindparam("low"), bindparam("high")))
)
_LOCK_CARD = select(Requisite.id).where(Requisite.id == bindparam("id")).with_for_update(skip_locked=True)
_COUNTED = (
    ExchangeOrder.requisite_id == bindparam("id"),
    COUNTS_TOWARDS_LIMITS,
    ExchangeOrder.created_at >= bindparam("since"),
)
_COUNTED_SUM = select(func.coalesce(func.sum(ExchangeOrder.amount_payable), 0).label("total")).where(
    *_COUNTED
)
ALL_CARDS = 1_000_000


async def slots(
    link: Link, payment_method: str, low: int, high: int, *, after: int, batch: int = ALL_CARDS
) -> tuple[list[Candidate], set[tuple[int, int]]]:
    """Up to `batch` of the method's active cards, in turn from the one after `after`, and the
    (card, amount) pairs within [low, high] that awaiting orders hold on them."""
    params = {"payment_method": payment_method, "low": low, "high": high, "after": after, "batch": batch}
    return gather_slots(await link.rows(_SLOTS, params), after)


def gather_slots(rows: Iterable[Row], after: int) -> tuple[list[Candidate], set[tuple[int, int]]]:
    """The cards and taken (card, amount) pairs of rows with `SLOT_COLUMNS` (a row with a null card is
    skipped), the cards in turn from the one after `after`."""
    cards: dict[int, Candidate] = {}
    taken: set[tuple[int, int]] = set()
    for r in rows:
        card_id = r["card_id"]
        if card_id is None:
            continue
        if card_id not in cards:
            cards[card_id] = Candidate(card_id, r["daily_limit"], r["turnover_limit"], r["number_enc"])
        if r["taken"] is not None:
            taken.add((card_id, r["taken"]))
    # The join keeps no order: put the cards back in turn.
    ordered = sorted(cards.values(), key=lambda c: (c.id <= after, c.id))
    return ordered, taken


async def within_limits(link: Link, cand: Candidate, amount: int, now: datetime) -> bool:
    """Turnover check under the requisite's row lock; a requisite locked by another order is skipped."""
    if cand.daily_limit is None and cand.turnover_limit is None:
        return True
    if await link.row(_LOCK_CARD, {"id": cand.id}) is None:
        return False
    for limit, since in ((cand.turnover_limit, _EPOCH), (cand.daily_limit, _day_start(now))):
        if limit is None:
            continue
        counted = await link.row(_COUNTED_SUM, {"id": cand.id, "since": since})
        if int(counted["total"] if counted else 0) + amount > limit:
            return False
    return True


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def allocation_choices(
    cands: list[Candidate], amount: int, span: int, taken: set[tuple[int, int]]
) -> Iterator[tuple[Candidate, int]]:
    """(requisite, payable amount) pairs to try: the exact amount on any card first, then shifted ones.

    Lazy: cards × span can run to hundreds of thousands of pairs, and the first free one usually wins."""
    for k in range(span + 1):
        for c in cands:
            if (c.id, amount + k) not in taken:
                yield c, amount + k


async def set_requisite_limits(
    session: AsyncSession,
    requisite_id: int,
    *,
    daily_limit: int | None,
    turnover_limit: int | None,
    now: datetime,
    actor: str = "cli",
) -> Requisite:
    """Replace a requisite's daily and turnover limits (None removes a limit)."""
    for name, limit in (("daily_limit", daily_limit), ("turnover_limit", turnover_limit)):
        if limit is not None and limit <= 0:
            raise InvalidRequest(f"{name} must be positive", field=name)
    req = await session.scalar(select(Requisite).where(Requisite.id == requisite_id).with_for_update())
    if req is None:
        raise NotFound(f"requisite {requisite_id} not found")
    before = {"daily_limit": req.daily_limit, "turnover_limit": req.turnover_limit}
    req.daily_limit, req.turnover_limit, req.updated_at = daily_limit, turnover_limit, now
    await record_audit(
        session,
        actor=actor,
        action="requisite.limits",
        obj=("requisite", req.id),
        before=before,
        after={"daily_limit": daily_limit, "turnover_limit": turnover_limit},
        now=now,
    )
    return req


async def turnover(session: AsyncSession, ids: set[int], now: datetime) -> dict[int, tuple[int, int]]:
    """requisite id → (today's, all-time) sum of payable amounts counted against its limits."""
    if not ids:
        return {}
    base = (ExchangeOrder.requisite_id.in_(ids), COUNTS_TOWARDS_LIMITS)
    total = dict(
        (
            await session.execute(
                select(ExchangeOrder.requisite_id, func.sum(ExchangeOrder.amount_payable))
                .where(*base)
                .group_by(ExchangeOrder.requisite_id)
            )
        ).all()
    )
    today = dict(
        (
            await session.execute(
                select(ExchangeOrder.requisite_id, func.sum(ExchangeOrder.amount_payable))
                .where(*base, ExchangeOrder.created_at >= _day_start(now))
                .group_by(ExchangeOrder.requisite_id)
            )
        ).all()
    )
    return {rid: (int(today.get(rid) or 0), int(total.get(rid) or 0)) for rid in ids}
