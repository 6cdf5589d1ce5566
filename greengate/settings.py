"""Runtime configuration: every knob is a GREENGATE_* environment variable."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from greengate.domain.bitcoin_address import Network

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./greengate.db"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GREENGATE_", env_file=None, extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = 20
    # What sits between the gateway and PostgreSQL: "none" (direct) or "pgbouncer" (transaction pooling,
    # which keeps no prepared statement or session state from one transaction to the next).
    database_pooler: Literal["none", "pgbouncer"] = "none"
    # AES-256-GCM keys as "kid:base64key" separated by commas; the first one encrypts new data.
    # Empty → the key file is read, and created on first use for a database that needs no key yet.
    encryption_keys: str = ""
    # Empty → beside the SQLite file (greengate.db → greengate.key); ./greengate.key for PostgreSQL.
    encryption_key_file: str = ""
    # Base of the links handed out (fast_link, pg_redirect_url, payout and card pages). Empty → the
    # address `greengate serve` listens on (it passes it to its processes as GREENGATE_SERVED_BASE_URL).
    public_base_url: str = ""
    served_base_url: str = ""
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
    # The deadline of one whole delivery: resolving, connecting, sending and reading the answer.
    callback_timeout_seconds: float = 10.0
    # Deliveries under way at once in one worker, and at most per target (scheme, host and port of
    # the URL) and per merchant, so a slow or dead endpoint holds only its own share.
    callback_concurrency: int = Field(default=32, ge=1)
    callback_target_concurrency: int = Field(default=2, ge=1)
    callback_merchant_concurrency: int = Field(default=4, ge=1)
    # Delivered outbox rows and their attempt logs are deleted this long after delivery, in batches.
    outbox_keep_delivered_hours: float = Field(default=168.0, gt=0)
    outbox_prune_batch_size: int = Field(default=500, ge=1)
    # Refuse callback targets in loopback/private ranges unless explicitly allowed.
    callback_allow_private: bool = False
    # Retry schedule for callbacks in seconds after each failed attempt.
    callback_retry_schedule: list[int] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    )

    idempotency_ttl_hours: int = 24
    max_request_bytes: int = 1_000_000
    # Exchange API requests a minute per client (a client's own setting overrides it); 0: no limit.
    exchange_requests_per_minute: int = 600
    # Failed authentications (Api-Secret, pg_sig, console password) per source address and window
    # before that address is refused for the rest of the window; 0: no throttle.
    auth_failures_per_address: int = 30
    auth_failure_window_seconds: int = 300
    # /metrics: with a token, only `Authorization: Bearer <token>` may read it; with an address
    # ("127.0.0.1:9464"), `greengate serve` serves it there only and the main port answers 404.
    metrics_token: str = ""
    metrics_address: str = ""
    log_level: str = "INFO"
    log_json: bool = True
    # The built documentation site (`mkdocs build`), served at /docs/guide when it exists.
    # Empty → site/ of the checkout the package runs from.
    docs_site_dir: str = ""

    @property
    def base_url(self) -> str:
        """Where payers and merchants reach this gateway, without a trailing slash."""
        return (self.public_base_url or self.served_base_url or DEFAULT_BASE_URL).rstrip("/")

    def sqlite_file(self) -> Path | None:
        """The embedded database's file, or None for PostgreSQL and in-memory SQLite."""
        return sqlite_file(self.database_url)

    def key_file(self) -> Path:
        if self.encryption_key_file:
            return Path(self.encryption_key_file)
        db = self.sqlite_file()
        return db.with_suffix(".key") if db is not None else Path("greengate.key")

    def demo_credentials_file(self) -> Path:
        db = self.sqlite_file()
        return db.with_suffix(".demo.json") if db is not None else Path("greengate.demo.json")

    def fixed_rate_map(self) -> dict[str, Decimal]:
        rates: dict[str, Decimal] = {}
        for item in filter(None, (p.strip() for p in self.fixed_rates.split(","))):
            currency, _, value = item.partition("=")
            rates[currency.strip().upper()] = Decimal(value.strip())
        return rates


def sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).absolute()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
