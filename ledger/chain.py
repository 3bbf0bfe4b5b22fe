"""How the project talks to a chain's JSON-RPC endpoint: one Web3 factory, one retry layer, one revert decoder.

`connect(rpc_url)` is the only place a `Web3` over HTTP is built (the CLI, the node, the devnet set-up and
the tests all call it). web3.py's HTTPProvider retries failed requests on its own by default
(`exception_retry_configuration`: 5 tries with backoff for ConnectionError, HTTPError and Timeout on an
allow-list of read methods); `connect` turns that off, because the retries belong here:

- `call_with_retries` runs one read with a bounded `RetryPolicy` (backoff between tries) on transient
  failures only (`is_transient`: transport errors, rate limits, a node racing its own block production),
  and ends in `ChainUnreachableError` naming the URL and how many tries were made;
- `ledger.tx.TxSender` uses the same policy for sends, where a retry must resend the *same signed bytes*
  (a transport-level retry that web3 did on its own could not be told apart from a new transaction, and
  would multiply with ours: 5 x 4 requests where 4 were meant).

Reverts are decoded in one place too: `revert_reason_of` reads the reason of a failed call whatever raised
it (web3's ContractLogicError with ABI-encoded `Error(string)` data, a plain RPC error, eth-tester), and
`call_with_retries`/`TxSender` turn it into the typed error of `ledger.errors.revert_error`.

`rpc_call` and `chain_id_at` speak JSON-RPC with the standard library: a health check ("does anything
answer there, and which chain is it?") needs no Web3 object and no retries. The devnet, the node and the
CLI all probe a URL this way before they build anything on it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from eth_abi.abi import decode as abi_decode
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    Web3RPCError,
)

from wwwserve.ledger.errors import (
    ChainRequestError,
    ChainUnreachableError,
    LedgerError,
    LedgerValueError,
    revert_error,
)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0  # one request over a Web3 from `connect`
DEFAULT_PROBE_TIMEOUT_S = 2.0  # one `rpc_call`: a health check fails fast
ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string), what Vyper's `assert x, "..."` emits
_REVERT_PREFIX = "execution reverted"

# anvil --prune-history keeps only the newest state: a request that resolved "latest" to block N while
# block N+1 was being mined fails with this; asking again resolves "latest" afresh.
_RACY_NODE_ERRORS = ("BlockOutOfRangeError",)


def connect(rpc_url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Web3:
    """A Web3 over HTTP(S) to `rpc_url`, each request bounded by `timeout_s`, with web3's own request retries
    off: retries are `call_with_retries`'s and `TxSender`'s (see the module docstring)."""
    provider = Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None)
    return Web3(provider)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient RPC failures (refused, reset, timed out, rate-limited) are retried."""

    # total tries of one request before ChainUnreachableError
    attempts: int = 4
    # sleep before the 2nd try; doubled for each later try
    backoff_s: float = 0.2
    # cap on a single sleep
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise LedgerValueError("RetryPolicy.attempts must be >= 1")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise LedgerValueError("RetryPolicy backoffs must be >= 0")

    def delays_s(self) -> Iterator[float]:
        """The sleeps between tries (attempts - 1 of them)."""
        delay = self.backoff_s
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_backoff_s)
            delay *= 2


def endpoint_of(w3: Web3) -> str:
    """The provider's endpoint for messages: URL without credentials or query, IPC path, or class name."""
    provider = w3.provider
    uri = getattr(provider, "endpoint_uri", None) or getattr(provider, "ipc_path", None)
    if not uri:
        return type(provider).__name__
    parts = urlsplit(str(uri))
    if not parts.scheme:
        return str(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: transport errors (the request may not have reached the node)
    and node answers that only reflect a race with block production."""
    if isinstance(exc, LedgerError):
        return False
    if isinstance(exc, Web3RPCError):
        message = rpc_message(exc)
        return any(marker in message for marker in _RACY_NODE_ERRORS)
    # requests' ConnectionError/Timeout/HTTPError and socket errors all derive from OSError
    return isinstance(exc, (OSError, ProviderConnectionError, RequestTimedOut, TooManyRequests))


def decode_revert_data(data: bytes) -> str | None:
    """The reason string of ABI-encoded `Error(string)` revert data, else None."""
    if data[:4] != ERROR_STRING_SELECTOR:
        return None
    try:
        (reason,) = abi_decode(["string"], data[4:])
    except Exception:
        return None
    return str(reason)


def _strip_revert_prefix(message: str) -> str:
    text = message.strip()
    if text.startswith(_REVERT_PREFIX):
        text = text[len(_REVERT_PREFIX) :].lstrip(":").strip()
    return text


def revert_reason_of(exc: BaseException) -> str | None:
    """The revert reason if `exc` reports a contract revert ("" when it had none), else None.

    web3 raises ContractLogicError for nodes that speak JSON-RPC; the in-process eth-tester backend
    raises its own TransactionFailed("execution reverted: <reason>"), recognised by name so that
    production code does not import a test-only package.
    """
    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, str) and data.startswith("0x"):
            try:
                decoded = decode_revert_data(bytes.fromhex(data[2:]))
            except ValueError:
                decoded = None
            if decoded is not None:
                return decoded
        return _strip_revert_prefix(str(exc.message or ""))
    if type(exc).__name__ == "TransactionFailed" and type(exc).__module__.startswith("eth_tester"):
        return _strip_revert_prefix(str(exc))
    if isinstance(exc, Web3RPCError) and _REVERT_PREFIX in str(exc.message or ""):
        return _strip_revert_prefix(str(exc.message))
    return None


def rpc_message(exc: BaseException) -> str:
    """The node's own words for a failed request (web3 wraps them), else the exception's text."""
    if isinstance(exc, Web3RPCError) and exc.message:
        return str(exc.message)
    return str(exc) or type(exc).__name__


def call_with_retries(
    w3: Web3,
    op: Callable[[], T],
    *,
    function: str,
    retry: RetryPolicy | None = None,
) -> T:
    """Run one RPC operation: retry transient failures, map reverts and node errors to ledger errors.

    `function` names the operation in error messages ("WWWServe.stake", "eth_getBalance").
    """
    policy = retry or RetryPolicy()
    delays = policy.delays_s()
    while True:
        try:
            return op()
        except LedgerError:
            raise
        except Exception as exc:
            reason = revert_reason_of(exc)
            if reason is not None:
                raise revert_error(reason, function) from exc
            if is_transient(exc):
                delay = next(delays, None)
                if delay is None:
                    raise ChainUnreachableError(
                        endpoint_of(w3), f"{type(exc).__name__}: {exc} (after {policy.attempts} attempts)"
                    ) from exc
                time.sleep(delay)
                continue
            if isinstance(exc, Web3RPCError):
                raise ChainRequestError(function, rpc_message(exc)) from exc
            raise


def rpc_call(url: str, method: str, params: list[object] | None = None,
             timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> object:
    """One JSON-RPC call; the node's error answer becomes `ChainRequestError`, a transport failure stays
    the `OSError` urllib raised."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise ChainRequestError(method, str(reply["error"]))
    return reply["result"]


def chain_id_at(url: str, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> int | None:
    """The chain id served at `url`, or None if nothing (or nothing speaking JSON-RPC) answers there."""
    try:
        return int(str(rpc_call(url, "eth_chainId", timeout_s=timeout_s)), 16)
    except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError, ChainRequestError):
        return None
