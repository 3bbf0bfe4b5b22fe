"""The CLI against a real anvil: deploy, wallet, register, deposit, stake, unstake, withdraw, duels, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from ledger_world import World
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.devnet.anvil import DEV_KEYS, AnvilProcess, DevnetError, increase_time, mine, start_anvil
from wwwserve.devnet.deploy import demo_account, ensure_deployment
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import Vote, WWWServeClient
from wwwserve.ledger.deployment import load_deployment
from wwwserve.ledger.params import WEI_PER_ETH, DeploymentParams
from wwwserve.ledger.tx import TxSender

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@pytest.fixture
def cli(anvil: AnvilProcess, wwwserve_home: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WWWSERVE_PASSWORD", PASSWORD)
    monkeypatch.setenv("WWWSERVE_RPC_URL", anvil.rpc_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
        result = runner.invoke(app, list(args), env=env)
        out = result.output
        assert "Traceback" not in out, out
        assert result.exit_code == code, f"wwwserve {' '.join(args)} -> {result.exit_code}\n{out}"
        return out

    return run


def _fund(anvil: AnvilProcess, address: str, wei: int) -> None:
    w3 = connect(anvil.rpc_url)
    TxSender(w3, Account.from_key(DEV_KEYS[0])).send(to=address, value_wei=wei, function="fund")


def test_deploy_register_stake_and_query_through_the_cli(cli, anvil: AnvilProcess, wwwserve_home: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli("devnet", "up", "--demo-nodes", "0")
    assert "attaching" in out and "deployed WWWServe" in out
    dep = load_deployment(31337)
    assert dep.params == DeploymentParams()
    assert (wwwserve_home / "deployments" / "31337.json").exists()
    # idempotent: a second `devnet up` reuses the contract
    assert "already deployed" in cli("devnet", "up", "--demo-nodes", "0")
    assert "deployed" in cli("devnet", "status")

    out = cli("wallet", "new", "alice")
    address = out.split(": ")[1].split()[0]
    cli("devnet", "fund", address, "5eth")
    assert connect(anvil.rpc_url).eth.get_balance(address) == 5 * 10**18
    registered = cli("-w", "alice", "node", "register", "--endpoint", "http://127.0.0.1:9000", "-m", "smollm2", "-m",
                     "qwen3")
    assert "registration bond 0.01 ETH (returned by `wwwserve node release`)" in " ".join(registered.split())
    cli("-w", "alice", "credit", "deposit", "2eth")
    cli("-w", "alice", "stake", "add", "1.5eth")
    table = cli("stake", "show", "--all")
    assert address in table and "1.5 ETH" in table and "100.0%" in table and "bonded" in table
    shown = cli("-w", "alice", "wallet", "show")
    assert "stake 1.5 ETH" in shown and "credit 0.5 ETH" in shown
    assert "smollm2, qwen3" in cli("node", "show", address)

    # unstake -> unbonding -> withdraw after the period -> credit -> withdrawal after the notice
    removed = cli("-w", "alice", "stake", "remove", "0.5eth")
    assert "unbonding 0.5 ETH until unix time" in removed and "and block" in removed
    out = cli("-w", "alice", "stake", "withdraw", code=1)
    assert "still unbonding" in out
    increase_time(anvil.rpc_url, dep.params.unbonding_period_s + 1)
    # the period is over in seconds, not yet in blocks: a duel that could slash it may still be open
    assert "still unbonding" in cli("-w", "alice", "stake", "withdraw", code=1)
    mine(anvil.rpc_url, dep.params.duel_span_blocks)
    cli("-w", "alice", "stake", "withdraw")
    cli("-w", "alice", "credit", "withdraw", "1eth")
    assert "notice" in cli("-w", "alice", "credit", "withdraw", code=1)
    increase_time(anvil.rpc_url, dep.params.withdrawal_notice_s + 1)
    before = connect(anvil.rpc_url).eth.get_balance(address)
    cli("-w", "alice", "credit", "withdraw")
    after = connect(anvil.rpc_url).eth.get_balance(address)
    assert 0.99 * 10**18 < after - before <= 10**18  # 1 ETH back, minus gas
    assert "stake 1 ETH" in cli("-w", "alice", "wallet", "show")

    cli("-w", "alice", "node", "update", "--endpoint", "http://127.0.0.1:9001")
    assert "http://127.0.0.1:9001" in cli("node", "show", address)
    cli("-w", "alice", "node", "leave")
    assert "left" in cli("node", "show", address)

    # the registry slot comes back with its bond once the node left and took its stake out
    assert "withdraw the stake first (1 ETH active" in cli("-w", "alice", "node", "release", code=1)
    cli("-w", "alice", "stake", "remove", "1eth")
    increase_time(anvil.rpc_url, dep.params.unbonding_period_s + 1)
    mine(anvil.rpc_url, dep.params.duel_span_blocks + 1)
    cli("-w", "alice", "stake", "withdraw")
    assert "0.01 ETH is free credit again" in " ".join(cli("-w", "alice", "node", "release").split())
    assert "holds no registry slot" in cli("node", "show", address, code=1)
    assert "holds no registry slot" in cli("-w", "alice", "node", "release", code=1)


def test_bad_input_is_one_line_and_nonzero(cli, anvil: AnvilProcess) -> None:  # type: ignore[no-untyped-def]
    cli("devnet", "up", "--demo-nodes", "0")
    out = cli("wallet", "new", "bob")
    address = out.split(": ")[1].split()[0]
    _fund(anvil, address, 10**18)

    def one_error(out: str, needle: str) -> None:
        lines = [line for line in out.splitlines() if line.strip()]
        assert lines[-1].lower().startswith("error:") and needle in lines[-1], out

    one_error(cli("-w", "bob", "stake", "add", "-5", code=2), "amount")
    one_error(cli("-w", "bob", "stake", "add", "lots", code=2), "amount")
    one_error(cli("-w", "bob", "credit", "deposit", "0", code=2), "positive")
    one_error(cli("-w", "bob", "stake", "add", "1eth", code=1), "not registered")
    cli("-w", "bob", "node", "register", "--endpoint", "http://127.0.0.1:9100", "-m", "m")
    one_error(cli("-w", "bob", "stake", "add", "1eth", code=1), "insufficient credit")
    one_error(cli("-w", "nobody", "stake", "add", "1eth", code=1), "nobody")
    one_error(cli("-w", "bob", "stake", "add", "1eth", code=1, env={"WWWSERVE_PASSWORD": "wrong"}), "password")
    one_error(cli("stake", "show", "0x1234", code=2), "not an address")
    one_error(cli("stake", "show", code=2), "--all")
    one_error(cli("--rpc-url", "http://127.0.0.1:1", "stake", "show", "--all", code=1), "unreachable")
    one_error(cli("--contract", "0x000000000000000000000000000000000000dEaD", "stake", "show", "--all", code=1),
              "no contract code")
    one_error(cli("-w", "bob", "node", "register", "--endpoint", "ftp://x", "-m", "m", code=2), "http")
    # peers connect to scheme://host:port and add their own paths: anything else is refused before a transaction
    one_error(cli("-w", "bob", "node", "register", "--endpoint", "http://8.8.8.8:80/admin?x=1", "-m", "m", code=2),
              "no path, query or fragment")
    one_error(cli("-w", "bob", "node", "register", "--endpoint", "http://u:p@8.8.8.8", "-m", "m", code=2),
              "no user name")
    one_error(cli("-w", "bob", "node", "register", "--endpoint", "http://x", "-m", "m", "--metadata", "{", code=2),
              "JSON")
    one_error(cli("duel", "show", "7", code=1), "unknown duel")
    assert "no duel has been opened yet" in cli("duel", "list")
    one_error(cli("stake", "add", "1eth", code=2), "wallet")
    # nothing above changed any state
    assert "0 ETH" in cli("-w", "bob", "wallet", "show")


def test_duels_through_the_cli(cli, anvil: AnvilProcess) -> None:  # type: ignore[no-untyped-def]
    """Two duels played by nodes through the ledger client (one judged, one whose challenger never
    answered), then read back with `duel list`, `duel show` and `duel leaderboard`."""
    cli("devnet", "up", "--demo-nodes", "0")
    dep = load_deployment(31337)
    w3 = connect(anvil.rpc_url)
    roles = ("origin", "a", "c1", "c2", "c3", "c4")
    accounts = {role: demo_account(i + 1) for i, role in enumerate(roles)}
    funder = TxSender(w3, Account.from_key(DEV_KEYS[0]))
    for role, acct in accounts.items():
        funder.send(to=acct.address, value_wei=3 * WEI_PER_ETH, function="fund")
        c = WWWServeClient(w3, dep.address, TxSender(w3, acct))
        c.deposit(2 * WEI_PER_ETH)
        c.register(bytes([len(role)]) * 31 + role[-1].encode(), f"http://{role}.example", ["smollm2"])
        c.stake(WEI_PER_ETH)
    world = World(w3, dep.address, str(dep.extension), dep.block_number, accounts, model="smollm2",
                  mine_blocks=lambda n: mine(anvil.rpc_url, n),
                  advance_time=lambda s: increase_time(anvil.rpc_url, s))
    world.mine(dep.params.epoch_blocks)

    judged = world.open_duel("judged")
    b = world.answer(judged.duel_id).event("ChallengerDrawn").args["b"]
    world.vote(judged.duel_id, 1, lambda j: Vote.B)
    world.settle_after_appeal_window(judged.duel_id, settler="origin")
    ghost = world.open_duel("ghost")
    world.challenger(ghost.duel_id)
    world.client("origin").draw_challenger(ghost.duel_id)
    world.mine_to(world.client().duel(ghost.duel_id).deadline)
    world.client("c4").settle_duel(ghost.duel_id)

    listed = cli("duel", "list")
    assert listed.index(str(ghost.duel_id)) < listed.index(str(judged.duel_id))  # newest first
    assert "b won" in listed and "no answer" in listed and "0/3/0/0/0" in listed

    shown = cli("duel", "show", str(judged.duel_id))
    for needle in ("settled, b won", accounts["a"].address, b, "round 1 seat 1", ": B", "verdict",
                   "stake moved", "reward stake won", "DuelSettled", "0x" + judged.work.request_hash.hex(),
                   "smollm2 (0x"):
        assert needle in shown, needle
    ghost_shown = cli("duel", "show", str(ghost.duel_id))
    assert "cancelled" in ghost_shown and "never answered" in ghost_shown and "slashed no answer" in ghost_shown

    board = json.loads(cli("duel", "leaderboard", "--json"))
    by_node = {row["node"]: row for row in board}
    assert (by_node[b]["wins"], by_node[accounts["a"].address]["losses"]) == (1, 1)
    assert sum(row["duels"] for row in board) == 2  # one settled duel, two duelists; the cancelled one is no game


def test_public_keys_are_refused_on_a_chain_that_is_not_a_devnet(cli, wwwserve_home: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 13, finding 10: `devnet up --demo-nodes 1` against chain id 1 deployed, staked and deposited
    with the public demo keys, without a word. Now it is refused, one line, before any transaction; the flag
    that insists says in its name what it does. The library refuses the same without the CLI."""
    chain = start_anvil(chain_id=1)
    try:
        env = {"WWWSERVE_RPC_URL": chain.rpc_url}
        out = cli("devnet", "up", "--demo-nodes", "1", code=1, env=env)
        lines = [line for line in out.splitlines() if line.strip()]
        assert lines[-1].startswith("error: chain 1 is not a known devnet") and "--allow-public-keys" in lines[-1]
        w3 = connect(chain.rpc_url)
        assert w3.eth.get_transaction_count(Account.from_key(DEV_KEYS[0]).address) == 0  # nothing was sent
        assert not (wwwserve_home / "deployments" / "1.json").exists()
        with pytest.raises(DevnetError, match="not a known devnet"):
            ensure_deployment(w3, chain.rpc_url)
        out = cli("devnet", "up", "--demo-nodes", "1", "--allow-public-keys", env=env)
        assert "deployed WWWServe" in out
        client = WWWServeClient(w3, load_deployment(1).address)
        assert client.balances(demo_account(1).address).active_stake_wei == WEI_PER_ETH
    finally:
        chain.stop()
