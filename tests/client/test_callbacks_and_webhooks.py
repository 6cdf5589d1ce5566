"""The merchant's side of callbacks and the exchange office's side of webhooks, as greengate really
sends them: a shop written with the client's helpers verifies check/result/refund/capture callbacks
by GET, POST and XML and answers them; tampered messages are refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from greengate_client import ExchangeClient, MerchantClient, SignatureError, verify_webhook
from greengate_client.callbacks import Callback, answer, read_callback
from greengate_client.signature import verify_signature
from greengate_client.wire import parse_xml

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.merchants import create_merchant
from tests.client.conftest import Gateway
from tests.client.test_merchant_client import pay
from tests.support.exchange import WALLET, make_client, make_direction, make_requisites
from tests.support.servers import Receiver


@dataclass(frozen=True)
class Received:
    method: str
    url: str
    body: bytes
    content_type: str
    callback: Callback


class ShopServer:
    """A shop's callback endpoints built on `read_callback` and `answer`; `verdicts[path]` is the answer
    to give (default ok). Only verified callbacks are recorded; others get HTTP 400."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.verdicts: dict[str, str] = {}
        self.received: list[Received] = []
        self.refused = 0
        self._lock = threading.Lock()
        shop = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = f"http://{self.headers['Host']}{self.path}"
                ctype = self.headers.get("Content-Type", "")
                try:
                    callback = read_callback(
                        shop.secret, url, method=self.command, body=body, content_type=ctype
                    )
                except SignatureError:
                    with shop._lock:
                        shop.refused += 1
                    status, reply = 400, b"bad signature"
                else:
                    with shop._lock:
                        shop.received.append(Received(self.command, url, body, ctype, callback))
                    verdict = shop.verdicts.get(urlsplit(url).path, "ok")
                    status, reply = 200, answer(shop.secret, callback, verdict, "noted").encode()  # type: ignore[arg-type]
                self.send_response(status)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if urlsplit(r.url).path == path]

    def wait(self, path: str, n: int = 1, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.at(path)) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: {len(self.at(path))} of {n} callbacks arrived")
            time.sleep(0.05)
        return self.at(path)

    def __enter__(self) -> ShopServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class Merchant:
    client: MerchantClient
    secret: str


@pytest.fixture
async def merchant(rt: Runtime, gateway: Gateway) -> Merchant:
    async with rt.db.transaction() as session:
        _, creds = await create_merchant(session, rt.keyring, name="Callback shop", mode="test", now=utcnow())
    return Merchant(MerchantClient(gateway.url, creds.merchant_id, creds.secret_key), creds.secret_key)


@pytest.fixture
def shop(merchant: Merchant) -> Iterator[ShopServer]:
    with ShopServer(merchant.secret) as server:
        yield server


def wait_status(client: MerchantClient, payment_id: int, wanted: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while (status := client.get_status2(payment_id).transaction_status) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"payment {payment_id} is {status}, not {wanted}")
        time.sleep(0.05)
    return status


@pytest.mark.parametrize("method", ["GET", "POST", "XML"])
async def test_check_and_result_callbacks_verify_and_the_answers_are_accepted(
    merchant: Merchant, shop: ShopServer, rt: Runtime, method: str
) -> None:
    client = merchant.client
    init = client.init_payment(
        "100",
        "Callback order",
        order_id=f"cb-{method}",
        check_url=shop.url("/shop/check.php"),
        result_url=shop.url("/shop/result.php"),
        request_method=method,
        extra={"basket": "b-1"},
    )
    assert await pay(rt, init.payment_id) == "check"
    [check] = shop.wait("/shop/check.php")
    wait_status(client, init.payment_id, "ok")
    [result] = shop.wait("/shop/result.php")
    assert result.callback["pg_payment_id"] == str(init.payment_id)
    assert result.callback["pg_result"] == "1"
    assert result.callback["basket"] == "b-1"
    assert result.callback.script == "result.php"
    expected_method = "GET" if method == "GET" else "POST"
    assert (check.method, result.method) == (expected_method, expected_method)
    if method == "XML":
        assert dict(parse_qsl(result.body.decode())).keys() == {"pg_xml"}
    assert shop.refused == 0


async def test_a_rejected_check_stops_the_payment(merchant: Merchant, shop: ShopServer, rt: Runtime) -> None:
    shop.verdicts["/shop/check.php"] = "rejected"
    init = merchant.client.init_payment("100", "Out of stock", check_url=shop.url("/shop/check.php"))
    assert await pay(rt, init.payment_id) == "check"
    shop.wait("/shop/check.php")
    wait_status(merchant.client, init.payment_id, "failed")
    assert merchant.client.get_status2(init.payment_id).failure_code == 400


async def test_refund_and_capture_callbacks_verify(merchant: Merchant, shop: ShopServer, rt: Runtime) -> None:
    client = merchant.client
    init = client.init_payment(
        "100",
        "Two steps",
        postpone_payment=1,
        refund_url=shop.url("/shop/refund.php"),
        capture_url=shop.url("/shop/capture.php"),
        request_method="POST",
    )
    assert await pay(rt, init.payment_id) == "ok"
    client.do_capture(init.payment_id)
    [capture] = shop.wait("/shop/capture.php")
    assert capture.callback["pg_payment_id"] == str(init.payment_id)
    client.revoke(init.payment_id, "40")
    [refund] = shop.wait("/shop/refund.php")
    assert refund.callback["pg_payment_id"] == str(init.payment_id)
    assert refund.callback.script == "refund.php"


def _tamper_query(url: str, name: str) -> str:
    parts = urlsplit(url)
    pairs = [(k, v + "0" if k == name else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return parts._replace(query=urlencode(pairs)).geturl()


@pytest.mark.parametrize("method", ["GET", "POST", "XML"])
async def test_tampered_callbacks_are_refused(
    merchant: Merchant, shop: ShopServer, rt: Runtime, method: str
) -> None:
    init = merchant.client.init_payment(
        "100", "Tamper", result_url=shop.url("/shop/result.php"), request_method=method
    )
    assert await pay(rt, init.payment_id) == "ok"
    [genuine] = shop.wait("/shop/result.php")

    def again(url: str = genuine.url, body: bytes = genuine.body) -> Callback:
        return read_callback(
            merchant.secret, url, method=genuine.method, body=body, content_type=genuine.content_type
        )

    assert again().params == genuine.callback.params
    if method == "GET":
        forged_url = _tamper_query(genuine.url, "pg_amount")
        with pytest.raises(SignatureError):
            again(url=forged_url)
    elif method == "POST":
        forged = genuine.body.replace(b"pg_amount=100", b"pg_amount=1000")
        assert forged != genuine.body
        with pytest.raises(SignatureError):
            again(body=forged)
    else:
        document = dict(parse_qsl(genuine.body.decode()))["pg_xml"]
        forged_doc = document.replace("<pg_result>1</pg_result>", "<pg_result>0</pg_result>")
        forged_doc = forged_doc.replace("<pg_amount>100", "<pg_amount>900")
        assert forged_doc != document
        with pytest.raises(SignatureError):
            again(body=urlencode({"pg_xml": forged_doc}).encode())
    with pytest.raises(SignatureError):
        read_callback(
            "another-secret",
            genuine.url,
            method=genuine.method,
            body=genuine.body,
            content_type=genuine.content_type,
        )
    with pytest.raises(SignatureError):  # the same message sent to another script name
        again(url=genuine.url.replace("/result.php", "/check.php"))


def test_answers_echo_the_salt_and_verify_with_the_shop_s_script() -> None:
    callback = Callback("check.php", [("pg_payment_id", "5"), ("pg_salt", "cb2"), ("pg_sig", "x")])
    document = answer("SeCrEt-key_42", callback, "rejected", "Товар закончился")
    params = parse_xml(document, root="response")
    assert [(n, v) for n, v in params if n != "pg_sig"] == [
        ("pg_status", "rejected"),
        ("pg_description", "Товар закончился"),
        ("pg_salt", "cb2"),
    ]
    # the repository's merchant_answer vector: the same answer, signed by Platron's reference class
    assert dict(params)["pg_sig"] == "843738cb28c3f13d75497ff3db5217ed"
    assert verify_signature("check.php", params, "SeCrEt-key_42")


# --- exchange webhooks -----------------------------------------------------------------------------


async def test_exchange_webhooks_verify_and_tampering_is_refused(gateway: Gateway, rt: Runtime) -> None:
    await make_direction(rt)
    await make_requisites(rt, 1)
    with Receiver() as receiver:
        office = await make_client(rt, webhook_url=receiver.url)
        with ExchangeClient(gateway.url, office.api_secret) as client:
            order = client.create_order("card", WALLET, "9999")
            client.cancel_orders([order.order_id])
        seen = receiver.server.wait_for(lambda rs: len(rs) >= 2, timeout=60.0)
    events = [verify_webhook(office.webhook_secret, r.headers, r.body) for r in seen[:2]]
    assert [(e.type, e.data.order_id) for e in events] == [("order.status_changed", order.order_id)] * 2
    assert {e.data.order_status for e in events} == {"awaiting", "canceled"}
    assert events[0].id == seen[0].headers["webhook-id"]
    assert events[0].data.amount_receivable == order.amount_receivable

    delivered = seen[0]
    sent_at = events[0].created_at
    with pytest.raises(SignatureError):
        verify_webhook(office.webhook_secret, delivered.headers, delivered.body.replace(b"9999", b"1999"))
    with pytest.raises(SignatureError):
        verify_webhook("whsec_" + "QUFB" * 8, delivered.headers, delivered.body)
    with pytest.raises(SignatureError):
        verify_webhook(office.webhook_secret, {**delivered.headers, "webhook-id": "msg_0"}, delivered.body)
    stamp = int(delivered.headers["webhook-timestamp"])
    with pytest.raises(SignatureError):  # a replay from long ago
        verify_webhook(
            office.webhook_secret, delivered.headers, delivered.body, now=sent_at + timedelta(minutes=10)
        )
    two_minutes_on = datetime.fromtimestamp(stamp + 120, UTC)
    late = verify_webhook(office.webhook_secret, delivered.headers, delivered.body, now=two_minutes_on)
    assert late == events[0]
    with pytest.raises(SignatureError):  # a narrower tolerance
        verify_webhook(
            office.webhook_secret,
            delivered.headers,
            delivered.body,
            now=two_minutes_on,
            tolerance=timedelta(seconds=60),
        )
    with pytest.raises(ValueError):
        verify_webhook(office.webhook_secret, delivered.headers, delivered.body, tolerance=timedelta(hours=1))
