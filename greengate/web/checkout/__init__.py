"""Hosted payment pages of the Merchant API: card or phone, 3-D Secure, OTP, result, return to the shop."""

from greengate.web.checkout.routes import router

__all__ = ["router"]
