"""Unit tests of node/saved_answer.py: a saved answer (whole JSON or SSE transcript) read back for `wwwserve
verify`, and what a signature check over it catches. The transcripts here are the bytes a node's
`sse_events` writes (built with its chunk models), signed with a test key."""

from __future__ import annotations

import json
import re
from typing import Any

import nacl.signing
import pytest

from wwwserve.node.protocol import (
    SSE_DONE,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionDelta,
    CompletionChoice,
    CompletionChunk,
    Usage,
    chat_completion_body,
    sse_event,
)
from wwwserve.node.saved_answer import SavedAnswerError, read_saved_answer
from wwwserve.node.signing import (
    MalformedSignedResultError,
    OutputHashMismatchError,
    ResultClaim,
    SignatureInvalidError,
    TokenUsage,
    UsageMismatchError,
    prompt_hash,
    sha256_text,
    sign_result,
    verify_result,
)

KEY = nacl.signing.SigningKey(bytes(range(32)))
EXECUTOR = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"
MODEL = "fake-model"
RID = "chatcmpl-abc123"
PIECES = ["Hello", ", net", "work\u2028line ✓"]  # U+2028 must not split a line of the transcript
TEXT = "".join(PIECES)
USAGE = TokenUsage(12, 3)


def signature(text: str = TEXT, usage: TokenUsage = USAGE, request_id: str = RID) -> dict[str, Any]:
    claim = ResultClaim(chain_id=31337, request_id=request_id, prompt_sha256=prompt_hash("hi", MODEL),
                        output_sha256=sha256_text(text), model=MODEL, executor=EXECUTOR, timestamp_ms=1, usage=usage)
    return sign_result(KEY, claim, route=[EXECUTOR]).to_json()


def chat_stream(include_usage: bool = True, pieces: list[str] = PIECES, **ext: Any) -> bytes:
    """A chat stream as `node.api.completions` writes it: opening, text deltas, finish, usage, [DONE]."""
    def chunk(**fields: Any) -> bytes:
        return sse_event(ChatCompletionChunk(id=RID, created=1, model=MODEL, **fields))

    signed = {"wwwserve": signature(), **ext}
    out = chunk(choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(role="assistant", content=""))])
    for piece in pieces:
        out += chunk(choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(content=piece))])
    out += chunk(choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(), finish_reason="stop")],
                 **({} if include_usage else signed))
    if include_usage:
        out += chunk(choices=[], usage=Usage.of(USAGE.prompt_tokens, USAGE.completion_tokens), **signed)
    return out + SSE_DONE


def check(raw: str | bytes) -> None:
    """What `wwwserve verify` does, with the test key in place of the chain's."""
    answer = read_saved_answer(raw.decode() if isinstance(raw, bytes) else raw)
    verify_result(answer.signed, bytes(KEY.verify_key), answer.text, usage=answer.usage)


def test_a_chat_stream_is_reassembled_and_verifies() -> None:
    answer = read_saved_answer(chat_stream().decode())
    assert answer.streamed and answer.text == TEXT and answer.usage == USAGE and answer.chunks == 6
    check(chat_stream())


def test_a_stream_without_usage_chunk_verifies_and_the_signature_still_states_the_usage() -> None:
    answer = read_saved_answer(chat_stream(include_usage=False).decode())
    assert answer.usage is None and answer.signed.claim.usage == USAGE
    check(chat_stream(include_usage=False))


def test_a_completion_stream_verifies() -> None:
    def chunk(**fields: Any) -> bytes:
        return sse_event(CompletionChunk(id=RID, created=1, model=MODEL, **fields))

    raw = b"".join(chunk(choices=[CompletionChoice(text=p, finish_reason=None)]) for p in PIECES)
    raw += chunk(choices=[CompletionChoice(text="", finish_reason="length")], wwwserve=signature())
    answer = read_saved_answer((raw + SSE_DONE).decode())
    assert answer.text == TEXT
    check(raw + SSE_DONE)


def test_crlf_comments_keep_alives_and_curl_i_headers_are_read() -> None:
    body = chat_stream().decode().replace("\n", "\r\n")
    with_comments = ": keep-alive\r\n\r\n" + body.replace("data: [DONE]", ": ping\r\ndata: [DONE]")
    headers = ("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
               "x-wwwserve-executor: " + EXECUTOR + "\r\n\r\n")
    check(headers + with_comments)
    check("HTTP/1.1 100 Continue\r\n\r\n" + headers + with_comments)
    check("data:" + chat_stream().decode()[len("data: "):])  # no space after the colon is SSE too


def test_a_whole_json_answer_is_read_as_before_also_after_headers() -> None:
    body = chat_completion_body(RID, MODEL, TEXT, "stop", USAGE.prompt_tokens, USAGE.completion_tokens, signature())
    check(json.dumps(body))
    check("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + json.dumps(body))
    assert not read_saved_answer(json.dumps(body)).streamed


def test_tampered_usage_fails_in_a_whole_answer_and_in_a_stream() -> None:
    body = chat_completion_body(RID, MODEL, TEXT, "stop", USAGE.prompt_tokens, USAGE.completion_tokens, signature())
    body["usage"] = {"prompt_tokens": 12, "completion_tokens": 300, "total_tokens": 312}
    with pytest.raises(UsageMismatchError):
        check(json.dumps(body))
    raw = chat_stream().decode().replace('"completion_tokens":3,"total_tokens":15',
                                         '"completion_tokens":30,"total_tokens":42', 1)
    assert raw != chat_stream().decode()
    with pytest.raises(UsageMismatchError):
        check(raw)
    # Changing the signed copy too breaks the signature.
    both = raw.replace('"completion_tokens":3,"total_tokens":15', '"completion_tokens":30,"total_tokens":42')
    with pytest.raises(SignatureInvalidError):
        check(both)


def test_a_tampered_dropped_or_reordered_chunk_fails() -> None:
    raw = chat_stream().decode()
    with pytest.raises(OutputHashMismatchError):
        check(raw.replace('"content":", net"', '"content":", NET"'))
    events = raw.split("\n\n")
    with pytest.raises(OutputHashMismatchError):
        check("\n\n".join(events[:2] + events[3:]))  # a text chunk left out
    with pytest.raises(OutputHashMismatchError):
        check("\n\n".join([events[0], events[2], events[1], *events[3:]]))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("hello world\n", "neither a JSON response nor an SSE transcript"),
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (chat_stream().decode().replace("data: [DONE]\n\n", ""), "truncated"),
        (chat_stream().decode()[:200], "lacks its `wwwserve` signature and the final `data: [DONE]`"),
        (chat_stream().decode().replace("data: [DONE]", 'data: {"id": "x"}\n\ndata: [DONE]'), "event 7"),
        (chat_stream().decode() + 'data: {"choices": []}\n\n', "after `data: [DONE]`"),
        ('data: {"error": {"message": "The peer failed.", "type": "x"}}\n\ndata: [DONE]\n\n', "The peer failed."),
        ('data: {"id": "x", "choices": [{"index": 0, "text": "hi"}]}\n\ndata: [DONE]\n\n', "no `wwwserve` signature"),
        ("data: not json\n\ndata: [DONE]\n\n", "event 1 is not JSON"),
        (chat_stream().decode().replace(f'"id":"{RID}"', '"id":"chatcmpl-other"', 1), "event 1 has id"),
        (chat_stream().decode().replace(f'"model":"{MODEL}"', '"model":"other"', 1), "names model 'other'"),
        (chat_stream().decode().replace('"index":0', '"index":1', 2), "other than choices[0]"),
        (chat_stream().decode().replace('"system_fingerprint":null}', '"system_fingerprint":null,"wwwserve":'
                                        + json.dumps(signature()) + "}", 1), "event 6 carries a second"),
        ('HTTP/1.1 429 Too Many Requests\r\n\r\n{"error": {"message": "Slow down."}}',
         "HTTP 429 error, not an answer: Slow down."),
        ('{"error": {"message": "Model not found.", "type": "x"}}', "an error, not an answer: Model not found."),
        (json.dumps({"choices": []}), "no `wwwserve` extension"),
    ],
)
def test_what_cannot_be_checked_is_refused_saying_why(raw: str, message: str) -> None:
    with pytest.raises(MalformedSignedResultError, match=re.escape(message)):
        read_saved_answer(raw)


def test_a_whole_answer_without_usage_or_with_a_wrong_total_is_refused() -> None:
    body = chat_completion_body(RID, MODEL, TEXT, "stop", USAGE.prompt_tokens, USAGE.completion_tokens, signature())
    del body["usage"]
    with pytest.raises(SavedAnswerError, match="no `usage`"):
        read_saved_answer(json.dumps(body))
    body["usage"] = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 16}
    with pytest.raises(MalformedSignedResultError, match="total_tokens"):
        read_saved_answer(json.dumps(body))
