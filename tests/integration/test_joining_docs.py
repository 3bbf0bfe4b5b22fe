"""The joining commands run as written (issue 15): every bash block of docs/joining.md and the joining block of
README's "Using the CLI", extracted from the files and run by bash, line by line, against a real devnet.

What the test changes is declared here, in the open, so a doc edit that breaks a command breaks the test:
- PLACEHOLDERS: the example addresses (machine A 192.0.2.10, machine B 192.0.2.20, `0x...` the contract A
  printed, `0xB0b...`/`0xA11ce...` the address `wallet new` printed) and the example ports (9000, 8545: free
  ports here, so the test never meets a `wwwserve up` someone runs on this machine).
- BACKGROUND: commands that run until Ctrl-C (`wwwserve up`, `node run`) start in the background, each with
  the extra arguments listed (the `fake` backend instead of SmolLM2, which the slow tier covers, and free
  ports), and the test waits for the event that says they are ready; Ctrl-C (SIGINT) stops them where the
  docs say so.
- SKIPPED: the one install line (this test runs in the venv that line makes) and the alternative way to
  start A's chain; the reason is next to each.
- BETWEEN: what happens between two lines in real life (time passing while stake unbonds) is done on the
  devnet (evm_increaseTime, anvil_mine).
Machine A and machine B are two shells with their own $WWWSERVE_HOME on this one machine; each block runs
with PATH stripped of the venv, so a block that needs `wwwserve` must say how it gets onto PATH.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from doc_commands import ROOT, Machine, bash_blocks, command_lines, free_port, http_status, wait_until

from wwwserve.devnet.anvil import increase_time, mine
from wwwserve.ledger.deployment import load_deployment
from wwwserve.ledger.params import DeploymentParams

pytestmark = pytest.mark.integration

JOINING = ROOT / "docs" / "joining.md"
README = ROOT / "README.md"
MODEL = "SmolLM2-135M-Instruct"
FAKE_AS_MODEL = f"--set backend.kind=fake --set \"backend.models=['{MODEL}']\""
PARAMS = DeploymentParams()


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[dict[str, object]]:
    rpc_port, base_port = free_port(), free_port(16)
    b_port, alice_port = free_port(), free_port()
    values: dict[str, str] = {}
    a_home, b_home = tmp_path / "a" / "home", tmp_path / "b" / "home"
    a_home.mkdir(parents=True)
    b_home.mkdir(parents=True)

    def contract() -> str:
        return values.setdefault("contract", load_deployment(31337, a_home).address)

    def printed_address(wallet: str) -> Callable[[], str]:
        def read() -> str:
            # `wallet new NAME` prints "created wallet NAME: 0x... (keystore path)"
            outs = [o for m in machine_list for o in m.outputs]
            found = [m for o in outs for m in re.findall(rf"created wallet {wallet}: (0x[0-9a-fA-F]{{40}})", o)]
            assert found, f"`wallet new {wallet}` printed no address"
            return found[-1]
        return read

    def const(value: str) -> Callable[[], str]:
        return lambda: value

    # PLACEHOLDERS, longest first: what the docs write -> what runs here.
    common = [
        ("0xB0b...", printed_address("bob")),
        ("0xA11ce...", printed_address("alice")),
        ("0x...", contract),
        ("http://192.0.2.10:8545", const(f"http://127.0.0.1:{rpc_port}")),  # A's chain
        ("192.0.2.10", const("127.0.0.1")),  # machine A
    ]
    a = Machine("A", a_home, [
        ("http://127.0.0.1:9000", const(f"http://127.0.0.1:{alice_port}")),  # README: alice's node, on A
        ("server.port=9000", const(f"server.port={alice_port}")),
        *common,
    ])
    b = Machine("B", b_home, [
        ("http://192.0.2.20:9000", const(f"http://127.0.0.1:{b_port}")),  # machine B's node
        ("server.port=9000", const(f"server.port={b_port}")),
        *common,
    ])
    # Machine A's CLI finds its chain at the default address, http://127.0.0.1:8545: here, the free port.
    a.env["WWWSERVE_RPC_URL"] = f"http://127.0.0.1:{rpc_port}"
    machine_list = [a, b]
    try:
        yield {"A": a, "B": b, "rpc_port": rpc_port, "base_port": base_port, "b_port": b_port,
               "alice_port": alice_port}
    finally:
        b.kill_all()
        a.kill_all()


def test_joining_blocks_run_as_written(machines: dict[str, object]) -> None:
    a, b = machines["A"], machines["B"]
    assert isinstance(a, Machine) and isinstance(b, Machine)
    rpc_port, base_port = machines["rpc_port"], machines["base_port"]
    b_port, alice_port = machines["b_port"], machines["alice_port"]
    rpc_url = f"http://127.0.0.1:{rpc_port}"
    joining = bash_blocks(JOINING.read_text())
    readme_blocks = [blk for blk in bash_blocks(README.read_text()) if "wallet new alice" in blk]
    assert len(readme_blocks) == 1, "README's joining block (the one with `wallet new alice`) is gone"
    (readme,) = readme_blocks
    run_up = f"--backend fake --port {rpc_port} --base-port {base_port}"
    # How each of joining.md's blocks runs; a block added to the page fails here until it is given a way.
    plan = ["A: up", "A: alternative chain", "B: point the CLI", "B: wallet", "B: register", "B: node run",
            "B: check", "B: leave"]
    assert len(joining) == len(plan), f"docs/joining.md has {len(joining)} bash blocks; this test knows {plan}"

    # 1. Machine A: the network. BACKGROUND: `wwwserve up` + run_up, ready when it says Ctrl-C stops it.
    up_line = None
    for line in command_lines(joining[0]):
        if line.startswith("wwwserve up"):
            up_line = line
        else:
            a.run(line)
    assert up_line is not None, "joining.md's first block no longer runs `wwwserve up`"
    up, up_log = a.start(up_line, run_up)
    wait_until("wwwserve up", lambda: "Ctrl-C stops the network." in up_log.read_text(errors="replace"), up, up_log)
    # SKIPPED: joining[1], the alternative to `wwwserve up` (anvil by hand + `devnet up`): it starts a
    # second chain on A's port; test_cli_anvil and test_devnet cover `devnet up` attaching and deploying.

    # README's joining block, on machine A beside `wwwserve up`. BACKGROUND: the last line, `node run`.
    readme_lines = command_lines(readme)
    assert readme_lines[-1].startswith("wwwserve -w alice node run"), "README's block no longer ends in node run"
    for line in readme_lines[:-1]:
        a.run(line)
    alice, alice_log = a.start(readme_lines[-1], FAKE_AS_MODEL)
    wait_until("alice's node", lambda: http_status(f"http://127.0.0.1:{alice_port}/ready") == 200, alice, alice_log)

    # 2-4. Machine B. SKIPPED: the install line (this test runs in the venv it makes).
    for index in (2, 3, 4):
        for line in command_lines(joining[index]):
            if line.startswith("python3 -m venv .venv"):
                continue
            b.run(line)
    shown = b.outputs[-1]  # step 4 ends with `stake show --all`: route shares are per model
    bob_row = next(row for row in shown.splitlines() if f"127.0.0.1:{b_port}" in row)
    alice_row = next(row for row in shown.splitlines() if f"127.0.0.1:{alice_port}" in row)
    assert f"50.0% of {MODEL}" in bob_row and f"50.0% of {MODEL}" in alice_row, shown
    demo_rows = [row for row in shown.splitlines() if re.search(rf"127\.0\.0\.1:{base_port + 0}\b", row)]
    assert demo_rows and "of fake" in demo_rows[0] and MODEL not in demo_rows[0], shown

    # 5. BACKGROUND: B's `node run`, ready when /ready answers 200; then the check block as written.
    (node_run,) = command_lines(joining[5])
    node, node_log = b.start(node_run, FAKE_AS_MODEL)
    wait_until("bob's node", lambda: http_status(f"http://127.0.0.1:{b_port}/ready") == 200, node, node_log)
    for line in command_lines(joining[6]):
        b.run(line)
    answer = json.loads((b.cwd / "response.json").read_text())
    assert answer["choices"][0]["message"]["content"], answer
    assert answer["wwwserve"]["executor"].lower() in b.outputs[-1].lower(), b.outputs[-1]  # verify: signed by B
    # What `/v1/models` lists is served: every model there has a node that answers.
    with urllib.request.urlopen(f"http://127.0.0.1:{b_port}/v1/models", timeout=10) as response:
        listed = {m["id"] for m in json.loads(response.read())["data"]}
    assert listed == {MODEL, "fake"}, listed

    # Leaving: "Stop the node with Ctrl-C, then:"; BETWEEN `stake remove` and `stake withdraw`, the
    # unbonding period passes (in seconds and in blocks, as the contract counts it).
    b.ctrl_c(node, node_log)
    for line in command_lines(joining[7]):
        if line.startswith("wwwserve -w bob stake withdraw"):
            increase_time(rpc_url, PARAMS.unbonding_period_s + 1)
            mine(rpc_url, PARAMS.duel_span_blocks + 1)
        b.run(line)
    assert "0.01 ETH is free credit again" in " ".join(" ".join(b.outputs[-2:]).split())

    a.ctrl_c(alice, alice_log)
    a.ctrl_c(up, up_log)
