"""A saved answer read back for checking its signature (`wwwserve verify`): the whole JSON response, or the
transcript of a streamed one as `curl -N` saves it.

`read_saved_answer` finds what the executor's `wwwserve` signature covers in either form: the answer's text
(a stream's text is every chunk's piece, in order), the token usage it states, its id and model. A
transcript is the SSE body (`data: {...}` events, `data: [DONE]` last; CRLF line ends, comments and
keep-alives `: ...` allowed), optionally after the HTTP header block `curl -i` writes. It is refused, with a
`SavedAnswerError` that says why, when it is cut short (no `[DONE]`, no signature), holds an error event,
or when its chunks disagree with each other or with the signature on the request id or model. Whether the
signature holds over what was read is `node.signing.verify_against_chain`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wwwserve.ledger import safejson
from wwwserve.node.backends.openai_wire import SSEDecoder, choice_text
from wwwserve.node.signing import MalformedSignedResultError, SignedResult, TokenUsage

__all__ = ["SavedAnswer", "SavedAnswerError", "read_saved_answer"]

# SSE ends lines with CRLF, LF or CR, and nothing else: str.splitlines would also split inside a chunk's JSON
# at U+2028 or U+0085, which a model's text may hold unescaped.
_SSE_LINE_END = re.compile(r"\r\n|\r|\n")
_HTTP_STATUS_LINE = re.compile(r"HTTP/\d(?:\.\d)? (\d{3})")
_SSE_FIELD = re.compile(r"(?:data|event|id|retry)(?::|$)")


class SavedAnswerError(MalformedSignedResultError):
    """The saved answer cannot be read: not an answer, cut short, or inconsistent; nothing was verified."""


@dataclass(frozen=True)
class SavedAnswer:
    """What a saved answer says, and the executor's signature over it."""

    signed: SignedResult
    text: str
    usage: TokenUsage | None
    """The `usage` the answer states; None for a stream saved without `stream_options.include_usage` (the
    signed usage is then only in the signature)."""
    streamed: bool
    chunks: int
    """Events of the stream before `[DONE]` (1 for a whole JSON answer)."""


def read_saved_answer(raw: str) -> SavedAnswer:
    """The answer in `raw`: a chat or completion response as JSON, or the SSE transcript of a streamed one,
    either possibly after an HTTP header block (`curl -i`). `SavedAnswerError` (or, for a malformed
    signature, `MalformedSignedResultError`) when it is neither or is incomplete."""
    body = _without_http_headers(raw.lstrip("\ufeff"))
    stripped = body.strip()
    if not stripped:
        raise SavedAnswerError("empty: no JSON response and no SSE transcript")
    if stripped[0] in "{[":
        try:
            data = safejson.loads(stripped)
        except ValueError as exc:
            raise SavedAnswerError(f"not JSON: {exc}") from None
        return _whole_answer(data)
    first = next(line for line in _SSE_LINE_END.split(stripped) if line.strip())
    if not (first.startswith(":") or _SSE_FIELD.match(first)):
        raise SavedAnswerError(
            "neither a JSON response nor an SSE transcript (lines `data: {...}`, ending with `data: [DONE]`)")
    return _streamed_answer(body)


def _without_http_headers(text: str) -> str:
    """`text` after the HTTP header blocks `curl -i` writes (an interim `100 Continue` block included)."""
    while (status_line := _HTTP_STATUS_LINE.match(text)) is not None:
        status = int(status_line.group(1))
        end = re.search(r"\r?\n\r?\n", text)
        if end is None:
            raise SavedAnswerError(f"an HTTP {status} header block with no body after it")
        text = text[end.end():]
        if status >= 300:
            raise SavedAnswerError(f"the saved answer is an HTTP {status} error, not an answer: "
                                   f"{_error_message(text)}")
    return text


def _error_message(body: str) -> str:
    """The message of an OpenAI error body, else the body's start."""
    try:
        data = safejson.loads(body)
    except ValueError:
        data = None
    return _error_message_of(data) if isinstance(data, dict) and "error" in data else body.strip()[:200]


def _error_message_of(data: Mapping[str, Any]) -> str:
    error = data.get("error")
    return str(error.get("message")) if isinstance(error, dict) else str(error)


def _signature(data: Mapping[str, Any]) -> SignedResult:
    try:
        return SignedResult.from_json(data["wwwserve"])
    except MalformedSignedResultError as exc:
        raise MalformedSignedResultError(f"the `wwwserve` signature is malformed: {exc}") from None


def _check_names(signed: SignedResult, request_id: object, model: object, where: str) -> None:
    """The answer's id and model are the signed ones: a signature moved onto another answer is caught here
    with a clear message, before its output hash would fail."""
    if request_id != signed.request_id:
        raise SavedAnswerError(f"{where} has id {request_id!r}, but the signature is for request "
                               f"{signed.request_id!r}")
    if model != signed.claim.model:
        raise SavedAnswerError(f"{where} names model {model!r}, but the signature is for {signed.claim.model!r}")


def _whole_answer(data: object) -> SavedAnswer:
    if not isinstance(data, dict):
        raise SavedAnswerError("not an OpenAI response: expected a JSON object")
    if isinstance(data.get("error"), dict):
        raise SavedAnswerError(f"the saved response is an error, not an answer: {_error_message_of(data)}")
    if "wwwserve" not in data:
        raise SavedAnswerError("the response has no `wwwserve` extension (not served by a wwwserve node?)")
    signed = _signature(data)
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise SavedAnswerError("the response must have exactly one choice (choices[0])")
    choice = choices[0]
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    if not isinstance(text, str):
        raise SavedAnswerError("choices[0] has neither message.content (chat) nor text (completion)")
    _check_names(signed, data.get("id"), data.get("model"), "the response")
    if "usage" not in data:
        raise SavedAnswerError("the response has no `usage` (a wwwserve node always sends it, signed)")
    usage = TokenUsage.from_json(data["usage"])
    return SavedAnswer(signed=signed, text=text, usage=usage, streamed=False, chunks=1)


def _streamed_answer(body: str) -> SavedAnswer:
    decoder = SSEDecoder()
    events: list[str] = []
    for line in _SSE_LINE_END.split(body):
        data = decoder.feed(line)
        if data is not None:
            events.append(data)
    tail = decoder.flush()
    if tail is not None:
        events.append(tail)

    pieces: list[str] = []
    signed: SignedResult | None = None
    usage: TokenUsage | None = None
    names: list[tuple[int, object, object]] = []  # (event number, id, model) of every chunk
    done = False
    for number, data in enumerate(events, start=1):
        if done:
            raise SavedAnswerError(f"event {number} comes after `data: [DONE]`")
        if data.strip() == "[DONE]":
            done = True
            continue
        try:
            event = safejson.loads(data)
        except ValueError as exc:
            if number == len(events):  # the last event, cut off where the saving stopped
                raise _truncated(signed) from None
            raise SavedAnswerError(f"event {number} is not JSON: {exc}") from None
        if not isinstance(event, dict):
            raise SavedAnswerError(f"event {number} is not a JSON object")
        if "error" in event:
            raise SavedAnswerError(f"the stream ended with an error (event {number}): {_error_message_of(event)}")
        names.append((number, event.get("id"), event.get("model")))
        if event.get("wwwserve") is not None:
            if signed is not None:
                raise SavedAnswerError(f"event {number} carries a second `wwwserve` signature")
            signed = _signature(event)
        if event.get("usage") is not None:
            if usage is not None:
                raise SavedAnswerError(f"event {number} states the usage a second time")
            usage = TokenUsage.from_json(event["usage"], f"event {number}'s usage")
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise SavedAnswerError(f"event {number} is not a completion chunk (no choices list)")
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                raise SavedAnswerError(f"event {number} has a choice other than choices[0]: one answer per "
                                       "stream is signed")
            piece = choice_text(choice)
            if piece:
                pieces.append(piece)
    if not done:
        raise _truncated(signed)
    if signed is None:
        raise SavedAnswerError("the stream carries no `wwwserve` signature (not served by a wwwserve node?)")
    for number, request_id, model in names:
        _check_names(signed, request_id, model, f"event {number}")
    return SavedAnswer(signed=signed, text="".join(pieces), usage=usage, streamed=True, chunks=len(names))


def _truncated(signed: SignedResult | None) -> SavedAnswerError:
    missing = "its `wwwserve` signature and " if signed is None else ""
    return SavedAnswerError(f"the stream is truncated: it lacks {missing}the final `data: [DONE]` (saved while "
                            "still streaming, or cut off)")
