"""The demo's parts that need no process: the node launch plan of `wwwserve up` and `wwwserve burst`'s reading
of answers (the burst against real nodes runs in tests/integration/test_readme_blocks.py and bench/demo.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.cli.burst import Outcome, outcome_of, percentile, summary_lines
from wwwserve.devnet.network import LocalNetwork
from wwwserve.node.settings import load_settings, parse_override_pairs

ORIGIN = "0x" + "11" * 20
PEER = "0x" + "22" * 20


def network(backend: str, nodes: int) -> LocalNetwork:
    return LocalNetwork(rpc_url="http://127.0.0.1:8545", contract_address="0x" + "33" * 20,
                        wallets=[f"demo-node-{i}" for i in range(1, nodes + 1)], password="pw", home=Path("/tmp/x"),
                        backend=backend, extra_overrides=("policy.p_inspect=0.4",))


@pytest.mark.parametrize("nodes", [1, 2, 3, 5])
def test_local_nodes_share_the_cores_instead_of_each_taking_all(nodes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's default (a thread per core in every process) made three SmolLM2 nodes on 2 cores ten times
    slower (156-163 s for a 48-token answer instead of 16-19 s): each node gets cores // nodes, at least 1."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))
    for launch in network("local", nodes).launches():
        settings = load_settings(None, parse_override_pairs(list(launch.overrides)))
        assert settings.backend.local.threads == max(1, 4 // nodes)
        assert settings.policy.p_inspect == 0.4  # `wwwserve up --duel-share`
        assert settings.policy.auto_stake is False


def test_fake_nodes_get_no_thread_setting() -> None:
    for launch in network("fake", 3).launches():
        assert not any(o.startswith("backend.local.") for o in launch.overrides)


def chat(executor: str, route: list[str]) -> dict[str, Any]:
    return {"choices": [{"message": {"content": "hi"}}], "wwwserve": {"executor": executor, "route": route}}


def test_an_answer_tells_who_executed_it() -> None:
    mine = outcome_of(1, 200, 1.0, chat(ORIGIN, [ORIGIN]))
    theirs = outcome_of(2, 200, 2.0, chat(PEER, [ORIGIN, PEER]))
    assert (mine.executor, mine.by_peer) == (ORIGIN, False)
    assert (theirs.executor, theirs.by_peer) == (PEER, True)


@pytest.mark.parametrize(("status", "body", "error"), [
    (504, {"error": {"message": "The request timed out.", "type": "timeout"}}, "The request timed out."),
    (200, {"choices": []}, "the answer has no `wwwserve` signature"),
    (200, ["not", "an", "object"], "the answer is not a JSON object"),
])
def test_a_failed_or_unsigned_answer_is_an_error_not_an_execution(status: int, body: Any, error: str) -> None:
    outcome = outcome_of(3, status, 0.5, body)
    assert outcome.executor is None and not outcome.by_peer
    assert outcome.error == error


def test_summary_counts_peers_and_failures() -> None:
    outcomes = [Outcome(1, 200, 1.0, ORIGIN, (ORIGIN,)), Outcome(2, 200, 3.0, PEER, (ORIGIN, PEER)),
                Outcome(3, 200, 2.0, PEER, (ORIGIN, PEER)), Outcome(4, 0, 300.0, error="ReadTimeout")]
    lines = summary_lines(outcomes, 301.0)
    assert lines[0] == "3 of 4 answered in 301.0 s (p50 2.0 s, max 3.0 s)"
    assert lines[1] == "executed by the node you asked: 1, by peers: 2 (67 %), on 2 nodes"
    assert lines[2] == "1 failed (see the table)"


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0], 0.5) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 1.0) == 4.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.75) == 3.0


@pytest.mark.parametrize(("args", "message"), [
    (["burst", "127.0.0.1:9101"], "URL must start with http:// or https://"),
    (["burst", "-n", "0"], "Invalid value for '--requests'"),
])
def test_bad_burst_arguments_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
