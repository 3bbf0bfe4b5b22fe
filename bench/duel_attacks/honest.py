"""The honest network (H), the user served by the primary executor (A10), and the simulator's quality scenario."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from duel_attacks.common import (
    CR,
    CREDIT,
    STAKE,
    Cell,
    new_chain,
    origin_of,
    per_seed,
    play,
    verdict,
)
from duel_attacks.stats import Stat, batch_stat, ratio_stat, wilson
from wwwserve.sim.duels import (
    DuelResult,
    run_duel,
)

MIXED = [0.57] * 3 + [0.53] * 3 + [0.39] * 3  # the paper's classes (Qwen3-8B / 4B / 0.6B), three nodes each


def job_honest(seeds: Sequence[int], accuracy: float, n: int, warmup: int, mixed: bool) -> list[Cell]:
    qualities = MIXED if mixed else [0.5] * 10
    nodes: list[str] = []

    def run(seed: int) -> list[DuelResult]:
        chain = new_chain("honest-mixed" if mixed else "honest", seed, accuracy)
        nodes[:] = [chain.add(f"h{i}", stake_wei=STAKE, quality=q, credit_wei=CREDIT).address
                    for i, q in enumerate(qualities)]

        def one(i: int) -> DuelResult:
            origin = origin_of(chain, i, nodes)
            a = chain.route(origin, f"d{i}")
            assert a is not None
            return run_duel(chain, origin, a, f"d{i}")

        return play(chain, one, n, warmup)

    results, groups = per_seed(seeds, run)
    decided = [r for r in results if r.outcome in ("a_won", "b_won")]
    better = wilson(sum(r.outcome == f"{r.better}_won" for r in decided), len(decided))
    other = {o: sum(r.outcome == o for r in results) for o in ("tie", "voided", "cancelled")}
    per_node = {a: batch_stat([r.change_wei(a) for r in results], groups) for a in nodes}
    pooled = batch_stat([math.fsum(r.change_wei(a) for a in nodes) / len(nodes) for r in results], groups)
    pooled_stake = batch_stat([math.fsum(r.delta.get(a, [0, 0])[0] for a in nodes) / len(nodes) for r in results],
                              groups)
    roles = {
        "as origin": batch_stat([r.change_wei(r.origin) for r in results], groups),
        "as A": batch_stat([r.change_wei(r.a) for r in results], groups),
        "as B": batch_stat([r.change_wei(r.b) if r.b else 0 for r in results], groups),
        "as judge (per seat)": ratio_stat(
            [math.fsum(r.change_wei(j) for j in set(s for rd in r.rounds for s in rd.seats)) for r in results],
            [sum(len(rd.seats) for rd in r.rounds) for r in results], groups),
    }
    details = [
        f"better answer won {better.pct()} of {len(decided)} decided duels; "
        + ", ".join(f"{k} {v}" for k, v in other.items()),
        f"an honest node's change per duel (network mean, nodes exchangeable): stake + credit {pooled.cr()} cr, "
        f"stake alone {pooled_stake.cr()} cr (stake only ever falls: every payment goes to credit)",
        "by role: " + "; ".join(f"{k} {v.cr()} cr" for k, v in roles.items()),
    ]
    data: dict[str, Any] = {"better_share": asdict(better), "outcomes": other,
                            "honest_node_change_wei": asdict(pooled),
                            "honest_node_stake_change_wei": asdict(pooled_stake),
                            "roles_wei": {k: asdict(v) for k, v in roles.items()}}
    if mixed:
        classes: dict[str, Stat] = {}
        for q in sorted(set(qualities), reverse=True):
            members = [a for a, qq in zip(nodes, qualities, strict=True) if qq == q]
            classes[str(q)] = batch_stat([math.fsum(r.change_wei(a) for a in members) / len(members)
                                          for r in results], groups)
        details.append("per node of each quality class, stake + credit per duel: "
                       + "; ".join(f"q {k}: {v.cr()} cr" for k, v in classes.items())
                       + " (worse answers lose: the incentive, not a fault)")
        data["classes_wei"] = {k: asdict(v) for k, v in classes.items()}
        return [Cell("H", "mixed qualities 0.57/0.53/0.39", accuracy, len(results), None, None,
                     f"better won {better.pct()}", "INFO", "informative (quality classes)", details, data)]
    lo, hi = min(per_node.values(), key=lambda s: s.mean), max(per_node.values(), key=lambda s: s.mean)
    details.append(f"per node, stake + credit per duel: lowest {lo.cr()} cr, highest {hi.cr()} cr")
    data["per_node_wei"] = {a: asdict(s) for a, s in per_node.items()}
    ok = better.lo >= 0.85 and pooled.hi >= 0
    return [Cell("H", "honest network, equal quality", accuracy, len(results), None, None,
                 f"better won {better.pct()}; node Δ {pooled.cr()} cr",
                 verdict(ok) if accuracy >= 0.9 else "INFO",
                 "better answer wins >= 85 % (lower bound) and an honest node's stake + credit change "
                 "is not below 0 (upper bound >= 0), at accuracy 0.9", details, data)]


# ---- A10 ------------------------------------------------------------------------------------------------------


def job_a10() -> list[Cell]:
    return [Cell("A10", "user served by the primary executor", 0.0, 0, None, None, "by construction (not measured)",
                 "INFO", "the user gets A's answer; B's copy is only for judging",
                 ["the node serves the user A's answer alone: tests/unit/test_delegation.py::"
                  "test_the_user_is_served_by_the_first_executor_alone_and_duels_open_only_when_drawn (one executor "
                  "runs each request; no race); the simulator runs B's copy after the draw and never returns it to "
                  "a user: tests/unit/test_sim.py::test_duels_follow_the_contracts_lifecycle_and_quality_earns_credit. "
                  "Nothing here is a Monte Carlo: a served-by-primary share would be 100 % by construction."])]


# ---- the quality scenario of the simulator -------------------------------------------------------------------------


def quality_over_seeds(seeds: Iterable[int]) -> dict[str, Any]:
    """`wwwserve sim run quality` over several seeds: per class win rate and stake + credit change."""
    from wwwserve.sim.report import run_quality

    rows = [run_quality(seed) for seed in seeds]
    out: dict[str, Any] = {"seeds": len(rows), "classes": {}}
    for c in rows[0]["classes"]:
        rates = [r["classes"][c]["win_rate"] for r in rows]
        gains = [(r["classes"][c]["stake_plus_credit_wei"][1] - r["classes"][c]["stake_plus_credit_wei"][0]) / CR
                 for r in rows]
        stakes = [r["classes"][c].get("stake_change_wei", 0) / CR for r in rows]
        out["classes"][c] = {"input": rows[0]["classes"][c]["input_win_rate"],
                             "win_rate": batch_stat(rates, [len(rates)]),
                             "gain_credits": batch_stat(gains, [len(gains)]),
                             "stake_change_credits": batch_stat(stakes, [len(stakes)])}
    out["duels"] = batch_stat([r["duels"] for r in rows], [len(rows)])
    out["cancelled"] = batch_stat([r["outcomes"].get("cancelled", 0) for r in rows], [len(rows)])
    out["reduced_bond"] = batch_stat([r.get("reduced_bond", 0) for r in rows], [len(rows)])
    out["refused"] = batch_stat([sum(r.get("refused", {}).values()) for r in rows], [len(rows)])
    out["origin_credits"] = batch_stat([r.get("origin_change_wei", 0) / CR for r in rows], [len(rows)])
    return out
