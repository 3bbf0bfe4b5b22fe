"""ledger.safejson: the one JSON parser for input from clients, peers and backends (issue 13, finding 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from wwwserve.ledger import safejson
from wwwserve.ledger.safejson import MAX_DEPTH, UnsafeJSONError, too_deep


def depth(value: Any) -> int:
    """How many arrays and objects nest at the deepest point of `value` (0 for a scalar)."""
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def nested(n: int, *, kind: str = "[", inner: bytes = b"0") -> bytes:
    if kind == "[":
        return b"[" * n + inner + b"]" * n
    return b'{"k":' * n + inner + b"}" * n


@pytest.mark.parametrize("kind", ["[", "{"])
def test_nesting_up_to_the_limit_parses_and_one_more_is_refused(kind: str) -> None:
    assert depth(safejson.loads(nested(MAX_DEPTH, kind=kind))) == MAX_DEPTH
    with pytest.raises(UnsafeJSONError, match=f"nested more than {MAX_DEPTH} deep"):
        safejson.loads(nested(MAX_DEPTH + 1, kind=kind))
    # arrays inside objects inside arrays count together
    mixed = b'[{"a":' * 33 + b"1" + b"}]" * 33
    with pytest.raises(UnsafeJSONError):
        safejson.loads(mixed)
    assert depth(safejson.loads(b'[{"a":' * 32 + b"1" + b"}]" * 32)) == 64


def test_brackets_inside_strings_do_not_nest() -> None:
    text = json.dumps({"content": "[" * 500 + '\\"{' * 300 + "}" * 10, "n": [[1]]}).encode()
    assert safejson.loads(text) == json.loads(text)
    # an escaped quote does not end the string: the brackets after it are still inside it
    tricky = b'["\\"' + b"[" * 200 + b'", 1]'
    assert safejson.loads(tricky) == ['"' + "[" * 200, 1]


@pytest.mark.component
def test_a_million_deep_is_refused_even_when_a_dependency_raised_the_recursion_limit() -> None:
    """The crash of issue 13: `eth_keyfile` (via py_ecc) raises the limit to 100,000, so the C parser
    recurses until the C stack overflows. Here the limit is even higher; the node's parser refuses the
    body before parsing, and the process lives to print the refusal (a crash would exit -11)."""
    code = (
        "import sys, eth_keyfile\n"
        "sys.setrecursionlimit(10**7)\n"
        "from wwwserve.ledger import safejson\n"
        "for body in (b'[' * 10**6 + b']' * 10**6, b'{\"a\":' * 10**6 + b'1' + b'}' * 10**6,\n"
        "             (b'[0,' * 10**5 + b'0' + b']' * 10**5)):\n"
        "    try:\n"
        "        safejson.loads(body)\n"
        "    except safejson.UnsafeJSONError as exc:\n"
        "        print('refused:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [f"refused: arrays and objects are nested more than {MAX_DEPTH} deep"] * 3


@pytest.mark.parametrize("text", [b'{"t": 1e400}', b"[-1e400]", b'{"t": NaN}', b"[Infinity]", b"[-Infinity]",
                                  b'{"t": 2e308}'])
def test_non_finite_numbers_are_refused(text: bytes) -> None:
    with pytest.raises(UnsafeJSONError):
        safejson.loads(text)


def test_large_finite_numbers_and_integers_parse() -> None:
    assert safejson.loads(b"[1e308, -1.5e-300, 123456789012345678901234567890]") == [
        1e308, -1.5e-300, 123456789012345678901234567890]


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\ud83dy", "\\ude00\\ud83d", "\\uDBFF"])
def test_lone_surrogates_are_refused(escape: str) -> None:
    with pytest.raises(UnsafeJSONError, match="lone UTF-16 surrogate"):
        safejson.loads(('{"content": "' + escape + '"}').encode())


def test_surrogate_pairs_and_invalid_bytes() -> None:
    assert safejson.loads(b'["\\ud83d\\ude00"]') == ["\U0001f600"]
    with pytest.raises(ValueError):  # bytes that are not UTF-8 are not JSON text
        safejson.loads(b'["\xff\xfe"]')
    with pytest.raises(ValueError):
        safejson.loads(b'{"a": ')


def _running_depths(brackets: str) -> list[int]:
    out, d = [], 0
    for c in brackets:
        d += 1 if c in "[{" else -1
        out.append(d)
    return out


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="[]{}", max_size=80), st.integers(min_value=0, max_value=12))
def test_too_deep_agrees_with_counting_bracket_by_bracket(brackets: str, limit: int) -> None:
    """On every bracket string that could begin a JSON text (it never closes more than it opened; others
    are not JSON, and the parser refuses them whatever the answer), the C-level sums say what a loop says."""
    depths = _running_depths(brackets)
    assume(min(depths, default=0) >= 0)
    assert too_deep(brackets.encode(), limit) == (max(depths, default=0) > limit)
    # the same brackets between values, spaces and strings holding brackets
    spaced = "".join(c + ' "]}[{" ,' if c in "[{" else c for c in brackets)
    assert too_deep(spaced.encode(), limit) == (max(depths, default=0) > limit)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=1, max_value=8))
def test_loads_is_json_loads_within_the_depth_limit(value: Any, limit: int) -> None:
    text = json.dumps(value).encode()
    if depth(value) > limit:
        with pytest.raises(UnsafeJSONError):
            safejson.loads(text, max_depth=limit)
    else:
        parsed = safejson.loads(text, max_depth=limit)
        assert parsed == json.loads(text)
