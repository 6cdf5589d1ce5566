"""The audit log and the console's user accounts (create, role, disable, lift a lockout)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.clock import utcnow
from greengate.domain.errors import BusinessRuleViolation
from greengate.services.admin_users import ROLES, create_admin, update_admin
from greengate.services.console_sessions import end_sessions_of
from greengate.store.models import AdminUser, AuditEvent
from greengate.web.console.auth import Console, ConsoleRoute, action, page, perform
from greengate.web.console.filters import text as filter_text
from greengate.web.console.rendering import paginate, render

router = APIRouter(route_class=ConsoleRoute)


@router.get("/admin/audit")
async def audit_log(request: Request, console: Console = Depends(page())) -> Response:
    filters = {name: filter_text(request, name) for name in ("actor", "action", "object_type", "object_id")}
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    if filters["actor"]:
        stmt = stmt.where(AuditEvent.actor.ilike(f"%{filters['actor']}%"))
    if filters["action"]:
        stmt = stmt.where(AuditEvent.action.ilike(f"{filters['action']}%"))
    if filters["object_type"]:
        stmt = stmt.where(AuditEvent.object_type == filters["object_type"])
    if filters["object_id"]:
        stmt = stmt.where(AuditEvent.object_id == filters["object_id"])
    async with console.rt.db.transaction() as session:
        events = await paginate(session, stmt, request)
    return render(request, "audit.html", console, page=events, filters=filters)


@router.get("/admin/users")
async def users(request: Request, console: Console = Depends(page("users"))) -> Response:
    async with console.rt.db.transaction() as session:
        accounts = await paginate(session, select(AdminUser).order_by(AdminUser.id), request)
    return render(request, "users.html", console, page=accounts, roles=ROLES, now=utcnow())


@router.post("/admin/users")
async def user_create(console: Console = Depends(action("users"))) -> Response:
    async def work(session: AsyncSession) -> str:
        user = await create_admin(
            session,
            email=console.value("email", 200),
            password=console.value("password", 1000),
            role=console.value("role"),
            now=utcnow(),
            actor=console.actor,
        )
        return f"User {user.email} created with role {user.role}."

    return await perform(console, work, "/admin/users")


@router.post("/admin/users/{admin_id}")
async def user_update(admin_id: int, console: Console = Depends(action("users"))) -> Response:
    async def work(session: AsyncSession) -> str:
        role = console.value("role") or None
        active = console.value("active") != "0"
        if admin_id == console.user.id and (not active or (role is not None and role != "admin")):
            raise BusinessRuleViolation("you cannot disable or demote your own account")
        user = await update_admin(
            session, admin_id, now=utcnow(), actor=console.actor, role=role, active=active
        )
        if not user.active:
            await end_sessions_of(session, user.id)
        return f"User {user.email}: role {user.role}, {'active' if user.active else 'disabled'}."

    return await perform(console, work, "/admin/users")


@router.post("/admin/users/{admin_id}/unlock")
async def user_unlock(admin_id: int, console: Console = Depends(action("users"))) -> Response:
    async def work(session: AsyncSession) -> str:
        user = await update_admin(session, admin_id, now=utcnow(), actor=console.actor, unlock=True)
        return f"User {user.email} unlocked."

    return await perform(console, work, "/admin/users")
