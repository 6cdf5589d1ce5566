"""Console sign-in, sessions, lockout, CSRF and roles over HTTP through the ASGI app."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from greengate.app import create_app
from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.store.models import AdminUser, AuditEvent, ConsoleSession, ThrottleCounter
from tests.conftest import make_settings
from tests.support.console import PASSWORD, ConsoleClient, csrf_of, make_admin
from tests.support.processes import greengate_env

SCRIPT = Path(sys.executable).parent / "greengate"
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "greengate.cli"]


@pytest.fixture
def console(app_client: httpx.AsyncClient) -> ConsoleClient:
    return ConsoleClient(app_client)


async def test_console_pages_redirect_to_sign_in_without_a_session(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/admin/merchants?mode=test")

    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login?next=%2Fadmin%2Fmerchants%3Fmode%3Dtest"


async def test_sign_in_sets_a_secure_session_cookie_and_opens_the_dashboard(
    rt: Runtime, console: ConsoleClient
) -> None:
    await make_admin(rt, "ops@example.com")

    response = await console.login("ops@example.com")

    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("gg_console=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # the public base URL is http:// in tests
    page = await console.get("/admin/")
    assert page.status_code == 200
    assert "data-user>ops@example.com<" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_session_cookie_is_secure_host_only_when_the_base_url_is_https(
    database_url: str, tmp_path, clean_db: None
) -> None:
    app = create_app(make_settings(database_url, tmp_path, public_base_url="https://pay.example.com"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://testserver"
        ) as client:
            await make_admin(app.state.runtime, "sec@example.com")
            response = await ConsoleClient(client).login("sec@example.com")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-gg_console=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


async def test_wrong_password_is_refused_without_a_session(rt: Runtime, console: ConsoleClient) -> None:
    await make_admin(rt, "ops@example.com")

    response = await console.login("ops@example.com", "not the password")

    assert response.status_code == 401
    assert "Wrong e-mail or password" in response.text
    assert "gg_console=" not in response.headers.get("set-cookie", "")


async def test_five_wrong_passwords_lock_the_account_from_that_address_for_at_most_fifteen_minutes(
    rt: Runtime, console: ConsoleClient
) -> None:
    admin_id = await make_admin(rt, "ops@example.com")
    for _ in range(4):
        assert (await console.login("ops@example.com", "wrong password")).status_code == 401

    fifth = await console.login("ops@example.com", "wrong password")
    with_right_password = await console.login("ops@example.com")

    assert fifth.status_code == 423
    assert "locked from your address until" in fifth.text
    assert with_right_password.status_code == 423
    async with rt.db.transaction() as session:
        user = await session.get(AdminUser, admin_id)
        assert user is not None and user.locked_until is not None
        delta = user.locked_until - user.created_at
        assert timedelta(0) < delta <= timedelta(minutes=15, seconds=1)
        actions = list(await session.scalars(select(AuditEvent.action)))
    assert "admin.locked" in actions


async def test_an_expired_lock_lets_the_right_password_in(rt: Runtime, console: ConsoleClient) -> None:
    admin_id = await make_admin(rt, "ops@example.com")
    for _ in range(5):
        await console.login("ops@example.com", "wrong password")
    async with rt.db.transaction() as session:
        # The lock's window ended: move its counter a window back.
        await session.execute(
            update(ThrottleCounter)
            .where(ThrottleCounter.scope == "console_lock")
            .values(window_start=ThrottleCounter.window_start - 900)
        )
        await session.execute(
            update(AdminUser)
            .where(AdminUser.id == admin_id)
            .values(locked_until=utcnow() - timedelta(minutes=1))
        )

    assert (await console.login("ops@example.com")).status_code == 303


async def test_admin_sees_and_lifts_a_lockout(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    locked_id = await make_admin(rt, "locked@example.com")
    await make_admin(rt, "boss@example.com")
    intruder = ConsoleClient(app_client)
    for _ in range(5):
        await intruder.login("locked@example.com", "wrong password")
    boss = ConsoleClient(app_client)
    await boss.login("boss@example.com")

    users = await boss.get("/admin/users")
    assert f'data-locked="{locked_id}"' in users.text
    response = await boss.post(f"/admin/users/{locked_id}/unlock")

    assert response.status_code == 303
    async with rt.db.transaction() as session:
        user = await session.get(AdminUser, locked_id)
        assert user is not None and user.locked_until is None


async def test_logout_ends_the_session_on_the_server(rt: Runtime, console: ConsoleClient) -> None:
    await make_admin(rt, "ops@example.com")
    await console.login("ops@example.com")
    cookie = console.http.cookies.get("gg_console")

    response = await console.post("/admin/logout")

    assert response.status_code == 303
    async with rt.db.transaction() as session:
        assert (await session.scalar(select(ConsoleSession.id))) is None
    console.http.cookies.set("gg_console", cookie or "")
    assert (await console.get("/admin/")).status_code == 303


async def test_a_post_without_the_csrf_token_gets_403(rt: Runtime, console: ConsoleClient) -> None:
    await make_admin(rt, "ops@example.com")
    await console.login("ops@example.com")

    response = await console.http.post("/admin/merchants", data={"name": "Evil Shop", "mode": "test"})

    assert response.status_code == 403


async def test_a_post_with_a_wrong_csrf_token_gets_403(rt: Runtime, console: ConsoleClient) -> None:
    await make_admin(rt, "ops@example.com")
    await console.login("ops@example.com")

    response = await console.http.post(
        "/admin/merchants", data={"name": "Evil Shop", "mode": "test", "csrf_token": "x" * 43}
    )

    assert response.status_code == 403


async def test_another_sessions_csrf_token_is_refused(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    await make_admin(rt, "a@example.com")
    other = ConsoleClient(app_client)
    await other.login("a@example.com")
    foreign_token = other.token
    app_client.cookies.clear()
    me = ConsoleClient(app_client)
    await me.login("a@example.com")

    response = await app_client.post("/admin/merchants", data={"name": "X", "csrf_token": foreign_token})

    assert response.status_code == 403


async def test_the_sign_in_form_needs_its_token(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    await make_admin(rt, "ops@example.com")

    response = await app_client.post("/admin/login", data={"email": "ops@example.com", "password": PASSWORD})

    assert response.status_code == 403


async def test_sign_in_never_redirects_off_the_console(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    await make_admin(rt, "ops@example.com")
    form = await app_client.get("/admin/login")

    response = await app_client.post(
        "/admin/login",
        data={
            "email": "ops@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_of(form.text),
            "next": "//evil.example.com/admin",
        },
    )

    assert response.headers["location"] == "/admin/"


@pytest.mark.parametrize(
    ("role", "path", "data", "allowed"),
    [
        ("viewer", "/admin/merchants", {"name": "Shop", "mode": "test"}, False),
        ("operator", "/admin/merchants", {"name": "Shop", "mode": "test"}, False),
        ("admin", "/admin/merchants", {"name": "Shop", "mode": "test"}, True),
        ("viewer", "/admin/requisites", {"payment_method": "card", "number": "4405645000006150"}, False),
        ("operator", "/admin/requisites", {"payment_method": "card", "number": "4405645000006150"}, True),
        ("viewer", "/admin/orders/1/cancel", {}, False),
        ("viewer", "/admin/payments/1/test", {"action": "approve"}, False),
        ("viewer", "/admin/callbacks/redeliver", {"ids": "1"}, False),
        ("operator", "/admin/directions/1", {"status": "0"}, False),
        (
            "operator",
            "/admin/users",
            {"email": "x@example.com", "password": PASSWORD, "role": "admin"},
            False,
        ),
    ],
)
async def test_roles_are_enforced_on_the_server(
    rt: Runtime, console: ConsoleClient, role: str, path: str, data: dict[str, str], allowed: bool
) -> None:
    await make_admin(rt, f"{role}@example.com", role=role)
    await console.login(f"{role}@example.com")

    response = await console.post(path, data)

    assert (response.status_code != 403) is allowed, response.text[:300]


@pytest.mark.parametrize("path", ["/admin/merchants/new", "/admin/users"])
async def test_viewer_cannot_open_admin_pages(rt: Runtime, console: ConsoleClient, path: str) -> None:
    await make_admin(rt, "viewer@example.com", role="viewer")
    await console.login("viewer@example.com")

    assert (await console.get(path)).status_code == 403


async def test_viewer_reads_every_list(rt: Runtime, console: ConsoleClient) -> None:
    await make_admin(rt, "viewer@example.com", role="viewer")
    await console.login("viewer@example.com")

    for path in (
        "/admin/",
        "/admin/merchants",
        "/admin/directions",
        "/admin/requisites",
        "/admin/orders",
        "/admin/transfers",
        "/admin/payments",
        "/admin/refunds",
        "/admin/payouts",
        "/admin/cards",
        "/admin/callbacks",
        "/admin/ledger",
        "/admin/audit",
    ):
        response = await console.get(path)
        assert response.status_code == 200, path
        assert "data-action=" not in response.text, path  # no action buttons for a viewer


async def test_disabling_a_user_ends_their_sessions(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    target_id = await make_admin(rt, "ops@example.com", role="operator")
    await make_admin(rt, "boss@example.com")
    ops = ConsoleClient(app_client)
    await ops.login("ops@example.com")
    ops_cookie = app_client.cookies.get("gg_console")
    app_client.cookies.clear()
    boss = ConsoleClient(app_client)
    await boss.login("boss@example.com")

    await boss.post(f"/admin/users/{target_id}", {"active": "0", "role": "operator"})

    app_client.cookies.set("gg_console", ops_cookie or "")
    assert (await app_client.get("/admin/")).status_code == 303


async def test_stylesheet_is_served_without_a_session(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/admin/static/console.css")

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/css")


async def test_unknown_objects_get_a_404_page(rt: Runtime, console: ConsoleClient) -> None:
    await make_admin(rt, "ops@example.com", role="viewer")
    await console.login("ops@example.com")

    for path in ("/admin/orders/999", "/admin/payments/999", "/admin/merchants/999", "/admin/callbacks/999"):
        response = await console.get(path)
        assert response.status_code == 404 and "data-not-found" in response.text, path


async def test_an_admin_cannot_lock_themselves_out(rt: Runtime, console: ConsoleClient) -> None:
    admin_id = await make_admin(rt, "boss@example.com")
    await console.login("boss@example.com")

    await console.post(f"/admin/users/{admin_id}", {"role": "viewer", "active": "1"})

    async with rt.db.transaction() as session:
        user = await session.get(AdminUser, admin_id)
    assert user is not None and user.role == "admin"


async def test_admin_creates_a_user_who_can_sign_in(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    await make_admin(rt, "boss@example.com")
    boss = ConsoleClient(app_client)
    await boss.login("boss@example.com")

    await boss.post("/admin/users", {"email": "new@example.com", "password": PASSWORD, "role": "operator"})
    app_client.cookies.clear()
    response = await ConsoleClient(app_client).login("new@example.com")

    assert response.status_code == 303
    assert "data-role>operator<" in (await app_client.get("/admin/")).text


@pytest.mark.parametrize(("args", "role"), [((), "admin"), (("--role", "operator"), "operator")])
async def test_cli_creates_console_accounts_with_a_role(
    rt: Runtime, console: ConsoleClient, database_url: str, tmp_path: Path, args: tuple[str, ...], role: str
) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [*CLI, "admin", "create", "--email", "cli@example.com", "--password", PASSWORD, *args],
        env=greengate_env(database_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert (await console.login("cli@example.com")).status_code == 303
    assert f"data-role>{role}<" in (await console.get("/admin/")).text
