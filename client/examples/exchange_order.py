"""The Exchange API in a few calls: directions, an order, its status, and canceling it.

    GREENGATE_URL=http://127.0.0.1:8000 GREENGATE_API_SECRET=gg_... python exchange_order.py

(`greengate serve --demo` prints an `api_secret`.)
"""

from __future__ import annotations

import os
import uuid

from greengate_client import ExchangeApiError, ExchangeClient

WALLET = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"


def main() -> None:
    url = os.environ.get("GREENGATE_URL", "http://127.0.0.1:8000")
    with ExchangeClient(url, os.environ["GREENGATE_API_SECRET"]) as client:
        for direction in client.directions():
            rate = direction.current_course
            print(f"direction {direction.payment_method}: {direction.fullname}, 1 BTC = {rate}")

        # The key makes a retried create (after a timeout, say) return this same order.
        order = client.create_order("card", WALLET, "9999", idempotency_key=str(uuid.uuid4()))
        print(f"order {order.order_id}: pay exactly {order.amount_payable} to {order.wallet_payment}")
        print(f"  receive {order.amount_receivable} BTC, expires at {order.expires_at:%H:%M:%S} UTC")
        print(f"  payer page: {order.fast_link}")

        [current] = client.check_orders([order.order_id])
        print(f"order {current.order_id} is {current.order_status}")

        result = client.cancel_orders([order.order_id])
        print("canceled:", [item.order_id for item in result.canceled])

        try:
            client.create_order("card", "not-a-wallet", "9999")
        except ExchangeApiError as error:
            print(f"refused as expected: HTTP {error.status} {error.code}: {error.error}")


if __name__ == "__main__":
    main()
