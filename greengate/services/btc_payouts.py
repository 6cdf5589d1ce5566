"""Completing exchange orders by sending BTC through the configured payout backend."""

from __future__ import annotations

from greengate.clock import utcnow
from greengate.domain.errors import BusinessRuleViolation, Unavailable
from greengate.domain.exchange import OrderStatus
from greengate.payouts import BtcPayoutRequest, PayoutError
from greengate.runtime import Runtime
from greengate.services.exchange_orders import complete_order, lock_order


async def pay_out_order(rt: Runtime, order_id: int, *, actor: str) -> str:
    """Send the receivable to the client's wallet and complete the order with the txid.

    The order's row lock is held across the send, so two operators (or retries) cannot pay one order
    twice: the second waits, then finds it completed. If the node's answer is lost after it may have
    sent, the error says so and the order stays `payed` for a manual check of the wallet, whose
    transaction comment names the order.
    """
    backend = rt.btc_payout_backend()
    if not backend.automatic:
        raise BusinessRuleViolation(
            "payouts are manual: send the BTC yourself, then run `greengate order complete ID --txid TXID`",
            code="manual_payout",
        )
    async with rt.db.transaction() as session:
        order = await lock_order(session, order_id)
        if OrderStatus(order.status) is not OrderStatus.PAYED:
            raise BusinessRuleViolation(f"order {order_id} is {order.status}, not payed", code="not_payable")
        try:
            result = await backend.send(BtcPayoutRequest(order.id, order.wallet, order.amount_receivable))
        except PayoutError as exc:
            hint = (
                " — the payout may have been sent; check the wallet before retrying"
                if exc.outcome_unknown
                else ""
            )
            raise Unavailable(f"payout failed: {exc.message}{hint}", code=f"payout_{exc.code}") from None
        await complete_order(session, rt, order_id, txid=result.txid, now=utcnow(), actor=actor)
        return f"{OrderStatus.COMPLETED.value} txid={result.txid}"
