"""TxSender: local nonces under concurrency, resync on conflicts, retries that never double-send,
fees, receipts, and transport failures as ChainUnreachableError."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import TransactionNotFound

from wwwserve.devnet.ports import free_port
from wwwserve.ledger.chain import RetryPolicy, connect, endpoint_of
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.errors import (
    ChainUnreachableError,
    LedgerValueError,
    TransactionRejectedError,
    TransactionTimeoutError,
)
from wwwserve.ledger.params import DeploymentParams
from wwwserve.ledger.tx import TxSender

FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.001, max_backoff_s=0.001)


class SerializedTesterProvider(EthereumTesterProvider):
    """py-evm is not thread-safe (an estimate racing a block being mined reads a half-updated nonce),
    so requests are serialized here, as a real node serializes them. Threads still race for nonces
    between requests, which is what the TxSender has to get right."""

    def __init__(self) -> None:
        super().__init__()
        self._request_lock = threading.Lock()

    def make_request(self, method: Any, params: Any) -> Any:
        with self._request_lock:
            return super().make_request(method, params)


class Chain:
    def __init__(self) -> None:
        self.w3 = Web3(SerializedTesterProvider())
        keys = self.w3.provider.ethereum_tester.backend.account_keys  # type: ignore[attr-defined]
        self.accounts: list[LocalAccount] = [Account.from_key(k.to_bytes()) for k in keys]
        self.address, _ = WWWServeClient.deploy(self.w3, TxSender(self.w3, self.accounts[0]), DeploymentParams())


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain()


@pytest.fixture(autouse=True)
def _snapshot(chain: Chain) -> Iterator[None]:
    tester = chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snap = tester.take_snapshot()
    yield
    tester.revert_to_snapshot(snap)


def deposit_data(chain: Chain) -> str:
    return WWWServeClient(chain.w3, chain.address).contract.encode_abi("deposit", args=[])


def test_needs_a_local_account(chain: Chain) -> None:
    with pytest.raises(LedgerValueError, match="LocalAccount"):
        TxSender(chain.w3, chain.accounts[0].address)  # type: ignore[arg-type]


def test_concurrent_sends_from_one_sender_use_each_nonce_once(chain: Chain) -> None:
    sender = TxSender(chain.w3, chain.accounts[1], retry=FAST_RETRY)
    client = WWWServeClient(chain.w3, chain.address, sender)
    start_nonce = chain.w3.eth.get_transaction_count(sender.address)
    threads, per_thread = 4, 6
    results: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        try:
            for j in range(per_thread):
                result = client.deposit(1000 * i + j + 1)
                with lock:
                    results.append(result.tx_hash)
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            failures.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert failures == []
    nonces = sorted(chain.w3.eth.get_transaction(h)["nonce"] for h in results)
    assert nonces == list(range(start_nonce, start_nonce + threads * per_thread))
    expected = sum(1000 * i + j + 1 for i in range(threads) for j in range(per_thread))
    assert client.credit(sender.address) == expected


def test_pending_counts_sent_transactions_until_wait_sees_them_mined_or_gives_up(chain: Chain) -> None:
    """`pending` is the node's wwwserve_chain_pending_transactions: sent, not yet seen mined."""
    sender = TxSender(chain.w3, chain.accounts[1], retry=FAST_RETRY)
    data = deposit_data(chain)
    first = sender.submit(to=chain.address, data=data, value_wei=1, function="deposit")
    second = sender.submit(to=chain.address, data=data, value_wei=2, function="deposit")
    assert sender.pending == 2
    sender.wait(first)
    assert sender.pending == 1
    unknown = dataclasses.replace(second, tx_hash="0x" + "00" * 32)
    sender._unmined.add(unknown.tx_hash)
    with pytest.raises(TransactionTimeoutError):
        sender.wait(unknown, timeout_s=0)  # a wait that gives up stops counting it
    assert sender.pending == 1
    sender.wait(second)
    assert sender.pending == 0


def test_nonce_conflict_resyncs_once(chain: Chain) -> None:
    """Another process used the same key: our cached nonce is stale; we resync and send once."""
    account = chain.accounts[2]
    ours = TxSender(chain.w3, account, retry=FAST_RETRY)
    theirs = TxSender(chain.w3, account, retry=FAST_RETRY)
    data = deposit_data(chain)
    ours.send(to=chain.address, data=data, value_wei=1)  # caches nonce n+1
    theirs.send(to=chain.address, data=data, value_wei=2)  # uses n+1 behind our back
    receipt = ours.send(to=chain.address, data=data, value_wei=3)  # tries n+1, conflicts, resyncs to n+2
    tx = chain.w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["value"] == 3
    assert tx["nonce"] == chain.w3.eth.get_transaction_count(account.address) - 1
    assert WWWServeClient(chain.w3, chain.address).credit(account.address) == 6


def test_lost_reply_is_not_sent_again(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node accepted the transaction but the reply was lost: the retry must not re-sign it."""
    sender = TxSender(chain.w3, chain.accounts[3], retry=FAST_RETRY)
    real_send = chain.w3.eth.send_raw_transaction
    calls: list[bytes] = []

    def flaky(raw: Any) -> Any:
        calls.append(bytes(raw))
        result = real_send(raw)
        if len(calls) == 1:
            raise requests.exceptions.ConnectionError("connection reset by peer")
        return result

    monkeypatch.setattr(chain.w3.eth, "send_raw_transaction", flaky)
    count_before = chain.w3.eth.get_transaction_count(sender.address)
    sender.send(to=chain.address, data=deposit_data(chain), value_wei=7)
    # the retry resent the identical bytes (same nonce) and recognised its own transaction
    assert len(calls) == 2 and calls[0] == calls[1]
    assert chain.w3.eth.get_transaction_count(sender.address) == count_before + 1
    assert WWWServeClient(chain.w3, chain.address).credit(sender.address) == 7
    # and the local nonce moved on by exactly one
    sender.send(to=chain.address, data=deposit_data(chain), value_wei=1)
    assert chain.w3.eth.get_transaction_count(sender.address) == count_before + 2


def test_transient_send_failure_is_retried_with_the_same_bytes(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = TxSender(chain.w3, chain.accounts[4], retry=FAST_RETRY)
    real_send = chain.w3.eth.send_raw_transaction
    calls: list[bytes] = []

    def refuses_once(raw: Any) -> Any:
        calls.append(bytes(raw))
        if len(calls) == 1:
            raise requests.exceptions.ConnectionError("connection refused")
        return real_send(raw)

    monkeypatch.setattr(chain.w3.eth, "send_raw_transaction", refuses_once)
    sender.send(to=chain.address, data=deposit_data(chain), value_wei=5)
    assert len(calls) == 2 and calls[0] == calls[1]
    assert WWWServeClient(chain.w3, chain.address).credit(sender.address) == 5


def test_send_gives_up_after_the_retry_budget(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    sender = TxSender(chain.w3, chain.accounts[4], retry=FAST_RETRY)
    calls: list[bytes] = []

    def always_down(raw: Any) -> Any:
        calls.append(bytes(raw))
        raise requests.exceptions.ConnectionError("connection refused")

    monkeypatch.setattr(chain.w3.eth, "send_raw_transaction", always_down)
    with pytest.raises(ChainUnreachableError, match="may or may not have reached the node"):
        sender.send(to=chain.address, data=deposit_data(chain), value_wei=5)
    assert len(calls) == FAST_RETRY.attempts and len(set(calls)) == 1
    monkeypatch.undo()
    # the nonce is re-read from the node afterwards, so nothing is skipped or reused
    receipt = sender.send(to=chain.address, data=deposit_data(chain), value_wei=5)
    assert chain.w3.eth.get_transaction(receipt["transactionHash"])["nonce"] == (
        chain.w3.eth.get_transaction_count(sender.address) - 1
    )


def test_rejected_transaction(chain: Chain) -> None:
    poor = Account.create()
    sender = TxSender(chain.w3, poor, retry=FAST_RETRY)
    with pytest.raises(TransactionRejectedError, match=r"WWWServe\.deposit: the node rejected"):
        sender.send(to=chain.address, data=deposit_data(chain), value_wei=1, gas=100_000, function="WWWServe.deposit")


def test_eip1559_fees_by_default(chain: Chain) -> None:
    sender = TxSender(chain.w3, chain.accounts[5], priority_fee_wei=2 * 10**9)
    receipt = sender.send(to=chain.address, data=deposit_data(chain), value_wei=1)
    tx = chain.w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["type"] == 2 and tx["maxPriorityFeePerGas"] == 2 * 10**9
    assert tx["maxFeePerGas"] >= 2 * 10**9


def test_legacy_fees_without_base_fee(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    real_get_block = chain.w3.eth.get_block

    def pre_london(block_id: Any, *args: Any) -> Any:
        block = dict(real_get_block(block_id, *args))
        block.pop("baseFeePerGas", None)
        return block

    monkeypatch.setattr(chain.w3.eth, "get_block", pre_london)
    sender = TxSender(chain.w3, chain.accounts[5])
    receipt = sender.send(to=chain.address, data=deposit_data(chain), value_wei=1)
    tx = chain.w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["type"] == 0 and tx["gasPrice"] > 0


def test_gas_margin_is_applied(chain: Chain) -> None:
    data = deposit_data(chain)
    sender = TxSender(chain.w3, chain.accounts[6], gas_margin_bps=5_000)
    estimate = chain.w3.eth.estimate_gas({"from": sender.address, "to": chain.address, "data": data, "value": 1})
    receipt = sender.send(to=chain.address, data=data, value_wei=1)
    assert chain.w3.eth.get_transaction(receipt["transactionHash"])["gas"] == estimate + estimate // 2


def test_receipt_timeout(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    def never_mined(tx_hash: Any) -> Any:
        raise TransactionNotFound("not yet")

    monkeypatch.setattr(chain.w3.eth, "get_transaction_receipt", never_mined)
    sender = TxSender(chain.w3, chain.accounts[7], receipt_timeout_s=0.05, poll_interval_s=0.01)
    with pytest.raises(TransactionTimeoutError, match=r"was not mined within 0\.05 s") as info:
        sender.send(to=chain.address, data=deposit_data(chain), value_wei=1, function="WWWServe.deposit")
    assert info.value.tx_hash.startswith("0x")


def test_value_must_be_int_wei(chain: Chain) -> None:
    with pytest.raises(LedgerValueError):
        TxSender(chain.w3, chain.accounts[0]).submit(to=chain.address, value_wei=-1)


@pytest.mark.component
def test_unreachable_chain_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    w3 = connect(url, timeout_s=0.5)
    assert endpoint_of(w3) == url
    sender = TxSender(w3, Account.create(), retry=FAST_RETRY)
    with pytest.raises(ChainUnreachableError, match=f"chain RPC at {url} is unreachable") as info:
        sender.send(to="0x" + "11" * 20, value_wei=1)
    assert info.value.url == url and isinstance(info.value, ConnectionError)
    client = WWWServeClient(w3, "0x" + "22" * 20, retry=FAST_RETRY)
    with pytest.raises(ChainUnreachableError, match=url):
        client.total_weight()
    with pytest.raises(ChainUnreachableError):
        client.ensure_deployed()


def test_endpoint_hides_credentials() -> None:
    w3 = connect("https://user:secret@rpc.example.org:8443/v3/path?apikey=abc")
    assert endpoint_of(w3) == "https://rpc.example.org:8443/v3/path"


def test_connect_is_the_only_web3_factory() -> None:
    """Every HTTP Web3 comes from `ledger.chain.connect`: one built by hand gets web3's own retries back."""
    root = Path(__file__).resolve().parents[2]
    needle = "HTTP" + "Provider("  # spelled in two so that this file does not match itself
    folders = ("contracts", "ledger", "node", "judge", "devnet", "sim", "wwwserve", "bench", "tests")
    found = sorted(str(path.relative_to(root)) for folder in folders for path in (root / folder).rglob("*.py")
                   if "node_modules" not in path.parts and needle in path.read_text(errors="replace"))
    assert found == ["ledger/chain.py"], found


@pytest.fixture
def failing_rpc() -> Iterator[tuple[str, list[str]]]:
    """An HTTP endpoint that answers every JSON-RPC request 503, and the methods it was asked, in order."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            asked.append(json.loads(body)["method"])
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.component
def test_one_retry_layer_reads(failing_rpc: tuple[str, list[str]]) -> None:
    """A failing read reaches the node exactly `attempts` times: web3's own HTTP retries (5 per call by
    default, for eth_chainId, eth_getCode, ...) are off in `connect`, so they cannot multiply ours."""
    url, asked = failing_rpc
    w3 = connect(url, timeout_s=2.0)
    client = WWWServeClient(w3, "0x" + "22" * 20, retry=FAST_RETRY)
    with pytest.raises(ChainUnreachableError, match=f"after {FAST_RETRY.attempts} attempts"):
        _ = client.chain_id
    assert asked == ["eth_chainId"] * FAST_RETRY.attempts


@pytest.mark.component
def test_one_retry_layer_sends(failing_rpc: tuple[str, list[str]]) -> None:
    """The first read of a send (gas estimate) fails the same way, tried `attempts` times and no more."""
    url, asked = failing_rpc
    sender = TxSender(connect(url, timeout_s=2.0), Account.create(), retry=FAST_RETRY)
    with pytest.raises(ChainUnreachableError):
        sender.send(to="0x" + "11" * 20, value_wei=1)
    assert len(asked) == FAST_RETRY.attempts and len(set(asked)) == 1, asked


def test_read_retries_then_succeeds(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    client = WWWServeClient(chain.w3, chain.address, retry=FAST_RETRY)
    real_call = chain.w3.eth.call
    calls = 0

    def flaky_call(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls < FAST_RETRY.attempts:
            raise requests.exceptions.ReadTimeout("read timed out")
        return real_call(*args, **kwargs)

    monkeypatch.setattr(chain.w3.eth, "call", flaky_call)
    assert client.total_weight() == 0
    assert calls == FAST_RETRY.attempts

