"""One delivery attempt of an outbox message: logged, with its claim stretched over the delivery's
deadline, before the request goes out; then sent within that deadline."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from greengate.metrics import OUTBOX_RESULTS
from greengate.runtime import Runtime
from greengate.services import outbox
from greengate.settings import Settings
from greengate.worker.http_delivery import DeliveryOutcome, OutgoingRequest, deliver


def attempt_hold(settings: Settings) -> timedelta:
    """How long a claim lasts from the start of an attempt: the attempt's whole deadline, then one
    claim period to log its outcome. No other worker may take the row while the request can still be
    under way, whatever the renewals do; a worker that died lets it go after this."""
    return timedelta(seconds=settings.callback_timeout_seconds + settings.worker_claim_timeout_seconds)


async def send(
    rt: Runtime,
    message: outbox.ClaimedMessage,
    *,
    worker: str,
    clock: Callable[[], datetime],
    request: OutgoingRequest,
    logged: str,
) -> tuple[outbox.StartedAttempt, DeliveryOutcome] | None:
    """Log the attempt, then send it. None, with nothing sent, when the claim is no longer ours."""
    now = clock()
    async with rt.db.transaction() as session:
        started = await outbox.begin_attempt(
            session,
            message,
            worker=worker,
            now=now,
            hold_until=now + attempt_hold(rt.settings),
            request_body=logged,
        )
    if started is None:
        OUTBOX_RESULTS.labels(kind=message.kind, outcome="lost_claim").inc()
        return None
    outcome = await deliver(
        rt.http,
        request,
        allow_private=rt.settings.callback_allow_private,
        deadline=rt.settings.callback_timeout_seconds,
    )
    return started, outcome
