"""``pg_sig``: the Platron/PayBox-family message signature.

``pg_sig = md5("script;value;value;...;secret")`` in lowercase hex. The values are ordered the way
the family's reference signer (PHP ``PG_Signature``) orders them, because every client library
reproduces that exact string:

* each entry gets a flat name: its parent's flat name, its own name, and its 1-based position
  among its siblings as ``%03d`` (``pg_receipt_positions005`` + ``0001`` + ``count001``), so
  nested values stay together and siblings keep their order;
* ``pg_sig`` entries are skipped at every level but still use up their position;
* values are sorted by flat name, byte-wise. The position suffix is why ``pg_param10`` can sort
  before ``pg_param1`` (``pg_param10007`` < ``pg_param1005``).

Where two entries end up with the same flat name (only possible with contrived names or more than
999 siblings) the reference silently keeps one value; here both are signed, in order of
appearance, so no value a sender transmitted can escape the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from greengate.domain.params import Params

SIG_PARAM = "pg_sig"
SALT_PARAM = "pg_salt"


def script_name_from_url(url_or_path: str) -> str:
    """Last path segment of a URL or path, without query or fragment; ``""`` if it ends in ``/``.

    ``https://shop.kz/pay/result.php?a=1`` → ``result.php``; ``/v1/merchant/1/cardstorage/add`` →
    ``add``; ``https://shop.kz/pay/`` → ``""``. Percent-encoding is kept as sent.
    """
    path = urlsplit(url_or_path).path
    if not path or path.endswith("/"):
        return ""
    return path.rpartition("/")[2]


def _flatten(params: Params, prefix: str, out: list[tuple[str, str]]) -> None:
    for position, (name, value) in enumerate(params, start=1):
        if name == SIG_PARAM:
            continue
        flat_name = f"{prefix}{name}{position:03d}"
        if isinstance(value, str):
            out.append((flat_name, value))
        elif isinstance(value, list):
            _flatten(value, flat_name, out)
        else:
            raise TypeError(f"parameter {name!r} must be str or a nested list, not {type(value).__name__}")


def signature_string(script: str, params: Params, secret: str) -> str:
    """The exact string whose MD5 is ``pg_sig``. It contains the secret: never log it."""
    flat: list[tuple[str, str]] = []
    _flatten(params, "", flat)
    # Code-point order equals UTF-8 byte order, so this is the reference's byte-wise ksort;
    # the sort is stable, so duplicate flat names keep their order of appearance.
    flat.sort(key=lambda entry: entry[0])
    return ";".join([script, *(value for _, value in flat), secret])


def sign(script: str, params: Params, secret: str) -> str:
    """``pg_sig`` for a message; a ``pg_sig`` already in ``params`` is skipped but keeps its place."""
    data = signature_string(script, params, secret).encode("utf-8", "surrogatepass")
    # MD5 is fixed by the wire protocol; the flag keeps it available on FIPS-mode builds.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def verify(script: str, params: Params, secret: str) -> bool:
    """Check the message's own top-level ``pg_sig`` in constant time.

    False when it is missing, nested, repeated or does not match (compared exactly: the protocol
    sends lowercase hex).
    """
    provided = [value for name, value in params if name == SIG_PARAM]
    if len(provided) != 1 or not isinstance(provided[0], str):
        return False
    expected = sign(script, params, secret).encode("ascii")
    # Bytes, because compare_digest rejects non-ASCII str and the value is attacker-controlled.
    return hmac.compare_digest(expected, provided[0].encode("utf-8", "surrogatepass"))


def with_signature(script: str, params: Params, secret: str, salt: str) -> Params:
    """A copy of ``params`` salted and signed, ready to send.

    ``pg_salt`` takes ``salt`` in place of an existing one (duplicates dropped) or is appended;
    old ``pg_sig`` entries are removed and the new one is appended last. It must be last: a
    verifier numbers the received ``pg_sig`` entry like any other, and only at the end does it
    not shift the positions the signature was computed with.
    """
    signed: Params = []
    salted = False
    for name, value in params:
        if name == SIG_PARAM:
            continue
        if name == SALT_PARAM:
            if not salted:
                signed.append((SALT_PARAM, salt))
                salted = True
            continue
        signed.append((name, value))
    if not salted:
        signed.append((SALT_PARAM, salt))
    signed.append((SIG_PARAM, sign(script, signed, secret)))
    return signed


def new_salt() -> str:
    """A fresh random ``pg_salt``: 32 hex digits (128 bits) from the OS CSPRNG, in one read."""
    return secrets.token_hex(16)
