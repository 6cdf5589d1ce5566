"""pg_sig against the family's reference vectors, plus the parameter structure it signs."""

from __future__ import annotations

import hashlib
import string
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from defusedxml import ElementTree as SafeET
from hypothesis import assume, given
from hypothesis import strategies as st

from greengate.domain.params import (
    MAX_DEPTH,
    MalformedParams,
    Params,
    ParamValue,
    first,
    params_from_pairs,
    params_from_xml_element,
    params_to_pairs,
    to_flat_dict,
)
from greengate.domain.signature import (
    new_salt,
    script_name_from_url,
    sign,
    signature_string,
    verify,
    with_signature,
)
from tests.support.vectors import SIGNATURE_VECTORS

VECTORS = SIGNATURE_VECTORS
PARAMS_VECTORS = [v for v in VECTORS if v["kind"] == "params"]
XML_VECTORS = [v for v in VECTORS if v["kind"] == "xml"]


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


def _from_json(value: Any) -> ParamValue:
    # JSON objects keep their key order; lists are indexed like PHP arrays.
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return [(key, _from_json(item)) for key, item in value.items()]
    return [(str(index), _from_json(item)) for index, item in enumerate(value)]


def _json_params(vector: dict[str, Any]) -> Params:
    params = _from_json(vector["params"])
    assert isinstance(params, list)
    return params


def _form_params(vector: dict[str, Any]) -> Params:
    return params_from_pairs(parse_qsl(vector["form"], keep_blank_values=True))


def _xml_params(vector: dict[str, Any]) -> Params:
    return params_from_xml_element(SafeET.fromstring(vector["xml"]))


def _sources(vector: dict[str, Any]) -> list[Params]:
    if vector["kind"] == "xml":
        return [_xml_params(vector)]
    return [_json_params(vector), _form_params(vector)]


def _set_sig(params: Params, sig: str) -> Params:
    """The message as sent: pg_sig replaced where it is, else appended."""
    if any(name == "pg_sig" for name, _ in params):
        return [(name, sig if name == "pg_sig" else value) for name, value in params]
    return [*params, ("pg_sig", sig)]


def _signed(vector: dict[str, Any]) -> Params:
    return _set_sig(_sources(vector)[0], vector["pg_sig"])


def _leaf_paths(params: Params, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    paths: list[tuple[int, ...]] = []
    for index, (name, value) in enumerate(params):
        if name == "pg_sig":
            continue
        if isinstance(value, str):
            paths.append((*prefix, index))
        else:
            paths.extend(_leaf_paths(value, (*prefix, index)))
    return paths


def _replace_leaf(params: Params, path: tuple[int, ...], new: str) -> Params:
    head, *rest = path
    name, value = params[head]
    if rest:
        assert isinstance(value, list)
        replaced: ParamValue = _replace_leaf(value, tuple(rest), new)
    else:
        replaced = new
    return [*params[:head], (name, replaced), *params[head + 1 :]]


def _leaf(params: Params, path: tuple[int, ...]) -> str:
    value: ParamValue = params
    for index in path:
        assert isinstance(value, list)
        value = value[index][1]
    assert isinstance(value, str)
    return value


# --- reference vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_signature_string_matches_reference_from_every_source(vector: dict[str, Any]) -> None:
    for params in _sources(vector):
        assert signature_string(vector["script"], params, vector["secret"]) == vector["sig_string"]


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_sign_matches_reference_pg_sig_from_every_source(vector: dict[str, Any]) -> None:
    expected = hashlib.md5(vector["sig_string"].encode()).hexdigest()
    assert expected == vector["pg_sig"]
    for params in _sources(vector):
        assert sign(vector["script"], params, vector["secret"]) == vector["pg_sig"]


@pytest.mark.parametrize("vector", PARAMS_VECTORS, ids=_ids(PARAMS_VECTORS))
def test_form_parses_to_the_same_structure_as_params(vector: dict[str, Any]) -> None:
    assert _form_params(vector) == _json_params(vector)


@pytest.mark.parametrize("vector", PARAMS_VECTORS, ids=_ids(PARAMS_VECTORS))
def test_signed_form_body_verifies(vector: dict[str, Any]) -> None:
    body = vector["form"] + "&" + urlencode({"pg_sig": vector["pg_sig"]})
    params = params_from_pairs(parse_qsl(body, keep_blank_values=True))
    assert verify(vector["script"], params, vector["secret"])


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_message_carrying_reference_pg_sig_verifies(vector: dict[str, Any]) -> None:
    for params in _sources(vector):
        assert verify(vector["script"], _set_sig(params, vector["pg_sig"]), vector["secret"])


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_changed_value_fails_verification(vector: dict[str, Any]) -> None:
    message = _signed(vector)
    for path in _leaf_paths(message):
        tampered = _replace_leaf(message, path, _leaf(message, path) + "1")
        assert not verify(vector["script"], tampered, vector["secret"]), path


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_added_param_fails_verification(vector: dict[str, Any]) -> None:
    tampered = [*_signed(vector), ("pg_extra", "")]
    assert not verify(vector["script"], tampered, vector["secret"])


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_different_secret_fails_verification(vector: dict[str, Any]) -> None:
    assert not verify(vector["script"], _signed(vector), vector["secret"] + "x")


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_different_script_name_fails_verification(vector: dict[str, Any]) -> None:
    assert not verify(vector["script"] + "x", _signed(vector), vector["secret"])


SALTED_VECTORS = [v for v in VECTORS if first(_sources(v)[0], "pg_salt") is not None]


@pytest.mark.parametrize("vector", SALTED_VECTORS, ids=_ids(SALTED_VECTORS))
def test_with_signature_reproduces_reference_given_the_same_salt(vector: dict[str, Any]) -> None:
    params = _sources(vector)[0]
    salt = first(params, "pg_salt")
    assert salt is not None
    signed = with_signature(vector["script"], params, vector["secret"], salt)
    assert signed[-1] == ("pg_sig", vector["pg_sig"])


# --- signing rules beyond the vectors ----------------------------------------------------------


def test_digit_suffixed_names_order_depends_on_position_like_the_reference() -> None:
    # pg_param1 at position 1 and pg_param10 at 20: "pg_param1001" < "pg_param10020".
    filler = [(f"x{i:02d}", "") for i in range(18)]
    params: Params = [("pg_param1", "one"), *filler, ("pg_param10", "ten")]
    assert signature_string("s", params, "k").startswith("s;one;ten;")
    params = [("pg_param1", "one"), ("pg_param10", "ten")]
    assert signature_string("s", params, "k") == "s;ten;one;k"


def test_pg_sig_is_skipped_but_keeps_its_position() -> None:
    # a at position 1 ("a001") vs a0 at position 10 ("a0010") with pg_sig counted before it,
    # exactly what the reference does for a message verified with pg_sig in place.
    with_sig: Params = [("a", "A"), ("pg_sig", "x"), *[(f"f{i}", "") for i in range(7)], ("a0", "B")]
    without_sig = [entry for entry in with_sig if entry[0] != "pg_sig"]
    assert signature_string("s", with_sig, "k") == "s;A;B;;;;;;;;k"
    assert signature_string("s", without_sig, "k") == "s;B;A;;;;;;;;k"


def test_nested_pg_sig_is_skipped() -> None:
    params: Params = [("a", [("pg_sig", "zzz"), ("b", "1")])]
    assert signature_string("s", params, "k") == "s;1;k"


def test_nested_list_signs_like_a_bracket_form() -> None:
    params: Params = [("list", [("0", [("name", "x")]), ("1", [("name", "y")])]), ("a", "z")]
    form = params_from_pairs([("list[0][name]", "x"), ("list[1][name]", "y"), ("a", "z")])
    assert form == params
    assert signature_string("s", params, "k") == "s;z;x;y;k"


def test_repeated_top_level_names_are_all_signed_in_order() -> None:
    params = params_from_pairs([("a", "1"), ("b", "2"), ("a", "3")])
    assert params == [("a", "1"), ("b", "2"), ("a", "3")]
    assert signature_string("s", params, "k") == "s;1;3;2;k"


def test_colliding_flat_names_are_both_signed() -> None:
    # "a002b" at position 1 and a[b] (a at 2, b at 1) both flatten to "a002b001"; the
    # reference would keep only one value, here both count, in order of appearance.
    params: Params = [("a002b", "X"), ("a", [("b", "Y")])]
    assert signature_string("s", params, "k") == "s;X;Y;k"


def test_verify_rejects_missing_repeated_nested_or_non_ascii_pg_sig() -> None:
    base: Params = [("pg_merchant_id", "1"), ("pg_salt", "s")]
    good = sign("s", base, "k")
    assert verify("s", [*base, ("pg_sig", good)], "k")
    assert not verify("s", base, "k")
    assert not verify("s", [*base, ("pg_sig", good), ("pg_sig", good)], "k")
    assert not verify("s", [*base, ("pg_sig", [("x", good)])], "k")
    assert not verify("s", [*base, ("pg_sig", "ж" * 32)], "k")
    assert not verify("s", [*base, ("pg_sig", good.upper())], "k")


def test_sign_rejects_non_string_values() -> None:
    with pytest.raises(TypeError):
        sign("s", [("pg_amount", 10)], "k")  # type: ignore[list-item]


def test_with_signature_replaces_salt_in_place_and_puts_pg_sig_last() -> None:
    params: Params = [("pg_sig", "old"), ("a", "1"), ("pg_salt", "old"), ("b", "2"), ("pg_salt", "dup")]
    signed = with_signature("init_payment.php", params, "k", "fresh")
    assert [name for name, _ in signed] == ["a", "pg_salt", "b", "pg_sig"]
    assert first(signed, "pg_salt") == "fresh"
    assert verify("init_payment.php", signed, "k")
    assert params[0] == ("pg_sig", "old")  # input untouched


def test_with_signature_appends_salt_when_absent() -> None:
    signed = with_signature("", [("pg_result", "1")], "k", "salt")
    assert signed[:2] == [("pg_result", "1"), ("pg_salt", "salt")]
    assert signature_string("", signed, "k") == ";1;salt;k"


def test_new_salt_is_long_random_alphanumeric() -> None:
    salts = {new_salt() for _ in range(50)}
    assert len(salts) == 50
    for salt in salts:
        assert len(salt) >= 16
        assert set(salt) <= set(string.ascii_letters + string.digits)


@pytest.mark.parametrize(
    ("url", "script"),
    [
        ("init_payment.php", "init_payment.php"),
        ("https://api.example.kz/init_payment.php", "init_payment.php"),
        ("https://shop.example.kz/pay/result.php?x=1&y=/z", "result.php"),
        ("https://shop.example.kz/pay/result.php#frag", "result.php"),
        ("/v1/merchant/548132/cardstorage/add", "add"),
        ("/v1/merchant/548132/card/init?pg_x=1", "init"),
        ("https://shop.example.kz/pay/", ""),
        ("https://shop.example.kz/pay/?pg_x=1", ""),
        ("https://shop.example.kz", ""),
        ("", ""),
    ],
)
def test_script_name_from_url(url: str, script: str) -> None:
    assert script_name_from_url(url) == script


# --- parameter structure -----------------------------------------------------------------------


def test_pairs_merge_nested_paths_and_keep_first_position() -> None:
    pairs = [("list[0][name]", "x"), ("a", "1"), ("list[0][count]", "2"), ("list[1][name]", "y")]
    assert params_from_pairs(pairs) == [
        ("list", [("0", [("name", "x"), ("count", "2")]), ("1", [("name", "y")])]),
        ("a", "1"),
    ]


def test_pairs_empty_brackets_take_next_index() -> None:
    pairs = [("a[]", "x"), ("a[]", "y"), ("b[5]", "p"), ("b[]", "q"), ("c[][n]", "1"), ("c[][n]", "2")]
    assert params_from_pairs(pairs) == [
        ("a", [("0", "x"), ("1", "y")]),
        ("b", [("5", "p"), ("6", "q")]),
        ("c", [("0", [("n", "1")]), ("1", [("n", "2")])]),
    ]


def test_pairs_scalar_and_nested_of_the_same_name_coexist() -> None:
    assert params_from_pairs([("a", "1"), ("a[x]", "2")]) == [("a", "1"), ("a", [("x", "2")])]


@pytest.mark.parametrize("key", ["a[b", "a[b]c", "[a]", "a]b[", ""])
def test_pairs_malformed_bracket_keys_stay_literal(key: str) -> None:
    assert params_from_pairs([(key, "v")]) == [(key, "v")]


def test_pairs_huge_numeric_segments_do_not_become_indexes() -> None:
    big = "9" * 5000
    assert params_from_pairs([(f"a[{big}]", "x"), ("a[]", "y")]) == [("a", [(big, "x"), ("0", "y")])]


def test_pairs_too_deep_are_refused() -> None:
    assert params_from_pairs([("a" + "[x]" * (MAX_DEPTH - 1), "v")])
    with pytest.raises(MalformedParams):
        params_from_pairs([("a" + "[x]" * MAX_DEPTH, "v")])


def test_xml_repeated_elements_comments_namespaces_and_empty_values() -> None:
    root = SafeET.fromstring(
        '<request xmlns:x="urn:x"><!-- c --><a>1<!-- c -->2</a><b/><card><id>1</id></card>'
        '<card><id>2</id></card><x:n attr="ignored"> t </x:n><m>text<i>v</i>tail</m></request>'
    )
    assert params_from_xml_element(root) == [
        ("a", "12"),
        ("b", ""),
        ("card", [("id", "1")]),
        ("card", [("id", "2")]),
        ("n", " t "),
        ("m", [("i", "v")]),
    ]


def test_xml_too_deep_is_refused() -> None:
    ok = SafeET.fromstring("<r>" + "<x>" * MAX_DEPTH + "v" + "</x>" * MAX_DEPTH + "</r>")
    assert params_from_xml_element(ok)
    deep = SafeET.fromstring("<r>" + "<x>" * (MAX_DEPTH + 1) + "v" + "</x>" * (MAX_DEPTH + 1) + "</r>")
    with pytest.raises(MalformedParams):
        params_from_xml_element(deep)


def test_params_to_pairs_renders_bracket_notation() -> None:
    params: Params = [("a", "1"), ("list", [("0", [("name", "x")])]), ("e", [])]
    assert params_to_pairs(params) == [("a", "1"), ("list[0][name]", "x")]


def test_first_and_to_flat_dict_take_first_top_level_occurrence() -> None:
    params: Params = [("a", "1"), ("n", [("x", "2")]), ("a", "3"), ("n", "4"), ("b", "")]
    assert first(params, "a") == "1"
    assert first(params, "n") is None
    assert first(params, "missing") is None
    assert first(params, "x") is None
    assert to_flat_dict(params) == {"a": "1", "b": ""}


# --- properties --------------------------------------------------------------------------------

_chars = st.characters(exclude_categories=["Cs"])
_texts = st.text(_chars, max_size=12)
_names = st.text(_chars, min_size=1, max_size=10).filter(lambda name: name != "pg_sig")
_values: st.SearchStrategy[ParamValue] = st.recursive(
    _texts, lambda inner: st.lists(st.tuples(_names, inner), max_size=4), max_leaves=12
)
_params: st.SearchStrategy[Params] = st.lists(st.tuples(_names, _values), max_size=8)


@given(params=_params, script=_texts, secret=_texts, salt=_texts)
def test_property_sign_then_verify_round_trips(params: Params, script: str, secret: str, salt: str) -> None:
    assert verify(script, with_signature(script, params, secret, salt), secret)


@given(params=_params, script=_texts, secret=_texts, salt=_texts, data=st.data())
def test_property_any_single_value_change_breaks_verification(
    params: Params, script: str, secret: str, salt: str, data: st.DataObject
) -> None:
    signed = with_signature(script, params, secret, salt)
    path = data.draw(st.sampled_from(_leaf_paths(signed)))
    new = data.draw(_texts.filter(lambda text: text != _leaf(signed, path)))
    assert not verify(script, _replace_leaf(signed, path, new), secret)


def _digit_prefixed(names: list[str]) -> bool:
    """Whether some name extends another by a digit: only then can position decide the order."""
    return any(
        long != short and long.startswith(short) and long[len(short)].isdigit()
        for short in names
        for long in names
    )


@given(
    params=st.lists(st.tuples(_names, _values), max_size=8, unique_by=lambda entry: entry[0]),
    data=st.data(),
)
def test_property_top_level_order_does_not_matter_for_distinct_names(
    params: Params, data: st.DataObject
) -> None:
    assume(not _digit_prefixed([name for name, _ in params]))
    shuffled = data.draw(st.permutations(params))
    assert signature_string("s", shuffled, "k") == signature_string("s", params, "k")


_base_names = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="["), min_size=1)
_child_names = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="]"), min_size=1)


def _unique_nested(entries: list[tuple[str, ParamValue]]) -> Params:
    # Two nested entries of one name at one level merge when parsed back, so keep the first.
    seen: set[str] = set()
    kept: Params = []
    for name, value in entries:
        if isinstance(value, list):
            if name in seen or not value:
                continue
            seen.add(name)
        kept.append((name, value))
    return kept


_child_values: st.SearchStrategy[ParamValue] = st.recursive(
    _texts,
    lambda inner: st.lists(st.tuples(_child_names, inner), max_size=4).map(_unique_nested),
    max_leaves=12,
)
_renderable: st.SearchStrategy[Params] = st.lists(st.tuples(_base_names, _child_values), max_size=6).map(
    _unique_nested
)


def _prune_empty(params: Params) -> Params:
    pruned: Params = []
    for name, value in params:
        if isinstance(value, list):
            value = _prune_empty(value)
            if not value:
                continue
        pruned.append((name, value))
    return pruned


@given(params=_renderable)
def test_property_pairs_round_trip_through_bracket_notation(params: Params) -> None:
    params = _prune_empty(params)
    query = urlencode(params_to_pairs(params))
    parsed = params_from_pairs(parse_qsl(query, keep_blank_values=True))
    assert parsed == params
    assert signature_string("s", parsed, "k") == signature_string("s", params, "k")
