"""Run a node: build its backends from the settings, resolve who it is, and serve the app with uvicorn.

`run_node(settings)` is what `wwwserve node run` calls. Every startup problem a user can fix (a missing
wallet, an unreachable chain, an unreadable identity key, a backend kind this version lacks) raises
`NodeStartupError` or `SettingsError` with one clear line, before anything listens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

import nacl.exceptions
import nacl.signing
import uvicorn

from wwwserve.errors import WWWServeError
from wwwserve.ledger.identity import load_or_create_identity
from wwwserve.node.backends.base import Backend
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.node.backends.openai_compat import OpenAIBackend
from wwwserve.node.extensions import FeatureFactory
from wwwserve.node.logs import LogFormat, configure_logging
from wwwserve.node.settings import NodeSettings, SettingsError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from wwwserve.node.managers.communication import CommunicationManager
    from wwwserve.node.managers.ledger import LedgerManager

CHAIN_PROBE_TIMEOUT_S = 3.0

logger = logging.getLogger(__name__)


class NodeStartupError(WWWServeError):
    """The node cannot start; the message says why and what to do, in one line."""


def build_backends(settings: NodeSettings) -> list[Backend]:
    """The backends of `settings.backend.kind`; raises SettingsError for a kind this version lacks."""
    backend = settings.backend
    if backend.kind == "fake":
        fake = backend.fake
        return [FakeBackend(list(backend.models), latency_s=fake.latency_s, tokens_per_s=fake.tokens_per_s,
                            capacity=fake.capacity, words=fake.words, judge_rule=fake.judge_rule,
                            random_words=fake.random_words)]
    if backend.kind == "local":
        from wwwserve.node.backends.local import LocalModelUnavailableError, build_local_backend

        try:
            return [build_local_backend(settings)]
        except LocalModelUnavailableError as exc:
            raise NodeStartupError(str(exc)) from None
    if backend.kind == "vllm":
        from wwwserve.node.backends.vllm import build_vllm_backend

        return [build_vllm_backend(settings)]
    if backend.kind == "openai":
        openai = backend.openai
        if openai.base_url is None:  # the settings validator already requires it; keeps mypy honest
            raise SettingsError(["backend.openai.base_url: required when backend.kind is 'openai'"])
        api_key = openai.api_key.get_secret_value() if openai.api_key is not None else None
        return [OpenAIBackend(str(openai.base_url), models=list(backend.models), api_key=api_key,
                              timeout_s=settings.server.request_timeout_s,
                              metrics_ttl_s=backend.metrics_interval_s)]
    raise SettingsError([f"backend.kind: unknown kind {backend.kind!r}"])


def node_address(settings: NodeSettings) -> str:
    """The node's on-chain id: the address of the operator wallet `settings.identity.wallet`."""
    from wwwserve.ledger.errors import LedgerError
    from wwwserve.ledger.wallet import wallet_info

    name = settings.identity.wallet
    if not name:
        raise NodeStartupError("no operator wallet: pass --wallet NAME (or --set identity.wallet=NAME); "
                               "create one with `wwwserve wallet new NAME`")
    try:
        return wallet_info(name).address
    except (LedgerError, FileNotFoundError) as exc:
        raise NodeStartupError(f"operator wallet {name!r}: {exc}") from None


def operator_account(settings: NodeSettings) -> LocalAccount | None:
    """The operator wallet's key, for the node's own transactions and fee vouchers.

    Decrypted with `WWWSERVE_PASSWORD`; without it the node still serves its own users but cannot pay
    peers, claim what it earned, sign work attestations (so it takes no delegations) or take part in
    duels, which is logged once at start.
    """
    from wwwserve.ledger.errors import LedgerError
    from wwwserve.ledger.wallet import PASSWORD_ENV, load_wallet

    name = settings.identity.wallet
    if not name:
        return None
    if not os.environ.get(PASSWORD_ENV):
        logger.warning("%s is not set: wallet %r stays locked, so this node will not pay peers for delegated "
                       "requests, claim the fees it earns, take delegations (it cannot sign work) or take part "
                       "in duels", PASSWORD_ENV, name)
        return None
    try:
        return load_wallet(name)
    except (LedgerError, OSError) as exc:
        raise NodeStartupError(f"operator wallet {name!r}: {exc}") from None


def identity_key(settings: NodeSettings) -> nacl.signing.SigningKey:
    """The ed25519 key that signs results.

    An explicit key_path must exist. Otherwise the named identity is used, created on first use; when
    key_name was not set explicitly it defaults to the wallet's name, the key `wwwserve node register`
    created and registered on-chain for that wallet.
    """
    ident = settings.identity
    if ident.key_path is not None:
        path = ident.key_path
        try:
            return nacl.signing.SigningKey(bytes.fromhex(path.read_text().strip()))
        except OSError as exc:
            raise NodeStartupError(f"identity.key_path {path}: cannot be read: {exc.strerror or exc}") from None
        except (ValueError, nacl.exceptions.CryptoError):
            raise NodeStartupError(f"identity.key_path {path}: not a hex ed25519 seed of 32 bytes") from None
    name = ident.key_name
    if "key_name" not in ident.model_fields_set and ident.wallet:
        name = ident.wallet
    try:
        return load_or_create_identity(name)
    except (OSError, ValueError, nacl.exceptions.CryptoError) as exc:
        raise NodeStartupError(f"identity key {name!r}: cannot be loaded: {exc}") from None


def chain_id(settings: NodeSettings) -> int:
    """The chain id served at settings.chain.rpc_url; NodeStartupError if nothing answers there."""
    from wwwserve.ledger.chain import chain_id_at

    url = str(settings.chain.rpc_url)
    found = chain_id_at(url, timeout_s=CHAIN_PROBE_TIMEOUT_S)
    if found is None:
        raise NodeStartupError(f"chain unreachable at {url}: start a devnet (`wwwserve devnet up`) "
                               "or set chain.rpc_url")
    return found


def build_network(
    settings: NodeSettings,
    chain: int,
    address: str,
    key: nacl.signing.SigningKey,
    account: LocalAccount | None,
) -> tuple[LedgerManager, CommunicationManager]:
    """The Ledger manager (registry, stakes, vouchers from the chain) and the Communication manager."""
    from wwwserve.ledger.errors import LedgerError
    from wwwserve.ledger.params import DEVNET_CHAIN_IDS
    from wwwserve.node.managers.communication import CommunicationManager
    from wwwserve.node.managers.ledger import LedgerManager

    try:
        ledger = LedgerManager.from_settings(settings, chain_id=chain, my_address=address, account=account)
    except (LedgerError, OSError, ValueError) as exc:
        raise NodeStartupError(f"cannot read the network's ledger: {exc} (is the contract deployed? "
                               "`wwwserve devnet up` deploys it; or set chain.contract_address)") from None
    peers = settings.peers
    communication = CommunicationManager(
        my_address=address,
        chain_id=chain,
        signing_key=key,
        directory=ledger,
        probe_timeout_s=peers.probe_timeout_s,
        delegate_timeout_s=peers.delegate_timeout_s,
        first_output_timeout_s=peers.first_output_timeout_s,
        stream_idle_timeout_s=peers.stream_idle_timeout_s,
        ban_initial_s=peers.ban_initial_s,
        ban_max_s=peers.ban_max_s,
        liveness_interval_s=peers.discovery_interval_s,
        envelope_window_s=peers.envelope_window_s,
        voucher_attempts=peers.voucher_attempts,
        allow_private_endpoints=(chain in DEVNET_CHAIN_IDS if peers.allow_private_endpoints is None
                                 else peers.allow_private_endpoints),
    )
    return ledger, communication


class _QuietServer(uvicorn.Server):
    """uvicorn's server, minus re-raising the stop signal after a graceful shutdown.

    uvicorn re-raises SIGINT/SIGTERM once it has drained, which would turn a clean stop into a
    KeyboardInterrupt or a death by signal; the node treats a stop signal as a normal exit (status 0).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


DEFAULT_RECURSION_LIMIT = 1000  # CPython's own


def run_node(settings: NodeSettings, *, log_level: str = "info", log_format: LogFormat = "text",
             features: Sequence[FeatureFactory] = ()) -> None:
    """Resolve the node's address, key and chain, then serve until SIGINT/SIGTERM (graceful shutdown).
    `features` plug into the app (`node.extensions`): `wwwserve node run` passes the duel feature.
    `log_format` "json" writes one JSON object per log line, uvicorn's included (`node.logs`)."""
    from wwwserve.node.app import create_app

    # The node's own messages (model loading, peers banned, transactions sent) next to uvicorn's.
    configure_logging(log_level, log_format)
    backends = build_backends(settings)  # first: a settings problem is reported before any I/O
    address = node_address(settings)
    key = identity_key(settings)
    chain = chain_id(settings)
    account = operator_account(settings)
    ledger, communication = build_network(settings, chain, address, key, account)
    app = create_app(settings, backends, key, address, chain, ledger=ledger, communication=communication,
                     features=features)
    from wwwserve.node.serving import ConnectionLimits, protocol_class

    limits = ConnectionLimits(settings.server.header_timeout_s, settings.server.max_connections_per_client)
    config = uvicorn.Config(app, host=settings.server.host, port=settings.server.port, log_level=log_level,
                            lifespan="on", timeout_graceful_shutdown=10, access_log=settings.server.access_log,
                            # JSON lines: uvicorn's loggers propagate to the root handler instead of their own.
                            log_config=None if log_format == "json" else uvicorn.config.LOGGING_CONFIG,
                            http=protocol_class(limits),  # header deadline, per-client cap (slowloris)
                            # No X-Forwarded-* rewriting: the node never uses the client address, and it
                            # is one middleware less per request.
                            proxy_headers=False)
    server = _QuietServer(config)
    # Importing eth_keyfile (py_ecc) raised Python's recursion limit to 100,000: past the C stack, where a
    # deep recursion is a segfault, not a RecursionError. Input from strangers is depth-checked before
    # parsing (ledger.safejson); this keeps any other deep recursion a catchable error.
    sys.setrecursionlimit(min(sys.getrecursionlimit(), DEFAULT_RECURSION_LIMIT))
    reset: list[str] = []
    if settings.chain.on_reset == "exit":

        def stop_on_reset(reason: str) -> None:
            reset.append(reason)
            server.should_exit = True  # a graceful stop: requests in flight finish

        ledger.on_reset = stop_on_reset
    server.run()
    if reset:
        raise NodeStartupError(f"the chain was reset ({reset[0]}); stopped because chain.on_reset = 'exit' "
                               "(restart the node to index the new chain)")
    if not server.started:
        # uvicorn logs the cause (port taken, bad host) and returns instead of raising.
        raise NodeStartupError(f"could not listen on {settings.server.host}:{settings.server.port} "
                               "(see the log above: is the port taken?)")
