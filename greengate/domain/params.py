"""The pg_* parameter structure: ordered, nested, repeated names allowed.

A message is a list of ``(name, value)`` pairs whose value is a string or another such list.
Order matters (the signature numbers every entry by position) and names may repeat (repeated
XML elements, ``a=1&a=2``), which is why it is not a dict. The converters here are wire-neutral:
the codec decodes query strings and parses XML (with defusedxml), then hands pairs or elements
over.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeAlias
from xml.etree.ElementTree import Element

from greengate.domain.errors import InvalidRequest

Params: TypeAlias = list[tuple[str, "ParamValue"]]
ParamValue: TypeAlias = str | Params

# Same limit as PHP's max_input_nesting_level; also bounds recursion on hostile input.
MAX_DEPTH = 64

# `base[seg][seg]...`; anything else (`a[b`, `a[b]c`, `[a]`) is kept as a literal flat name.
_BRACKET_KEY = re.compile(r"([^\[]+)((?:\[[^\]]*\])*)")
_SEGMENT = re.compile(r"\[([^\]]*)\]")
# Names PHP would turn into integer keys, which drive the next `[]` index. Bounded in length:
# longer digit strings stay string keys in PHP (and int() refuses very long ones).
_INDEX = re.compile(r"0|[1-9][0-9]{0,17}")


class MalformedParams(InvalidRequest):
    code = "malformed_params"


def first(params: Params, name: str) -> str | None:
    """Value of the first top-level entry called ``name``; None if absent or not a scalar."""
    for entry_name, value in params:
        if entry_name == name:
            return value if isinstance(value, str) else None
    return None


def to_flat_dict(params: Params) -> dict[str, str]:
    """Top-level scalars by name, each taken as ``first`` would (first occurrence wins)."""
    flat: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in params:
        if name in seen:
            continue
        seen.add(name)
        if isinstance(value, str):
            flat[name] = value
    return flat


class _Level:
    """One list under construction, with indexes that keep parsing linear in the input size."""

    __slots__ = ("items", "nested", "next_index")

    def __init__(self) -> None:
        self.items: Params = []
        self.nested: dict[str, _Level] = {}
        self.next_index = 0

    def add(self, name: str, value: str) -> None:
        if name == "":
            name = str(self.next_index)
        self.items.append((name, value))
        self._count(name)

    def child(self, name: str) -> _Level:
        # `a[x][..]` keys join the existing nested `x`; `a[][..]` always opens a new one (as PHP).
        if name == "":
            name = str(self.next_index)
        else:
            existing = self.nested.get(name)
            if existing is not None:
                return existing
        level = _Level()
        self.items.append((name, level.items))
        self.nested[name] = level
        self._count(name)
        return level

    def _count(self, name: str) -> None:
        if _INDEX.fullmatch(name):
            self.next_index = max(self.next_index, int(name) + 1)


def _key_path(key: str) -> list[str]:
    match = _BRACKET_KEY.fullmatch(key)
    if match is None:
        return [key]
    return [match.group(1), *_SEGMENT.findall(match.group(2))]


def params_from_pairs(pairs: Iterable[tuple[str, str]]) -> Params:
    """Build the nested structure from decoded query/form pairs in bracket notation.

    ``a[b]=1`` nests, ``list[0][name]=x&list[0][count]=2`` share one ``list`` → ``0`` entry,
    ``a[]=1&a[]=2`` get indexes ``0``, ``1``. Unlike PHP, a repeated name is kept rather than
    overwritten: both values were sent and both are signed.
    """
    root = _Level()
    for key, value in pairs:
        path = _key_path(key)
        if len(path) > MAX_DEPTH:
            raise MalformedParams(f"parameter nested deeper than {MAX_DEPTH} levels", field=path[0])
        level = root
        for segment in path[:-1]:
            level = level.child(segment)
        # A top-level name is never auto-indexed; only a trailing `[]` is.
        if len(path) == 1:
            level.items.append((path[0], value))
        else:
            level.add(path[-1], value)
    return root.items


def params_from_xml_element(element: Element) -> Params:
    """Convert the children of an already parsed element (``<request>``/``<response>``).

    An element with child elements becomes a nested list (its own text is ignored); one without
    becomes its text content, ``""`` when empty. Repeated elements stay in document order.
    Namespaces are dropped from names and attributes are ignored, as SimpleXML's ``getName()``
    and ``children()`` do for the reference signer.
    """
    return _from_element(element, 1)


def _from_element(element: Element, depth: int) -> Params:
    if depth > MAX_DEPTH:
        raise MalformedParams(f"XML nested deeper than {MAX_DEPTH} levels")
    params: Params = []
    for child in element:
        if not isinstance(child.tag, str):  # comments and processing instructions
            continue
        name = child.tag.rpartition("}")[2]
        if any(isinstance(grandchild.tag, str) for grandchild in child):
            params.append((name, _from_element(child, depth + 1)))
        else:
            params.append((name, "".join(child.itertext())))
    return params


def params_to_pairs(params: Params) -> list[tuple[str, str]]:
    """Render as bracket-notation pairs (``a[b][0]=x``), ready for urlencoding.

    Empty nested lists produce nothing, like PHP's http_build_query. The result parses back to
    the same structure when names are non-empty, top-level names contain no ``[``, nested names
    no ``]``, and no level holds two nested entries of the same name (those would merge).
    """
    pairs: list[tuple[str, str]] = []
    _render(params, None, pairs)
    return pairs


def _render(params: Params, prefix: str | None, pairs: list[tuple[str, str]]) -> None:
    for name, value in params:
        key = name if prefix is None else f"{prefix}[{name}]"
        if isinstance(value, str):
            pairs.append((key, value))
        else:
            _render(value, key, pairs)
