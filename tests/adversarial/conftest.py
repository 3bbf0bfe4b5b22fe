"""Fixtures of the attack suite: a fresh pair of contracts per test, driven with the model in
lockstep (`twin`). The harness lives with the contract unit tests (tests/unit/contract_fixtures.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import boa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from contract_fixtures import Twin, deploy, sync_blockhashes


@pytest.fixture(name="twin")
def twin_fixture() -> Iterator[Twin]:
    """A fresh deployment and a fresh model, rolled back after the test."""
    with boa.env.anchor():
        sync_blockhashes()
        yield Twin(deploy())
