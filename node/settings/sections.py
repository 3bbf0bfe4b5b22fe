"""The sections of the node's settings besides [backend]: identity, chain, server, policy, peers, judge."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from wwwserve.ledger.identity import identity_path
from wwwserve.ledger.params import WEI_PER_CREDIT
from wwwserve.node.policy import DEFAULT_POLICY_PATH, PolicyConfig
from wwwserve.node.settings.checks import (
    MIB,
    Address,
    ApiKeys,
    CorsOrigin,
    DatabaseUrl,
    HttpUrl,
    Name,
    Port,
    PositiveSeconds,
    Section,
    problem,
    raise_problems,
)

DEFAULT_RPC_URL = "http://127.0.0.1:8545"

_POLICY_PATH_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})


class IdentitySettings(Section):
    """Who the node is: the operator wallet that signs transactions and the ed25519 key that signs results."""

    wallet: Name | None = Field(
        default=None,
        description="Operator wallet: keystore name in <WWWSERVE_HOME>/wallets (password from WWWSERVE_PASSWORD).",
    )
    key_name: Name = Field(
        default="node", description="Name of the ed25519 result-signing key in <WWWSERVE_HOME>/identities."
    )
    key_path: Path | None = Field(
        default=None, description="Explicit path of the ed25519 seed file (hex); overrides key_name."
    )

    def key_file(self, home: Path | None = None) -> Path:
        """Where the ed25519 seed lives: key_path if given, else the named identity under `home`."""
        return self.key_path if self.key_path is not None else identity_path(self.key_name, home)


class ChainSettings(Section):
    """The chain the node registers, stakes and settles on."""

    rpc_url: HttpUrl = Field(default=DEFAULT_RPC_URL, description="JSON-RPC URL of the chain.")
    contract_address: Address | None = Field(
        default=None, description="WWWServe contract address; unset: read <WWWSERVE_HOME>/deployments/<chain_id>.json."
    )
    index_db_url: DatabaseUrl | None = Field(
        default=None, description="SQLAlchemy URL of the event index; unset: SQLite under <WWWSERVE_HOME>/indexes."
    )
    poll_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="Seconds between polls of the chain for new events."
    )
    voucher_claim_interval_s: PositiveSeconds = Field(
        default=30.0, description="Seconds between on-chain claims of the fee vouchers this node has earned."
    )
    on_reset: Literal["wait", "exit"] = Field(
        default="wait", description="When the chain is reset (a restarted devnet): 'wait' serves locally and "
        "re-indexes once the contract is back; 'exit' stops the node with a one-line error (a supervisor restarts it)."
    )


class ServerSettings(Section):
    """The HTTP server: the user API (OpenAI-compatible) and the peer API share it."""

    host: str = Field(default="127.0.0.1", min_length=1, description="Interface to listen on.")
    port: Port = Field(default=8000, description="TCP port to listen on.")
    public_url: HttpUrl | None = Field(
        default=None, description="Endpoint registered on-chain for peers and users; unset: http://<host>:<port>."
    )
    api_keys: ApiKeys = Field(
        default_factory=list, description="Bearer keys accepted from users; empty: the user API is open."
    )
    max_body_bytes: int = Field(
        default=MIB, ge=1024, description="Largest request body accepted (bytes); larger answers 413 unread."
    )
    header_timeout_s: PositiveSeconds = Field(
        default=10.0, description="A connection must complete a request's headers this long after it opened (or "
        "after its next request began), else it is closed (slowloris)."
    )
    body_timeout_s: PositiveSeconds = Field(
        default=30.0, description="A request body must have arrived this long after its headers, else 408."
    )
    max_connections_per_client: int = Field(
        default=256, ge=1, description="Open connections from one address beyond this are closed on arrival "
        "(loopback exempt: local peers share it)."
    )
    max_concurrent_requests: int = Field(
        default=256, ge=1, description="Requests in flight at once (user + peer); beyond it answers 429/503."
    )
    request_timeout_s: PositiveSeconds = Field(
        default=600.0, description="Most time one user request may take end to end (reference: 600 s)."
    )
    access_log: bool = Field(
        default=False, description="Log one line per HTTP request (costly at thousands of requests per second)."
    )
    cors_origins: list[CorsOrigin] = Field(
        default_factory=list, description="Browser origins allowed by CORS ('*' for any); empty: CORS off."
    )

    @model_validator(mode="after")
    def _reachable_endpoint(self) -> ServerSettings:
        # A wildcard listen address is not an address peers can dial, so it must not reach the chain.
        if self.public_url is None and self.host in _WILDCARD_HOSTS:
            raise_problems(
                "ServerSettings",
                [problem("public_url", f"required when host is the wildcard {self.host!r}: peers cannot dial it",
                          None)],
            )
        return self

    @property
    def endpoint_url(self) -> str:
        """The URL registered on-chain: public_url, or http://host:port (IPv6 hosts bracketed)."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"http://{host}:{self.port}"


class PolicySettings(PolicyConfig):
    """The [policy] section: every knob of `PolicyConfig`, plus which policy class to build and its seed."""

    policy_class: str = Field(
        default=DEFAULT_POLICY_PATH,
        description="Policy class as 'package.module:ClassName', built as cls(config, rng).",
    )
    rng_seed: int | None = Field(
        default=None, description="Seed of the policy's random generator; unset: seeded from the OS."
    )

    @model_validator(mode="after")
    def _class_path_shape(self) -> PolicySettings:
        # Only the shape is checked here; importing user code belongs to load_policy at start-up.
        if not _POLICY_PATH_RE.match(self.policy_class):
            raise_problems(
                "PolicySettings",
                [problem("policy_class", "must look like 'package.module:ClassName'", self.policy_class)],
            )
        return self

    def to_config(self) -> PolicyConfig:
        """The plain `PolicyConfig` the policy is constructed with."""
        return PolicyConfig(**self.model_dump(include=set(PolicyConfig.model_fields)))


class PeerSettings(Section):
    """Talking to other nodes: probes, delegation, bans, discovery, signed envelopes."""

    probe_timeout_s: PositiveSeconds = Field(default=2.0, description="Most time to wait for a probe answer.")
    delegate_timeout_s: PositiveSeconds = Field(
        default=600.0, description="Most time a delegated request may take at a peer before it counts as failed."
    )
    first_output_timeout_s: PositiveSeconds = Field(
        default=30.0, description="T1: a delegated request with no output this long after it was sent is abandoned, "
        "the peer counted as failed, and the request re-dispatched (nothing reached the user yet)."
    )
    stream_idle_timeout_s: PositiveSeconds = Field(
        default=30.0, description="T2: a delegated request silent this long after its first output is abandoned and "
        "the peer counted as failed: a whole answer is re-dispatched (the user has seen nothing yet), a stream "
        "ends with an error event (its text cannot be taken back)."
    )
    ban_initial_s: PositiveSeconds = Field(default=5.0, description="First ban of a failing peer.")
    ban_max_s: PositiveSeconds = Field(
        default=300.0, description="Longest ban; each consecutive failure doubles the ban up to this."
    )
    discovery_interval_s: PositiveSeconds = Field(
        default=10.0, description="Seconds between liveness rounds: `GET /health` of every registered peer; one "
        "that does not answer 200 is banned (with backoff), one that does has its failures forgotten. (The peer "
        "list itself follows the chain's event index, polled every `chain.poll_interval_s`.)"
    )
    envelope_window_s: float = Field(
        default=30.0, gt=0, le=3600, description="Accepted clock skew/age of a signed peer envelope."
    )
    fee_wei: int = Field(
        default=WEI_PER_CREDIT, ge=0, description="Fee the origin pays the executor per delegated request (wei)."
    )
    max_hops: int = Field(
        default=3, ge=1, le=16, description="Longest route a request may take (origin excluded) before it must run."
    )
    no_peer_wait_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest a request for a model this node does not serve waits "
        "for a peer to take it before the user gets 503 overloaded."
    )
    max_redispatches: int = Field(
        default=8, ge=1, le=64, description="Peers one request may be sent to after earlier ones failed it, "
        "before the user gets 504 upstream_timeout."
    )
    fee_flush_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="Longest the fees owed to a peer wait before one cumulative voucher "
        "pays them (sooner once 16 are owed to it); keep it well under what credit_limit_fees allows a peer."
    )
    voucher_attempts: int = Field(
        default=3, ge=1, le=10, description="Tries to deliver a fee voucher to an unreachable peer (0.5 s, then "
        "doubling, between them); an undelivered voucher is sent again with the next one (they are cumulative)."
    )
    rate_limit_per_s: float = Field(
        default=1000.0, gt=0, description="Peer messages a second taken from one sender at one address (bursts of "
        "twice that); beyond it 429, before the signature is checked."
    )
    credit_limit_fees: int = Field(
        default=64, ge=1, description="Fees a sending node may owe this one beyond its vouchers before its "
        "delegations are refused (402) until it pays (node.billing)."
    )
    allow_private_endpoints: bool | None = Field(
        default=None,
        description="Connect to peers whose endpoints are loopback or private addresses (never link-local: "
        "cloud metadata). Unset: only on a devnet (chain id 31337 or 1337). docs/security.md.",
    )

    @model_validator(mode="after")
    def _ban_bounds(self) -> PeerSettings:
        if self.ban_max_s < self.ban_initial_s:
            raise_problems(
                "PeerSettings",
                [problem("ban_max_s", f"must be >= ban_initial_s ({self.ban_initial_s})", self.ban_max_s)],
            )
        return self


class JudgeSettings(Section):
    """Duels and judging (docs/duels.md). Whether a delegated request becomes a duel is `policy.p_inspect`."""

    enabled: bool = Field(
        default=True,
        description="Take part in duels: open duels as an origin, keep and serve the evidence of this node's "
        "work, answer as the drawn challenger, judge the rounds it holds seats in, appeal. Off: a node still "
        "drawn as challenger or judge loses its bond or pays the silent-seat penalty.",
    )
    model: str | None = Field(
        default=None, min_length=1,
        description="The model to judge with: one this node serves, or (with base_url) one of that endpoint; "
        "unset: the first one served.",
    )
    base_url: HttpUrl | None = Field(
        default=None,
        description="An OpenAI-compatible API to judge with instead of this node's own backend (a different, "
        "stronger model than the one served); needs judge.model.",
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer key of judge.base_url, if it needs one.")
    max_tokens: int = Field(
        default=16, ge=1, le=32_768,
        description="Most tokens the judge model may answer with, per order (raise it for a model that "
        "reasons before its verdict).",
    )
    poll_interval_s: PositiveSeconds = Field(default=1.0, description="Seconds between looks at open duels.")
    settle_grace_blocks: int = Field(
        default=2, ge=0, le=10_000,
        description="Blocks after a duel can be settled before a judge or duelist settles one its origin left "
        "unsettled.",
    )
    appeal: Literal["split", "never", "always"] = Field(
        default="split",
        description="When a duelist that lost the first round appeals (it pays the appeal fee from its credit): "
        "'split' when that round's revealed A/B votes were not unanimous, 'always', or 'never'.",
    )

    @model_validator(mode="after")
    def _endpoint_names_its_model(self) -> JudgeSettings:
        if self.base_url is not None and self.model is None:
            raise_problems(
                "JudgeSettings", [problem("model", "must name the model to ask when judge.base_url is set", None)]
            )
        return self
