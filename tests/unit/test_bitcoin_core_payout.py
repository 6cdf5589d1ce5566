"""BitcoinCoreRpcPayout against a local HTTP server that emulates bitcoind's JSON-RPC interface."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greengate.payouts import (
    MAX_MONEY_SAT,
    BitcoinCoreRpcPayout,
    BtcPayoutBackend,
    BtcPayoutRequest,
    BtcPayoutResult,
    ManualPayout,
    PayoutError,
    sat_to_btc,
    validate_txid,
)
from greengate.payouts.bitcoin_core import JsonValue, dumps_json

RPC_USER = "rpcuser"
RPC_PASSWORD = "s3cret:with colon"
ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
TXID = "a" * 64

# Errors exactly as bitcoind words them, keyed by the address that triggers them.
RPC_ERRORS: dict[str, tuple[int, str]] = {
    "addr-insufficient": (-6, "Insufficient funds"),
    "addr-invalid": (-5, "Invalid address"),
    "addr-locked": (-13, "Error: Please enter the wallet passphrase with walletpassphrase first."),
    "addr-passphrase": (-14, "Error: The wallet passphrase entered was incorrect."),
    "addr-wallet-error": (-4, "Transaction too large"),
    "addr-warmup": (-28, "Loading block index…"),
}
# getblockchaininfo as bitcoind writes it, including non-integer numbers.
BLOCKCHAIN_INFO = (
    '{"chain":"%s","blocks":120,"headers":120,"difficulty":4.656542373906925e-10,'
    '"verificationprogress":1,"initialblockdownload":false,"size_on_disk":37018,"pruned":false}'
)


def expected_txid(address: str, amount: Decimal) -> str:
    return hashlib.sha256(f"{address}|{amount}".encode()).hexdigest()


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any


class FakeBitcoind(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str = "normal") -> None:
        super().__init__(("127.0.0.1", 0), BitcoindHandler)
        self.mode = mode
        self.requests: list[Recorded] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.statuses.clear()
        self.credentials: tuple[str, str] | None = (RPC_USER, RPC_PASSWORD)
        self.balance = Decimal(21_000_000)
        self.chain = "regtest"
        self.wallets = {"payouts", "hot wallet/1"}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def last(self) -> Recorded:
        with self.lock:
            return self.requests[-1]


class BitcoindHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive like bitcoind
    server: FakeBitcoind

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, text: str, content_type: str = "application/json") -> None:
        data = text.encode()
        with self.server.lock:
            self.server.statuses.append(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="jsonrpc"')
        self.end_headers()
        self.wfile.write(data)

    def reply_rpc(self, request_id: Any, result: str = "null", error: tuple[int, str] | None = None) -> None:
        if error is None:
            self.reply(200, f'{{"result":{result},"error":null,"id":{json.dumps(request_id)}}}')
            return
        code, message = error
        err = json.dumps({"code": code, "message": message})
        # JSON-RPC 1.0 errors: HTTP 404 for unknown methods, 500 otherwise.
        status = 404 if code == -32601 else 500
        self.reply(status, f'{{"result":null,"error":{err},"id":{json.dumps(request_id)}}}')

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        mode = self.server.mode
        if mode == "close":
            self.close_connection = True
            return
        if mode == "slow":
            self.server.release.wait(10)
            self.reply(200, '{"result":null,"error":null,"id":1}')
            return
        body = json.loads(raw, parse_float=Decimal)
        with self.server.lock:
            self.server.requests.append(Recorded(self.path, dict(self.headers.items()), raw, body))

        credentials = self.server.credentials
        if credentials is not None:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {token}":
                self.reply(401, "", content_type="text/html")
                return
        if self.path.startswith("/wallet/"):
            if unquote(self.path.removeprefix("/wallet/")) not in self.server.wallets:
                self.reply_rpc(body["id"], error=(-18, "Requested wallet does not exist or is not loaded"))
                return
        elif self.path != "/":
            self.reply(404, "", content_type="text/plain")
            return

        method = body["method"]
        if method == "getblockchaininfo":
            if self.server.chain == "missing":
                self.reply_rpc(body["id"], result='{"blocks":1}')
            else:
                self.reply_rpc(body["id"], result=BLOCKCHAIN_INFO % self.server.chain)
            return
        if method != "sendtoaddress":
            self.reply_rpc(body["id"], error=(-32601, "Method not found"))
            return
        params = body["params"]
        if not isinstance(params, dict):
            self.reply_rpc(body["id"], error=(-1, "expected named params"))
            return
        address, amount = params["address"], params["amount"]
        if not isinstance(amount, Decimal):  # a JSON number with a fraction, never a string
            self.reply_rpc(body["id"], error=(-3, "Amount is not a number or string"))
            return
        if address in RPC_ERRORS:
            self.reply_rpc(body["id"], error=RPC_ERRORS[address])
        elif address == "addr-bad-txid":
            self.reply_rpc(body["id"], result='"not-a-txid"')
        elif address == "addr-upper-txid":
            self.reply_rpc(body["id"], result=json.dumps(TXID.upper()))
        elif address == "addr-html":
            self.reply(200, "<html>proxy</html>", content_type="text/html")
        elif address == "addr-busy":
            self.reply(503, "Work queue depth exceeded", content_type="text/plain")
        elif address == "addr-bad-gateway":
            self.reply(502, "<html>Bad Gateway</html>", content_type="text/html")
        elif amount > self.server.balance:
            self.reply_rpc(body["id"], error=(-6, "Insufficient funds"))
        else:
            self.reply_rpc(body["id"], result=json.dumps(expected_txid(address, amount)))


def start(mode: str = "normal") -> FakeBitcoind:
    server = FakeBitcoind(mode)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: FakeBitcoind) -> None:
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def node() -> Iterator[FakeBitcoind]:
    server = start()
    yield server
    stop(server)


@pytest.fixture
def bitcoind(node: FakeBitcoind) -> FakeBitcoind:
    node.reset()
    return node


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as c:
        yield c


def payout(client: httpx.AsyncClient, url: str, **kwargs: Any) -> BitcoinCoreRpcPayout:
    kwargs.setdefault("user", RPC_USER)
    kwargs.setdefault("password", RPC_PASSWORD)
    return BitcoinCoreRpcPayout(client, url, **kwargs)


def request(amount_sat: int = 256_657, address: str = ADDRESS, order_id: int = 42) -> BtcPayoutRequest:
    return BtcPayoutRequest(order_id=order_id, address=address, amount_sat=amount_sat)


def wire_amount(raw: bytes) -> str:
    match = re.search(rb'"amount":([^,}]*)[,}]', raw)
    assert match is not None, raw
    return match.group(1).decode()


def outcome(error: PayoutError) -> tuple[str, bool, bool]:
    return error.code, error.retryable, error.outcome_unknown


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- sendtoaddress on the wire -------------------------------------------------------------------


async def test_send_uses_named_params_exact_amount_and_basic_auth(
    bitcoind: FakeBitcoind, client: httpx.AsyncClient
) -> None:
    result = await payout(client, bitcoind.url).send(request(256_657))

    assert result == BtcPayoutResult(txid=expected_txid(ADDRESS, Decimal("0.00256657")))
    sent = bitcoind.last
    assert sent.path == "/"
    assert sent.headers["Content-Type"] == "application/json"
    assert wire_amount(sent.raw) == "0.00256657"
    assert sent.body["jsonrpc"] == "1.0"
    assert sent.body["method"] == "sendtoaddress"
    assert isinstance(sent.body["id"], int)
    assert sent.body["params"] == {
        "address": ADDRESS,
        "amount": Decimal("0.00256657"),
        "subtractfeefromamount": False,
        "comment": "greengate order 42",
    }
    assert bitcoind.statuses == [200]


@pytest.mark.parametrize(
    ("amount_sat", "text"),
    [
        (1, "0.00000001"),
        (10, "0.00000010"),
        (100_000_000, "1.00000000"),
        (12_345_678_901, "123.45678901"),
        (MAX_MONEY_SAT - 1, "20999999.99999999"),
        (2_100_000_000_000_000, "21000000.00000000"),
    ],
)
async def test_amount_is_written_as_exact_decimal_number(
    bitcoind: FakeBitcoind, client: httpx.AsyncClient, amount_sat: int, text: str
) -> None:
    result = await payout(client, bitcoind.url).send(request(amount_sat))

    assert wire_amount(bitcoind.last.raw) == text
    assert result.txid == expected_txid(ADDRESS, Decimal(text))


async def test_fee_options_and_subtract_fee(bitcoind: FakeBitcoind, client: httpx.AsyncClient) -> None:
    await payout(client, bitcoind.url, fee_rate_sat_vb=12, subtract_fee=True).send(request())
    params = bitcoind.last.body["params"]
    assert params["fee_rate"] == 12
    assert params["subtractfeefromamount"] is True
    assert "conf_target" not in params
    assert b'"fee_rate":12,' in bitcoind.last.raw or b'"fee_rate":12}' in bitcoind.last.raw

    await payout(client, bitcoind.url, conf_target=6).send(request())
    params = bitcoind.last.body["params"]
    assert params["conf_target"] == 6
    assert "fee_rate" not in params


@pytest.mark.parametrize(
    ("wallet", "path"), [("payouts", "/wallet/payouts"), ("hot wallet/1", "/wallet/hot%20wallet%2F1")]
)
async def test_wallet_endpoint(
    bitcoind: FakeBitcoind, client: httpx.AsyncClient, wallet: str, path: str
) -> None:
    backend = payout(client, bitcoind.url + "/", wallet=wallet)
    await backend.send(request())
    assert bitcoind.last.path == path

    # Chain info is node-level, not per wallet.
    assert await backend.get_network() == "regtest"
    assert bitcoind.last.path == "/"


async def test_empty_wallet_name_means_default_endpoint(
    bitcoind: FakeBitcoind, client: httpx.AsyncClient
) -> None:
    await payout(client, bitcoind.url, wallet="").send(request())
    assert bitcoind.last.path == "/"


async def test_unknown_wallet_is_rpc_error(bitcoind: FakeBitcoind, client: httpx.AsyncClient) -> None:
    with pytest.raises(PayoutError) as info:
        await payout(client, bitcoind.url, wallet="nope").send(request())
    assert (info.value.code, info.value.rpc_code, info.value.retryable) == ("rpc_error", -18, False)
    assert not info.value.outcome_unknown


async def test_without_credentials_no_authorization_header(
    bitcoind: FakeBitcoind, client: httpx.AsyncClient
) -> None:
    bitcoind.credentials = None
    await payout(client, bitcoind.url, user=None, password=None).send(request())
    assert "Authorization" not in bitcoind.last.headers


async def test_request_ids_increase(bitcoind: FakeBitcoind, client: httpx.AsyncClient) -> None:
    backend = payout(client, bitcoind.url)
    await backend.send(request())
    first = bitcoind.last.body["id"]
    await backend.get_network()
    assert bitcoind.last.body["id"] == first + 1


# --- error mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "code", "rpc_code", "retryable"),
    [
        ("addr-insufficient", "insufficient_funds", -6, False),
        ("addr-invalid", "invalid_address", -5, False),
        ("addr-locked", "wallet_locked", -13, False),
        ("addr-passphrase", "wallet_locked", -14, False),
        ("addr-wallet-error", "rpc_error", -4, False),
        ("addr-warmup", "rpc_error", -28, True),
    ],
)
async def test_rpc_errors_from_http_500_json_body(
    bitcoind: FakeBitcoind,
    client: httpx.AsyncClient,
    address: str,
    code: str,
    rpc_code: int,
    retryable: bool,
) -> None:
    with pytest.raises(PayoutError) as info:
        await payout(client, bitcoind.url).send(request(address=address))
    error = info.value
    assert bitcoind.statuses == [500]
    assert outcome(error) == (code, retryable, False)
    assert error.rpc_code == rpc_code
    assert RPC_ERRORS[address][1] in error.message


async def test_insufficient_funds_by_amount(bitcoind: FakeBitcoind, client: httpx.AsyncClient) -> None:
    bitcoind.balance = Decimal("0.5")
    backend = payout(client, bitcoind.url)
    assert (await backend.send(request(50_000_000))).txid
    with pytest.raises(PayoutError) as info:
        await backend.send(request(50_000_001))
    assert info.value.code == "insufficient_funds"
    assert not info.value.retryable


async def test_wrong_credentials_is_rpc_auth(bitcoind: FakeBitcoind, client: httpx.AsyncClient) -> None:
    with pytest.raises(PayoutError) as info:
        await payout(client, bitcoind.url, password="wrong").send(request())
    assert bitcoind.statuses == [401]
    assert outcome(info.value) == ("rpc_auth", False, False)


async def test_unknown_path_is_rpc_error(bitcoind: FakeBitcoind, client: httpx.AsyncClient) -> None:
    with pytest.raises(PayoutError) as info:
        await payout(client, bitcoind.url + "/elsewhere").send(request())
    assert outcome(info.value) == ("rpc_error", False, False)


async def test_returned_txid_is_validated(bitcoind: FakeBitcoind, client: httpx.AsyncClient) -> None:
    backend = payout(client, bitcoind.url)
    assert (await backend.send(request(address="addr-upper-txid"))).txid == TXID

    with pytest.raises(PayoutError) as info:
        await backend.send(request(address="addr-bad-txid"))
    # The node said the payment went out, so this must not be retried blindly.
    assert outcome(info.value) == ("rpc_bad_response", False, True)


@pytest.mark.parametrize(
    ("address", "code", "retryable", "outcome_unknown"),
    [
        ("addr-html", "rpc_bad_response", False, True),
        ("addr-bad-gateway", "rpc_bad_response", False, True),
        ("addr-busy", "rpc_error", True, False),
    ],
)
async def test_non_json_replies(
    bitcoind: FakeBitcoind,
    client: httpx.AsyncClient,
    address: str,
    code: str,
    retryable: bool,
    outcome_unknown: bool,
) -> None:
    with pytest.raises(PayoutError) as info:
        await payout(client, bitcoind.url).send(request(address=address))
    assert outcome(info.value) == (code, retryable, outcome_unknown)


# --- transport failures --------------------------------------------------------------------------


async def test_unreachable_node_is_retryable(client: httpx.AsyncClient) -> None:
    backend = payout(client, f"http://127.0.0.1:{unused_port()}")
    for call in (backend.send(request()), backend.get_network()):
        with pytest.raises(PayoutError) as info:
            await call
        assert outcome(info.value) == ("rpc_unreachable", True, False)


@pytest.mark.parametrize("mode", ["close", "slow"])
async def test_lost_reply_after_sending(mode: str) -> None:
    server = start(mode)
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.3)) as c:
            backend = payout(c, server.url)
            # The node may have sent the BTC: unknown outcome, never retried automatically.
            with pytest.raises(PayoutError) as info:
                await backend.send(request())
            assert outcome(info.value) == (
                "rpc_unreachable",
                False,
                True,
            )
            # A read-only call is safe to retry.
            with pytest.raises(PayoutError) as info:
                await backend.get_network()
            assert outcome(info.value) == (
                "rpc_unreachable",
                True,
                False,
            )
    finally:
        stop(server)


# --- getblockchaininfo ---------------------------------------------------------------------------


@pytest.mark.parametrize("chain", ["main", "test", "signet", "regtest"])
async def test_get_network(bitcoind: FakeBitcoind, client: httpx.AsyncClient, chain: str) -> None:
    bitcoind.chain = chain
    assert await payout(client, bitcoind.url, wallet="payouts").get_network() == chain
    assert bitcoind.last.body["method"] == "getblockchaininfo"
    assert bitcoind.last.body["params"] == []


async def test_get_network_without_chain(bitcoind: FakeBitcoind, client: httpx.AsyncClient) -> None:
    bitcoind.chain = "missing"
    with pytest.raises(PayoutError) as info:
        await payout(client, bitcoind.url).get_network()
    assert info.value.code == "rpc_bad_response"


async def test_get_network_auth(bitcoind: FakeBitcoind, client: httpx.AsyncClient) -> None:
    with pytest.raises(PayoutError) as info:
        await payout(client, bitcoind.url, user="other").get_network()
    assert info.value.code == "rpc_auth"


# --- construction and validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fee_rate_sat_vb": 5, "conf_target": 6},
        {"fee_rate_sat_vb": 0},
        {"fee_rate_sat_vb": True},
        {"conf_target": 0},
        {"conf_target": 1009},
        {"password": None},
    ],
)
def test_constructor_rejects_bad_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        payout(httpx.AsyncClient(), "http://127.0.0.1:8332", **kwargs)


@pytest.mark.parametrize("url", ["127.0.0.1:8332", "ftp://node:8332", "/relative"])
def test_constructor_rejects_bad_url(url: str) -> None:
    with pytest.raises(ValueError):
        payout(httpx.AsyncClient(), url)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"amount_sat": 0}, ValueError),
        ({"amount_sat": -1}, ValueError),
        ({"amount_sat": MAX_MONEY_SAT + 1}, ValueError),
        ({"amount_sat": True}, TypeError),
        ({"amount_sat": Decimal(1)}, TypeError),
        ({"address": ""}, ValueError),
        ({"address": f" {ADDRESS}"}, ValueError),
        ({"order_id": "1"}, TypeError),
    ],
)
def test_payout_request_validation(kwargs: dict[str, Any], exc: type[Exception]) -> None:
    values: dict[str, Any] = {"order_id": 1, "address": ADDRESS, "amount_sat": 1} | kwargs
    with pytest.raises(exc):
        BtcPayoutRequest(**values)


def test_validate_txid() -> None:
    assert validate_txid(TXID) == TXID
    assert validate_txid(f"  {'AbC0' * 16}\n") == "abc0" * 16
    for bad in ["", "a" * 63, "a" * 65, "g" * 64, "a" * 32 + " " + "a" * 31, "0x" + "a" * 62]:
        with pytest.raises(ValueError):
            validate_txid(bad)
    with pytest.raises(ValueError):
        validate_txid(None)  # type: ignore[arg-type]


def test_sat_to_btc_is_exact() -> None:
    assert str(sat_to_btc(1)) == "1E-8"
    assert format(sat_to_btc(1), "f") == "0.00000001"
    assert format(sat_to_btc(MAX_MONEY_SAT), "f") == "21000000.00000000"
    with pytest.raises(TypeError):
        sat_to_btc(True)


def test_dumps_json_is_exact_and_refuses_float() -> None:
    value: JsonValue = {"a": [Decimal("0.10000000"), 1, True, None, "é"], "b": Decimal("1E+2")}
    assert dumps_json(value) == '{"a":[0.10000000,1,true,null,"\\u00e9"],"b":100}'
    with pytest.raises(TypeError):
        dumps_json(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        dumps_json(Decimal("NaN"))


# --- manual backend ------------------------------------------------------------------------------


async def test_manual_payout_is_not_automatic() -> None:
    manual = ManualPayout()
    assert (manual.name, manual.automatic) == ("manual", False)
    with pytest.raises(PayoutError) as info:
        await manual.send(request())
    assert outcome(info.value) == ("manual_payout", False, False)
    assert "records the txid" in info.value.message


def test_backends_satisfy_protocol() -> None:
    backends: list[BtcPayoutBackend] = [ManualPayout(), payout(httpx.AsyncClient(), "http://127.0.0.1:8332")]
    assert all(isinstance(b, BtcPayoutBackend) for b in backends)
    assert backends[1].automatic and backends[1].name == "bitcoin_core"


# --- property: the wire amount is exactly amount_sat / 1e8 ---------------------------------------


@settings(max_examples=100, deadline=None, database=None)
@given(amount_sat=st.integers(min_value=1, max_value=MAX_MONEY_SAT))
def test_wire_amount_round_trips_exactly(node: FakeBitcoind, amount_sat: int) -> None:
    async def send() -> BtcPayoutResult:
        async with httpx.AsyncClient(timeout=5) as c:
            return await payout(c, node.url).send(request(amount_sat))

    node.reset()
    asyncio.run(send())
    text = wire_amount(node.last.raw)
    assert re.fullmatch(r"(0|[1-9][0-9]*)\.[0-9]{8}", text)
    assert Decimal(text) == Decimal(amount_sat) / Decimal(100_000_000)
    assert Decimal(text) * 100_000_000 == amount_sat
