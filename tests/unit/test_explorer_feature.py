"""The explorer plugged into a node (explorer.feature): mounted at /explorer, 503 until the node's index is open,
built over the index once it is, and without the request log on a node that asks its users for a key."""

from __future__ import annotations

from typing import Any

import httpx
import nacl.signing
import pytest

from wwwserve.explorer.feature import EXPLORER_PATH, ExplorerFeature, LazyExplorer, explorer_feature
from wwwserve.node.app import create_app
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.node.extensions import NodeContext
from wwwserve.node.managers.ledger import LedgerManagerError
from wwwserve.node.settings import load_settings

NODE = "0x" + "ab" * 20
KEY = nacl.signing.SigningKey(b"\x07" * 32)

pytestmark = pytest.mark.anyio


class UnstartedLedger:
    """A Ledger manager before `start()`: its index is not open."""

    contract_address = "0x" + "cd" * 20
    chain_id = 31337

    @property
    def indexer(self) -> Any:
        raise LedgerManagerError("the Ledger manager is not started")


def context(ledger: Any, **server: Any) -> NodeContext:
    settings = load_settings(overrides={"backend": {"kind": "fake", "models": ["m"]}, "server": server})
    state = create_app(settings, [FakeBackend(["m"])], KEY, NODE, 31337).state
    return NodeContext(settings, NODE, ledger, None, state.policy_manager.policy, state.request_manager,
                       state.model_manager, [], state.metrics, state.recent)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_node_without_a_chain_serves_no_explorer() -> None:
    assert explorer_feature(context(None)) is None


async def test_before_the_index_is_open_the_explorer_answers_503_in_the_error_shape() -> None:
    app = LazyExplorer(lambda: None, recent=None, node_address=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
        resp = await client.get("/api/totals")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert resp.json()["error"]["code"] == "index_not_ready"


async def test_the_node_mounts_it_at_explorer_and_answers_503_until_its_ledger_starts() -> None:
    feature = explorer_feature(context(UnstartedLedger()))
    assert isinstance(feature, ExplorerFeature) and set(feature.mounts()) == {EXPLORER_PATH}
    app = create_app(load_settings(overrides={"backend": {"kind": "fake", "models": ["m"]}}),
                     [FakeBackend(["m"])], KEY, NODE, 31337, features=[lambda ctx: feature])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
        resp = await client.get("/explorer/api/totals")
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "index_not_ready"


def test_a_node_with_user_api_keys_keeps_its_request_log_out_of_the_explorer() -> None:
    open_node = explorer_feature(context(UnstartedLedger()))
    private = explorer_feature(context(UnstartedLedger(), api_keys=["sk-secret"]))
    assert open_node is not None and private is not None
    assert open_node.app.recent is not None and private.app.recent is None
