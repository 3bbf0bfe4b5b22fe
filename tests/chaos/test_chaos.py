"""The chaos tier (issue 13): faults on a live network of real processes, each under steady load, each healed.

Anvil, the contract and three `wwwserve node run` processes with the fake backend, started the way
`wwwserve up --backend fake` starts them (`devnet.deploy.bring_up_demo_nodes`, `devnet.network.LocalNetwork`):
node A (1) is a pure dispatcher that delegates everything it can; B (2) and C (3) execute. Eight clients
(four streaming, four waiting for whole answers) send chat requests to A one after another, for the whole
of each fault. The faults, one per test, in order:

1. SIGKILL of executor B while a stream it executes is half sent; B is started again.
2. SIGSTOP of B for 75 s, then SIGCONT.
3. A graceful restart of C (SIGTERM: it finishes what it runs; then started again).
4. anvil frozen (SIGSTOP) for 30 s, then SIGCONT.
5. anvil SIGKILLed and a fresh one started on its port (a chain reset): every node says so once and serves
   locally; the contract is deployed and the nodes registered again; delegation resumes on its own.

Every answer is classified: completed (its `wwwserve` attestation verifies against the key the executor
registered on-chain, over exactly the text received and the prompt sent), a clean error (the OpenAI error
shape with a code the node documents as a retryable outcome, as a status or as a stream's error event),
refused (no connection: never accepted), lost (a connection broken, a stream without `[DONE]`, an error
not in the OpenAI shape), hung (a stream silent longer than the documented T1 + T2, a whole answer later
than T1 + T2), unsigned (an answer without a valid signature), or a bad error (an error
answer that is not a documented clean one, e.g. a 500). Each test prints its figures and fails on any lost,
hung, unsigned answer or bad error; the module prints the table docs/reliability.md quotes.

Runs only with WWWSERVE_CHAOS=1 (CI runs it after the README's test command; about 3 minutes on 2 cores):
  WWWSERVE_CHAOS=1 .venv/bin/python -m pytest -q -s tests/chaos
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from bench_scripts import load_bench_script

from wwwserve.devnet.anvil import AnvilProcess, start_anvil
from wwwserve.devnet.deploy import DEMO_PASSWORD, DemoNode, bring_up_demo_nodes, ensure_deployment
from wwwserve.devnet.localnet import log_tail
from wwwserve.devnet.network import LocalNetwork
from wwwserve.devnet.ports import free_port_block
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.params import WEI_PER_ETH
from wwwserve.node.settings import PeerSettings
from wwwserve.node.signing import SignedResult, SigningError, verify_result


def _bench_sse() -> ModuleType:
    """bench/harness/sse.py, the SSE reader bench/soak.py uses too (bench/ is scripts, not a package)."""
    return load_bench_script("harness/sse.py", "bench_harness_sse")


SSEReader = _bench_sse().SSEReader

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("WWWSERVE_CHAOS") != "1",
                       reason="the chaos tier (~3 min) runs with WWWSERVE_CHAOS=1 (CI: after the README's tests)"),
]

MODEL = "chaos-model"
CHAIN_ID = 31337
STREAM_CLIENTS = 4
WHOLE_CLIENTS = 4
_PEERS = PeerSettings()  # the documented defaults, which the nodes run with
T1_S = _PEERS.first_output_timeout_s
T2_S = _PEERS.stream_idle_timeout_s
# Hung: a stream silent longer than T1 + T2 (no output within T1 is re-dispatched, a silence of T2 after
# output ends the stream), a whole answer not back within T1 + T2 (a delegated whole answer travels as a stream
# the origin collects, so the same bounds apply and a stalled one is re-dispatched); plus slack for a loaded
# machine. The fake executors answer in ~0.6 s, so no honest answer comes near either bound.
STREAM_SILENCE_BOUND_S = T1_S + T2_S + 10
WHOLE_BOUND_S = T1_S + T2_S + 10
# The error codes a node documents as an outcome a client may retry (node/errors.py), never a fault of its own.
CLEAN_ERROR_CODES = frozenset({"upstream_timeout", "overloaded", "backend_unavailable", "rate_limit_exceeded"})
SIGSTOP_PEER_S = 75.0  # the figures
FREEZE_ANVIL_S = 30.0

COMMON = [
    f"backend.models=['{MODEL}']",
    "backend.fake.tokens_per_s=20",  # 12 words: about 0.6 s an answer, so faults catch requests mid-way
    "backend.fake.words=12",
    "backend.fake.capacity=16",
    "policy.p_inspect=0",  # duels are not what this tier is about
    "peers.fee_wei=1",  # 1 wei a request: the credit lasts any run
]
PER_NODE = [
    ["policy.target_token_usage=-1", "policy.offload_frequency=1.0", "policy.accept_frequency=0"],  # A
    ["policy.accept_frequency=1.0"],  # B
    ["policy.accept_frequency=1.0"],  # C
]


# ------------------------------------------------------------------------------------------------
# the network


@dataclass
class ChaosNet:
    home: Path
    anvil: AnvilProcess
    network: LocalNetwork
    nodes: list[DemoNode]  # A, B, C
    keys: dict[str, bytes]  # address (lower) -> ed25519 key registered on-chain

    def address(self, index: int) -> str:
        """The address of node `index` (1-based: A=1, B=2, C=3)."""
        return self.nodes[index - 1].address

    @property
    def entry_url(self) -> str:
        return self.network.launches()[0].local_url

    def log(self, index: int) -> str:
        return (self.home / "logs" / f"node-{index}.log").read_text(errors="replace")

    def count_in_logs(self, text: str) -> list[int]:
        """How often each node (A, B, C) logged `text` so far."""
        return [self.log(i).count(text) for i in (1, 2, 3)]

    def tails(self) -> str:
        return "\n".join(f"--- node {i}\n{log_tail(self.home / 'logs' / f'node-{i}.log', 30)}" for i in (1, 2, 3))

    def set_up_chain_again(self) -> None:
        """After a chain reset: the contract and the three nodes, registered with the keys they had."""
        self.nodes, keys = set_up_chain(self.anvil, self.network.base_port)
        assert keys == self.keys, "a node registered another key after the chain came back"


def set_up_chain(anvil: AnvilProcess, base_port: int) -> tuple[list[DemoNode], dict[str, bytes]]:
    """Deploy the contract (unless it is there) and register, fund and stake the three demo nodes, as
    `wwwserve up` does; returns them and the ed25519 keys they registered (address in lower case -> key)."""
    w3 = connect(anvil.rpc_url)
    deployment, _ = ensure_deployment(w3, anvil.rpc_url)
    nodes = bring_up_demo_nodes(w3, deployment, 3, stake_wei=WEI_PER_ETH, deposit_wei=10 * WEI_PER_ETH,
                                base_port=base_port, models=(MODEL,))
    chain = WWWServeClient(w3, deployment.address, None)
    keys = {}
    for node in nodes:
        info = chain.node(node.address)
        assert info is not None and info.active
        keys[node.address.lower()] = bytes(info.pubkey)
    return nodes, keys



FIGURES: list[Figures] = []


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosNet]:
    home = tmp_path_factory.mktemp("chaos") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WWWSERVE_HOME", str(home))
        chaos: ChaosNet | None = None
        anvil = start_anvil(log_path=home / "anvil.log")
        network: LocalNetwork | None = None
        try:
            base_port = free_port_block(3)
            nodes, keys = set_up_chain(anvil, base_port)
            contract = json.loads(next((home / "deployments").glob("*.json")).read_text())["address"]
            network = LocalNetwork(
                rpc_url=anvil.rpc_url, contract_address=contract, wallets=[n.wallet for n in nodes],
                password=DEMO_PASSWORD, home=home, backend="fake", base_port=base_port, extra_overrides=COMMON,
                node_overrides=PER_NODE,
            )
            network.start()
            network.wait_ready(120)
            chaos = ChaosNet(home, anvil, network, nodes, keys)
            yield chaos
        finally:
            if network is not None:
                for i in (1, 2, 3):  # a test that failed mid-fault may have left one stopped
                    if network.process(i).poll() is None:
                        network.process(i).send_signal(signal.SIGCONT)
                network.stop()
            (chaos.anvil if chaos is not None else anvil).stop()
    print("\n" + figures_table(FIGURES))
    for i in (1, 2, 3):
        text = (home / "logs" / f"node-{i}.log").read_text(errors="replace")
        assert "Traceback" not in text, f"node {i} logged a traceback:\n{text[-6000:]}"


# ------------------------------------------------------------------------------------------------
# the load


@dataclass
class Answer:
    """What one request got."""

    kind: str  # "stream" | "whole"
    sent_at: float
    ended_at: float = 0.0
    outcome: str = ""  # completed | clean_error | refused | lost | hung | unsigned | bad_error
    code: str | None = None
    detail: str = ""
    route: tuple[str, ...] = ()
    executor: str | None = None
    after_text: bool = False  # an error that came after text reached the client (a stream cut mid-answer)

    @property
    def latency_s(self) -> float:
        return self.ended_at - self.sent_at


class Load:
    """Closed-loop clients against node A: each sends a chat request, classifies the answer, sends the next."""

    def __init__(self, chaos: ChaosNet) -> None:
        self.url = f"{chaos.entry_url}/v1/chat/completions"
        self.keys = chaos.keys
        self.answers: list[Answer] = []
        # Streams that have text but no end yet: request number -> the executor named in the answer's headers.
        self.mid_stream: dict[int, str] = {}
        self._numbers = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="chaos-load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def finish(self) -> list[Answer]:
        """Send no more; wait for the requests in flight (each is bounded by its hung limit)."""
        self._stop.set()
        self._thread.join(timeout=WHOLE_BOUND_S + 30)
        assert not self._thread.is_alive(), "the load generator did not stop"
        return self.answers

    # ---- queries the test polls ----

    def completed(self, since: float, via: str | None = None, delegated: bool | None = None) -> list[Answer]:
        """Completed answers sent at or after `since` (executed by `via`; delegated or not)."""
        out = []
        for a in list(self.answers):
            if a.outcome != "completed" or a.sent_at < since:
                continue
            if via is not None and (a.executor or "").lower() != via.lower():
                continue
            if delegated is not None and (len(a.route) > 1) != delegated:
                continue
            out.append(a)
        return out

    def streaming_via(self, executor: str) -> bool:
        return any(e.lower() == executor.lower() for e in list(self.mid_stream.values()))

    # ---- the clients ----

    async def _main(self) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await asyncio.gather(*(self._client(session, i < STREAM_CLIENTS)
                                   for i in range(STREAM_CLIENTS + WHOLE_CLIENTS)))

    async def _client(self, session: aiohttp.ClientSession, streamed: bool) -> None:
        while not self._stop.is_set():
            number = next(self._numbers)
            messages = [{"role": "user", "content": f"chaos request {number}: tell the network something new"}]
            body = {"model": MODEL, "messages": messages, "max_tokens": 32, "stream": streamed}
            answer = Answer("stream" if streamed else "whole", time.monotonic())
            try:
                if streamed:
                    await self._stream(session, number, body, answer)
                else:
                    await self._whole(session, body, answer)
            except aiohttp.ClientConnectorError as exc:
                answer.outcome, answer.detail = "refused", str(exc)
            except TimeoutError:
                answer.outcome, answer.detail = "hung", "no answer within the documented bound"
            except Exception as exc:  # a broken connection, a malformed answer: the request is lost
                answer.outcome, answer.detail = "lost", f"{type(exc).__name__}: {exc}"
            finally:
                self.mid_stream.pop(number, None)
            answer.ended_at = time.monotonic()
            self.answers.append(answer)
            if answer.outcome == "refused":
                await asyncio.sleep(0.2)

    async def _whole(self, session: aiohttp.ClientSession, body: dict[str, Any], answer: Answer) -> None:
        timeout = aiohttp.ClientTimeout(total=WHOLE_BOUND_S, sock_connect=5)
        async with session.post(self.url, json=body, timeout=timeout) as resp:
            raw = await resp.read()
        if resp.status != 200:
            self._error(answer, raw, f"HTTP {resp.status}")
            return
        data = json.loads(raw)
        text = data["choices"][0]["message"]["content"]
        self._signed(answer, data.get("wwwserve"), text, body["messages"])

    async def _stream(self, session: aiohttp.ClientSession, number: int, body: dict[str, Any],
                      answer: Answer) -> None:
        # sock_read bounds every silence: the first byte, and each gap between events.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=STREAM_SILENCE_BOUND_S)
        async with session.post(self.url, json=body, timeout=timeout) as resp:
            if resp.status != 200:
                self._error(answer, await resp.read(), f"HTTP {resp.status}")
                return
            executor = resp.headers.get("X-WWWServe-Executor", "")
            text, attestation, error = "", None, None
            events = SSEReader(resp.content)
            async for event in events:
                if "error" in event:
                    error = event
                    continue
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        text += piece
                        self.mid_stream[number] = executor
                if event.get("wwwserve") is not None:
                    attestation = event["wwwserve"]
        if not events.done:
            answer.outcome, answer.detail = "lost", "the stream ended without [DONE]"
        elif error is not None:
            self._error(answer, json.dumps(error).encode(), "error event")
            answer.after_text = bool(text)
        else:
            self._signed(answer, attestation, text, body["messages"])

    def _error(self, answer: Answer, raw: bytes, where: str) -> None:
        try:
            error = json.loads(raw)["error"]
            shaped = set(error) == {"message", "type", "param", "code"}
        except (ValueError, KeyError, TypeError):
            answer.outcome, answer.detail = "lost", f"{where}, not an OpenAI error: {raw[:200]!r}"
            return
        answer.code = error.get("code")
        answer.outcome = "clean_error" if shaped and answer.code in CLEAN_ERROR_CODES else "bad_error"
        answer.detail = f"{where}: {error.get('message')}"

    def _signed(self, answer: Answer, attestation: Any, text: str, messages: list[dict[str, str]]) -> None:
        if not text:
            answer.outcome, answer.detail = "lost", "an empty answer"
            return
        try:
            signed = SignedResult.from_json(attestation)
            key = self.keys.get(signed.executor.lower())
            if key is None:
                raise SigningError(f"executor {signed.executor} is not a node of this network")
            verify_result(signed, key, text, messages, expected_chain_id=CHAIN_ID)
        except (SigningError, ValueError, TypeError, KeyError) as exc:
            answer.outcome, answer.detail = "unsigned", f"{type(exc).__name__}: {exc}"
            return
        answer.outcome, answer.executor, answer.route = "completed", signed.executor, signed.route


# ------------------------------------------------------------------------------------------------
# figures


@dataclass
class Figures:
    fault: str
    answers: list[Answer]
    recover_s: float | None
    notes: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(a.outcome == outcome for a in self.answers)

    @property
    def clean_by_code(self) -> Counter[str]:
        return Counter(a.code or "?" for a in self.answers if a.outcome == "clean_error")

    def latencies(self, kind: str | None = None) -> list[float]:
        return sorted(a.latency_s for a in self.answers
                      if a.outcome == "completed" and (kind is None or a.kind == kind))

    def row(self) -> dict[str, Any]:
        lat = self.latencies()
        sent = len(self.answers)
        refused = self.count("refused")
        done = [a for a in self.answers if a.outcome == "completed"]
        return {
            "fault": self.fault, "sent": sent, "accepted": sent - refused, "completed": self.count("completed"),
            "clean_errors": dict(self.clean_by_code), "refused": refused, "lost": self.count("lost"),
            "hung": self.count("hung"), "unsigned": self.count("unsigned"), "bad_errors": self.count("bad_error"),
            "delegated": sum(len(a.route) > 1 for a in done),
            "p50_s": _pct(lat, 50), "p99_s": _pct(lat, 99), "max_s": lat[-1] if lat else None,
            "max_stream_s": max(self.latencies("stream"), default=None),
            "max_whole_s": max(self.latencies("whole"), default=None),
            "recover_s": self.recover_s,
        }

    def report(self) -> str:
        r = self.row()
        clean = ", ".join(f"{code} {n}" for code, n in sorted(r["clean_errors"].items())) or "none"
        lines = [
            f"chaos: {self.fault}",
            f"  sent {r['sent']}, accepted {r['accepted']} = completed {r['completed']} + clean errors "
            f"{sum(r['clean_errors'].values())} ({clean}) + lost {r['lost']} + hung {r['hung']} + unsigned "
            f"{r['unsigned']} + bad errors {r['bad_errors']}; refused {r['refused']}",
            f"  delegated {r['delegated']} of {r['completed']} completed; latency p50 {_fmt(r['p50_s'])} s, "
            f"p99 {_fmt(r['p99_s'])} s, max stream {_fmt(r['max_stream_s'])} s, max whole {_fmt(r['max_whole_s'])} s",
            f"  recovered {_fmt(r['recover_s'])} s after the fault was healed",
            *(f"  {note}" for note in self.notes),
        ]
        for code in sorted(r["clean_errors"]):
            errors = [a for a in self.answers if a.outcome == "clean_error" and a.code == code]
            cut = sum(a.after_text for a in errors)
            lines.append(f"  {code}: {len(errors)} ({cut} after text had reached the client), e.g. {errors[0].detail}")
        bad = [a for a in self.answers if a.outcome in ("lost", "hung", "unsigned", "bad_error")]
        lines += [f"  ! {a.kind} {a.outcome} after {a.latency_s:.1f} s: {a.code or ''} {a.detail}" for a in bad[:20]]
        return "\n".join(lines)

    def check(self, net: ChaosNet, min_delegated: float = 0.0) -> None:
        """Print the figures; fail on a lost, hung or unsigned answer or a bad error, and when fewer than
        `min_delegated` of the completed answers went through a delegation hop."""
        print("\n" + self.report(), flush=True)
        FIGURES.append(self)
        r = self.row()
        assert r["completed"] > 0, self.report()
        assert (r["lost"], r["hung"], r["unsigned"], r["bad_errors"]) == (0, 0, 0, 0), \
            self.report() + "\n" + net.tails()
        assert r["delegated"] >= min_delegated * r["completed"], "the load did not go through a delegation hop"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def figures_table(rows: list[Figures]) -> str:
    """The markdown table docs/reliability.md quotes."""
    head = ("| fault | sent | completed | clean errors | lost | hung | unsigned | delegated | p50 s | p99 s "
            "| max s (stream / whole) | recovered after s |")
    lines = ["chaos tier figures:", head, "|" + "---|" * 12]
    for f in rows:
        r = f.row()
        clean = ", ".join(f"{n} {code}" for code, n in sorted(r["clean_errors"].items())) or "0"
        lines.append(
            f"| {r['fault']} | {r['sent']} | {r['completed']} | {clean} | {r['lost']} | {r['hung']} | {r['unsigned']} "
            f"| {r['delegated']} | {_fmt(r['p50_s'])} | {_fmt(r['p99_s'])} "
            f"| {_fmt(r['max_stream_s'])} / {_fmt(r['max_whole_s'])} | {_fmt(r['recover_s'])} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# helpers


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float, net: ChaosNet) -> float:
    """Poll `condition` until it holds and return the time it did; fail with the nodes' logs after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{net.tails()}")
        time.sleep(0.1)
    return time.monotonic()


def warm_up(load: Load, net: ChaosNet) -> None:
    """Both executors are serving delegated answers (the fault then hits a network that works)."""
    since = time.monotonic()
    wait_for("delegated answers from B and C", lambda: all(
        len(load.completed(since, via=net.address(i))) >= 3 for i in (2, 3)), 60, net)


def more_answers(load: Load, net: ChaosNet, since: float, n: int = 20, **where: Any) -> None:
    wait_for(f"{n} more completed answers", lambda: len(load.completed(since, **where)) >= n, 60, net)


def recovered_via(load: Load, net: ChaosNet, healed_at: float, index: int, timeout_s: float = 90) -> float:
    """Seconds from `healed_at` until an answer sent after it completed through node `index`."""
    who = net.address(index)
    wait_for(f"node {index} to execute again", lambda: bool(load.completed(healed_at, via=who)), timeout_s, net)
    return min(a.ended_at for a in load.completed(healed_at, via=who)) - healed_at


def freeze(pid: int, seconds: float) -> float:
    """SIGSTOP `pid` for `seconds` (the fault's length, not an assertion); SIGCONT; return when it was resumed."""
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return time.monotonic()


# ------------------------------------------------------------------------------------------------
# the faults, in order


def test_1_sigkill_executor_mid_stream(net: ChaosNet) -> None:
    b = net.address(2)
    with Load(net) as load:
        warm_up(load, net)
        wait_for("a stream half sent by B", lambda: load.streaming_via(b), 30, net)
        killed_at = time.monotonic()
        net.network.process(2).kill()
        net.network.process(2).wait()
        more_answers(load, net, killed_at)  # served by C meanwhile
        healed_at = time.monotonic()
        net.network.restart(2)
        net.network.wait_ready(60)
        started_s = time.monotonic() - healed_at
        recover_s = recovered_via(load, net, healed_at, 2)
        more_answers(load, net, healed_at + recover_s)
    cut = [a for a in load.answers if a.outcome == "clean_error" and a.after_text]
    figures = Figures("SIGKILL executor mid-stream", load.answers, recover_s,
                      [f"{len(cut)} streams cut mid-answer (error event after text); B started again in "
                       f"{started_s:.1f} s"])
    figures.check(net, min_delegated=0.9)
    assert cut, "the kill hit no stream mid-answer\n" + figures.report()


def test_2_sigstop_peer_75s(net: ChaosNet) -> None:
    b = net.address(2)
    with Load(net) as load:
        warm_up(load, net)
        wait_for("a stream half sent by B", lambda: load.streaming_via(b), 30, net)
        stopped_at = time.monotonic()
        resumed_at = freeze(net.network.process(2).pid, SIGSTOP_PEER_S)
        during = [a for a in load.completed(stopped_at) if a.ended_at < resumed_at]
        recover_s = recovered_via(load, net, resumed_at, 2)
        more_answers(load, net, resumed_at + recover_s)
    waited = [a for a in load.answers if a.sent_at < resumed_at and a.latency_s > T1_S + 5]
    figures = Figures(f"SIGSTOP executor {SIGSTOP_PEER_S:.0f} s", load.answers, recover_s, [
        f"{len(during)} answers completed while B was stopped ({sum(a.executor == b for a in during)} by B)",
        f"{len(waited)} requests took longer than T1 + 5 s: "
        + (", ".join(f"{a.kind} {a.latency_s:.0f} s" for a in waited[:12]) or "none"),
    ])
    figures.check(net, min_delegated=0.9)
    assert during, "nothing was served while B was stopped"


def test_3_restart_node(net: ChaosNet) -> None:
    with Load(net) as load:
        warm_up(load, net)
        stopping_at = time.monotonic()
        net.network.restart(3)  # SIGTERM: C finishes what it runs, then exits; started again at once
        healed_at = time.monotonic()
        net.network.wait_ready(60)
        recover_s = recovered_via(load, net, healed_at, 3)
        more_answers(load, net, healed_at + recover_s)
    Figures("graceful restart of an executor", load.answers, recover_s,
            [f"C drained and exited in {healed_at - stopping_at:.1f} s"]).check(net, min_delegated=0.9)


def test_4_freeze_anvil_30s(net: ChaosNet) -> None:
    failed_before = net.count_in_logs("ledger: refresh failed")
    again_before = net.count_in_logs("ledger: refreshing works again")
    with Load(net) as load:
        warm_up(load, net)
        frozen_at = time.monotonic()
        thawed_at = freeze(net.anvil.pid, FREEZE_ANVIL_S)
        delegated_during = [a for a in load.completed(frozen_at, delegated=True) if a.ended_at < thawed_at]
        failed = [i for i, (now, before) in enumerate(zip(net.count_in_logs("ledger: refresh failed"),
                                                          failed_before, strict=True)) if now > before]
        # Every node whose chain reads failed says they work again (once each, not per poll).
        wait_for("the nodes' chain reads to work again", lambda: all(
            net.count_in_logs("ledger: refreshing works again")[i] > again_before[i] for i in failed), 60, net)
        recover_s = time.monotonic() - thawed_at
        more_answers(load, net, thawed_at, delegated=True)
    Figures(f"anvil frozen {FREEZE_ANVIL_S:.0f} s", load.answers, recover_s, [
        f"{len(delegated_during)} answers delegated while the chain was frozen",
        f"chain reads failed on {len(failed)} of 3 nodes; 'recovered' = all of them read the chain again",
    ]).check(net, min_delegated=0.9)
    assert delegated_during, "nothing was delegated while anvil was frozen"


def test_5_kill_and_restart_anvil(net: ChaosNet) -> None:
    a = net.address(1)
    told_before = net.count_in_logs("the chain was reset")
    reindexed_before = net.count_in_logs("re-indexing from block 0")
    port = int(net.anvil.rpc_url.rsplit(":", 1)[1])
    with Load(net) as load:
        warm_up(load, net)
        killed_at = time.monotonic()
        os.kill(net.anvil.pid, signal.SIGKILL)
        assert net.anvil.proc is not None
        net.anvil.proc.wait()
        net.anvil = start_anvil(port=port, log_path=net.home / "anvil.log")  # a fresh chain: no contract
        told_at = wait_for("every node to say the chain was reset", lambda: all(
            now > before for now, before in zip(net.count_in_logs("the chain was reset"), told_before,
                                                strict=True)), 60, net)
        more_answers(load, net, told_at)
        local = load.completed(told_at)
        assert all(x.route == (a,) for x in local), "A delegated while the chain was gone"
        net.set_up_chain_again()  # the contract again (the same address: the same deployer nonce), the nodes again
        healed_at = time.monotonic()
        wait_for("a delegated answer again", lambda: bool(load.completed(healed_at, delegated=True)), 90, net)
        recover_s = min(x.ended_at for x in load.completed(healed_at, delegated=True)) - healed_at
        more_answers(load, net, healed_at + recover_s, delegated=True)
    told = [now - before for now, before in zip(net.count_in_logs("the chain was reset"), told_before, strict=True)]
    reindexed = [now - before for now, before in zip(net.count_in_logs("re-indexing from block 0"),
                                                      reindexed_before, strict=True)]
    Figures("anvil killed, a fresh chain started", load.answers, recover_s, [
        f"every node told the reset {told_at - killed_at:.1f} s after the kill; "
        f"{len(local)} answers served locally by A before the contract was back",
        f"'the chain was reset' logged {told} times, 're-indexing from block 0' {reindexed} times (nodes A, B, C)",
        "recovered = the first delegated answer after the contract and the nodes were registered again",
    ]).check(net)
    assert told == [1, 1, 1] and reindexed == [1, 1, 1]
