"""Exchange API webhooks: `order.status_changed` events, signed the Standard Webhooks way
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`) with the client's
`whsec_` secret."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from greengate_client.errors import SignatureError
from greengate_client.exchange import Order, WireTime

# standardwebhooks itself refuses timestamps more than five minutes away; a tolerance can only narrow it.
MAX_TOLERANCE = timedelta(minutes=5)


class WebhookEvent(BaseModel):
    """A verified event. `id` (the `webhook-id`) stays the same across redeliveries: deduplicate on it."""

    model_config = ConfigDict(frozen=True)
    id: str
    type: str
    created_at: WireTime
    data: Order


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: timedelta = MAX_TOLERANCE,
    now: datetime | None = None,
) -> WebhookEvent:
    """The event in `body`, once its signature verifies and its timestamp is within `tolerance` of
    `now`; `SignatureError` otherwise. Pass the raw body bytes, exactly as received."""
    if tolerance > MAX_TOLERANCE:
        raise ValueError("tolerance cannot exceed five minutes")
    lower = {k.lower(): v for k, v in headers.items()}
    moment = now or datetime.now(UTC)
    try:
        sent = datetime.fromtimestamp(int(lower.get("webhook-timestamp", "")), UTC)
    except (ValueError, OverflowError, OSError):
        raise SignatureError("webhook-timestamp is missing or malformed") from None
    if abs(moment - sent) > tolerance:
        raise SignatureError("webhook-timestamp is outside the tolerance")
    try:
        payload = Webhook(secret).verify(body, dict(lower))
    except (WebhookVerificationError, ValueError) as exc:
        raise SignatureError(f"webhook signature does not verify: {exc}") from None
    if not isinstance(payload, dict):
        raise SignatureError("webhook body is not a JSON object")
    return WebhookEvent.model_validate({**payload, "id": lower["webhook-id"]})
