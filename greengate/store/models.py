"""SQLAlchemy models. Money columns hold integer minor units; rates and percentages are decimal text."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from greengate.store.types import BigIntPK, UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(8), default="test")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    api_secret_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    secret_key_enc: Mapped[str | None] = mapped_column(Text)
    payout_secret_enc: Mapped[str | None] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    webhook_secret_enc: Mapped[str | None] = mapped_column(Text)
    default_wallet: Mapped[str | None] = mapped_column(String(100))
    # Merchant API defaults, used when a request leaves the parameter out.
    check_url: Mapped[str | None] = mapped_column(String(2000))
    result_url: Mapped[str | None] = mapped_column(String(2000))
    refund_url: Mapped[str | None] = mapped_column(String(2000))
    capture_url: Mapped[str | None] = mapped_column(String(2000))
    success_url: Mapped[str | None] = mapped_column(String(2000))
    failure_url: Mapped[str | None] = mapped_column(String(2000))
    request_method: Mapped[str] = mapped_column(String(8), default="POST", server_default="POST")
    check_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # Exchange API requests a minute for this client; None: GREENGATE_EXCHANGE_REQUESTS_PER_MINUTE.
    exchange_requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Direction(Base):
    __tablename__ = "directions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    payment_method: Mapped[str] = mapped_column(String(32), unique=True)
    from_currency: Mapped[str] = mapped_column(String(8))
    to_currency: Mapped[str] = mapped_column(String(8), default="BTC")
    status: Mapped[int] = mapped_column(Integer, default=1)
    order_ttl: Mapped[int] = mapped_column(Integer, default=30)
    min_amount: Mapped[int] = mapped_column(BigInteger)
    max_amount: Mapped[int] = mapped_column(BigInteger)
    commission_percent: Mapped[str] = mapped_column(String(16), default="0")
    fullname: Mapped[str] = mapped_column(String(200))
    rate_source: Mapped[str] = mapped_column(String(100), default="fixed")
    unique_amounts: Mapped[bool] = mapped_column(Boolean, default=False)
    # How far (in minor units) a payable amount may be moved to keep it unique on a requisite.
    unique_amount_span: Mapped[int] = mapped_column(Integer, default=100)
    # Underpayment accepted (re-priced) when within this percentage of the payable amount.
    underpay_tolerance_percent: Mapped[str] = mapped_column(String(16), default="0")
    reserve_sat: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Requisite(Base):
    __tablename__ = "requisites"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    payment_method: Mapped[str] = mapped_column(String(32), index=True)
    number_enc: Mapped[str] = mapped_column(Text)
    number_masked: Mapped[str] = mapped_column(String(40))
    # Keyed hash of the number so an incoming transfer can name the requisite without decrypting all.
    number_digest: Mapped[str] = mapped_column(String(64), index=True)
    bank: Mapped[str] = mapped_column(String(100), default="")
    holder: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    daily_limit: Mapped[int | None] = mapped_column(BigInteger)
    turnover_limit: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Rate(Base):
    __tablename__ = "rates"
    __table_args__ = (UniqueConstraint("source", "base", "quote"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    base: Mapped[str] = mapped_column(String(8))
    quote: Mapped[str] = mapped_column(String(8))
    rate: Mapped[str] = mapped_column(String(40))
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ExchangeOrder(Base):
    __tablename__ = "exchange_orders"
    __table_args__ = (
        # The hard guarantee behind requisite allocation: an incoming transfer (requisite, amount)
        # matches at most one awaiting order.
        Index(
            "uq_exchange_orders_awaiting_requisite_amount",
            "requisite_id",
            "amount_payable",
            unique=True,
            sqlite_where=text("status = 'awaiting'"),
            postgresql_where=text("status = 'awaiting'"),
        ),
        Index("ix_exchange_orders_merchant_id_id", "merchant_id", "id"),
        Index("ix_exchange_orders_status_payment_method", "status", "payment_method"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"))
    direction_id: Mapped[int] = mapped_column(ForeignKey("directions.id"))
    payment_method: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer, default=1)
    wallet: Mapped[str] = mapped_column(String(100))
    currency: Mapped[str] = mapped_column(String(8))
    from_amount: Mapped[int] = mapped_column(BigInteger)
    amount_payable: Mapped[int] = mapped_column(BigInteger)
    exchange_rate: Mapped[str] = mapped_column(String(40))
    rate_source: Mapped[str] = mapped_column(String(100))
    commission_percent: Mapped[str] = mapped_column(String(16))
    amount_receivable: Mapped[int] = mapped_column(BigInteger)
    requisite_id: Mapped[int | None] = mapped_column(ForeignKey("requisites.id"))
    access_token: Mapped[str] = mapped_column(String(64), unique=True)
    paid_amount: Mapped[int | None] = mapped_column(BigInteger)
    txid: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OrderEvent(Base):
    """Every status change of an exchange order, for the order's history."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("exchange_orders.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class BtcPayoutSend(Base):
    """The one send of an order's BTC that is under way or was tried: recorded and committed before the
    node is called, so the order's row lock is never held across the call, and a second send waits for
    this one's outcome instead of paying twice."""

    __tablename__ = "btc_payout_sends"

    order_id: Mapped[int] = mapped_column(ForeignKey("exchange_orders.id"), primary_key=True)
    # sending: the node was (or is being) called | failed: it certainly sent nothing | unknown: it may
    # have sent; the wallet must be checked | sent: the txid is recorded on the order
    state: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str] = mapped_column(String(100))
    error: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IncomingTransfer(Base):
    __tablename__ = "incoming_transfers"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    requisite_id: Mapped[int | None] = mapped_column(ForeignKey("requisites.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    # matched: applied to order_id; unmatched: no open order fits; review: held for the operator.
    status: Mapped[str] = mapped_column(String(16), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("exchange_orders.id"))
    note: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxMessage(Base):
    """Callbacks and scheduled jobs, written in the business transaction and run by the worker."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_pending_due",
            "due_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        # Pending rows of one object, so its callbacks go out in order.
        Index(
            "ix_outbox_pending_aggregate",
            "aggregate",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        # Delivered rows by age, for pruning.
        Index(
            "ix_outbox_done_finished",
            "finished_at",
            sqlite_where=text("status = 'done'"),
            postgresql_where=text("status = 'done'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    merchant_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    aggregate: Mapped[str] = mapped_column(String(60))
    payload: Mapped[str] = mapped_column(Text)
    target_url: Mapped[str | None] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    request_body: Mapped[str] = mapped_column(Text, default="")
    response_body: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    succeeded: Mapped[bool] = mapped_column(Boolean, default=False)
    # None while the request is under way: every attempt is logged before it is sent.
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("merchant_id", "scope", "key"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    scope: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AdminUser(Base):
    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default="admin")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str] = mapped_column(String(60))
    object_id: Mapped[str] = mapped_column(String(60))
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ConsoleSession(Base):
    """A signed-in operator console session; the cookie holds a random token, the row its SHA-256."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin_user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    # One message for the next page (the outcome of the last action), cleared when shown.
    flash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class EncryptionKey(Base):
    """A key the stored data needs, by id, with a check value that tells the same key from another
    with the same id; the key itself is never stored here."""

    __tablename__ = "encryption_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    check_value: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SignedRequest(Base):
    """A state-changing signed Merchant API request that was applied, with the answer it got.

    Keyed by merchant, script and a digest of the signed parameters (pg_sig included): the very same
    request sent again gets this answer (signed afresh) and never acts twice. Kept for good: a replay
    days later must still find it."""

    __tablename__ = "signed_requests"
    __table_args__ = (UniqueConstraint("merchant_id", "script", "digest"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    script: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(64))
    answer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Payment(Base):
    """A merchant's intent to be paid (pg_payment_id); each try to pay it is a PaymentAttempt."""

    __tablename__ = "payments"
    __table_args__ = (
        # At most one open payment per merchant order id.
        Index(
            "uq_payments_open_order",
            "merchant_id",
            "order_id",
            unique=True,
            sqlite_where=text("open_order = 1"),
            postgresql_where=text("open_order"),
        ),
        Index("ix_payments_merchant_id_order_id", "merchant_id", "order_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"))
    order_id: Mapped[str | None] = mapped_column(String(50))
    # True unless the payment failed, was canceled or expired: its order id stays taken.
    open_order: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer, default=1)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(Text)
    testing: Mapped[bool] = mapped_column(Boolean)
    payment_system: Mapped[str | None] = mapped_column(String(60))
    language: Mapped[str] = mapped_column(String(4), default="ru")
    request_method: Mapped[str] = mapped_column(String(8), default="POST")
    check_url: Mapped[str | None] = mapped_column(String(2000))
    result_url: Mapped[str | None] = mapped_column(String(2000))
    refund_url: Mapped[str | None] = mapped_column(String(2000))
    capture_url: Mapped[str | None] = mapped_column(String(2000))
    success_url: Mapped[str | None] = mapped_column(String(2000))
    failure_url: Mapped[str | None] = mapped_column(String(2000))
    success_url_method: Mapped[str] = mapped_column(String(8), default="GET")
    # pg_timeout_after_payment: seconds the success page waits before taking the payer back to the shop.
    timeout_after_payment: Mapped[int | None] = mapped_column(Integer)
    failure_url_method: Mapped[str] = mapped_column(String(8), default="GET")
    state_url: Mapped[str | None] = mapped_column(String(2000))
    state_url_method: Mapped[str] = mapped_column(String(8), default="GET")
    site_url: Mapped[str | None] = mapped_column(String(2000))
    user_phone: Mapped[str | None] = mapped_column(String(20))
    user_email: Mapped[str | None] = mapped_column(String(200))
    user_ip: Mapped[str | None] = mapped_column(String(45))
    user_id: Mapped[str | None] = mapped_column(String(100))
    two_step: Mapped[bool] = mapped_column(Boolean, default=False)
    captured: Mapped[bool] = mapped_column(Boolean, default=False)
    recurring_start: Mapped[bool] = mapped_column(Boolean, default=False)
    recurring_lifetime_months: Mapped[int | None] = mapped_column(Integer)
    # The merchant's own parameters (JSON list of [name, value]) echoed back in callbacks.
    extra_params: Mapped[str] = mapped_column(Text, default="[]")
    receipt: Mapped[str | None] = mapped_column(Text)
    access_token: Mapped[str] = mapped_column(String(64), unique=True)
    require_3ds: Mapped[bool] = mapped_column(Boolean, default=False)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    # The gateway's fee charged on the payment (minor units); the merchant nets amount - fee_amount.
    fee_amount: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    failure_code: Mapped[int | None] = mapped_column(Integer)
    failure_description: Mapped[str | None] = mapped_column(Text)
    result_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PaymentAttempt(Base):
    """One try to pay a payment: method, masked card or phone, 3-DS/OTP state, the acquirer's answer."""

    __tablename__ = "payment_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    method: Mapped[str] = mapped_column(String(20))  # bankcard | mobile_commerce
    acquirer: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    card_enc: Mapped[str | None] = mapped_column(Text)
    card_masked: Mapped[str | None] = mapped_column(String(40))
    card_brand: Mapped[str | None] = mapped_column(String(4))
    card_exp: Mapped[str | None] = mapped_column(String(5))
    card_holder: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(20))
    otp_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The acquirer's decision waiting for the merchant's check answer (approved / processing).
    pending_outcome: Mapped[str | None] = mapped_column(String(16))
    auth_code: Mapped[str | None] = mapped_column(String(12))
    rrn: Mapped[str | None] = mapped_column(String(20))
    failure_code: Mapped[int | None] = mapped_column(Integer)
    failure_description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PaymentEvent(Base):
    """Every status change of a payment, with who made it."""

    __tablename__ = "payment_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerAccount(Base):
    """One currency's account of one owner in one book; the debit/credit sums are a cache of its entries.

    Each sum is stored in two BIGINT columns, `<sum>_hi * 2**62 + <sum>`, with the low part kept
    below 2**62: adding one entry (below 2**62) never leaves a 64-bit integer on either database."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (UniqueConstraint("owner", "kind", "currency", "book", name="uq_ledger_accounts_key"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    owner: Mapped[str] = mapped_column(String(40))  # "gateway" | "merchant:<id>"
    kind: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(8))
    book: Mapped[str] = mapped_column(String(8), default="live")  # "test" | "live"
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_posted_hi: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted_hi: Mapped[int] = mapped_column(BigInteger, default=0)
    # Two-phase (pending) transfers; authorisations currently use the merchant's pending account.
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerTransaction(Base):
    """An immutable, balanced set of entries naming the business object and reason that caused it.

    The unique key makes a movement post once, however often its business step is retried."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (UniqueConstraint("object_type", "object_id", "reason"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(60))
    rate: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class LedgerEntry(Base):
    """One leg of a ledger transaction. Append-only: corrections are new, reversing transactions."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("(debit > 0 AND credit = 0) OR (debit = 0 AND credit > 0)", name="one_side"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    debit: Mapped[int] = mapped_column(BigInteger)
    credit: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MerchantFee(Base):
    """The gateway's fee on a merchant's payments: percent of the amount plus a fixed part, per payment
    system ("*" for any) and currency."""

    __tablename__ = "merchant_fees"
    __table_args__ = (UniqueConstraint("merchant_id", "payment_system", "currency"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"))
    payment_system: Mapped[str] = mapped_column(String(32), default="*")
    currency: Mapped[str] = mapped_column(String(8))
    percent: Mapped[str] = mapped_column(String(16), default="0")
    fixed: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MerchantAmountCap(Base):
    """A merchant's own cap, below the gateway's, on one payment, refund, capture or payout."""

    __tablename__ = "merchant_amount_caps"
    __table_args__ = (UniqueConstraint("merchant_id", "currency"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"))
    currency: Mapped[str] = mapped_column(String(8))
    max_amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SavedCard(Base):
    """A payer's card saved for a merchant (pg_card_id / pg_card_token), for payments or payouts.

    The row is created by cardstorage/add as `pending` (its `access_token` opens the card page);
    it becomes `active` once the card is verified, `failed` when it is not, `removed` when the
    merchant removes it (the PAN ciphertext is then nulled and the token is dead)."""

    __tablename__ = "saved_cards"
    __table_args__ = (Index("ix_saved_cards_merchant_id_user_id", "merchant_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"))
    user_id: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(String(8))  # payment | payout
    status: Mapped[str] = mapped_column(String(16))  # pending | active | failed | removed
    token: Mapped[str] = mapped_column(String(64), unique=True)
    access_token: Mapped[str] = mapped_column(String(64), unique=True)
    # The small authorisation that verified the card (payment cards only).
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    order_id: Mapped[str | None] = mapped_column(String(50))
    post_link: Mapped[str | None] = mapped_column(String(2000))
    back_link: Mapped[str | None] = mapped_column(String(2000))
    request_method: Mapped[str] = mapped_column(String(8), default="POST")
    language: Mapped[str] = mapped_column(String(4), default="ru")
    testing: Mapped[bool] = mapped_column(Boolean, default=False)
    pan_enc: Mapped[str | None] = mapped_column(Text)
    card_masked: Mapped[str | None] = mapped_column(String(40))
    card_brand: Mapped[str | None] = mapped_column(String(4))
    card_exp: Mapped[str | None] = mapped_column(String(5))
    card_holder: Mapped[str | None] = mapped_column(String(100))
    failure_code: Mapped[int | None] = mapped_column(Integer)
    failure_description: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SavedCardCharge(Base):
    """A payment made with a saved card (card/init), so card/pay and card/direct know which card."""

    __tablename__ = "saved_card_charges"

    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), primary_key=True)
    saved_card_id: Mapped[int] = mapped_column(ForeignKey("saved_cards.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Refund(Base):
    """One refund (revoke.php, a rejected result, a test button) or chargeback of a settled payment.

    Written in the transaction that raises the payment's refunded total and posts the ledger."""

    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # refund | chargeback
    status: Mapped[str] = mapped_column(String(16))  # success
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PaymentCapture(Base):
    """The capture (clearing) of a two-step payment's authorisation: at most one per payment."""

    __tablename__ = "payment_captures"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), unique=True)
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str] = mapped_column(String(100))  # merchant:<id> | worker (automatic capture)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RecurringProfile(Base):
    """A card payment started with pg_recurring_start=1: later charges reuse its card without the payer."""

    __tablename__ = "recurring_profiles"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), unique=True)
    # The attempt whose encrypted card the charges use.
    attempt_id: Mapped[int] = mapped_column(ForeignKey("payment_attempts.id"))
    currency: Mapped[str] = mapped_column(String(8))
    card_masked: Mapped[str | None] = mapped_column(String(40))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Payout(Base):
    """A payout to a card (api/reg2nonreg, api/reg2reg): the merchant's balance is reserved when it is
    created, then paid out (completed) or given back (released) when it ends."""

    __tablename__ = "payouts"
    # The merchant's order id names one payout: a repeat gets the first one's answer.
    __table_args__ = (UniqueConstraint("merchant_id", "order_id", name="uq_payouts_merchant_order"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"))
    kind: Mapped[str] = mapped_column(String(16))  # reg2nonreg | reg2reg
    order_id: Mapped[str] = mapped_column(String(50))
    user_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(Text)
    testing: Mapped[bool] = mapped_column(Boolean)
    language: Mapped[str] = mapped_column(String(4), default="ru")
    request_method: Mapped[str] = mapped_column(String(8), default="POST")
    post_link: Mapped[str | None] = mapped_column(String(2000))
    back_link: Mapped[str | None] = mapped_column(String(2000))
    access_token: Mapped[str] = mapped_column(String(64), unique=True)
    saved_card_id: Mapped[int | None] = mapped_column(BigInteger)
    card_enc: Mapped[str | None] = mapped_column(Text)
    card_masked: Mapped[str | None] = mapped_column(String(40))
    card_brand: Mapped[str | None] = mapped_column(String(4))
    acquirer: Mapped[str | None] = mapped_column(String(40))
    auth_code: Mapped[str | None] = mapped_column(String(12))
    rrn: Mapped[str | None] = mapped_column(String(20))
    failure_code: Mapped[int | None] = mapped_column(Integer)
    failure_description: Mapped[str | None] = mapped_column(Text)
    # The request minus salt and signature, and the first answer (JSON), for repeated requests.
    request_hash: Mapped[str] = mapped_column(String(64))
    first_answer: Mapped[str] = mapped_column(Text, default="[]")
    # The merchant's own parameters (JSON list of [name, value]) echoed back in the callback.
    extra_params: Mapped[str] = mapped_column(Text, default="[]")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PayoutEvent(Base):
    """Every status change of a payout, with who made it."""

    __tablename__ = "payout_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    payout_id: Mapped[int] = mapped_column(ForeignKey("payouts.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class ThrottleCounter(Base):
    """Hits of one subject (a client, an address, an account at an address) in one fixed window.
    Shared by every process and node through the database."""

    __tablename__ = "throttle_counters"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(String(300), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    hits: Mapped[int] = mapped_column(Integer)
