"""The operator console at /admin: server-rendered pages and plain HTML forms (no JavaScript needed).

Each area has its own module of routes; `auth` holds sessions, roles and the checks every route runs,
`csrf` the form tokens, `rendering` the templates, headers and pagination. Changes go through the
services, which write the audit log with the signed-in user as the actor.
"""

from fastapi import APIRouter

from greengate.web.console import (
    audit,
    callbacks,
    dashboard,
    exchange,
    ledger,
    merchants,
    operations,
    payments,
    signin,
)

router = APIRouter(include_in_schema=False)
for module in (signin, dashboard, merchants, exchange, payments, operations, callbacks, ledger, audit):
    router.include_router(module.router)

__all__ = ["router"]
