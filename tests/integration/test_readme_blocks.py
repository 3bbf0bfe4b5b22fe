"""Every command block of README.md is accounted for, and the ones this machine can run run as written (issue 15).

BLOCKS is the one table: every fenced block of README.md, named by a line it holds, and what checks it -- RUN
here, run by another named test, or NOT run, with the reason. A block that matches no row fails
test_every_readme_block_is_accounted_for, and so does a row that no block matches any more: a new block must
say how it is checked.

How the RUN blocks run (doc_commands.Machine: bash, line by line, in a directory standing for the quickstart's
checkout, whose `.venv` is this one's venv, with $WWWSERVE_HOME in tmp and the venv off PATH):
- BACKGROUND: the quickstart's `.venv/bin/wwwserve up` starts in the background with free ports (`--port`,
  `--base-port`, so the test never meets a `wwwserve up` someone runs on this machine) and, in the default
  tier, `--backend fake` (canned answers, no model); the slow tier runs the same blocks on SmolLM2 as written.
  The test waits for the line that says Ctrl-C stops the network, and ends with Ctrl-C (SIGINT).
- SKIPPED: the quickstart line's install steps (`python3 -m venv .venv`, `pip install -e '.[local]'`): this
  test runs in the venv they make; tests/unit/test_readme.py checks the extra they name.
- PLACEHOLDERS: node 1's address (9101) and the chain's (8545, which the CLI reads from WWWSERVE_RPC_URL) become
  the free ports; with the fake backend, the model the demo serves is `fake`, so `"model":
  "SmolLM2-135M-Instruct"` becomes `"model": "fake"`. A command that asks node 1 by default (`wwwserve burst`)
  is given its address when the line names none (NODE1_DEFAULT).
- CHECKS: every command line of a RUN block must exit 0 and has a row saying what it must print (a signed chat
  completion, a verified stream, ...); a new command in a RUN block fails until it has one.

test_every_wwwserve_command_the_readme_names_exists covers the CLI examples in running text: each
`wwwserve ...` span names a real command, with options that command has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from doc_commands import ROOT, Fence, Machine, cli_span_problem, command_lines, fenced_blocks, free_port, wait_until

from wwwserve.devnet.deploy import demo_account

README = ROOT / "README.md"
MODEL = "SmolLM2-135M-Instruct"
NODES = 3  # `wwwserve up`'s default, what the quickstart starts
RUN = "run here"
OTHER = "run by another test"
NOT_RUN = "not run"
UP_READY = "Ctrl-C stops the network."
# `wwwserve up` on SmolLM2 converts the model into a fresh $WWWSERVE_HOME and loads it in three processes on two
# cores: minutes, not seconds. A hang guard, not a performance bound.
LOCAL_READY_DEADLINE_S = 900.0


@dataclass(frozen=True)
class Block:
    """A row of BLOCKS: the block that holds `marker`, and how it is checked (`how`: RUN, OTHER or NOT_RUN)."""

    marker: str
    how: str
    by: str


UP_MARKER = "&& .venv/bin/wwwserve up"  # the quickstart's network, which the other RUN blocks talk to
BLOCKS = (
    Block(UP_MARKER, RUN,
          "its last command, in the background (BACKGROUND); its install steps are SKIPPED (the venv they make "
          "runs this test; tests/unit/test_readme.py checks the `local` extra)"),
    Block(".venv/bin/python -m pytest", OTHER,
          ".ci/run runs it verbatim on a fresh clone; tests/unit/test_readme.py::test_ci_runs_the_readme_test_command "
          "holds the two equal"),
    Block(".venv/bin/wwwserve devnet status", RUN, "line by line beside the quickstart's `wwwserve up`"),
    Block("wwwserve wallet new alice", OTHER,
          "tests/integration/test_joining_docs.py, line by line, beside `wwwserve up`"),
    Block("> answer.sse", RUN, "line by line beside the quickstart's `wwwserve up`"),
    Block("docker compose up -d", OTHER,
          "tests/compose/test_compose_up.py (the compose tier, in .ci/run; it needs a Docker engine) does each "
          "step with docker-compose v1.29 on the real file: a signed completion over a published port checked "
          "by the host's `wwwserve verify`, the stakes read by the host's `stake show --all`, `down -v`"),
    Block("contracts/   Vyper sources", NOT_RUN, "the source tree's layout, not commands"),
    Block("/explorer/api/totals", RUN, "line by line beside the quickstart's `wwwserve up`"),
)

# A command that asks the demo's node 1 when the line names no node: the address it then uses.
NODE1_DEFAULT = {".venv/bin/wwwserve burst": "http://127.0.0.1:9101"}


def block_of(marker: str, fences: list[Fence]) -> Fence:
    (fence,) = [f for f in fences if marker in f.text]
    return fence


def test_every_readme_block_is_accounted_for() -> None:
    fences = fenced_blocks(README.read_text())
    assert len(fences) >= len(BLOCKS), fences
    for fence in fences:
        rows = [b for b in BLOCKS if b.marker in fence.text]
        assert len(rows) == 1, (f"README.md line {fence.line}: a ```{fence.info} block matched by {len(rows)} rows of "
                                f"BLOCKS; say how it is checked (run here, by which test, or why not):\n{fence.text}")
    for row in BLOCKS:
        holding = [f.line for f in fences if row.marker in f.text]
        assert len(holding) == 1, f"BLOCKS row {row.marker!r}: {len(holding)} README blocks hold it (lines {holding})"
        assert row.how in (RUN, OTHER, NOT_RUN) and row.by, row
        if row.how == OTHER:  # the test named must exist
            named = re.findall(r"(tests/[\w/]+\.py|\.ci/run)", row.by)
            assert named and all((ROOT / path).is_file() for path in named), row.by


DEMO_ADDRESSES = {demo_account(i + 1).address for i in range(NODES)}


@dataclass
class Net:
    """The network the quickstart's `wwwserve up` started for the test, and the line being checked."""

    machine: Machine
    rpc_port: int
    base_port: int
    model: str
    line: str = ""


def _signed_completion(out: str) -> str:
    """`curl ...` printed one chat completion carrying the executor's signature; returns the executor."""
    body = json.loads(out)
    assert body["choices"][0]["message"]["content"].strip(), body
    signed = body["wwwserve"]
    assert signed["executor"] in DEMO_ADDRESSES and signed["signature"], signed
    return str(signed["executor"])


def _check_stake_show(out: str, net: Net) -> None:
    for address in DEMO_ADDRESSES:
        assert address in out, out


def _check_status(out: str, net: Net) -> None:
    assert f"chain 31337 at http://127.0.0.1:{net.rpc_port}" in out and ": deployed" in out, out


def _check_curl(out: str, net: Net) -> None:
    if "> answer.sse" in net.line:  # the stream went to the file; `verify` reads it next
        assert net.machine.stdout == "", out
        saved = (net.machine.cwd / "answer.sse").read_text()
        assert saved.rstrip().endswith("data: [DONE]") and '"wwwserve"' in saved, saved[-1000:]
    else:
        _signed_completion(net.machine.stdout)


def _check_verify(out: str, net: Net) -> None:
    assert re.search(r"✓ signed by 0x[0-9a-fA-F]{40}", out), out
    signer = re.search(r"signed by (0x[0-9a-fA-F]{40})", out)
    assert signer and signer.group(1) in DEMO_ADDRESSES, out
    assert net.model in out, out


def _check_burst(out: str, net: Net) -> None:
    answered = re.search(r"(\d+) of (\d+) answered", out)
    assert answered and answered.group(1) == answered.group(2), out


def _check_explorer_totals(out: str, net: Net) -> None:
    totals = json.loads(out)
    assert totals["nodes_active"] == NODES and totals["chain_id"] == 31337, totals
    assert int(totals["stake_total_wei"]) == NODES * 10**18, totals  # each demo node stakes 1 ETH


def _check_explorer_nodes(out: str, net: Net) -> None:
    nodes = json.loads(out)
    assert {row["address"] for row in nodes["items"]} == DEMO_ADDRESSES, nodes
    assert all(int(row["stake_wei"]) == 10**18 for row in nodes["items"]), nodes


def _exits_0(out: str, net: Net) -> None:
    """Only the exit status: what it lists depends on which requests were dueled (none with few requests)."""


# CHECKS: what each command of a RUN block must print, by how the line starts (the first row that matches).
CHECKS: tuple[tuple[str, Callable[[str, Net], None]], ...] = (
    (".venv/bin/wwwserve stake show --all", _check_stake_show),  # every demo node's row
    (".venv/bin/wwwserve devnet status", _check_status),  # the chain at its address, the contract deployed
    ("curl -s http://127.0.0.1:9101/explorer/api/totals", _check_explorer_totals),  # 3 nodes, 3 ETH staked
    ("curl -s 'http://127.0.0.1:9101/explorer/api/nodes", _check_explorer_nodes),  # the demo nodes, 1 ETH each
    ("curl ", _check_curl),  # a signed chat completion, or a stream saved whole
    (".venv/bin/wwwserve verify answer.sse", _check_verify),  # ✓ signed by a demo node, its model
    (".venv/bin/wwwserve burst", _check_burst),  # every request answered
    (".venv/bin/wwwserve duel list", _exits_0),
    (".venv/bin/wwwserve duel leaderboard", _exits_0),
)


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    home = tmp_path / "home"
    home.mkdir()
    m = Machine("quickstart", home, [])
    try:
        yield m
    finally:
        m.kill_all()


@pytest.mark.parametrize("backend", ["fake", pytest.param("local", marks=pytest.mark.slow)])
def test_readme_commands_run_as_written(machine: Machine, backend: str) -> None:
    fences = fenced_blocks(README.read_text())
    rpc_port, base_port = free_port(), free_port(16)
    model = "fake" if backend == "fake" else MODEL
    # PLACEHOLDERS: what the README writes -> what runs here.
    machine.placeholders = [
        ("http://127.0.0.1:9101", lambda: f"http://127.0.0.1:{base_port}"),  # node 1
        (f'"model": "{MODEL}"', lambda: f'"model": "{model}"'),  # the model the demo serves
    ]
    machine.env["WWWSERVE_RPC_URL"] = f"http://127.0.0.1:{rpc_port}"  # the default, 8545, on a free port
    net = Net(machine, rpc_port, base_port, model)

    # The quickstart: SKIPPED its install steps; BACKGROUND its `wwwserve up`.
    (up_line,) = command_lines(block_of(UP_MARKER, fences).text)
    *install, up_command = up_line.split(" && ")
    assert install == ["python3 -m venv .venv", ".venv/bin/pip install -e '.[local]'"], install
    assert up_command == ".venv/bin/wwwserve up", up_command
    extra = f"--port {rpc_port} --base-port {base_port}" + (" --backend fake" if backend == "fake" else "")
    up, up_log = machine.start(up_command, extra)
    deadline_s = LOCAL_READY_DEADLINE_S if backend == "local" else 240.0
    wait_until("wwwserve up", lambda: UP_READY in up_log.read_text(errors="replace"), up, up_log, deadline_s)

    ran = []
    for row in BLOCKS:
        if row.how != RUN or row.marker == UP_MARKER:
            continue
        for line in command_lines(block_of(row.marker, fences).text):
            checks = [check for start, check in CHECKS if line.startswith(start)]
            assert checks, f"README block {row.marker!r}: `{line}` has no row in CHECKS saying what it must print"
            for command, node1 in NODE1_DEFAULT.items():
                if line.startswith(command) and "http" not in line:
                    line = line.replace(command, f"{command} {node1}", 1)
            net.line = line
            out = machine.run(line, timeout_s=deadline_s)
            checks[0](out, net)
            ran.append(line)
    assert any(line.startswith(".venv/bin/wwwserve verify answer.sse") for line in ran), ran

    machine.ctrl_c(up, up_log)


def _words(span: str) -> list[str]:
    """A README span's words, option brackets and escaped table pipes taken out."""
    return span.replace("\\|", "|").replace("[", " ").replace("]", " ").split()


def test_every_wwwserve_command_the_readme_names_exists() -> None:
    spans = sorted(set(re.findall(r"`(wwwserve [^`]+)`", README.read_text())))
    assert len(spans) > 20, spans
    for span in spans:
        problem = cli_span_problem(_words(span)[1:])
        assert problem is None, f"`{span}`: {problem}"
