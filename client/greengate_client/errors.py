"""Exceptions raised by the client."""

from __future__ import annotations


class GreengateError(Exception):
    """Base of every error the client raises."""


class ExchangeApiError(GreengateError):
    """The Exchange API refused a request: its wire `code`, its `error` text and the HTTP status."""

    def __init__(self, status: int, code: str, error: str) -> None:
        super().__init__(f"{status} {code}: {error}")
        self.status = status
        self.code = code
        self.error = error


class MerchantApiError(GreengateError):
    """A Merchant API answer with `pg_status=error`: `pg_error_code` and `pg_error_description`."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"pg_error_code {code}: {description}")
        self.code = code
        self.description = description


class SignatureError(GreengateError):
    """A message whose `pg_sig` (or webhook signature) does not verify, or is missing."""


class ProtocolError(GreengateError):
    """An answer that is not what the protocol promises (not XML, not JSON, wrong shape)."""
