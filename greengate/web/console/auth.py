"""Who is signed in, what their role lets them do, and the checks every console route runs.

Roles are capability sets enforced on the server by each route's dependency (the templates only hide
what a role cannot use): `admin` has every capability, `operator` works orders, transfers, payments
(test buttons), requisites and callback redelivery, `viewer` reads. A missing or expired session sends
the browser to the sign-in page; a POST whose CSRF token is missing or wrong, or a route the role does
not allow, gets 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from greengate.clock import utcnow
from greengate.domain.errors import DomainError
from greengate.runtime import Runtime
from greengate.services.console_sessions import load_session, set_flash
from greengate.store.models import AdminUser
from greengate.web.console import csrf
from greengate.web.console.rendering import redirect, render

READ = "read"
CAPABILITIES: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {READ, "merchants", "directions", "requisites", "orders", "payments", "callbacks", "users"}
    ),
    "operator": frozenset({READ, "requisites", "orders", "payments", "callbacks"}),
    "viewer": frozenset({READ}),
}


def cookie_name(secure: bool) -> str:
    # The __Host- prefix pins the cookie to this host, path / and HTTPS.
    return "__Host-gg_console" if secure else "gg_console"


def is_secure(rt: Runtime) -> bool:
    return rt.settings.base_url.lower().startswith("https://")


class ConsoleExit(Exception):
    """Stop a console request with this response (sign-in redirect, 403 page)."""

    def __init__(self, response: Response) -> None:
        super().__init__("console exit")
        self.response = response


class ConsoleRoute(APIRoute):
    """Routes whose dependencies may end the request with a ready response."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except ConsoleExit as stop:
                return stop.response

        return handler


@dataclass
class Console:
    request: Request
    rt: Runtime
    user: AdminUser
    session_id: int
    csrf_token: str
    flash: tuple[str, str] | None = None
    form: FormData = field(default_factory=FormData)

    @property
    def actor(self) -> str:
        return f"admin:{self.user.email}"

    @property
    def role(self) -> str:
        return self.user.role

    def can(self, capability: str) -> bool:
        return capability in CAPABILITIES.get(self.user.role, frozenset())

    def value(self, name: str, max_length: int = 2000) -> str:
        raw = self.form.get(name)
        return raw.strip()[:max_length] if isinstance(raw, str) else ""

    def values(self, name: str) -> list[str]:
        return [v for v in self.form.getlist(name) if isinstance(v, str)]


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def load_console(request: Request, *, take_flash: bool) -> Console | None:
    rt = runtime(request)
    token = request.cookies.get(cookie_name(is_secure(rt)))
    if not token:
        return None
    async with rt.db.transaction() as session:
        active = await load_session(session, token, utcnow(), take_flash=take_flash)
    if active is None:
        return None
    flash = None
    if active.flash:
        kind, _, text = active.flash.partition(":")
        flash = (kind, text)
    return Console(request, rt, active.user, active.row.id, active.row.csrf_token, flash)


def _to_login(request: Request) -> ConsoleExit:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return ConsoleExit(redirect(f"/admin/login?next={quote(target, safe='')}"))


def forbidden(request: Request, console: Console | None, reason: str) -> ConsoleExit:
    return ConsoleExit(render(request, "forbidden.html", console, status_code=403, reason=reason))


def page(capability: str = READ) -> Callable[[Request], Awaitable[Console]]:
    """Dependency of a GET page: a signed-in user whose role has the capability."""

    async def dependency(request: Request) -> Console:
        console = await load_console(request, take_flash=True)
        if console is None:
            raise _to_login(request)
        if not console.can(capability):
            raise forbidden(request, console, f"Your role ({console.role}) cannot open this page.")
        return console

    return dependency


def action(capability: str) -> Callable[[Request], Awaitable[Console]]:
    """Dependency of a POST: a signed-in user, the session's CSRF token, and the capability."""

    async def dependency(request: Request) -> Console:
        console = await load_console(request, take_flash=False)
        if console is None:
            raise _to_login(request)
        form = await request.form()
        if not csrf.tokens_match(console.csrf_token, csrf.form_token(form)):
            raise forbidden(
                request, console, "The form's security token is missing or wrong. Reload the page."
            )
        if not console.can(capability):
            raise forbidden(request, console, f"Your role ({console.role}) cannot do this.")
        console.form = form
        return console

    return dependency


async def perform(console: Console, work: Callable[[AsyncSession], Awaitable[str]], back: str) -> Response:
    """Run one console action in one transaction and go back to `back` with its outcome as a flash:
    the action's message when it committed, the domain error's message when it was refused."""
    try:
        async with console.rt.db.transaction() as session:
            message = await work(session)
            await set_flash(session, console.session_id, f"ok:{message}")
    except DomainError as exc:
        async with console.rt.db.transaction() as session:
            await set_flash(session, console.session_id, f"error:{exc.message}")
    return redirect(back)
