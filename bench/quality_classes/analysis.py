"""The incentives benchmark's figures, from the duels and balance samples of a run (pure: unit-tested)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quality_classes.common import CLASSES, RANK


@dataclass(frozen=True)
class DuelRow:
    """A settled duel, with its duelists' classes."""

    duel_id: int
    class_a: str
    class_b: str
    outcome: str  # "A", "B", "tie", "voided", "open"
    votes: tuple[str, ...]  # per judge: "A", "B", "abstain", "no_evidence", "none"
    judge_classes: tuple[str, ...]


def win_rates(duels: Sequence[DuelRow]) -> dict[str, dict[str, int | float | None]]:
    """Per class: duels fought, won, lost, tied, and win rate over decided duels (None when none)."""
    out: dict[str, dict[str, int | float | None]] = {}
    for cls in CLASSES:
        fought = won = lost = tied = 0
        for d in duels:
            if d.outcome not in ("A", "B", "tie"):
                continue
            for slot, mine in (("A", d.class_a), ("B", d.class_b)):
                if mine != cls:
                    continue
                fought += 1
                if d.outcome == "tie":
                    tied += 1
                elif d.outcome == slot:
                    won += 1
                else:
                    lost += 1
        decided = won + lost
        out[cls] = {"duels": fought, "won": won, "lost": lost, "tied": tied,
                    "win_rate": won / decided if decided else None}
    return out


def pair_table(duels: Sequence[DuelRow]) -> dict[str, Counter[str]]:
    """For each class pair "x-y" (x better by intent): outcomes "better", "worse", "tie", same-class duels apart."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for d in duels:
        if d.outcome not in ("A", "B", "tie"):
            continue
        if d.class_a == d.class_b:
            table[f"{d.class_a}-{d.class_b}"][d.outcome if d.outcome == "tie" else "decided"] += 1
            continue
        better_slot = "A" if RANK[d.class_a] < RANK[d.class_b] else "B"
        key = "-".join(sorted((d.class_a, d.class_b), key=RANK.__getitem__))
        table[key]["tie" if d.outcome == "tie" else ("better" if d.outcome == better_slot else "worse")] += 1
    return dict(table)


def judge_agreement(duels: Sequence[DuelRow]) -> dict[str, Counter[str]]:
    """Per judge class: its revealed votes on duels between different classes, as agree/disagree/abstain/
    no_evidence/silent against the intended ordering."""
    out: dict[str, Counter[str]] = {cls: Counter() for cls in CLASSES}  # and "j" for judge-only nodes
    for d in duels:
        if d.class_a == d.class_b or d.outcome == "open":
            continue
        better = "A" if RANK[d.class_a] < RANK[d.class_b] else "B"
        for vote, judge_cls in zip(d.votes, d.judge_classes, strict=True):
            counts = out.setdefault(judge_cls, Counter())
            if vote in ("A", "B"):
                counts["agree" if vote == better else "disagree"] += 1
            else:
                counts["silent" if vote == "none" else vote] += 1
    return out


def class_shares(balances: Mapping[str, tuple[int, int]], classes: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """Per class: (share of all stake, share of all stake + credit), over the executors in `classes`."""
    stake = {cls: 0 for cls in CLASSES}
    total = {cls: 0 for cls in CLASSES}
    for node, cls in classes.items():
        s, c = balances[node]
        stake[cls] += s
        total[cls] += s + c
    all_stake, all_total = sum(stake.values()), sum(total.values())
    return {cls: (stake[cls] / all_stake if all_stake else 0.0, total[cls] / all_total if all_total else 0.0)
            for cls in CLASSES}


def shares_over_time(rows: Sequence[Mapping[str, Any]], classes: Mapping[str, str]) -> list[dict[str, float]]:
    """Per sample time: each class's stake share and stake+credit share."""
    by_t: dict[float, dict[str, tuple[int, int]]] = defaultdict(dict)
    for row in rows:
        by_t[float(row["t_s"])][row["node"]] = (int(row["stake_wei"]), int(row["credit_wei"]))
    series = []
    for t in sorted(by_t):
        if set(by_t[t]) != set(classes):
            continue
        shares = class_shares(by_t[t], classes)
        point = {"t_s": t}
        for cls, (stake, total) in shares.items():
            point[f"stake_{cls}"], point[f"total_{cls}"] = stake, total
        series.append(point)
    return series


def duel_events(metrics_text: str) -> dict[str, int]:
    """The origin's `wwwserve_duels_total` counters by event, from its /metrics page."""
    events = {}
    for line in metrics_text.splitlines():
        match = re.match(r'wwwserve_duels_total\{event="([^"]+)"\}\s+([0-9.e+]+)', line)
        if match:
            events[match.group(1)] = int(float(match.group(2)))
    return events

