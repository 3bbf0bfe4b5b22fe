"""The conformance suite's one fixture: `subject`, a ready backend of each kind (backend_subjects.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from backend_subjects import KINDS, Subject, fake_subject, local_subject, openai_subject, vllm_subject


@pytest.fixture(scope="module", params=KINDS)
def subject(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Subject]:
    """A ready backend of each kind, shared by the module's tests of that kind."""
    kind: str = request.param
    if kind == "fake":
        builder = fake_subject()
    elif kind == "openai":
        builder = openai_subject()
    elif kind == "local":
        builder = local_subject()
    else:
        builder = vllm_subject(tmp_path_factory.mktemp("vllm-logs"))
    with builder as ready:
        yield ready
