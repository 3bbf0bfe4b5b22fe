"""`wwwserve burst`: send N concurrent chat requests to one node and show where each was executed.

The README's way to watch the network work: the node a user asks runs some requests itself and delegates
the rest to peers chosen by stake; each answer's `wwwserve.route` (origin first) and `wwwserve.executor`
say which. A share of the delegated requests become duels (`policy.p_inspect`), which `wwwserve duel list`
shows once they open.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table

from wwwserve.cli.common import console, fail

# Different questions, so no answer is a copy of another; cycled when more requests are asked for.
PROMPTS = (
    "Name three colours of a rainbow.",
    "What is the capital of France?",
    "Give one tip for sleeping well.",
    "Say hello in five words.",
    "What do bees make?",
    "Name a planet of the solar system.",
    "What is two plus two?",
    "Describe the sea in one sentence.",
    "Name an animal that can fly.",
    "What is water made of?",
    "Give a synonym of happy.",
    "What season comes after winter?",
)


@dataclass(frozen=True)
class Outcome:
    """One request of the burst: the HTTP status, the seconds it took, and where the answer came from."""

    index: int
    status: int
    seconds: float
    executor: str | None = None
    route: tuple[str, ...] = ()
    error: str | None = None

    @property
    def by_peer(self) -> bool:
        """True when a node other than the one asked (the route's origin) executed the request."""
        return self.executor is not None and bool(self.route) and self.executor != self.route[0]


def outcome_of(index: int, status: int, seconds: float, body: Any) -> Outcome:
    """Read one response body (an OpenAI chat completion, or an OpenAI error object)."""
    if not isinstance(body, dict):
        return Outcome(index, status, seconds, error="the answer is not a JSON object")
    if status != 200:
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        return Outcome(index, status, seconds, error=str(message or body)[:200])
    ext = body.get("wwwserve")
    if not isinstance(ext, dict) or not isinstance(ext.get("executor"), str):
        return Outcome(index, status, seconds, error="the answer has no `wwwserve` signature")
    route = ext.get("route")
    hops = tuple(str(hop) for hop in route) if isinstance(route, list) else ()
    return Outcome(index, status, seconds, executor=ext["executor"], route=hops)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values` by the nearest-rank rule (values must not be empty)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


async def _first_model(client: Any, url: str) -> str:
    reply = await client.get(f"{url}/v1/models")
    reply.raise_for_status()
    data = reply.json().get("data") or []
    if not data:
        raise ValueError(f"{url}/v1/models lists no model")
    return str(data[0]["id"])


async def _send_all(url: str, model: str | None, requests: int, max_tokens: int, timeout_s: float,
                    on_done: Any) -> tuple[str, list[Outcome]]:
    import httpx

    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        chosen = model or await _first_model(client, url)

        async def one(i: int) -> Outcome:
            body = {"model": chosen, "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
            start = time.monotonic()
            try:
                reply = await client.post(f"{url}/v1/chat/completions", json=body)
                try:
                    payload: Any = reply.json()
                except ValueError:
                    payload = None
                outcome = outcome_of(i + 1, reply.status_code, time.monotonic() - start, payload)
            except httpx.HTTPError as exc:
                outcome = Outcome(i + 1, 0, time.monotonic() - start, error=f"{type(exc).__name__}: {exc}")
            on_done(outcome)
            return outcome

        outcomes = await asyncio.gather(*(one(i) for i in range(requests)))
    return chosen, sorted(outcomes, key=lambda o: o.index)


def summary_lines(outcomes: list[Outcome], wall_s: float) -> list[str]:
    """The figures under the table: answers, latency, and how much of the burst peers executed."""
    answered = [o for o in outcomes if o.executor is not None]
    lines = [f"{len(answered)} of {len(outcomes)} answered in {wall_s:.1f} s"]
    if answered:
        seconds = [o.seconds for o in answered]
        lines[0] += f" (p50 {percentile(seconds, 0.5):.1f} s, max {max(seconds):.1f} s)"
        peers = sum(o.by_peer for o in answered)
        executors = len({o.executor for o in answered})
        lines.append(f"executed by the node you asked: {len(answered) - peers}, by peers: {peers} "
                     f"({100 * peers / len(answered):.0f} %), on {executors} node{'s' if executors != 1 else ''}")
    failed = len(outcomes) - len(answered)
    if failed:
        lines.append(f"{failed} failed (see the table)")
    return lines


def burst(
    url: Annotated[str, typer.Argument(help="The node to ask (its endpoint, as `wwwserve up` prints it).")
                   ] = "http://127.0.0.1:9101",
    requests: Annotated[int, typer.Option("--requests", "-n", min=1, max=256,
                                          help="Requests sent at once.")] = 12,
    max_tokens: Annotated[int, typer.Option(min=1, max=4096, help="max_tokens of each request.")] = 48,
    model: Annotated[str | None, typer.Option(help="Model to ask for (default: the first the node lists).")
                     ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for each answer.")] = 300.0,
) -> None:
    """Send N chat requests at once to one node and show which node executed each (delegation at work)."""
    from rich.markup import escape

    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        fail(f"URL must start with http:// or https://, got {url!r}", 2)
    done: list[Outcome] = []
    start = time.monotonic()
    with console.status(f"sending {requests} requests to {url} ...") as status:
        def on_done(outcome: Outcome) -> None:
            done.append(outcome)
            peers = sum(o.by_peer for o in done)
            status.update(f"{len(done)}/{requests} answered ({peers} by peers), {time.monotonic() - start:.0f} s")

        try:
            chosen, outcomes = asyncio.run(_send_all(url, model, requests, max_tokens, timeout, on_done))
        except Exception as exc:  # the node unreachable, or /v1/models unusable: one line
            fail(f"{url}: {type(exc).__name__}: {exc}")
    wall_s = time.monotonic() - start
    origin = next((o.route[0] for o in outcomes if o.route), None)
    table = Table(title=f"{requests} requests to {url} ({chosen}, max_tokens {max_tokens})", title_justify="left")
    for col in ("#", "status", "executed by", "seconds"):
        table.add_column(col, justify="right" if col in ("#", "seconds") else "left")
    for o in outcomes:
        if o.executor is None:
            where = f"[red]{escape(o.error or '')}[/]"
        else:
            where = f"{o.executor} ({'the node asked' if o.executor == origin else 'a peer'})"
        table.add_row(str(o.index), str(o.status or "-"), where, f"{o.seconds:.1f}")
    console.print(table)
    for line in summary_lines(outcomes, wall_s):
        console.print(line, highlight=False)
    console.print("Duels open on a share of the delegated requests: `wwwserve duel list` (a duel settles "
                  "about two minutes after it opens).", highlight=False)
    if all(o.executor is None for o in outcomes):
        raise typer.Exit(1)
