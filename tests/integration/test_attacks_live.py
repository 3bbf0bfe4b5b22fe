"""A scripted malicious node tries A1, A3, A5 and A6 (docs/threat-model.md) against six real node processes on
anvil, and fails.

The honest network (`duel_network.start_network`, fake backends, small windows): node 1 is an origin that
duels every answer it delegates (`policy.p_inspect=1`) and serves only the judge model, so it is never a
challenger for MODEL; node 2 (the victim) serves MODEL with 4-word answers and declines honest probes (so
node 1 delegates to the attacker's executor in A6; the attacker, as origin, skips the probe and node 2
runs what it is sent, as any executor does); node 3 serves MODEL with 12-word answers and stakes 10 ETH,
so it is the challenger of every duel over node 2's work; nodes 4-6 only judge. Every honest node judges
with a fake backend scripted to prefer the longer answer, and nobody appeals. The test checks that each
judge voted after asking its model in both orders, i.e. that it held the request and both answers.

The attacker is this test process: wallets of its own, funded, registered (and staked where the attack
needs it) through `ledger.client`, talking to the contract directly (bypassing the client's own checks
where it would refuse to send a bad transaction) and to the nodes over the signed peer API
(`node.envelope.seal`). Its identities share one HTTP endpoint (`AttackerServer`) that answers as each
scenario scripts it: refuse all evidence, hold evidence requests (a "gate"), serve what it chooses, or
execute delegated requests with signed, attested answers. Where an attack must act between two events of
the real nodes, the test makes that order certain instead of racing them: it pauses the background
blocks (A1), or holds the only copies of the request (A3).

- A1: forged, borrowed and "wantsDuel = false" attestations, and a zero-stake identity as the executor, all
  revert; over real work the victim did for it the challenger is the contract's draw, which the attacker
  can neither answer in place of (its zero-stake accomplice) nor change (it records the draw itself).
- A3: an origin and executor of the attacker's own duel; after the seed block, and before the real
  challenger can get the request, the attacker re-stakes (1 wei, then 5 ETH), registers a fresh 20 ETH
  identity (growing the sortition tree's covered subtree) and adds the model to its registration: the live
  tree moves, yet challengerOf, the recorded challenger and the first panel are what they were before
  (read with eth_simulateV1 of the challenger's answer).
- A5: the origin serves nothing from the moment it opened: nothing listens at its endpoint, or it accepts
  every evidence request and never answers (a stall used to cost the challenger its answer window: the
  node asked the origin first and waited out its timeout; it now asks every holder at once). Judges get the
  request and A's answer from A and B's from B, the duel is decided, and nobody is slashed but the loser.
- A6: the attacker's executor signs its answer to node 1's request, then goes away, leaves and unstakes
  everything before even handing the answer over: the duel still opens, is judged and settled, the bond
  stays reserved and is slashed, and withdrawStake refuses until DUEL_SPAN_BLOCKS after the unstake
  request, then pays out the stake less the lost bond.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import nacl.signing
import pytest
from duel_network import Network, NodeSpec, start_network
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32

from wwwserve.devnet.anvil import DEV_KEYS
from wwwserve.devnet.ports import free_port
from wwwserve.judge.evidence import EvidencePieces
from wwwserve.judge.manager import PATH_EVIDENCE
from wwwserve.ledger.chain import rpc_call
from wwwserve.ledger.client import DuelOutcome, DuelStatus, SlashReason, Vote, WWWServeClient
from wwwserve.ledger.errors import (
    ContractRevertedError,
    DuelWindowError,
    NotTheChallengerError,
    StillUnbondingError,
    UnknownDuelError,
    WorkAlreadyDueledError,
)
from wwwserve.ledger.params import WEI_PER_ETH, DeploymentParams
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.work import (
    WorkAttestation,
    answer_hash,
    duel_id_of,
    inspect_commitment,
    model_hash,
    request_bytes,
    request_hash,
    request_id_hash,
    sign_work,
    work_digest,
)
from wwwserve.node.envelope import HEADER_RECEIVER, HEADER_SENDER, seal
from wwwserve.node.managers.communication import PATH_DELEGATE, PATH_PROBE
from wwwserve.node.signing import ResultClaim, TokenUsage, prompt_hash, sha256_text, sign_result

pytestmark = pytest.mark.integration

MODEL = "fake-model"
JUDGE_MODEL = "judge-model"
ETH = WEI_PER_ETH
# duel_net's windows (wide enough for a loaded machine), a short appeal window (nobody appeals here) and a
# short unbonding period, so A6 can see the stake come out within the test.
PARAMS = DeploymentParams(epoch_blocks=24, answer_window_blocks=20, commit_window_blocks=20,
                          reveal_window_blocks=12, appeal_window_blocks=4, publish_window_blocks=12,
                          unbonding_period_s=30, attestation_ttl_s=30)
BLOCK_S = 0.25
ORIGIN, VICTIM, CHALLENGER = 0, 1, 2  # node indexes; 3-5 judge
COMMON = ("backend.kind=fake", "policy.auto_stake=false", "chain.poll_interval_s=0.3", "judge.poll_interval_s=0.3",
          "peers.fee_wei=0", "judge.appeal=never", "backend.fake.judge_rule=longer")
SPECS = (
    NodeSpec((JUDGE_MODEL,), settings=(f"backend.models=['{JUDGE_MODEL}']", "policy.offload_frequency=1.0",
                                       "policy.accept_frequency=0.0", "policy.p_inspect=1.0")),
    NodeSpec((MODEL,), settings=(f"backend.models=['{MODEL}']", "backend.fake.words=4",
                                 "policy.accept_frequency=0.0", "policy.offload_frequency=0.0")),
    NodeSpec((MODEL,), stake="10eth", deposit="11eth",
             settings=(f"backend.models=['{MODEL}']", "backend.fake.words=12", "policy.accept_frequency=0.0")),
    *[NodeSpec((JUDGE_MODEL,), settings=(f"backend.models=['{JUDGE_MODEL}']",)) for _ in range(3)],
)


# ---------------------------------------------------------------------------------------------
# the attacker


@dataclass
class Identity:
    """One of the attacker's wallets: its secp256k1 account (contract, work signatures), its ed25519 key
    (peer envelopes, result signatures) and a client that sends as it."""

    name: str
    account: LocalAccount
    key: nacl.signing.SigningKey
    client: WWWServeClient
    endpoint: str

    @property
    def address(self) -> str:
        return str(self.account.address)

    @property
    def pubkey(self) -> bytes:
        return bytes(self.key.verify_key)


@dataclass
class Role:
    """How the attacker's endpoint answers messages addressed to one identity."""

    executes: str | None = None  # answer delegated requests with this text (and accept probes)
    before_reply: Callable[[], None] | None = None  # runs once the answer is signed, before it is sent
    gone: bool = False  # answer nothing useful any more (503)
    released: threading.Event = field(default_factory=threading.Event)  # evidence requests wait for it
    evidence: dict[int, EvidencePieces] = field(default_factory=dict)  # served (once released); else refused
    identity: Identity | None = None

    def __post_init__(self) -> None:
        self.released.set()  # no gate unless `gate()` closes it


SSE = "__sse__"  # AttackerServer.answer's payload key for an answer sent as server-sent events


def as_stream(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """A signed whole chat answer as the chunks an executor streams: the text, then the final chunk with
    the finish reason, usage and both attestations."""
    common = {"id": answer["id"], "object": "chat.completion.chunk", "created": answer["created"],
              "model": answer["model"]}
    text = answer["choices"][0]["message"]["content"]
    return [
        {**common, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
        {**common, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": answer["usage"],
         "wwwserve": answer["wwwserve"], "wwwserve_work": answer["wwwserve_work"]},
    ]


class AttackerServer:
    """The attacker's peer endpoint (one HTTP server for all its identities, by the envelope's receiver). It
    verifies nothing: a malicious node need not."""

    def __init__(self, chain_id: int, contract: str) -> None:
        self.chain_id = chain_id
        self.contract = contract
        self.roles: dict[str, Role] = {}
        self.seen: list[tuple[str, str, str]] = []  # (path, sender, receiver) of every message
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._reply(200, {"status": "ok"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sender, receiver = self.headers.get(HEADER_SENDER, ""), self.headers.get(HEADER_RECEIVER, "")
                outer.seen.append((self.path, sender, receiver))
                role = outer.roles.get(receiver.lower())
                status, payload = outer.answer(role, self.path, json.loads(body or b"{}"))
                self._reply(status, payload)

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                events = payload.get(SSE)
                if events is not None:  # a delegation travels as a stream (the origin collects a whole answer)
                    data = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"
                else:
                    data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream" if events is not None else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        for role in self.roles.values():
            role.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def asked_by(self, path: str, receiver: str) -> list[str]:
        """Who sent `path` messages to `receiver`."""
        return [s for p, s, r in self.seen if p == path and r.lower() == receiver.lower()]

    def answer(self, role: Role | None, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        refused = {"error": {"message": "no", "type": "invalid_request_error", "code": "refused"}}
        if role is None or role.gone:
            return 503, refused
        if path == PATH_PROBE:
            return 200, {"accept": role.executes is not None}
        if path == PATH_DELEGATE and role.executes is not None and role.identity is not None:
            answer = self.execute(role.identity, role.executes, body)
            if role.before_reply is not None:
                role.before_reply()
            if body["request"].get("stream"):
                return 200, {SSE: as_stream(answer)}
            return 200, answer
        if path == PATH_EVIDENCE:
            role.released.wait(timeout=20)
            pieces = role.evidence.get(body.get("duel_id", 0))
            if pieces is not None:
                return 200, pieces.to_json()
        return 403, refused

    def execute(self, me: Identity, text: str, body: dict[str, Any]) -> dict[str, Any]:
        """A delegated chat request answered with `text`, signed and attested as an honest executor would."""
        request, route, rid = body["request"], body["route"], body["request_id"]
        model = request["model"]
        claim = ResultClaim(chain_id=self.chain_id, request_id=rid, model=model, executor=me.address,
                            prompt_sha256=prompt_hash(request["messages"], model), output_sha256=sha256_text(text),
                            timestamp_ms=int(time.time() * 1000), usage=TokenUsage(1, 1))
        work = sign_work(me.account, self.chain_id, self.contract, WorkAttestation(
            origin=route[0], executor=me.address, request_id=request_id_hash(rid),
            request_hash=request_hash(body["kind"], request), model_hash=model_hash(model),
            answer_hash=answer_hash(text), inspect=bytes.fromhex(body["inspect"][2:]), issued_at=int(time.time())))
        return {
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            "wwwserve": sign_result(me.key, claim, route=[*route, me.address]).to_json(),
            "wwwserve_work": work.to_json(),
        }


@dataclass
class Delegated:
    """Work done for the attacker as origin: the request, the answer, the executor's attestation, and the
    salt that opens its inspection commitment."""

    request_id: str
    request: dict[str, Any]
    text: str
    work: WorkAttestation
    salt: bytes


class Attacker:
    """The scripted malicious node: wallets, the contract through `ledger.client`, peers over the signed API."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.w3 = net.w3
        self.contract = net.deployment.address
        self.chain_id = int(self.w3.eth.chain_id)
        self.funder = TxSender(self.w3, Account.from_key(DEV_KEYS[1]))  # the CLI funds from DEV_KEYS[0]
        self.server = AttackerServer(self.chain_id, self.contract)
        self.dead_endpoint = f"http://127.0.0.1:{free_port()}"  # nothing ever listens there
        self._count = 0

    def identity(self, name: str, models: list[str], stake_wei: int = 0, deposit_wei: int = 0,
                 endpoint: str | None = None) -> Identity:
        """A fresh wallet, funded, registered (at the attacker's endpoint unless told), with credit and stake."""
        account: LocalAccount = Account.create()
        self.funder.send(to=account.address, value_wei=ETH + stake_wei + deposit_wei, function="fund")
        client = WWWServeClient(self.w3, self.contract, TxSender(self.w3, account))
        me = Identity(name, account, nacl.signing.SigningKey.generate(), client, endpoint or self.server.url)
        client.register(me.pubkey, me.endpoint, models, json.dumps({"name": name}))
        if deposit_wei + stake_wei:
            client.deposit(deposit_wei + stake_wei)
        if stake_wei:
            client.stake(stake_wei)
        self.server.roles[me.address.lower()] = Role(identity=me)
        return me

    def role(self, me: Identity) -> Role:
        return self.server.roles[me.address.lower()]

    @contextlib.contextmanager
    def gate(self, *identities: Identity) -> Iterator[threading.Event]:
        """Hold every evidence request addressed to `identities` until the block ends or the yielded event is
        set (then serve what their roles hold, or refuse)."""
        released = threading.Event()
        for me in identities:
            self.role(me).released = released
        try:
            yield released
        finally:
            released.set()

    def post(self, me: Identity, node: int, path: str, payload: dict[str, Any]) -> httpx.Response:
        """A signed peer message from `me` to honest node `node`."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = seal(me.key, me.address, self.net.addresses[node], body, self.chain_id, path=path)
        headers["Content-Type"] = "application/json"
        return httpx.post(f"http://127.0.0.1:{self.net.ports[node]}{path}", content=body, headers=headers, timeout=30)

    def wait_known(self, me: Identity, node: int) -> None:
        """Until `node` has indexed `me`'s registration (its envelopes stop being refused as unknown)."""
        probe = {"request_id": "probe", "model": MODEL, "route": [me.address]}
        self.net.wait(f"node {node + 1} to know {me.name}",
                      lambda: self.post(me, node, PATH_PROBE, probe).status_code == 200, timeout_s=60)

    def delegate(self, me: Identity, node: int, content: str, wants_duel: bool) -> Delegated:
        """Send a real request to a real node as its origin, with a commitment to duel it (or not), the way
        an origin's dispatcher does (but without the probe: the attacker picks its victim)."""
        self._count += 1
        rid = f"chatcmpl-attacker-{self._count}-{time.monotonic_ns()}"
        salt = bytes(self.w3.keccak(text=rid))
        request = {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": False}
        payload = {"request_id": rid, "kind": "chat", "request": request, "route": [me.address],
                   "accept_check": False,
                   "inspect": "0x" + inspect_commitment(request_id_hash(rid), wants_duel, salt).hex()}
        resp = self.post(me, node, PATH_DELEGATE, payload)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        work = WorkAttestation.from_json(answer["wwwserve_work"])
        assert work.executor == self.net.addresses[node] and work.origin == me.address
        return Delegated(rid, request, answer["choices"][0]["message"]["content"], work, salt)

    def self_dealt(self, origin: Identity, executor: Identity, content: str, text: str) -> Delegated:
        """Work the attacker's own executor identity "did" for its own origin identity: no node involved."""
        self._count += 1
        rid = f"chatcmpl-attacker-{self._count}-{time.monotonic_ns()}"
        salt = bytes(self.w3.keccak(text=rid))
        request = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
        work = sign_work(executor.account, self.chain_id, self.contract, WorkAttestation(
            origin=origin.address, executor=executor.address, request_id=request_id_hash(rid),
            request_hash=request_hash("chat", request), model_hash=model_hash(MODEL), answer_hash=answer_hash(text),
            inspect=inspect_commitment(request_id_hash(rid), True, salt), issued_at=int(time.time())))
        return Delegated(rid, request, text, work, salt)

    def open_raw(self, me: Identity, work: WorkAttestation, salt: bytes) -> None:
        """openDuel as sent by a node that does not check first (`WWWServeClient.open_duel` would refuse)."""
        data = me.client.contract.encode_abi("openDuel", args=[
            work.executor, work.request_id, work.request_hash, work.model_hash, work.answer_hash, salt,
            work.issued_at, work.signature])
        assert me.client.sender is not None
        me.client.sender.send(to=self.contract, data=data, function="WWWServe.openDuel")

    def forge(self, signer: Identity, work: WorkAttestation) -> WorkAttestation:
        """`work` (naming whatever executor it names) signed with `signer`'s wallet key."""
        digest = work_digest(self.chain_id, self.contract, work)
        return replace(work, signature=bytes(signer.account.unsafe_sign_hash(Hash32(digest)).signature))

    def leave(self, *identities: Identity) -> None:
        """Leave and unstake, so no later draw can pick these identities (both count from the next epoch)."""
        for me in identities:
            me.client.leave()
            active = me.client.active_stake(me.address)
            if active:
                me.client.request_unstake(active)


def simulated_panel(net: Network, duel_id: int, challenger: str) -> tuple[str, ...]:
    """The first round's seats the duel would get if `challenger` answered in the next block (eth_simulateV1
    of answerDuel then getJudges): what anyone can compute once the seed block is mined."""
    contract = net.chain.contract
    calls = [
        {"from": challenger, "to": contract.address,
         "data": contract.encode_abi("answerDuel", args=[duel_id, answer_hash("simulated")])},
        {"from": challenger, "to": contract.address, "data": contract.encode_abi("getJudges", args=[duel_id, 1])},
    ]
    blocks: Any = rpc_call(net.anvil.rpc_url, "eth_simulateV1", [{"blockStateCalls": [{"calls": calls}]}, "latest"])
    answered, judges = blocks[0]["calls"]
    assert int(answered["status"], 16) == 1 and int(judges["status"], 16) == 1, blocks[0]["calls"]
    (seats,) = net.w3.codec.decode(["address[]"], bytes.fromhex(judges["returnData"][2:]))
    return tuple(net.w3.to_checksum_address(s) for s in seats)


def slashes(net: Network, duel_id: int) -> list[tuple[str, int, int]]:
    """(node, amount, reason) of every StakeSlashed of a duel."""
    net.indexer.sync()
    return [(net.w3.to_checksum_address(e.args["node"]), int(e.args["amount"]), int(e.args["reason"]))
            for e in net.indexer.duel_events(duel_id) if e.name == "StakeSlashed"]


def event_block(net: Network, duel_id: int, name: str) -> int:
    net.indexer.sync()
    return next(e.block_number for e in net.indexer.duel_events(duel_id) if e.name == name)


def compared(net: Network, duel_id: int, judge: str) -> bool:
    """Whether `judge` voted B after asking its model in both orders: it held the request and both answers
    (a vote that missing evidence decided says why instead)."""
    log = net.logs[net.addresses.index(judge)].read_text()
    return f"judging duel {duel_id} round 1: decide voted {int(Vote.B)} (in order B, swapped A)" in log


def settled(net: Network, duel_id: int) -> Callable[[], bool]:
    return lambda: net.chain.duel(duel_id).status is DuelStatus.SETTLED


def wait_past(net: Network, block: int, duel_id: int | None = None) -> None:
    net.wait(f"block {block + 1}", lambda: net.w3.eth.block_number > block, duel_id=duel_id)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with start_network(tmp_path_factory.mktemp("attacks-live"), PARAMS, SPECS, COMMON, BLOCK_S) as net:
        yield net


@pytest.fixture
def attacker(network: Network) -> Iterator[Attacker]:
    """A fresh attacker per test (its own wallets and endpoint): the attacks are independent."""
    mallory = Attacker(network)
    try:
        yield mallory
    finally:
        mallory.server.close()


# ---------------------------------------------------------------------------------------------
# the attacks


def test_a1_only_attested_work_can_be_dueled_and_the_contract_draws_the_challenger(
    network: Network, attacker: Attacker
) -> None:
    net = network
    victim, challenger = net.addresses[VICTIM], net.addresses[CHALLENGER]
    origin = attacker.identity("a1-origin", [MODEL], deposit_wei=ETH)
    accomplice = attacker.identity("a1-accomplice", [MODEL])  # zero stake: the B of the old attack
    attacker.wait_known(origin, VICTIM)
    real = attacker.delegate(origin, VICTIM, "what is the capital of france", wants_duel=True)
    other = attacker.delegate(origin, VICTIM, "what is the capital of spain", wants_duel=True)
    declined = attacker.delegate(origin, VICTIM, "what is the capital of italy", wants_duel=False)
    credit = origin.client.credit(origin.address)

    # 1. Work the victim never did, signed by the attacker in its name.
    never = replace(real.work, request_id=request_id_hash("never-sent"),
                    request_hash=request_hash("chat", {"model": MODEL, "messages": [{"role": "user", "content": "?"}]}))
    # 2. A real signature the victim gave for another request, and a real one over another answer.
    borrowed = replace(real.work, signature=other.work.signature)
    tampered = replace(other.work, answer_hash=answer_hash("a much worse answer"))
    own_rid, salt = request_id_hash("the accomplice's own work"), b"\x01" * 32
    attempts = {
        "forged signature": (attacker.forge(origin, never), real.salt),
        "another request's attestation": (borrowed, real.salt),
        "another answer": (tampered, other.salt),
        # 3. Real work whose commitment said the origin would not duel it: no salt opens it as "duel".
        "wantsDuel = false": (declined.work, declined.salt),
        # 4. Its own zero-stake identity as the executor, over work that identity really signed.
        "zero-stake executor": (sign_work(accomplice.account, attacker.chain_id, attacker.contract, replace(
            real.work, executor=accomplice.address, request_id=own_rid, inspect=inspect_commitment(own_rid, True, salt),
            signature=b"")), salt),
    }
    refused = {}
    for what, (work, salt) in attempts.items():
        try:
            attacker.open_raw(origin, work, salt)
            refused[what] = "opened"
        except ContractRevertedError as exc:
            refused[what] = type(exc).__name__
        with pytest.raises(UnknownDuelError):
            net.chain.duel(duel_id_of(origin.address, work.request_id))
    assert refused == {
        "forged signature": "WorkAttestationError", "another request's attestation": "WorkAttestationError",
        "another answer": "WorkAttestationError", "wantsDuel = false": "WorkAttestationError",
        "zero-stake executor": "DuelistStakeError",
    }
    assert origin.client.credit(origin.address) == credit  # nothing escrowed, nothing bonded
    assert net.chain.reserved(victim) == 0

    # Real work the victim did for it, committed to be dueled: the duel opens, once. No background blocks
    # until the attacker has made its own draw: the real challenger needs a block after the seed block to
    # answer, and the attacker's draw is that block.
    with net.mining_paused():
        duel_id = origin.client.open_duel(real.work, real.salt).duel_id
        assert duel_id is not None
        with pytest.raises(WorkAlreadyDueledError):  # each piece of work is dueled once
            origin.client.open_duel(real.work, real.salt)
        with pytest.raises(DuelWindowError):  # nobody knows the draw before the seed block is mined
            origin.client.draw_challenger(duel_id)
        net.mine_to(net.chain.duel(duel_id).seed_block)  # its hash is known now
        drawn = net.chain.contract.functions.challengerOf(duel_id).call(block_identifier="pending")
        assert drawn == challenger  # by stake, among the nodes serving the model, never the parties
        accomplice_node = net.chain.node(accomplice.address)
        assert accomplice_node is not None and net.chain.leaf_weight(accomplice_node.leaf) == 0  # not drawable
        with pytest.raises(NotTheChallengerError):  # the accomplice cannot answer in its place
            accomplice.client.answer_duel(duel_id, answer_hash("the accomplice's answer"))
        origin.client.draw_challenger(duel_id)  # drawing it itself changes nothing
        assert net.chain.duel(duel_id).b == drawn
    net.wait("the duel to settle", settled(net, duel_id), timeout_s=180, duel_id=duel_id)
    duel = net.chain.duel(duel_id)
    story = net.story(duel_id)
    assert (duel.origin, duel.a, duel.b) == (origin.address, victim, challenger), story
    assert not {origin.address, accomplice.address} & set(duel.judges_of(1)), story
    assert duel.outcome is DuelOutcome.B_WON, story  # judged on the answers (B's is longer), not voided
    assert all(compared(net, duel_id, judge) for judge in set(duel.judges_of(1))), story
    assert net.chain.balances(accomplice.address).total_wei == 0  # the accomplice got nothing


def test_a3_moves_after_the_seed_block_change_neither_the_challenger_nor_the_panel(
    network: Network, attacker: Attacker
) -> None:
    net = network
    # The attacker runs the origin and the executor A (a coalition that would like a friendly challenger and
    # panel). Only it holds the request, so the real challenger cannot answer before the attacker lets it.
    origin = attacker.identity("a3-origin", [MODEL], stake_wei=PARAMS.min_stake_wei, deposit_wei=6 * ETH)
    executor = attacker.identity("a3-executor", [MODEL], stake_wei=PARAMS.min_stake_wei)
    # Zero-stake fillers so that the fresh identity's leaf is the first of a new power of two: registering
    # it grows the tree's covered subtree in the middle of the draw's epoch.
    leaves = net.chain.leaf_count()
    fillers = [attacker.identity(f"a3-filler-{i}", [JUDGE_MODEL]) for i in range((1 << (leaves - 1).bit_length())
                                                                                  - leaves)]
    work = attacker.self_dealt(origin, executor, "name three rivers of europe", "no.")
    with attacker.gate(origin, executor) as release:
        duel_id = origin.client.open_duel(work.work, work.salt).duel_id
        assert duel_id is not None
        for me in (origin, executor):  # what they serve once released: the request, and A's answer
            attacker.role(me).evidence[duel_id] = EvidencePieces(duel_id, request_bytes("chat", work.request),
                                                                 work.text)
        seed = net.chain.duel(duel_id).seed_block
        wait_past(net, seed, duel_id)  # the seed block's hash is known: the draw can be computed
        before_b = net.chain.challenger_of(duel_id)
        assert before_b is not None
        before_seats = simulated_panel(net, duel_id, before_b)
        weight = net.chain.total_weight()

        moves = [origin.client.stake(1), origin.client.stake(5 * ETH)]  # re-stake: 1 wei, and more
        fresh = attacker.identity("a3-fresh", [JUDGE_MODEL], stake_wei=20 * ETH)  # more than all honest stake
        fresh_node = net.chain.node(fresh.address)
        assert fresh_node is not None and fresh_node.leaf == leaves + len(fillers)  # first leaf of a power of 2
        moves.append(fresh.client.update_node(fresh.pubkey, fresh.endpoint, [JUDGE_MODEL, MODEL]))  # adds the model
        assert net.chain.total_weight() == weight + 1 + 5 * ETH + 20 * ETH  # the live tree moved
        assert net.chain.challenger_of(duel_id) == before_b
        assert simulated_panel(net, duel_id, before_b) == before_seats
        last_move = max(m.block_number for m in moves)
        release.set()
        net.wait("the challenger's answer", lambda: net.chain.duel(duel_id).status is not DuelStatus.AWAITING_ANSWER,
                 duel_id=duel_id)
    attacker.leave(origin, executor, fresh, *fillers)
    answered = event_block(net, duel_id, "DuelAnswered")
    assert seed < last_move < answered and answered // PARAMS.epoch_blocks == seed // PARAMS.epoch_blocks
    net.wait("the duel to settle", settled(net, duel_id), timeout_s=180, duel_id=duel_id)
    duel = net.chain.duel(duel_id)
    story = net.story(duel_id)
    assert duel.b == before_b and duel.judges_of(1) == before_seats, story  # exactly what it was before
    assert fresh.address not in {duel.b, *duel.judges_of(1)}, story  # its stake was not there when the epoch began
    assert duel.a == executor.address and duel.outcome is DuelOutcome.B_WON, story
    # (seats exclude nobody: the attacker's staked origin or executor may hold one, and stay silent)
    assert all(compared(net, duel_id, judge) for judge in set(duel.judges_of(1)) & set(net.addresses)), story


@pytest.mark.parametrize("withholds", ["goes away", "stalls"])
def test_a5_an_origin_that_withholds_everything_cannot_void_its_duel(
    network: Network, attacker: Attacker, withholds: str
) -> None:
    """The origin serves neither the request nor A's answer to anyone: nothing listens at its endpoint, or
    (worse for whoever asks) its endpoint accepts every evidence request and never answers it."""
    net = network
    victim, challenger = net.addresses[VICTIM], net.addresses[CHALLENGER]
    endpoint = attacker.dead_endpoint if withholds == "goes away" else None
    origin = attacker.identity("a5-origin", [MODEL], deposit_wei=ETH, endpoint=endpoint)
    attacker.wait_known(origin, VICTIM)
    work = attacker.delegate(origin, VICTIM, "how many legs has a spider", wants_duel=True)
    with attacker.gate(origin):  # (held until the duel is over: only matters when it stalls)
        duel_id = origin.client.open_duel(work.work, work.salt).duel_id
        assert duel_id is not None
        before = net.balances()
        net.wait("the duel to settle", settled(net, duel_id), timeout_s=180, duel_id=duel_id)
    duel = net.chain.duel(duel_id)
    story = net.story(duel_id)
    seats = duel.judges_of(1)
    assert (duel.a, duel.b) == (victim, challenger), story
    assert duel.outcome is DuelOutcome.B_WON, story  # decided, not voided
    assert list(duel.votes_of(1)) == [Vote.B] * len(seats), story
    assert slashes(net, duel_id) == [(victim, PARAMS.duel_bond_wei, SlashReason.LOST_DUEL)], story
    # The nodes ask every holder of a missing piece at once and stop waiting once they have it all, so who
    # met the withholding origin first is a race; someone did.
    if withholds == "stalls":
        assert attacker.server.asked_by(PATH_EVIDENCE, origin.address), story
    else:
        assert any(f"evidence of duel {duel_id} from {origin.address}" in net.logs[net.addresses.index(who)].read_text()
                   for who in {challenger, *seats}), story
    after = net.balances()
    for judge in set(seats):  # (seats exclude nobody: the victim or the challenger may hold some)
        assert compared(net, duel_id, judge), story  # yet it had the request and both answers
        assert after[judge].credit_wei > before[judge].credit_wei, judge  # paid for its seats


def test_a6_an_executor_that_leaves_and_unstakes_at_once_is_still_dueled_and_slashed(
    network: Network, attacker: Attacker
) -> None:
    net = network
    stake = 5 * PARAMS.min_stake_wei
    executor = attacker.identity("a6-executor", [MODEL], stake_wei=stake)
    unstaked: list[int] = []

    def leave_at_once() -> None:
        """Its answer is signed: it goes away, leaves and unstakes everything, then hands the answer over."""
        attacker.role(executor).gone = True
        executor.client.leave()
        unstaked.append(executor.client.request_unstake(stake).block_number)

    role = attacker.role(executor)
    role.executes, role.before_reply = "no.", leave_at_once  # a short answer: the judges prefer the longer one
    attacker.wait_known(executor, ORIGIN)  # (the origin retries for a while until it sees its stake too)

    body = net.ask("what is two plus two", MODEL, node=ORIGIN)
    assert body["wwwserve"]["executor"] == executor.address  # the user was served by the attacker
    [unbond_block] = unstaked
    with pytest.raises(StillUnbondingError):
        executor.client.withdraw_stake()
    node = net.chain.node(executor.address)
    assert node is not None and not node.active

    text = body["choices"][0]["message"]["content"]
    # A3's self-dealt duel is over the same answer "no.": look for this executor's.
    net.wait("the duel to open", lambda: net.duel_over(text, executor.address) is not None)
    duel_id = net.duel_over(text, executor.address).id
    duel = net.chain.duel(duel_id)
    assert (duel.origin, duel.a) == (net.addresses[ORIGIN], executor.address)
    assert event_block(net, duel_id, "DuelOpened") > unbond_block  # opened over an executor already gone
    held = net.chain.balances(executor.address)
    assert (held.active_stake_wei, held.unbonding_stake_wei, held.bonded_wei) == (0, stake, PARAMS.duel_bond_wei)
    net.wait("the judges", lambda: net.chain.duel(duel_id).status is DuelStatus.JUDGING, duel_id=duel_id)
    with pytest.raises(StillUnbondingError):  # the duel is open: its bond cannot leave
        executor.client.withdraw_stake()
    assert net.chain.reserved(executor.address) == PARAMS.duel_bond_wei

    net.wait("the duel to settle", settled(net, duel_id), timeout_s=180, duel_id=duel_id)
    duel = net.chain.duel(duel_id)
    story = net.story(duel_id)
    assert duel.outcome is DuelOutcome.B_WON and duel.b in net.addresses[VICTIM:CHALLENGER + 1], story
    assert slashes(net, duel_id) == [(executor.address, PARAMS.duel_bond_wei, SlashReason.LOST_DUEL)], story
    left = net.chain.balances(executor.address)
    assert (left.unbonding_stake_wei, left.bonded_wei) == (stake - PARAMS.duel_bond_wei, 0)

    span = net.chain.duel_span_blocks()
    assert net.w3.eth.block_number < unbond_block + span
    with net.mining_paused():  # exact blocks from here
        end_s = net.chain.unbonding_end(executor.address)
        net.wait("the unbonding period", lambda: time.time() > end_s + 1, timeout_s=PARAMS.unbonding_period_s + 30)
        net.mine_to(unbond_block + span - 1)
        with pytest.raises(StillUnbondingError):  # its next block is DUEL_SPAN_BLOCKS after the request
            executor.client.withdraw_stake()
        credit = executor.client.credit(executor.address)
        net.mine_to(unbond_block + span)
        withdrawn = executor.client.withdraw_stake()
    assert withdrawn.block_number == unbond_block + span + 1
    assert withdrawn.event("StakeWithdrawn").args["amount"] == stake - PARAMS.duel_bond_wei  # never the bond
    assert executor.client.credit(executor.address) == credit + stake - PARAMS.duel_bond_wei

