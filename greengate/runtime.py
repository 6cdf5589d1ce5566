"""What a process holds while it runs: settings, the database, the keyring and outbound clients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from greengate.clock import utcnow
from greengate.payouts import BitcoinCoreRpcPayout, BtcPayoutBackend, ManualPayout
from greengate.security.encryption import Keyring
from greengate.settings import Settings
from greengate.store.db import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    keyring: Keyring
    http: httpx.AsyncClient = field(repr=False)
    # The time the Merchant API pipeline acts at; a test or a replay drill passes another clock in.
    clock: Callable[[], datetime] = field(default=utcnow, repr=False)

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        return cls(
            settings=settings,
            db=Database(
                settings.database_url,
                pool_size=settings.db_pool_size,
                pooler=settings.database_pooler,
            ),
            keyring=Keyring.from_settings(settings.encryption_keys, str(settings.key_file())),
            http=httpx.AsyncClient(
                timeout=httpx.Timeout(settings.callback_timeout_seconds, connect=5.0),
                follow_redirects=False,
            ),
        )

    def btc_payout_backend(self) -> BtcPayoutBackend:
        s = self.settings
        if s.btc_payout_backend == "bitcoin_core":
            return BitcoinCoreRpcPayout(
                self.http,
                s.bitcoin_rpc_url,
                s.bitcoin_rpc_user or None,
                s.bitcoin_rpc_password or None,
                wallet=s.bitcoin_rpc_wallet or None,
                fee_rate_sat_vb=s.bitcoin_fee_rate_sat_vb,
                conf_target=s.bitcoin_conf_target,
            )
        return ManualPayout()

    async def close(self) -> None:
        await self.http.aclose()
        await self.db.dispose()
