"""The Policy manager turns live backend load into the policy's snapshot."""

from __future__ import annotations

import random

import pytest

from wwwserve.node.backends.base import BackendLoad
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.node.managers.model import ModelManager
from wwwserve.node.managers.policy import PolicyManager
from wwwserve.node.managers.request import RequestManager
from wwwserve.node.policy import Action, DefaultPolicy, PolicyConfig

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class LoadedBackend(FakeBackend):
    """A fake whose load is set by the test."""

    def __init__(self, load: BackendLoad) -> None:
        super().__init__(["m"])
        self.fixed = load

    async def load(self) -> BackendLoad:
        return self.fixed


def manager(load: BackendLoad, credit_wei: int = 10**18) -> PolicyManager:
    models = ModelManager([LoadedBackend(load)])
    requests = RequestManager(models, max_concurrent=8, queue_limit=8)
    policy = DefaultPolicy(PolicyConfig(offload_frequency=1.0, auto_stake=False), random.Random(1))
    return PolicyManager(policy, models, requests, credit_wei=lambda: credit_wei)


async def test_low_kv_runs_here() -> None:
    pm = manager(BackendLoad(kv_usage=0.1))
    snapshot = await pm.snapshot()
    assert snapshot.models["m"].kv_usage == 0.1 and snapshot.credit_wei == 10**18
    assert (await pm.decide("m")).action == Action.LOCAL


async def test_an_engine_that_queues_counts_as_full() -> None:
    # A one-at-a-time engine (the local backend) reports little KV in use but a queue: it is busy.
    pm = manager(BackendLoad(kv_usage=0.05, running=1, waiting=2))
    assert (await pm.snapshot()).models["m"].kv_usage == 1.0
    assert (await pm.decide("m")).action == Action.OFFLOAD
    assert await pm.accept_probe("m") is False


async def test_no_credit_never_offloads() -> None:
    pm = manager(BackendLoad(kv_usage=0.9), credit_wei=0)
    assert (await pm.decide("m")).action in (Action.QUEUE, Action.RETRY)
    assert await pm.accept_probe("other-model") is False
