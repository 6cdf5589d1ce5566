"""Receiving greengate's callbacks (check, result, refund, capture) in any web framework.

`handle` is all a framework needs: give it the method, the full URL, the body and its content type,
send back what it returns. Here it is served by the standard library's WSGI server; with
GREENGATE_URL, GREENGATE_MERCHANT_ID and GREENGATE_SECRET_KEY set it also creates a payment whose
callbacks come to it.

    GREENGATE_SECRET_KEY=... python merchant_callbacks.py [port]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server
from wsgiref.util import request_uri

from greengate_client import SignatureError, answer, read_callback

SECRET = os.environ.get("GREENGATE_SECRET_KEY", "")


def handle(method: str, url: str, body: bytes, content_type: str) -> tuple[int, str]:
    try:
        callback = read_callback(SECRET, url, method=method, body=body, content_type=content_type)
    except SignatureError:
        return 400, "bad signature"
    print(f"verified {callback.script} callback for payment {callback.get('pg_payment_id')}", flush=True)
    if callback.script == "check.php" and callback.get("basket_id") == "sold-out":
        return 200, answer(SECRET, callback, "rejected", "out of stock")
    return 200, answer(SECRET, callback, "ok")


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    status, text = handle(
        environ["REQUEST_METHOD"], request_uri(environ), body, environ.get("CONTENT_TYPE", "")
    )
    start_response(f"{status} {'OK' if status == 200 else 'Bad Request'}", [("Content-Type", "text/xml")])
    return [text.encode()]


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8089
    with make_server("127.0.0.1", port, wsgi_app) as server:
        if "GREENGATE_MERCHANT_ID" in os.environ:
            from greengate_client import MerchantClient

            url = os.environ.get("GREENGATE_URL", "http://127.0.0.1:8000")
            with MerchantClient(url, int(os.environ["GREENGATE_MERCHANT_ID"]), SECRET) as client:
                payment = client.init_payment(
                    "100",
                    "Callback example",
                    check_url=f"http://127.0.0.1:{port}/shop/check.php",
                    result_url=f"http://127.0.0.1:{port}/shop/result.php",
                    request_method="POST",
                )
            print(f"payment {payment.payment_id}: pay it at {payment.redirect_url}", flush=True)
        print(f"listening on http://127.0.0.1:{port}/shop/", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
