from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greengate.domain.bitcoin_address import (
    BitcoinAddress,
    Encoding,
    InvalidAddress,
    Network,
    bech32_decode,
    decode_segwit,
    encode_segwit,
    is_valid_address,
    parse_address,
    script_pubkey,
)

ALL_NETWORKS = list(Network)
NETWORK_BY_HRP = {"bc": Network.MAINNET, "tb": Network.TESTNET}
BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# --- BIP173 / BIP350 vectors ------------------------------------------------------------------------------

BIP173_VALID_BECH32 = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqc8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]

BIP173_INVALID_BECH32 = [
    "\x201nwldj5",  # HRP character out of range
    "\x7f1axkwrx",  # HRP character out of range
    "\x801eym55h",  # HRP character out of range
    # overall max length exceeded
    "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",
    "pzry9x0s0muk",  # no separator character
    "1pzry9x0s0muk",  # empty HRP
    "x1b4n0q5v",  # invalid data character
    "li1dgmt3",  # too short checksum
    "de1lg7wt\xff",  # invalid character in checksum
    "A1G7SGD8",  # checksum calculated with uppercase form of HRP
    "10a06t8",  # empty HRP
    "1qzzfhee",  # empty HRP
]

BIP350_VALID_BECH32M = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]

BIP350_INVALID_BECH32M = [
    "\x201xj0phk",  # HRP character out of range
    "\x7f1g6xzxy",  # HRP character out of range
    "\x801vctc34",  # HRP character out of range
    # overall max length exceeded
    "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
    "qyrz8wqd2c9m",  # no separator character
    "1qyrz8wqd2c9m",  # empty HRP
    "y1b0jsk6g",  # invalid data character
    "lt1igcx5c0",  # invalid data character
    "in1muywd",  # too short checksum
    "mm1crxm3i",  # invalid character in checksum
    "au1s5cgom",  # invalid character in checksum
    "M1VUXWEZ",  # checksum calculated with uppercase form of HRP
    "16plkw9",  # empty HRP
    "1p2gdwpf",  # empty HRP
]

# BIP350's list supersedes BIP173's: the v0 entries are shared, the v1+ ones are re-encoded as bech32m.
BIP350_VALID_ADDRESSES = [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    (
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("BC1SW50QGDZ25J", "6002751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    (
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
]

# Valid under BIP173, invalid since BIP350 because v1+ must use bech32m.
BIP173_BECH32_V1_PLUS = [
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx",
    "BC1SW50QA3JX3S",
    "bc1zw508d6qejxtdg4y5r3zarvaryvg6kdaj",
]

BIP173_INVALID_ADDRESSES = [
    "tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty",  # invalid human-readable part
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",  # invalid checksum
    "BC13W508D6QEJXTDG4Y5R3ZARVARY0C5XW7KN40WF2",  # invalid witness version
    "bc1rw5uspcuh",  # invalid program length
    "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90",  # invalid program length
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # invalid program length for witness v0
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7",  # mixed case
    "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",  # zero padding of more than 4 bits
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv",  # non-zero padding in 8-to-5 conversion
    "bc1gmk9yu",  # empty data section
]

BIP350_INVALID_ADDRESSES = [
    "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",  # invalid human-readable part
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",  # bech32 instead of bech32m
    "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",  # bech32 instead of bech32m
    "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",  # bech32 instead of bech32m
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # bech32m instead of bech32
    "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",  # bech32m instead of bech32
    "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",  # invalid character in checksum
    "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",  # invalid witness version
    "bc1pw5dgrnzv",  # invalid program length (1 byte)
    # invalid program length (41 bytes)
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # invalid program length for witness v0
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq",  # mixed case
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",  # zero padding of more than 4 bits
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",  # non-zero padding in 8-to-5 conversion
    "bc1gmk9yu",  # empty data section
]

# --- base58check vectors: (address, kind, hash160) --------------------------------------------------------

MAINNET_BASE58 = [
    ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "p2pkh", "77bff20c60e522dfaa3350c39b030a5d004e839a"),
    ("16UwLL9Risc3QfPqBUvKofHmBQ7wMtjvM", "p2pkh", "010966776006953d5567439e5e39f86a0d273bee"),
    ("1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH", "p2pkh", "751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "p2pkh", "62e907b15cbf27d5425399ebf6f0fb50ebb88f18"),
    ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "p2sh", "b472a266d0bd89c13706a4132ccfb16f7c3b9fcb"),
]

TESTNET_BASE58 = [
    ("mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r", "p2pkh", "751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "p2pkh", "243f1394f44554f4ce3fd68649c19adc483ce924"),
    ("n2eMqTT929pb1RDNuqEnxdaLau1rxy3efi", "p2pkh", "e7c1345fc8f87c68170b3aa798a956c2fe6a9eff"),
    ("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", "p2sh", "4e9f39ca4688ff102128ea4ccda34105324305b0"),
    ("2N2JD6wb56AfK4tfmM6PwdVmoYk2dCKf4Br", "p2sh", "6349a418fc4578d10a372b54b45c280cc8c4382f"),
]


def _base58_script(kind: str, hash160: str) -> bytes:
    if kind == "p2pkh":
        return bytes.fromhex(f"76a914{hash160}88ac")
    return bytes.fromhex(f"a914{hash160}87")


def _base58check(payload: bytes) -> str:
    raw = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(raw, "big")
    digits = ""
    while number:
        number, digit = divmod(number, 58)
        digits = BASE58_ALPHABET[digit] + digits
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + digits


def _segwit_script(version: int, program: bytes) -> bytes:
    return bytes([0x50 + version if version else 0, len(program)]) + program


# --- bech32 checksum layer --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", BIP173_VALID_BECH32)
def test_bip173_valid_strings_decode_as_bech32(text: str) -> None:
    hrp, _, encoding = bech32_decode(text)
    assert encoding is Encoding.BECH32
    assert hrp == text[: text.rfind("1")].lower()


@pytest.mark.parametrize("text", BIP350_VALID_BECH32M)
def test_bip350_valid_strings_decode_as_bech32m(text: str) -> None:
    hrp, _, encoding = bech32_decode(text)
    assert encoding is Encoding.BECH32M
    assert hrp == text[: text.rfind("1")].lower()


@pytest.mark.parametrize("text", BIP173_INVALID_BECH32 + BIP350_INVALID_BECH32M)
def test_malformed_bech32_strings_are_rejected(text: str) -> None:
    with pytest.raises(InvalidAddress):
        bech32_decode(text)


# --- segwit address vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "script_hex"), BIP350_VALID_ADDRESSES)
def test_valid_segwit_vector_decodes_to_its_script_pubkey(address: str, script_hex: str) -> None:
    hrp = address[:2].lower()
    version, program = decode_segwit(hrp, address)
    assert _segwit_script(version, program).hex() == script_hex

    parsed = parse_address(address, NETWORK_BY_HRP[hrp])
    assert parsed.text == address.lower()
    assert script_pubkey(parsed).hex() == script_hex


@pytest.mark.parametrize(("address", "script_hex"), BIP350_VALID_ADDRESSES)
def test_encoding_a_valid_vector_reproduces_its_lowercase_form(address: str, script_hex: str) -> None:
    hrp = address[:2].lower()
    version, program = decode_segwit(hrp, address)
    assert encode_segwit(hrp, version, program) == address.lower()


@pytest.mark.parametrize("address", BIP173_BECH32_V1_PLUS)
def test_v1_plus_address_with_bech32_checksum_is_rejected(address: str) -> None:
    with pytest.raises(InvalidAddress, match="requires bech32m"):
        decode_segwit("bc", address)
    assert not is_valid_address(address, Network.MAINNET)


@pytest.mark.parametrize("address", BIP173_INVALID_ADDRESSES + BIP350_INVALID_ADDRESSES)
def test_invalid_segwit_vector_is_rejected_for_every_hrp_and_network(address: str) -> None:
    for hrp in ("bc", "tb", "bcrt"):
        with pytest.raises(InvalidAddress):
            decode_segwit(hrp, address)
    for network in ALL_NETWORKS:
        assert not is_valid_address(address, network)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd", "requires bech32m"),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh", "requires bech32"),
        ("BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R", "witness version"),
        ("bc1pw5dgrnzv", "program length"),
        ("BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P", "20 or 32 bytes"),
        ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf", "padding"),
        ("bc1gmk9yu", "empty data"),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", "checksum"),
        ("bc1qw508d6qejxtdg4y5r3zarvaRy0c5xw7kv8f3t4", "mixed case"),
    ],
)
def test_rejection_reason_names_the_problem(address: str, reason: str) -> None:
    with pytest.raises(InvalidAddress, match=reason):
        parse_address(address, Network.MAINNET)


def test_decoder_rejects_address_with_a_different_hrp() -> None:
    with pytest.raises(InvalidAddress, match="human-readable part"):
        decode_segwit("tb", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")


# --- segwit kinds and networks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "size", "kind"),
    [
        (0, 20, "p2wpkh"),
        (0, 32, "p2wsh"),
        (1, 32, "p2tr"),
        (1, 20, "witness_unknown"),
        (16, 2, "witness_unknown"),
    ],
)
def test_segwit_kind_follows_version_and_program_length(version: int, size: int, kind: str) -> None:
    address = encode_segwit("bc", version, bytes(range(size)))
    assert parse_address(address, Network.MAINNET).kind == kind


def test_uppercase_segwit_address_is_accepted_and_stored_lowercase() -> None:
    parsed = parse_address("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", Network.MAINNET)
    assert parsed == BitcoinAddress("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", Network.MAINNET, "p2wpkh")


def test_tb_addresses_are_valid_on_testnet_and_signet_but_not_regtest() -> None:
    address = "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"
    assert parse_address(address, Network.TESTNET).network is Network.TESTNET
    assert parse_address(address, Network.SIGNET).network is Network.SIGNET
    with pytest.raises(InvalidAddress, match="testnet address on a regtest gateway"):
        parse_address(address, Network.REGTEST)


def test_regtest_segwit_address_uses_bcrt_prefix() -> None:
    address = encode_segwit("bcrt", 0, bytes(20))
    assert address.startswith("bcrt1q")
    assert parse_address(address, Network.REGTEST).kind == "p2wpkh"
    with pytest.raises(InvalidAddress, match="regtest address on a mainnet gateway"):
        parse_address(address, Network.MAINNET)


@pytest.mark.parametrize(
    ("address", "network", "reason"),
    [
        (
            "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
            Network.MAINNET,
            "testnet address on a mainnet gateway",
        ),
        (
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            Network.TESTNET,
            "mainnet address on a testnet gateway",
        ),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", Network.SIGNET, "mainnet address on a signet gateway"),
        ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", Network.MAINNET, "testnet address on a mainnet gateway"),
        ("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", Network.MAINNET, "testnet address on a mainnet gateway"),
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", Network.TESTNET, "mainnet address on a testnet gateway"),
        ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", Network.REGTEST, "mainnet address on a regtest gateway"),
    ],
)
def test_address_of_another_network_is_rejected_with_reason(
    address: str, network: Network, reason: str
) -> None:
    with pytest.raises(InvalidAddress, match=reason):
        parse_address(address, network)


# --- base58check ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "kind", "hash160"), MAINNET_BASE58)
def test_mainnet_base58_address_parses_with_kind_and_script(address: str, kind: str, hash160: str) -> None:
    parsed = parse_address(address, Network.MAINNET)
    assert parsed == BitcoinAddress(address, Network.MAINNET, kind)
    assert script_pubkey(parsed) == _base58_script(kind, hash160)


@pytest.mark.parametrize("network", [Network.TESTNET, Network.SIGNET, Network.REGTEST])
@pytest.mark.parametrize(("address", "kind", "hash160"), TESTNET_BASE58)
def test_test_network_base58_address_is_valid_on_every_test_network(
    address: str, kind: str, hash160: str, network: Network
) -> None:
    parsed = parse_address(address, network)
    assert parsed == BitcoinAddress(address, network, kind)
    assert script_pubkey(parsed) == _base58_script(kind, hash160)


@pytest.mark.parametrize(("address", "kind", "hash160"), MAINNET_BASE58 + TESTNET_BASE58)
def test_base58_address_with_corrupted_checksum_is_rejected(address: str, kind: str, hash160: str) -> None:
    last = address[-1]
    corrupted = address[:-1] + ("2" if last != "2" else "3")
    for network in ALL_NETWORKS:
        assert not is_valid_address(corrupted, network)
    with pytest.raises(InvalidAddress, match="checksum"):
        parse_address(corrupted, Network.MAINNET if address[0] in "13" else Network.TESTNET)


def test_every_single_character_substitution_in_a_base58_address_is_rejected() -> None:
    address = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"
    for index, original in enumerate(address):
        for replacement in BASE58_ALPHABET:
            if replacement != original:
                mutated = address[:index] + replacement + address[index + 1 :]
                assert not is_valid_address(mutated, Network.MAINNET), mutated


def test_base58_helper_matches_a_known_address() -> None:
    payload = bytes.fromhex("00751e76e8199196d454941c45d1b3a323f1433bd6")
    assert _base58check(payload) == "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH"


@pytest.mark.parametrize("hash_size", [19, 21, 32])
def test_base58_address_with_valid_checksum_but_wrong_hash_length_is_rejected(hash_size: int) -> None:
    address = _base58check(b"\x00" + bytes(range(1, hash_size + 1)))
    with pytest.raises(InvalidAddress, match="length"):
        parse_address(address, Network.MAINNET)


def test_base58_address_with_unknown_version_byte_is_rejected() -> None:
    address = _base58check(b"\x30" + bytes(range(20)))  # a Litecoin P2PKH version byte
    with pytest.raises(InvalidAddress, match="unknown address version"):
        parse_address(address, Network.MAINNET)


def test_base58_address_with_changed_case_is_rejected() -> None:
    assert not is_valid_address("1bvbmseystwetqtfn5au4m4gfg7xjanvn2", Network.MAINNET)
    assert not is_valid_address("1BVBMSEYSTWETQTFN5AU4M4GFG7XJANVN2", Network.MAINNET)


@pytest.mark.parametrize(
    "text",
    [
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN",  # a character short
        "11BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",  # an extra leading zero byte
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN0",  # '0' is not in the base58 alphabet
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVNl",  # nor is 'l'
        "5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTJ",  # a private key (WIF), not an address
    ],
)
def test_malformed_base58_text_is_rejected(text: str) -> None:
    assert not is_valid_address(text, Network.MAINNET)


# --- input hygiene ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        " 1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2\n",
        "\tbc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4 ",
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4\u00a0",
    ],
)
def test_surrounding_whitespace_is_rejected_not_stripped(text: str) -> None:
    with pytest.raises(InvalidAddress, match="whitespace"):
        parse_address(text, Network.MAINNET)


def test_whitespace_inside_an_address_is_rejected() -> None:
    assert not is_valid_address("bc1qw508d6qejxtdg4y5r3z arvary0c5xw7kv8f3t4", Network.MAINNET)


def test_empty_text_is_rejected() -> None:
    with pytest.raises(InvalidAddress, match="empty"):
        parse_address("", Network.MAINNET)


def test_text_longer_than_90_characters_is_rejected() -> None:
    with pytest.raises(InvalidAddress, match="too long"):
        parse_address("bc1" + "q" * 88, Network.MAINNET)


def test_unknown_address_format_is_rejected() -> None:
    with pytest.raises(InvalidAddress, match="unrecognised"):
        parse_address("0x52908400098527886E0F7030069857D2E4169EE7", Network.MAINNET)


def test_is_valid_address_reports_without_raising() -> None:
    assert is_valid_address("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", Network.MAINNET)
    assert not is_valid_address("not an address", Network.MAINNET)


def test_script_pubkey_refuses_an_address_whose_kind_contradicts_its_text() -> None:
    forged = BitcoinAddress("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", Network.MAINNET, "p2sh")
    with pytest.raises(InvalidAddress):
        script_pubkey(forged)


def test_script_pubkey_refuses_an_address_built_for_another_network() -> None:
    forged = BitcoinAddress("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", Network.TESTNET, "p2pkh")
    with pytest.raises(InvalidAddress):
        script_pubkey(forged)


# --- encoding ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hrp", "version", "program"),
    [
        ("bc", 17, bytes(32)),  # witness version out of range
        ("bc", -1, bytes(20)),
        ("bc", 0, bytes(21)),  # v0 must be 20 or 32 bytes
        ("bc", 1, bytes(1)),  # below the 2-byte minimum
        ("bc", 1, bytes(41)),  # above the 40-byte maximum
        ("BC", 0, bytes(20)),  # uppercase hrp would yield mixed case
        ("", 0, bytes(20)),
        ("x" * 60, 0, bytes(32)),  # result longer than 90 characters
    ],
)
def test_encode_segwit_refuses_invalid_witness_programs(hrp: str, version: int, program: bytes) -> None:
    with pytest.raises(ValueError):
        encode_segwit(hrp, version, program)


# --- properties -------------------------------------------------------------------------------------------

network_and_hrp = st.sampled_from(
    [(Network.MAINNET, "bc"), (Network.TESTNET, "tb"), (Network.SIGNET, "tb"), (Network.REGTEST, "bcrt")]
)


@st.composite
def witness_programs(draw: st.DrawFn) -> tuple[int, bytes]:
    version = draw(st.integers(min_value=0, max_value=16))
    size = draw(st.sampled_from([20, 32]) if version == 0 else st.integers(min_value=2, max_value=40))
    return version, draw(st.binary(min_size=size, max_size=size))


@given(network_and_hrp, witness_programs())
def test_encoded_witness_program_round_trips(
    network_hrp: tuple[Network, str], witness: tuple[int, bytes]
) -> None:
    network, hrp = network_hrp
    version, program = witness
    address = encode_segwit(hrp, version, program)

    assert decode_segwit(hrp, address) == (version, program)
    parsed = parse_address(address, network)
    assert parsed.text == address
    assert parse_address(address.upper(), network) == parsed
    assert script_pubkey(parsed) == _segwit_script(version, program)


@given(network_and_hrp, witness_programs(), st.data())
def test_any_single_character_change_is_rejected(
    network_hrp: tuple[Network, str], witness: tuple[int, bytes], data: st.DataObject
) -> None:
    network, hrp = network_hrp
    address = encode_segwit(hrp, *witness)
    index = data.draw(st.integers(min_value=0, max_value=len(address) - 1))
    # Mostly characters that keep the text well-formed, so the checksum is what gets exercised.
    replacement = data.draw(
        st.one_of(st.sampled_from(BECH32_CHARSET + BECH32_CHARSET.upper() + "1"), st.characters()).filter(
            lambda c: c != address[index]
        )
    )
    mutated = address[:index] + replacement + address[index + 1 :]
    assert not is_valid_address(mutated, network)
