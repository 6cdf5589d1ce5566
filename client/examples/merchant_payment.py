"""The Merchant API: create a payment, read its status, list payment systems, cancel it.

    GREENGATE_URL=http://127.0.0.1:8000 GREENGATE_MERCHANT_ID=1 GREENGATE_SECRET_KEY=... \
        python merchant_payment.py

(`greengate serve --demo` prints `merchant_id` and `secret_key`.)
"""

from __future__ import annotations

import os
import uuid
from decimal import Decimal

from greengate_client import MerchantApiError, MerchantClient


def main() -> None:
    url = os.environ.get("GREENGATE_URL", "http://127.0.0.1:8000")
    merchant_id = int(os.environ["GREENGATE_MERCHANT_ID"])
    with MerchantClient(url, merchant_id, os.environ["GREENGATE_SECRET_KEY"]) as client:
        order_id = f"example-{uuid.uuid4().hex[:12]}"
        payment = client.init_payment(
            Decimal("1500.50"),
            "Order with the greengate client",
            order_id=order_id,
            currency="KZT",
            testing_mode=1,
            extra={"basket_id": "42"},  # the shop's own parameter, echoed in callbacks
        )
        print(f"payment {payment.payment_id}: send the payer to {payment.redirect_url}")

        status = client.get_status2(order_id=order_id)
        print(f"status {status.transaction_status}, {status.amount} {status.currency}")

        for system in client.ps_list("1500.50", "KZT"):
            print(f"payment system {system.name}: {system.description}")

        client.cancel(payment.payment_id)
        print(f"canceled; now {client.get_status3(payment.payment_id).payment_status}")

        try:
            client.get_status2(order_id="no-such-order")
        except MerchantApiError as error:
            print(f"refused as expected: pg_error_code {error.code}: {error.description}")


if __name__ == "__main__":
    main()
