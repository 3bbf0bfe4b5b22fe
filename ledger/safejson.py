"""JSON from strangers: one parser for every byte a client, a peer or a backend sends.

`json.loads` alone cannot be trusted with such input in this process. Importing `eth_keyfile` pulls in
`py_ecc`, which raises Python's recursion limit to 100,000, so a body of `[[[[…]]]]` 200,000 deep
overflows the C stack inside the parser and kills the process (no exception to catch). `loads`
refuses, before parsing, anything nested deeper than `MAX_DEPTH`. It also refuses what parses but
cannot be used: NaN, Infinity and numbers too large for a float (`1e400`), and lone UTF-16 surrogates
(`"\\ud800"`), which no UTF-8 encoder accepts later. Every refusal is an `UnsafeJSONError`, a
`ValueError`, so callers that already catch `ValueError` for bad JSON need no change.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
from typing import Any

from wwwserve.errors import WWWServeError

MAX_DEPTH = 64  # arrays and objects inside each other; an OpenAI request with tool schemas needs < 20

# A JSON string literal (possessive: no backtracking, linear in the input); brackets inside one do not nest.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
# Every opening bracket becomes "(", every closing one ")", everything else goes.
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"()", b"\x02\x00")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class UnsafeJSONError(WWWServeError, ValueError):
    """The text is JSON this node will not take (too deep, a non-finite number, a lone surrogate)."""


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects in `data` nest deeper than `limit` (strings ignored), in time linear in
    `data` and without a Python-level step per byte. A text with at most `limit` opening brackets costs
    two counts; a run of `limit` + 1 openings answers at once; otherwise the deepest point is the largest
    running sum of +1 per opening and -1 per closing bracket, summed by C iterators. Mismatched brackets
    are left to the parser."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(_BRACKETS, _NOT_BRACKET)
    if b"(" * (limit + 1) in brackets:
        return True
    # opening -> 2, closing -> 0: after i + 1 brackets the depth is (their running sum) - (i + 1)
    steps = brackets.translate(_STEPS)
    return max(map(operator.sub, itertools.accumulate(steps), itertools.count(1)), default=0) > limit


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeJSONError(f"the number {text[:40]} is too large")
    return value


def _no_constant(name: str) -> None:
    raise UnsafeJSONError(f"{name} is not a JSON number")


def loads(data: bytes | bytearray | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `data` (UTF-8 bytes or text) as JSON, refusing what `UnsafeJSONError` names; other invalid JSON
    raises `ValueError` (`json.JSONDecodeError`, or `UnicodeDecodeError` for bytes that are not UTF-8)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if too_deep(raw, max_depth):
        raise UnsafeJSONError(f"arrays and objects are nested more than {max_depth} deep")
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:  # not reachable after the depth check; kept so a parser change cannot crash us
        raise UnsafeJSONError(f"arrays and objects are nested more than {max_depth} deep") from None
    if _SURROGATE_ESCAPE.search(raw):
        try:  # escaped pairs were joined by the parser; a lone half survives and cannot be encoded
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise UnsafeJSONError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    return value
