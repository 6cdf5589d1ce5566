"""structlog configuration: JSON lines with bound context; card numbers scrubbed as a last line of defence."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

import structlog

_PAN = re.compile(r"\b(\d{6})\d{3,9}(\d{4})\b")
_SECRET_KEYS = {"api_secret", "secret_key", "password", "cvc", "cvv", "pg_sig", "authorization", "token"}


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = "********"
        elif isinstance(value, str):
            event[key] = _PAN.sub(lambda m: f"{m.group(1)}******{m.group(2)}", value)
    return event


def configure(level: str = "INFO", json: bool = True) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s")
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
