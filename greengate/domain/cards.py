"""Card and phone number rules: normalisation, Luhn, masking."""

from __future__ import annotations


def normalize_number(number: str) -> str:
    """Digits only: spaces, dashes and a leading '+' are presentation."""
    return "".join(ch for ch in number if ch.isdigit())


def luhn_valid(number: str) -> bool:
    digits = normalize_number(number)
    if not digits or len(digits) != len(number.replace(" ", "").replace("-", "")):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask_number(number: str) -> str:
    """First six and last four digits kept (PCI DSS display rule): 4405-64XX-XXXX-6150."""
    digits = normalize_number(number)
    if len(digits) < 12:
        return "X" * max(len(digits) - 2, 0) + digits[-2:]
    masked = digits[:6] + "X" * (len(digits) - 10) + digits[-4:]
    return "-".join(masked[i : i + 4] for i in range(0, len(masked), 4))
