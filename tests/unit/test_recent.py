"""The node's recent-request log (node.recent): bounded, newest first, counting every request ever logged."""

from __future__ import annotations

import time

import pytest

from wwwserve.node.recent import RecentRequests


def log_one(log: RecentRequests, n: int) -> None:
    log.record(request_id=f"req-{n}", started_s=time.time(), model="m", kind="chat", source="user",
               route=["0xA", "0xB"], executor="0xB", status=200, stream=False, signature_checked=True)


def test_keeps_the_newest_records_newest_first_and_counts_all() -> None:
    log = RecentRequests(capacity=3)
    for n in range(5):
        log_one(log, n)
    assert log.count == 5
    assert [e["id"] for e in log.entries()] == ["req-4", "req-3", "req-2"]
    assert [e["id"] for e in log.entries(limit=1)] == ["req-4"]
    assert log.entries(limit=0) == []


def test_a_record_is_plain_json_with_the_route_as_a_list() -> None:
    log = RecentRequests()
    log_one(log, 0)
    [entry] = log.entries()
    assert entry["route"] == ["0xA", "0xB"] and entry["executor"] == "0xB"
    assert isinstance(entry["latency_ms"], int) and entry["latency_ms"] >= 0


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_capacity_and_limit_are_refused(bad: int) -> None:
    with pytest.raises(ValueError):
        RecentRequests(capacity=bad)
    if bad < 0:
        with pytest.raises(ValueError):
            RecentRequests().entries(limit=bad)
