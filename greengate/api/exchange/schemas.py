"""Pydantic models documenting the Exchange API in OpenAPI (requests are parsed strictly by hand)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class CreateOrderIn(BaseModel):
    payment_method: str = Field(examples=["card"], description="Direction code: card (RUB), kzt (KZT), ...")
    wallet: str = Field(
        examples=["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"],
        description='Client\'s BTC address; "" uses the default payout wallet set by the operator',
    )
    from_amount: str = Field(
        examples=["5000"], description="Fiat amount, at most 2 decimals (string or number)"
    )


class OrderIdsIn(BaseModel):
    order_id: list[str] | str | int = Field(examples=[["8090056", "8090057"]])


class OrderOut(BaseModel):
    order_id: str = Field(examples=["8090056"])
    exchange_rate: str = Field(examples=["3233561.44"])
    amount_payable: str = Field(examples=["9999"])
    amount_receivable: str = Field(examples=["0.00256657"])
    wallet_payment: str = Field(
        examples=["4276380012345678"],
        description='The card to pay to; "" while none is assigned and once the order can no longer be paid',
    )
    clients_wallet: str
    created_at: str = Field(examples=["2022-04-29 14:21:43"])
    updated_at: str
    order_status: Literal["unconfirmed", "awaiting", "payed", "completed", "autocanceled", "canceled"]
    expires_at: str
    fast_link: str
    txid: str | None = Field(
        default=None, description="Only on completed orders: the payout's BTC transaction id"
    )


class CreateOrderOut(BaseModel):
    response: Literal["success"]
    items: list[OrderOut]


class CheckData(BaseModel):
    orders: list[OrderOut]


class CheckOut(BaseModel):
    result: Literal["true"]
    data: CheckData


class CancelItem(BaseModel):
    order_id: str = Field(description="As sent; an id that is not a number is failed as not found")
    order_status: str = Field(description='"" for an id that is not one of the client\'s orders')
    error: str | None = Field(default=None, examples=["order can no longer be canceled", "order not found"])


class CancelData(BaseModel):
    cancel: list[CancelItem]
    failed: list[CancelItem]


class CancelOut(BaseModel):
    result: Literal["true"]
    data: CancelData


class DirectionOut(BaseModel):
    id: int
    status: int
    order_ttl: int
    min_amount: float
    max_amount: float
    comission_percent: float
    fullname: str
    current_course: float | None
    payment_method: str


class TransferIn(BaseModel):
    requisite: str = Field(description="Card or phone number the money arrived on")
    amount: str = Field(examples=["5000.37"])
    currency: str = Field(examples=["RUB"])
    external_id: str | None = Field(default=None, description="Bank's reference; repeats are ignored")
    received_at: str | None = Field(default=None, examples=["2022-04-29 14:21:43"])


class TransferOut(BaseModel):
    transfer_id: int
    status: Literal["matched", "unmatched", "review"]
    order_id: str | None
    note: str


class ErrorOut(BaseModel):
    response: Literal["error"]
    result: Literal["false"]
    error: str
    code: str


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra documenting a JSON body that the route reads itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 409, 413, 415, 422, 503)
}
ERRORS[429] = {
    "model": ErrorOut,
    "description": (
        "`rate_limited`: the client sent more than its requests a minute (600 unless configured for"
        " the client), or its address failed authentication too often. `Retry-After` gives the"
        " seconds until the window ends."
    ),
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
}
