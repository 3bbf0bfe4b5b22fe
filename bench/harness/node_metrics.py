"""What a node says about delegation: the route of an answer, and its dispatch counters in /metrics."""

from __future__ import annotations

from harness.common import HOST
from harness.load import CHAT_BODY


def check_delegated(port: int, dispatcher: str, executor: str) -> str | None:
    """None when a request to node A was executed by B through a 2-node route; else why not."""
    import httpx

    resp = httpx.post(f"http://{HOST}:{port}/v1/chat/completions", content=CHAT_BODY,
                      headers={"content-type": "application/json"}, timeout=30.0)
    if resp.status_code != 200:
        return f"node A answered {resp.status_code}: {resp.text[:200]}"
    ext = resp.json().get("wwwserve") or {}
    route = ext.get("route") or []
    if len(route) < 2 or str(ext.get("executor", "")).lower() == dispatcher.lower():
        return f"route {route}, executor {ext.get('executor')}"
    if str(ext.get("executor", "")).lower() != executor.lower():
        return f"executed by {ext.get('executor')}, not node B"
    return None


def dispatch_counters(port: int) -> dict[str, float]:
    """Node A's dispatch decisions and delegation outcomes so far, from its /metrics."""
    import httpx

    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=5.0).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("wwwserve_dispatch_decisions_total{", "wwwserve_delegations_total{",
                            "wwwserve_reoffers_total{")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def delegation_note(before: dict[str, float], after: dict[str, float]) -> str:
    """How node A handled the requests of a measurement: decisions and delegation outcomes (a delta)."""
    parts = []
    for name in sorted(after):
        delta = after[name] - before.get(name, 0.0)
        if delta:
            label = name.split("{", 1)[1].rstrip("}").replace('"', "")
            kind = ("decision" if name.startswith("wwwserve_dispatch") else
                    "re-offer" if name.startswith("wwwserve_reoffers") else "delegation")
            parts.append(f"{kind} {label}: {delta:,.0f}")
    return "node A: " + (", ".join(parts) if parts else "no dispatch recorded")
