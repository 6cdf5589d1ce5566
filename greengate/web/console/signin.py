"""Sign-in, sign-out and the console's stylesheet."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from greengate.clock import utcnow
from greengate.metrics import REQUESTS_REFUSED
from greengate.services import throttles
from greengate.services.admin_users import MAX_FAILED_LOGINS, authenticate
from greengate.services.audit import record_audit
from greengate.services.console_sessions import ABSOLUTE_TIMEOUT, end_session, start_session
from greengate.web.console import csrf
from greengate.web.console.auth import (
    READ,
    Console,
    ConsoleRoute,
    action,
    cookie_name,
    is_secure,
    load_console,
    runtime,
)
from greengate.web.console.rendering import redirect, render, static_file, when

router = APIRouter(route_class=ConsoleRoute)
LOGIN_PATH = "/admin/login"
FAILURE_SCOPE = "auth_fail_console"


def _safe_next(raw: str | None) -> str:
    """Only a console path of ours: never another site (//evil, /\\evil, https://...)."""
    if raw and raw.startswith("/admin") and not raw.startswith(("//", "/\\")) and "\\" not in raw:
        return raw
    return "/admin/"


def _login_page(
    request: Request, *, token: str, error: str | None = None, status_code: int = 200
) -> Response:
    response = render(
        request,
        "login.html",
        None,
        status_code=status_code,
        login_token=token,
        error=error,
        next=_safe_next(request.query_params.get("next")),
        email=request.query_params.get("email", ""),
    )
    response.set_cookie(
        csrf.LOGIN_COOKIE,
        token,
        max_age=3600,
        path=LOGIN_PATH,
        httponly=True,
        samesite="lax",
        secure=is_secure(runtime(request)),
    )
    return response


@router.get("/admin/static/console.css", include_in_schema=False)
async def console_css() -> Response:
    return static_file("console.css")


@router.get("/admin/static/htmx.min.js", include_in_schema=False)
async def console_htmx() -> Response:
    return static_file("htmx.min.js")


@router.get(LOGIN_PATH)
async def login_form(request: Request) -> Response:
    if await load_console(request, take_flash=False) is not None:
        return redirect(_safe_next(request.query_params.get("next")))
    token = request.cookies.get(csrf.LOGIN_COOKIE) or csrf.new_token()
    return _login_page(request, token=token)


@router.post(LOGIN_PATH)
async def login(request: Request) -> Response:
    rt = runtime(request)
    form = await request.form()
    if not csrf.tokens_match(request.cookies.get(csrf.LOGIN_COOKIE), csrf.form_token(form)):
        return render(
            request,
            "forbidden.html",
            None,
            status_code=403,
            reason="The sign-in form's security token is missing or wrong. Open the sign-in page again.",
        )
    email = str(form.get("email") or "")[:200]
    password = str(form.get("password") or "")[:1000]
    now = utcnow()
    address = request.client.host if request.client else "unknown"
    failures = throttles.Rule(
        FAILURE_SCOPE, rt.settings.auth_failures_per_address, rt.settings.auth_failure_window_seconds
    )
    verdict = await throttles.check_failures(rt.db, failures, address, now)
    if not verdict.allowed:
        REQUESTS_REFUSED.labels("console", "auth_throttled").inc()
        error = "Too many failed sign-ins from this address. Try again later."
        page = _login_page(request, token=csrf.new_token(), error=error, status_code=429)
        page.headers["Retry-After"] = str(verdict.retry_after)
        return page
    async with rt.db.transaction() as session:
        outcome = await authenticate(session, email=email, password=password, now=now, address=address)
        token = None
        if outcome.user is not None:
            token = await start_session(session, outcome.user, now)
            await record_audit(
                session,
                actor=f"admin:{outcome.user.email}",
                action="admin.login",
                obj=("admin_user", outcome.user.id),
                before=None,
                after={"ip": request.client.host if request.client else None},
                now=now,
            )
    if token is None:
        await throttles.count_failure(rt.db, failures, address, now)
        if outcome.locked_until is not None:
            error = (
                f"This account is locked from your address until {when(outcome.locked_until)} UTC after "
                f"{MAX_FAILED_LOGINS} wrong passwords. Try again later or ask an admin to unlock it."
            )
            status_code = 423
        else:
            error = "Wrong e-mail or password."
            status_code = 401
        return _login_page(request, token=csrf.new_token(), error=error, status_code=status_code)
    response = redirect(_safe_next(str(form.get("next") or "")))
    secure = is_secure(rt)
    response.set_cookie(
        cookie_name(secure),
        token,
        max_age=int(ABSOLUTE_TIMEOUT.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure,
    )
    response.delete_cookie(csrf.LOGIN_COOKIE, path=LOGIN_PATH)
    return response


@router.post("/admin/logout")
async def logout(request: Request, console: Console = Depends(action(READ))) -> Response:
    async with console.rt.db.transaction() as session:
        await end_session(session, console.session_id)
        await record_audit(
            session,
            actor=console.actor,
            action="admin.logout",
            obj=("admin_user", console.user.id),
            before=None,
            after=None,
            now=utcnow(),
        )
    response = redirect(LOGIN_PATH)
    secure = is_secure(console.rt)
    response.delete_cookie(cookie_name(secure), path="/", secure=secure, httponly=True, samesite="lax")
    return response
