"""Runtime configuration: every knob is a GREENGATE_* environment variable."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from greengate.domain.bitcoin_address import Network

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./greengate.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GREENGATE_", env_file=None, extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = 20
    # What sits between the gateway and PostgreSQL: "none" (direct) or "pgbouncer" (transaction pooling,
    # which keeps no prepared statement or session state from one transaction to the next).
    database_pooler: Literal["none", "pgbouncer"] = "none"
    # AES-256-GCM keys as "kid:base64key" separated by commas; the first one encrypts new data.
    # Empty → a key file next to the working directory is created on first use (embedded default).
    encryption_keys: str = ""
    encryption_key_file: str = "./greengate.key"
    public_base_url: str = "http://127.0.0.1:8000"
    # Operator token for the incoming-transfer endpoint; empty disables the endpoint.
    operator_token: str = ""

    btc_network: Network = Network.MAINNET
    # Rates: fiat per 1 BTC for the "fixed" source, "RUB=3233561.44,KZT=27500000".
    fixed_rates: str = "RUB=3233561.44,KZT=27500000"
    rate_refresh_seconds: int = 60
    rate_max_age_seconds: int = 300
    rate_http_timeout_seconds: float = 5.0
    binance_base_url: str = "https://api.binance.com"
    kraken_base_url: str = "https://api.kraken.com"

    # BTC payouts: "manual" (operator records the txid) or "bitcoin_core".
    btc_payout_backend: str = "manual"
    bitcoin_rpc_url: str = "http://127.0.0.1:8332"
    bitcoin_rpc_user: str = ""
    bitcoin_rpc_password: str = ""
    bitcoin_rpc_wallet: str = ""
    bitcoin_fee_rate_sat_vb: int | None = None
    bitcoin_conf_target: int | None = None

    worker_poll_seconds: float = 0.5
    worker_batch_size: int = 50
    worker_claim_timeout_seconds: int = 120
    callback_timeout_seconds: float = 10.0
    # Refuse callback targets in loopback/private ranges unless explicitly allowed.
    callback_allow_private: bool = False
    # Retry schedule for callbacks in seconds after each failed attempt.
    callback_retry_schedule: list[int] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    )

    idempotency_ttl_hours: int = 24
    max_request_bytes: int = 1_000_000
    log_level: str = "INFO"
    log_json: bool = True

    def fixed_rate_map(self) -> dict[str, Decimal]:
        rates: dict[str, Decimal] = {}
        for item in filter(None, (p.strip() for p in self.fixed_rates.split(","))):
            currency, _, value = item.partition("=")
            rates[currency.strip().upper()] = Decimal(value.strip())
        return rates


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
