"""Encryption keys against the database: recorded with check values, refused when lost or replaced,
kept beside the embedded database, and rotated over every encrypted column."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from greengate.app import create_app
from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.security.encryption import Keyring, key_check_value, new_key_spec
from greengate.services import keys, merchants, payment_flow, payouts, requisites, saved_cards
from greengate.services.merchants import create_merchant
from greengate.services.requisites import add_requisite, find_by_number
from greengate.store.models import (
    EncryptionKey,
    Merchant,
    Payment,
    PaymentAttempt,
    Payout,
    Requisite,
    SavedCard,
)
from tests.conftest import TEST_KEYS, make_settings
from tests.e2e.test_cli import COMMAND
from tests.support.processes import greengate_env

PAN = "4405645000006150"


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def embedded_env(db: Path) -> dict[str, str]:
    env = greengate_env(f"sqlite+aiosqlite:///{db}")
    del env["GREENGATE_ENCRYPTION_KEYS"]  # the embedded default: a key file
    return env


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_key_file_lives_beside_the_database_and_a_lost_or_other_key_is_refused(tmp_path: Path) -> None:
    data, here, there = tmp_path / "data", tmp_path / "here", tmp_path / "there"
    for d in (data, here, there):
        d.mkdir()
    db = data / "shop.db"
    env = embedded_env(db)

    first = await asyncio.to_thread(run, ["merchant", "create", "--name", "A", "--json"], env, here)
    assert first.returncode == 0, first.stderr
    second = await asyncio.to_thread(run, ["merchant", "create", "--name", "B", "--json"], env, there)
    assert second.returncode == 0, second.stderr

    key_file = data / "shop.key"
    assert (
        key_file.exists() and not (here / "greengate.key").exists() and not (there / "greengate.key").exists()
    )
    assert mode(key_file) == 0o600 and mode(db) == 0o600
    listed = await asyncio.to_thread(run, ["merchant", "list", "--json"], env, there)
    assert [m["name"] for m in json.loads(listed.stdout)] == ["A", "B"]
    status = await asyncio.to_thread(run, ["keys", "status", "--json"], env, here)
    assert status.returncode == 0, status.stderr
    (k1,) = json.loads(status.stdout)["keys"]
    assert k1 == {
        "kid": "k1",
        "needed_by_database": True,
        "in_keyring": True,
        "matches": True,
        "encrypts_new_data": True,
    }

    original = key_file.read_text()
    key_file.unlink()
    for args in (["merchant", "list"], ["worker"], ["serve", "--port", "1"]):
        line = one_line_error(await asyncio.to_thread(run, args, env, here))
        assert "needs encryption key 'k1'" in line and str(key_file) in line
    assert not key_file.exists()  # no fresh key is made for a database that needs another

    key_file.write_text(new_key_spec("k1") + "\n")  # a different key under the same id
    line = one_line_error(await asyncio.to_thread(run, ["merchant", "create", "--name", "C"], env, there))
    assert "not the key this database was encrypted with" in line
    status = await asyncio.to_thread(run, ["keys", "status"], env, here)
    assert status.returncode == 1 and "DIFFERENT KEY" in status.stdout

    key_file.write_text(original)
    assert (await asyncio.to_thread(run, ["merchant", "list"], env, there)).returncode == 0


async def test_data_from_before_keys_were_recorded_is_checked_against_the_keyring(
    rt: Runtime, database_url: str, tmp_path: Path
) -> None:
    async with rt.db.transaction() as session:
        await create_merchant(session, rt.keyring, name="Old shop", mode="test", now=utcnow())
        await session.execute(EncryptionKey.__table__.delete())  # as a database migrated from 0007 is

    other = new_key_spec("t1")
    env = greengate_env(database_url, encryption_keys=other)
    line = one_line_error(await asyncio.to_thread(run, ["merchant", "list"], env, tmp_path))
    assert "does not decrypt merchants.secret_key_enc" in line
    env = greengate_env(database_url, encryption_keys=new_key_spec("k9"))
    line = one_line_error(await asyncio.to_thread(run, ["merchant", "list"], env, tmp_path))
    assert "encrypted with key 't1'" in line

    ok = await asyncio.to_thread(run, ["merchant", "list"], greengate_env(database_url), tmp_path)
    assert ok.returncode == 0, ok.stderr
    async with rt.db.transaction() as session:
        recorded = {k.kid: k.check_value for k in await session.scalars(select(EncryptionKey))}
    assert recorded == {"t1": key_check_value(dict(rt.keyring.keys)["t1"])}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("t1:" + "C" * 43 + "=", "encryption_key_mismatch"),
        ("zz:" + "C" * 43 + "=", "encryption_key_missing"),
    ],
)
async def test_readyz_answers_503_with_a_reason_while_the_keyring_cannot_read_the_data(
    rt: Runtime, app_client: httpx.AsyncClient, database_url: str, tmp_path: Path, spec: str, reason: str
) -> None:
    assert (await app_client.get("/readyz")).status_code == 200  # t1 is recorded now
    app = create_app(make_settings(database_url, tmp_path, encryption_keys=spec))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "reason": reason}


async def test_readyz_hides_the_driver_error_behind_a_reason_code(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "x.db"
    app = create_app(make_settings(f"sqlite+aiosqlite:///{missing}", tmp_path))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "reason": "database_unavailable"}
    assert "no-such-folder" not in ready.text and "Error" not in ready.text


async def test_rotation_re_encrypts_every_encrypted_column(
    rt: Runtime, app_client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    old = Keyring.parse(TEST_KEYS.split(",")[1])  # t0: what the data was written under
    now = utcnow()
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(session, old, name="Shop", mode="test", now=now)
        requisite = await add_requisite(
            session,
            old,
            payment_method="card",
            number="2200700123456781",
            bank="",
            holder="",
            daily_limit=None,
            turnover_limit=None,
            now=now,
        )
        payment = Payment(
            merchant_id=merchant.id,
            status="new",
            amount=100,
            currency="KZT",
            description="x",
            testing=True,
            access_token="tok-p",
            expires_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(payment)
        await session.flush()
        attempt = PaymentAttempt(
            payment_id=payment.id,
            method="bankcard",
            acquirer="sandbox",
            status="new",
            created_at=now,
            updated_at=now,
        )
        card = SavedCard(
            merchant_id=merchant.id,
            user_id="u1",
            purpose="payout",
            status="active",
            token="tok-c",
            access_token="tok-ca",
            expires_at=now,
            created_at=now,
            updated_at=now,
        )
        payout = Payout(
            merchant_id=merchant.id,
            kind="reg2nonreg",
            order_id="P-1",
            status="new",
            amount=100,
            currency="KZT",
            description="x",
            testing=True,
            access_token="tok-o",
            request_hash="h",
            expires_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add_all([attempt, card, payout])
        await session.flush()
        attempt.card_enc = old.encrypt(PAN, payment_flow.card_aad(attempt.id))
        card.pan_enc = old.encrypt(PAN, saved_cards.pan_aad(card.id))
        payout.card_enc = old.encrypt(PAN, payouts.card_aad(payout.id))
        ids = (merchant.id, requisite.id, attempt.id, card.id, payout.id)
        session.add(EncryptionKey(kid="t0", check_value=key_check_value(old.keys[0][1]), registered_at=now))

    result = await asyncio.to_thread(run, ["keys", "rotate"], greengate_env(database_url), tmp_path)

    assert result.returncode == 0, result.stderr
    for label in (
        "merchants.secret_key_enc",
        "merchants.payout_secret_enc",
        "merchants.webhook_secret_enc",
        "requisites.number_enc",
        "payment_attempts.card_enc",
        "saved_cards.pan_enc",
        "payouts.card_enc",
    ):
        assert f"{label}: 1 re-encrypted" in result.stdout
    assert "no longer needed, may leave the keyring: t0" in result.stdout
    new_only = Keyring.parse(TEST_KEYS.split(",")[0])
    m_id, r_id, a_id, c_id, p_id = ids
    async with rt.db.transaction() as session:
        m = await session.get(Merchant, m_id)
        r = await session.get(Requisite, r_id)
        a = await session.get(PaymentAttempt, a_id)
        c = await session.get(SavedCard, c_id)
        p = await session.get(Payout, p_id)
        assert m and r and a and c and p
        assert merchants.secret_key(new_only, m) == creds.secret_key
        assert merchants.webhook_secret(new_only, m) == creds.webhook_secret
        assert new_only.decrypt(r.number_enc, requisites.number_aad(r.id)) == "2200700123456781"
        assert await find_by_number(session, new_only, "2200700123456781") is not None
        for token, aad in (
            (a.card_enc, payment_flow.card_aad(a.id)),
            (c.pan_enc, saved_cards.pan_aad(c.id)),
            (p.card_enc, payouts.card_aad(p.id)),
        ):
            assert token is not None and new_only.decrypt(token, aad) == PAN
        assert set(await session.scalars(select(EncryptionKey.kid))) == {"t1"}
        assert await keys.verify(session, new_only, "the new keyring") is None
