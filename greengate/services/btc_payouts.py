"""Completing exchange orders by sending BTC through the configured payout backend."""

from __future__ import annotations

from sqlalchemy import select

from greengate.clock import utcnow
from greengate.domain.errors import BusinessRuleViolation, Unavailable
from greengate.domain.exchange import OrderStatus
from greengate.payouts import BtcPayoutRequest, PayoutError
from greengate.runtime import Runtime
from greengate.services.exchange_orders import complete_order, lock_order
from greengate.store.models import BtcPayoutSend


async def pay_out_order(rt: Runtime, order_id: int, *, actor: str, wallet_checked: bool = False) -> str:
    """Send the receivable to the client's wallet and complete the order with the txid.

    The send is recorded and committed under the order's row lock, then the node is called with no lock
    held, then the outcome is recorded. A second payout of the order finds the recorded send and is
    refused instead of paying twice: while it is under way, and after an answer was lost (the node may
    have sent). Then the operator checks the wallet, whose transaction comment names the order, and either
    records the txid (`order complete`) or sends again with `wallet_checked`.
    """
    backend = rt.btc_payout_backend()
    if not backend.automatic:
        raise BusinessRuleViolation(
            "payouts are manual: send the BTC yourself, then run `greengate order complete ID --txid TXID`",
            code="manual_payout",
        )
    now = utcnow()
    async with rt.db.transaction() as session:
        order = await lock_order(session, order_id)
        if OrderStatus(order.status) is not OrderStatus.PAYED:
            raise BusinessRuleViolation(f"order {order_id} is {order.status}, not payed", code="not_payable")
        send = await session.get(BtcPayoutSend, order_id)
        if send is None:
            send = BtcPayoutSend(order_id=order_id, state="sending", actor=actor, error="", started_at=now)
            session.add(send)
        elif send.state == "failed" or wallet_checked:
            send.state, send.actor, send.error, send.started_at = "sending", actor, "", now
            send.finished_at = None
        else:
            pending = "under way" if send.state == "sending" else "of unknown outcome"
            raise BusinessRuleViolation(
                f"order {order_id}: a payout started {send.started_at:%Y-%m-%d %H:%M:%S} by {send.actor} "
                f"is {pending}; check the wallet, then record its txid with `greengate order complete` "
                "or send again with `--wallet-checked`",
                code="payout_in_progress",
            )
        request = BtcPayoutRequest(order.id, order.wallet, order.amount_receivable)
    try:
        result = await backend.send(request)
    except PayoutError as exc:
        await _finish(rt, order_id, "unknown" if exc.outcome_unknown else "failed", exc.message)
        hint = " — the payout may have been sent; check the wallet before retrying"
        hint = hint if exc.outcome_unknown else ""
        raise Unavailable(f"payout failed: {exc.message}{hint}", code=f"payout_{exc.code}") from None
    except BaseException:
        await _finish(rt, order_id, "unknown", "interrupted while the node was called")
        raise
    async with rt.db.transaction() as session:
        await complete_order(session, rt, order_id, txid=result.txid, now=utcnow(), actor=actor)
    return f"{OrderStatus.COMPLETED.value} txid={result.txid}"


async def _finish(rt: Runtime, order_id: int, state: str, error: str) -> None:
    async with rt.db.transaction() as session:
        send = await session.scalar(
            select(BtcPayoutSend).where(BtcPayoutSend.order_id == order_id).with_for_update()
        )
        if send is not None and send.state == "sending":
            send.state, send.error, send.finished_at = state, error[:500], utcnow()
