"""Canonical JSON: the signed byte form, and the failures that name where the value is bad."""

from __future__ import annotations

import enum

import pytest

from xchange.canonical import canonical_json, parse_json
from xchange.errors import BadRequestError


class _Code(enum.IntEnum):
    ONE = 1


class _Text(str):
    pass


@pytest.mark.parametrize(("value", "expected"), [
    ({"b": 1, "a": [True, None, "é"]}, '{"a":[true,null,"é"],"b":1}'.encode()),
    ((1, 2), b"[1,2]"),
    ({"z": {"y": {}, "x": []}}, b'{"z":{"x":[],"y":{}}}'),
    (2**80, str(2**80).encode()),
    # Subclasses of the JSON types (checked the slow way) have the form of their base.
    ({"k": _Code.ONE, "s": _Text("t")}, b'{"k":1,"s":"t"}'),
])
def test_canonical_form(value: object, expected: bytes) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ({"a": [1, {"b": 1.5}]}, r"\$\.a\[1\]\.b: floats have no canonical form"),
    ({"a": {1: "x"}}, r"\$\.a: object key 1 is not a string"),
    ([b"bytes"], r"\$\[0\]: bytes is not a JSON type"),
    ({"a": "\ud800"}, "cannot be written as canonical JSON"),
    ([_Text("t"), (1, [2.0])], r"\$\[1\]\[1\]\[0\]: floats have no canonical form"),
    ({_Text("k"): {"x": float("nan")}}, r"\$\.k\.x: floats have no canonical form"),
])
def test_values_without_a_canonical_form_are_refused_with_their_place(
    value: object, message: str
) -> None:
    with pytest.raises(BadRequestError, match=message):
        canonical_json(value)


def test_deep_nesting_is_refused() -> None:
    value: list[object] = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(BadRequestError, match="nested too deeply"):
        canonical_json(value)


@pytest.mark.parametrize(("data", "message"), [
    (b'{"a":1,"a":2}', "duplicate object key 'a'"),
    (b"[NaN]", "non-standard JSON literal NaN"),
    (b'"\xff"', "not valid UTF-8"),
    (b"{", "malformed JSON"),
])
def test_parse_json_is_strict(data: bytes, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        parse_json(data)


def test_parse_json_reads_what_canonical_json_writes() -> None:
    value = {"b": [1, "x", None, False], "a": {"é": 2}}
    assert parse_json(canonical_json(value)) == value
