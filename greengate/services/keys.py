"""The keys the stored data needs: recorded in the database by id and check value, compared with the
process's keyring before it works, and moved to the current key by rotation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.security.encryption import DecryptionError, Keyring, create_key_file, key_id_of
from greengate.services import merchants, payment_flow, payouts, requisites, saved_cards
from greengate.settings import Settings
from greengate.store.models import EncryptionKey, Merchant, PaymentAttempt, Payout, Requisite, SavedCard


class KeyProblem(Exception):
    """The keyring cannot read this database's data: `code` names the case, the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class EncryptedColumn:
    column: InstrumentedAttribute[Any]
    associated: Callable[[int], str]

    @property
    def label(self) -> str:
        return f"{self.column.class_.__tablename__}.{self.column.key}"


ENCRYPTED_COLUMNS = (
    EncryptedColumn(Merchant.secret_key_enc, lambda i: merchants.column_aad(i, "secret_key")),
    EncryptedColumn(Merchant.payout_secret_enc, lambda i: merchants.column_aad(i, "payout_secret")),
    EncryptedColumn(Merchant.webhook_secret_enc, lambda i: merchants.column_aad(i, "webhook_secret")),
    EncryptedColumn(Requisite.number_enc, requisites.number_aad),
    EncryptedColumn(PaymentAttempt.card_enc, payment_flow.card_aad),
    EncryptedColumn(SavedCard.pan_enc, saved_cards.pan_aad),
    EncryptedColumn(Payout.card_enc, payouts.card_aad),
)


@dataclass(frozen=True)
class KeyState:
    kid: str
    needed: bool  # the database records it
    in_keyring: bool
    matches: bool | None  # None when one side lacks it
    primary: bool


def _fix_hint(key_source: str) -> str:
    return f"put the key this database was encrypted with back into {key_source}"


async def registered_keys(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(select(EncryptionKey.kid, EncryptionKey.check_value))
    return {kid: check for kid, check in rows}


async def key_states(session: AsyncSession, keyring: Keyring) -> list[KeyState]:
    needed = await registered_keys(session)
    primary = keyring.keys[0][0] if keyring.keys else None
    kids = list(needed) + [kid for kid, _ in keyring.keys if kid not in needed]
    return [
        KeyState(
            kid=kid,
            needed=kid in needed,
            in_keyring=keyring.check_value(kid) is not None,
            matches=(keyring.check_value(kid) == needed[kid])
            if kid in needed and keyring.check_value(kid) is not None
            else None,
            primary=kid == primary,
        )
        for kid in kids
    ]


def problem_of(states: list[KeyState], key_source: str) -> KeyProblem | None:
    """The first reason the keyring cannot serve this database, or None."""
    for state in states:
        if state.needed and not state.in_keyring:
            return KeyProblem(
                "encryption_key_missing",
                f"the database needs encryption key {state.kid!r}, which {key_source} lacks; "
                + _fix_hint(key_source),
            )
        if state.matches is False:
            return KeyProblem(
                "encryption_key_mismatch",
                f"encryption key {state.kid!r} in {key_source} is not the key this database was "
                f"encrypted with (its check value differs); {_fix_hint(key_source)}",
            )
    return None


async def verify(session: AsyncSession, keyring: Keyring, key_source: str) -> KeyProblem | None:
    return problem_of(await key_states(session, keyring), key_source)


async def _ciphertexts(session: AsyncSession) -> AsyncIterator[tuple[EncryptedColumn, int, str]]:
    for enc in ENCRYPTED_COLUMNS:
        model = enc.column.class_
        rows = await session.execute(select(model.id, enc.column).where(enc.column.is_not(None)))
        for row_id, token in rows:
            if token:
                yield enc, row_id, token


async def adopt(session: AsyncSession, keyring: Keyring, key_source: str, *, now: datetime) -> None:
    """Record the keys the data needs, with the keyring's check values: the keyring's current key, and
    for data written before keys were recorded, every key found in it (each proven by decrypting one
    value with it). Keys already recorded are compared, never replaced."""
    needed = await registered_keys(session)
    problem = problem_of(await key_states(session, keyring), key_source)
    if problem is not None:
        raise problem
    if not keyring.keys:
        raise KeyProblem("no_encryption_key", f"no encryption key: set one in {key_source}")
    found: dict[str, tuple[EncryptedColumn, int, str]] = {}
    if not needed:
        async for enc, row_id, token in _ciphertexts(session):
            found.setdefault(key_id_of(token), (enc, row_id, token))
    for kid, (enc, row_id, token) in found.items():
        if keyring.check_value(kid) is None:
            raise KeyProblem(
                "encryption_key_missing",
                f"{enc.label} {row_id} is encrypted with key {kid!r}, which {key_source} lacks; "
                + _fix_hint(key_source),
            )
        try:
            keyring.decrypt(token, enc.associated(row_id))
        except DecryptionError:
            raise KeyProblem(
                "encryption_key_mismatch",
                f"encryption key {kid!r} in {key_source} does not decrypt {enc.label} {row_id}; "
                + _fix_hint(key_source),
            ) from None
    for kid in {keyring.keys[0][0], *found} - set(needed):
        check = keyring.check_value(kid)
        assert check is not None
        session.add(EncryptionKey(kid=kid, check_value=check, registered_at=now))
    await session.flush()


@dataclass(frozen=True)
class Rotation:
    reencrypted: dict[str, int]
    retired: list[str]


async def rotate(session: AsyncSession, keyring: Keyring, *, now: datetime, batch: int = 500) -> Rotation:
    """Re-encrypt every encrypted value not under the keyring's current key, recompute the requisites'
    lookup digests under it, and stop recording keys no data needs any more."""
    counts: dict[str, int] = {}
    primary = keyring.primary
    for enc in ENCRYPTED_COLUMNS:
        model = enc.column.class_
        after, done = 0, 0
        while True:
            rows = list(
                await session.scalars(
                    select(model)
                    .where(enc.column.is_not(None), model.id > after)
                    .order_by(model.id)
                    .limit(batch)
                    .with_for_update()
                )
            )
            if not rows:
                break
            for row in rows:
                token = getattr(row, enc.column.key)
                if token and keyring.needs_rotation(token):
                    aad = enc.associated(row.id)
                    plain = keyring.decrypt(token, aad)
                    setattr(row, enc.column.key, keyring.encrypt(plain, aad))
                    if isinstance(row, Requisite):
                        row.number_digest = requisites.number_digest(keyring, plain)
                    done += 1
            after = rows[-1].id
            await session.flush()
        counts[enc.label] = done
    registered = await registered_keys(session)
    retired = sorted(kid for kid in registered if kid != primary)
    if primary not in registered:
        check = keyring.check_value(primary)
        assert check is not None
        session.add(EncryptionKey(kid=primary, check_value=check, registered_at=now))
    if retired:
        await session.execute(delete(EncryptionKey).where(EncryptionKey.kid.in_(retired)))
    await session.flush()
    return Rotation(counts, retired)


async def _has_ciphertext(session: AsyncSession) -> bool:
    for enc in ENCRYPTED_COLUMNS:
        if await session.scalar(select(enc.column).where(enc.column.is_not(None)).limit(1)) is not None:
            return True
    return False


async def prepare(rt: Runtime) -> None:
    """Before a process works: make the key file for a database that needs no key yet (no key
    configured, none recorded, nothing encrypted), then check and record the keyring (`adopt`).
    Raises KeyProblem when the keyring cannot serve the database."""
    for attempt in range(2):
        try:
            async with rt.db.transaction() as session:
                if (
                    not rt.keyring.keys
                    and not rt.settings.encryption_keys.strip()
                    and not await registered_keys(session)
                    and not await _has_ciphertext(session)
                ):
                    path = rt.settings.key_file()
                    try:
                        rt.keyring = create_key_file(path)
                    except FileExistsError:  # another process made it first
                        rt.keyring = Keyring.from_settings("", str(path))
                await adopt(session, rt.keyring, key_source(rt.settings), now=utcnow())
            return
        except IntegrityError:  # another process recorded the same key at the same moment: compare again
            if attempt:
                raise


def key_source(settings: Settings) -> str:
    if settings.encryption_keys.strip():
        return "GREENGATE_ENCRYPTION_KEYS"
    return f"the key file {settings.key_file()}"
