"""Bitcoin address validation: base58check (P2PKH/P2SH) and native segwit (BIP173 bech32, BIP350 bech32m).

Pure functions, no I/O. Future witness versions parse as "witness_unknown" (BIP350 asks senders to accept
them); outputs to those are not yet protected by consensus, so payout code should decide per `kind`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final


class Network(StrEnum):
    MAINNET = "mainnet"
    TESTNET = "testnet"
    SIGNET = "signet"
    REGTEST = "regtest"


class InvalidAddress(ValueError):
    """The text is not a valid address for the requested network; the message is a short reason."""


@dataclass(frozen=True)
class BitcoinAddress:
    """A validated address. Segwit text is stored lowercase (its canonical form); base58 is case-sensitive."""

    text: str
    network: Network
    kind: str  # "p2pkh" | "p2sh" | "p2wpkh" | "p2wsh" | "p2tr" | "witness_unknown"


# ---------------------------------------------------------------------------------------------------------
# Bech32 / bech32m: the two differ only in the constant the checksum residue must equal.


class Encoding(Enum):
    BECH32 = 1
    BECH32M = 0x2BC830A3


_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX: Final = {c: i for i, c in enumerate(_CHARSET)}
_GENERATOR: Final = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LENGTH: Final = 6
# The BCH code's error-detection guarantees only hold up to this length.
_MAX_BECH32_LENGTH: Final = 90


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ value
        for i, generator in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= generator
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    # High bits first, then low bits, so every bit of the prefix is covered by the checksum.
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _checksum(hrp: str, data: Sequence[int], encoding: Encoding) -> list[int]:
    residue = _polymod([*_hrp_expand(hrp), *data, *([0] * _CHECKSUM_LENGTH)]) ^ encoding.value
    return [(residue >> 5 * (_CHECKSUM_LENGTH - 1 - i)) & 31 for i in range(_CHECKSUM_LENGTH)]


def bech32_decode(text: str) -> tuple[str, list[int], Encoding]:
    """Split a bech32/bech32m string into (lowercase hrp, 5-bit data without checksum, encoding)."""
    if len(text) > _MAX_BECH32_LENGTH:
        raise InvalidAddress("address is too long")
    if any(not 33 <= ord(c) <= 126 for c in text):
        raise InvalidAddress("invalid character")
    if text != text.lower() and text != text.upper():
        raise InvalidAddress("mixed case")
    text = text.lower()
    # The hrp may itself contain '1', so the separator is the last one.
    sep = text.rfind("1")
    if sep == -1:
        raise InvalidAddress("missing separator")
    if sep == 0:
        raise InvalidAddress("empty human-readable part")
    if len(text) - sep - 1 < _CHECKSUM_LENGTH:
        raise InvalidAddress("checksum too short")
    hrp = text[:sep]
    try:
        data = [_CHARSET_INDEX[c] for c in text[sep + 1 :]]
    except KeyError:
        raise InvalidAddress("invalid character") from None
    residue = _polymod([*_hrp_expand(hrp), *data])
    for encoding in Encoding:
        if residue == encoding.value:
            return hrp, data[:-_CHECKSUM_LENGTH], encoding
    raise InvalidAddress("bad checksum")


def _bech32_encode(hrp: str, data: Sequence[int], encoding: Encoding) -> str:
    combined = [*data, *_checksum(hrp, data, encoding)]
    return hrp + "1" + "".join(_CHARSET[d] for d in combined)


def _convert_bits(data: Iterable[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    """Regroup a bit stream; without `pad`, leftover bits must be fewer than `from_bits` and all zero."""
    acc = 0
    bits = 0
    out: list[int] = []
    mask = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & mask)
        acc &= (1 << bits) - 1
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & mask)
    # Strict padding rules keep the text <-> program mapping one-to-one.
    elif bits >= from_bits:
        raise InvalidAddress("excess padding")
    elif acc:
        raise InvalidAddress("non-zero padding")
    return out


def _witness_problem(version: int, program: bytes) -> str | None:
    """BIP141 limits on a witness program, or None if it is acceptable."""
    if not 0 <= version <= 16:
        return "invalid witness version"
    if not 2 <= len(program) <= 40:
        return "invalid witness program length"
    if version == 0 and len(program) not in (20, 32):
        return "witness v0 program must be 20 or 32 bytes"
    return None


def _encoding_for(version: int) -> Encoding:
    # BIP350: v0 keeps bech32; v1+ moved to bech32m because of bech32's insertion weakness.
    return Encoding.BECH32 if version == 0 else Encoding.BECH32M


def decode_segwit(hrp: str, addr: str) -> tuple[int, bytes]:
    """Decode a segwit address with the expected (lowercase) hrp into (witness version, program)."""
    got_hrp, data, encoding = bech32_decode(addr)
    if got_hrp != hrp:
        raise InvalidAddress("wrong human-readable part")
    if not data:
        raise InvalidAddress("empty data section")
    version = data[0]
    program = bytes(_convert_bits(data[1:], 5, 8, pad=False))
    problem = _witness_problem(version, program)
    if problem is not None:
        raise InvalidAddress(problem)
    if encoding is not _encoding_for(version):
        raise InvalidAddress("witness v0 requires bech32" if version == 0 else "witness v1+ requires bech32m")
    return version, program


def encode_segwit(hrp: str, version: int, program: bytes) -> str:
    """Encode a witness program as a lowercase segwit address; raises ValueError on invalid input."""
    if not hrp or any(not 33 <= ord(c) <= 126 for c in hrp) or hrp != hrp.lower():
        raise ValueError("hrp must be non-empty lowercase printable ASCII")
    problem = _witness_problem(version, program)
    if problem is not None:
        raise ValueError(problem)
    address = _bech32_encode(hrp, [version, *_convert_bits(program, 8, 5, pad=True)], _encoding_for(version))
    if len(address) > _MAX_BECH32_LENGTH:
        raise ValueError("address would be too long")
    return address


# ---------------------------------------------------------------------------------------------------------
# Base58check

_BASE58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX: Final = {c: i for i, c in enumerate(_BASE58_ALPHABET)}
# One version byte, a 20-byte hash, a 4-byte checksum.
_BASE58_ADDRESS_BYTES: Final = 25


def _double_sha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _base58check_decode(text: str) -> bytes:
    """Return the 21-byte payload (version byte + hash160) of a base58check address."""
    number = 0
    for c in text:
        digit = _BASE58_INDEX.get(c)
        if digit is None:
            raise InvalidAddress("invalid character")
        number = number * 58 + digit
    # Leading '1's are leading zero bytes, which the integer value cannot carry.
    zeros = len(text) - len(text.lstrip("1"))
    raw = bytes(zeros) + number.to_bytes((number.bit_length() + 7) // 8, "big")
    if len(raw) != _BASE58_ADDRESS_BYTES:
        raise InvalidAddress("wrong address length")
    payload, checksum = raw[:-4], raw[-4:]
    if _double_sha256(payload)[:4] != checksum:
        raise InvalidAddress("bad checksum")
    return payload


# ---------------------------------------------------------------------------------------------------------
# Network parameters

_SEGWIT_HRP: Final = {
    Network.MAINNET: "bc",
    Network.TESTNET: "tb",
    Network.SIGNET: "tb",
    Network.REGTEST: "bcrt",
}
# Used in errors; "tb" is shared by testnet and signet.
_HRP_OWNER: Final = {"bc": "mainnet", "tb": "testnet", "bcrt": "regtest"}

_P2PKH_MAINNET, _P2SH_MAINNET = 0x00, 0x05
# Testnet, signet and regtest share these, so such addresses cannot be told apart.
_P2PKH_TEST, _P2SH_TEST = 0x6F, 0xC4
_BASE58_VERSIONS: Final = {
    Network.MAINNET: {_P2PKH_MAINNET: "p2pkh", _P2SH_MAINNET: "p2sh"},
    Network.TESTNET: {_P2PKH_TEST: "p2pkh", _P2SH_TEST: "p2sh"},
    Network.SIGNET: {_P2PKH_TEST: "p2pkh", _P2SH_TEST: "p2sh"},
    Network.REGTEST: {_P2PKH_TEST: "p2pkh", _P2SH_TEST: "p2sh"},
}
_BASE58_VERSION_OWNER: Final = {
    _P2PKH_MAINNET: "mainnet",
    _P2SH_MAINNET: "mainnet",
    _P2PKH_TEST: "testnet",
    _P2SH_TEST: "testnet",
}

_OP_DUP, _OP_HASH160, _OP_EQUAL, _OP_EQUALVERIFY, _OP_CHECKSIG = 0x76, 0xA9, 0x87, 0x88, 0xAC
_OP_0, _OP_1 = 0x00, 0x51  # OP_1..OP_16 are consecutive


def _known_segwit_hrp(text: str) -> str | None:
    sep = text.rfind("1")
    hrp = text[:sep].lower() if sep > 0 else ""
    return hrp if hrp in _HRP_OWNER else None


def _wrong_network(owner: str, network: Network) -> InvalidAddress:
    return InvalidAddress(f"{owner} address on a {network.value} gateway")


def _segwit_kind(version: int, program: bytes) -> str:
    if version == 0:
        return "p2wpkh" if len(program) == 20 else "p2wsh"
    if version == 1 and len(program) == 32:
        return "p2tr"
    return "witness_unknown"


# Clients pay out to the same few wallets over and over: a checksum in pure Python is worth keeping.
# Only valid addresses are kept (a refusal raises), and the results are immutable.
@functools.lru_cache(maxsize=4096)
def _parse(text: str, network: Network) -> tuple[BitcoinAddress, bytes]:
    """Validate `text` for `network`, returning the address and its scriptPubKey."""
    network = Network(network)
    if not text:
        raise InvalidAddress("empty address")
    # Rejected rather than stripped: input that needed cleaning may have been mangled in other ways too.
    if text != text.strip():
        raise InvalidAddress("leading or trailing whitespace")
    if len(text) > _MAX_BECH32_LENGTH:
        raise InvalidAddress("address is too long")

    hrp = _known_segwit_hrp(text)
    if hrp is not None:
        version, program = decode_segwit(hrp, text)
        if hrp != _SEGWIT_HRP[network]:
            raise _wrong_network(_HRP_OWNER[hrp], network)
        op_version = _OP_1 + version - 1 if version else _OP_0
        script = bytes([op_version, len(program)]) + program
        return BitcoinAddress(text.lower(), network, _segwit_kind(version, program)), script

    if any(c not in _BASE58_INDEX for c in text):
        raise InvalidAddress("unrecognised address format")
    payload = _base58check_decode(text)
    version_byte, hash160 = payload[0], payload[1:]
    kind = _BASE58_VERSIONS[network].get(version_byte)
    if kind is None:
        owner = _BASE58_VERSION_OWNER.get(version_byte)
        raise _wrong_network(owner, network) if owner else InvalidAddress("unknown address version")
    if kind == "p2pkh":
        script = bytes([_OP_DUP, _OP_HASH160, 20]) + hash160 + bytes([_OP_EQUALVERIFY, _OP_CHECKSIG])
    else:
        script = bytes([_OP_HASH160, 20]) + hash160 + bytes([_OP_EQUAL])
    return BitcoinAddress(text, network, kind), script


def parse_address(text: str, network: Network) -> BitcoinAddress:
    """Validate `text` as an address payable on `network`; raises InvalidAddress with a short reason."""
    return _parse(text, network)[0]


def is_valid_address(text: str, network: Network) -> bool:
    try:
        _parse(text, network)
    except InvalidAddress:
        return False
    return True


def script_pubkey(addr: BitcoinAddress) -> bytes:
    """The output script that pays `addr`."""
    # Re-derived from the text so a hand-built BitcoinAddress cannot yield a script for a different address.
    parsed, script = _parse(addr.text, addr.network)
    if parsed.kind != addr.kind:
        raise InvalidAddress("address kind does not match its text")
    return script
