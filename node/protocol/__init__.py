"""Wire models of the node's user API: the OpenAI chat/completions/models shapes, plus our extensions.

Requests are validated strictly (a string is not a number, `"true"` is not a boolean), the way OpenAI
answers them: a wrong type or value is an `invalid_request_error` naming the offending `param`
(`node.errors.from_validation_error` turns a pydantic error into that). Fields OpenAI defines that
this network cannot honour (`n > 1`, `echo`, `logprobs`, image parts, ...) are rejected with a clear
message instead of being silently dropped; fields OpenAI does not define are ignored, so newer clients
keep working.

Responses serialize with exactly the OpenAI field names. Extensions ride along: `wwwserve` on
responses and on the final stream chunk (the executor's signed attestation, built by `node.signing`),
`wwwserve_work` beside it on answers to peers (the executor's work attestation, `ledger.work`), and
`wwwserve_nodes` on each model card (how many nodes in the network serve that model). All are omitted
when empty, so the official `openai` client sees ordinary objects.

The validators raise `PydanticCustomError` with their own error type (not a bare `ValueError`) so the
message reaches the user verbatim and the error's location is the field itself, never a union branch.

The package: `requests` (chat and completion requests), `responses` (answers, stream chunks, the model list,
and the answer bodies built directly), `sse` (server-sent events).
"""

from __future__ import annotations

from wwwserve.node.protocol.requests import (
    MAX_STOP_SEQUENCES,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    Role,
    StreamOptions,
    TextContentPart,
)
from wwwserve.node.protocol.responses import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionDelta,
    ChatCompletionMessage,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionChunk,
    CompletionResponse,
    FinishReason,
    ModelCard,
    ModelList,
    Usage,
    chat_completion_body,
    completion_body,
    new_request_id,
)
from wwwserve.node.protocol.sse import SSE_DONE, sse_event

__all__ = [
    "MAX_STOP_SEQUENCES",
    "SSE_DONE",
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionChunkChoice",
    "ChatCompletionDelta",
    "ChatCompletionMessage",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionRequest",
    "CompletionResponse",
    "FinishReason",
    "ModelCard",
    "ModelList",
    "Role",
    "StreamOptions",
    "TextContentPart",
    "Usage",
    "chat_completion_body",
    "completion_body",
    "new_request_id",
    "sse_event",
]
