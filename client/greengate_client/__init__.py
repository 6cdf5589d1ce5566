"""greengate-client: typed sync and async clients for greengate's Exchange API and Merchant API."""

from greengate_client.callbacks import Callback, answer, read_callback
from greengate_client.errors import (
    ExchangeApiError,
    GreengateError,
    MerchantApiError,
    ProtocolError,
    SignatureError,
)
from greengate_client.exchange import (
    AsyncExchangeClient,
    CancelResult,
    Direction,
    ExchangeClient,
    Order,
    RetryPolicy,
)
from greengate_client.merchant import AsyncMerchantClient, MerchantClient
from greengate_client.signature import make_signature, sign, verify_signature
from greengate_client.webhooks import WebhookEvent, verify_webhook

__all__ = [
    "AsyncExchangeClient",
    "AsyncMerchantClient",
    "Callback",
    "CancelResult",
    "Direction",
    "ExchangeApiError",
    "ExchangeClient",
    "GreengateError",
    "MerchantApiError",
    "MerchantClient",
    "Order",
    "ProtocolError",
    "RetryPolicy",
    "SignatureError",
    "WebhookEvent",
    "answer",
    "make_signature",
    "read_callback",
    "sign",
    "verify_signature",
    "verify_webhook",
]
