"""Reach a chain's JSON-RPC endpoint.

`rpc_call` and `chain_id_at` speak JSON-RPC with the standard library: a health check ("does anything
answer there, and which chain is it?") needs no Web3 object and no retries. The devnet, the node and the
CLI all probe a URL this way before they build anything on it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from wwwserve.ledger.errors import ChainRequestError

DEFAULT_PROBE_TIMEOUT_S = 2.0


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
