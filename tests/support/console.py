"""The operator console from a test's side: admin accounts and a signed-in HTTP client."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import unescape

import httpx

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.admin_users import create_admin

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def make_admin(rt: Runtime, email: str, role: str = "admin", password: str = PASSWORD) -> int:
    async with rt.db.transaction() as session:
        user = await create_admin(session, email=email, password=password, role=role, now=utcnow())
        return user.id


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no csrf_token field on the page"
    return unescape(found.group(1))


@dataclass
class ConsoleClient:
    """An httpx client with the console's cookie jar; `post` adds the session's CSRF token."""

    http: httpx.AsyncClient
    token: str = ""
    pages: list[str] = field(default_factory=list)

    async def login(self, email: str, password: str = PASSWORD) -> httpx.Response:
        form = await self.http.get("/admin/login")
        response = await self.http.post(
            "/admin/login",
            data={"email": email, "password": password, "csrf_token": csrf_of(form.text), "next": "/admin/"},
        )
        if response.status_code == 303:
            self.token = csrf_of((await self.http.get("/admin/")).text)
        return response

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.http.get(path, params=params or None)

    async def post(
        self, path: str, data: dict[str, str] | list[tuple[str, str]] | None = None
    ) -> httpx.Response:
        items = list(data.items()) if isinstance(data, dict) else list(data or [])
        form: dict[str, list[str]] = {"csrf_token": [self.token]}
        for name, value in items:
            form.setdefault(name, []).append(value)
        return await self.http.post(path, data=form)

    async def flash(self, path: str) -> str:
        """The page after an action, with its flash message."""
        return (await self.http.get(path)).text


async def signed_in(http: httpx.AsyncClient, rt: Runtime, role: str = "admin") -> ConsoleClient:
    """A new account of the role, signed in on this client."""
    email = f"{role}-{len(http.cookies)}@example.com"
    await make_admin(rt, email, role=role)
    console = ConsoleClient(http)
    response = await console.login(email)
    assert response.status_code == 303, response.text
    return console


def flash_of(html: str) -> str:
    found = re.search(r'data-flash="(\w+)">([^<]*)<', html)
    return f"{found.group(1)}: {unescape(found.group(2))}" if found else ""
