"""The ledger client against a real anvil process: concurrent senders in separate processes, typed
reverts (estimated and mined), nonce resync on a real node's error strings, and a stopped chain."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from eth_account import Account

from wwwserve.devnet.anvil import DEV_KEYS, AnvilProcess
from wwwserve.ledger.chain import RetryPolicy, connect
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.errors import ChainUnreachableError, InsufficientCreditError, NotRegisteredError
from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.ledger.tx import TxSender

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# One worker process: a TxSender for its own key, shared by a few threads, each sending deposits.
WORKER = textwrap.dedent(
    """
    import json, sys, threading
    from eth_account import Account
    from wwwserve.ledger.client import WWWServeClient
    from wwwserve.ledger.chain import connect
    from wwwserve.ledger.tx import TxSender

    url, key, address, threads, per_thread = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    w3 = connect(url)
    client = WWWServeClient(w3, address, TxSender(w3, Account.from_key(key)))
    hashes, errors, lock = [], [], threading.Lock()

    def work(i):
        for j in range(per_thread):
            try:
                result = client.deposit(1 + i * per_thread + j)
                with lock:
                    hashes.append(result.tx_hash)
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool: t.start()
    for t in pool: t.join()
    print(json.dumps({"hashes": hashes, "errors": errors}))
    """
)


@pytest.fixture(scope="module")
def deployed(anvil_module: AnvilProcess) -> str:
    w3 = connect(anvil_module.rpc_url)
    address, _ = WWWServeClient.deploy(w3, TxSender(w3, Account.from_key(DEV_KEYS[0])), DeploymentParams())
    return address


def test_two_processes_send_concurrently_without_nonce_clashes(anvil_module: AnvilProcess, deployed: str) -> None:
    threads, per_thread = 3, 5
    keys = DEV_KEYS[1:3]
    w3 = connect(anvil_module.rpc_url)
    start_nonces = [w3.eth.get_transaction_count(Account.from_key(k).address) for k in keys]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, anvil_module.rpc_url, key, deployed, str(threads), str(per_thread)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key in keys
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out))

    client = WWWServeClient(w3, deployed)
    total = threads * per_thread
    for key, start, output in zip(keys, start_nonces, outputs, strict=True):
        assert output["errors"] == []
        assert len(output["hashes"]) == total
        address = Account.from_key(key).address
        nonces = sorted(w3.eth.get_transaction(h)["nonce"] for h in output["hashes"])
        assert nonces == list(range(start, start + total))
        assert all(w3.eth.get_transaction_receipt(h)["status"] == 1 for h in output["hashes"])
        assert client.credit(address) == sum(range(1, total + 1))


def test_reverts_come_back_typed(anvil_module: AnvilProcess, deployed: str) -> None:
    w3 = connect(anvil_module.rpc_url)
    client = WWWServeClient(w3, deployed, TxSender(w3, Account.from_key(DEV_KEYS[3])))
    # caught at gas estimation: nothing is sent
    with pytest.raises(NotRegisteredError) as info:
        client.stake(1)
    assert info.value.tx_hash is None and info.value.function == "WWWServe.stake"
    with pytest.raises(InsufficientCreditError, match=r"^WWWServe\.requestWithdrawal: Bank: insufficient credit$"):
        client.request_withdrawal(10**30)


def test_mined_failure_is_decoded_despite_pruned_history(anvil_module: AnvilProcess, deployed: str) -> None:
    w3 = connect(anvil_module.rpc_url)
    sender = TxSender(w3, Account.from_key(DEV_KEYS[3]))
    data = WWWServeClient(w3, deployed).contract.encode_abi("stake", args=[1])
    with pytest.raises(NotRegisteredError) as info:
        sender.send(to=deployed, data=data, gas=200_000, function="WWWServe.stake")
    assert info.value.tx_hash is not None
    assert w3.eth.get_transaction_receipt(info.value.tx_hash)["status"] == 0


def test_same_key_in_two_senders_resyncs_on_nonce_too_low(anvil_module: AnvilProcess, deployed: str) -> None:
    w3 = connect(anvil_module.rpc_url)
    account = Account.from_key(DEV_KEYS[3])
    ours, theirs = TxSender(w3, account), TxSender(w3, account)
    client_ours = WWWServeClient(w3, deployed, ours)
    client_theirs = WWWServeClient(w3, deployed, theirs)
    before = client_ours.credit(account.address)
    client_ours.deposit(WEI_PER_CREDIT)
    client_theirs.deposit(WEI_PER_CREDIT)  # takes the nonce `ours` has cached
    result = client_ours.deposit(WEI_PER_CREDIT)  # anvil says "nonce too low"; resync and send once
    assert w3.eth.get_transaction(result.tx_hash)["nonce"] == w3.eth.get_transaction_count(account.address) - 1
    assert client_ours.credit(account.address) == before + 3 * WEI_PER_CREDIT


def test_stopped_chain_is_unreachable(anvil: AnvilProcess) -> None:
    w3 = connect(anvil.rpc_url, timeout_s=1.0)
    retry = RetryPolicy(attempts=2, backoff_s=0.01)
    sender = TxSender(w3, Account.from_key(DEV_KEYS[0]), retry=retry)
    address, _ = WWWServeClient.deploy(w3, sender, DeploymentParams())
    client = WWWServeClient(w3, address, sender)
    client.deposit(1)
    anvil.stop()
    with pytest.raises(ChainUnreachableError, match=anvil.rpc_url):
        client.credit(sender.address)
    with pytest.raises(ChainUnreachableError, match=anvil.rpc_url):
        client.deposit(1)
