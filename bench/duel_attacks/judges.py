"""Judging: colluding judges (A8) and lazy judges (A9)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from duel_attacks.common import (
    CR,
    CREDIT,
    JUDGE_CALLS,
    STAKE,
    Cell,
    field_nodes,
    new_chain,
    origin_of,
    per_seed,
    play,
    verdict,
)
from duel_attacks.stats import batch_stat, ratio_stat, wilson
from wwwserve.sim.duels import (
    APPEAL_POLICIES,
    JUDGE_STRATEGIES,
    DuelResult,
    colluding,
    run_duel,
)


def _call_price_wei() -> int:
    """A model call priced at the delegation fee a node charges by default (node.settings)."""
    from wwwserve.node.settings import PeerSettings

    return int(PeerSettings.model_fields["fee_wei"].default)


# ---- A8: colluding judges ---------------------------------------------------------------------------------------

A8_FORMS = {
    "own1": "1 identity, votes for itself",
    "own3": "3 identities, vote for each other",
    "bribed3": "3 judge-only identities, vote for an allied executor",
}


def _a8_run(seeds: Sequence[int], accuracy: float, n: int, warmup: int, f: float, form: str, appeal: str,
            collude: bool, names: dict[str, list[str]]) -> tuple[list[DuelResult], list[int]]:
    def run(seed: int) -> list[DuelResult]:
        chain = new_chain(f"a8/{form}/{f}/{appeal}", seed, accuracy)
        honest = field_nodes(chain, 9)
        if form == "bribed3":
            ally = chain.add("ally", stake_wei=STAKE, credit_wei=CREDIT).address
            total = 10 * STAKE * f / (1 - f)
            ids = [chain.add(f"c{k}", stake_wei=int(total / 3), serves=False, credit_wei=CREDIT).address
                   for k in range(3)]
            beneficiaries = [ally]
            names["coalition"] = [*ids, ally]
        else:
            k = 1 if form == "own1" else 3
            total = 9 * STAKE * f / (1 - f)
            ids = [chain.add(f"c{j}", stake_wei=int(total / k), credit_wei=CREDIT).address for j in range(k)]
            beneficiaries = ids
            names["coalition"] = ids
        names["beneficiaries"] = beneficiaries
        if collude:
            for c in ids:
                chain.members[c].judge = colluding(beneficiaries)
        for member in chain.members.values():
            member.appeal = APPEAL_POLICIES[appeal]

        def one(i: int) -> DuelResult:
            origin = origin_of(chain, i, honest)
            a = chain.route(origin, f"d{i}")
            assert a is not None
            return run_duel(chain, origin, a, f"d{i}")

        return play(chain, one, n, warmup)

    return per_seed(seeds, run)


def job_a8(seeds: Sequence[int], accuracy: float, n: int, warmup: int, f: float, form: str,
           appeals: Sequence[str] = ("split", "always")) -> list[Cell]:
    cells = []
    for appeal in appeals:
        names: dict[str, list[str]] = {}
        bad, groups = _a8_run(seeds, accuracy, n, warmup, f, form, appeal, True, names)
        good, _ = _a8_run(seeds, accuracy, n, warmup, f, form, appeal, False, names)
        coalition, beneficiaries = names["coalition"], set(names["beneficiaries"])
        pairs = list(zip(bad, good, strict=True))
        sided_at = {i for i, (b, _) in enumerate(pairs) if (b.a in beneficiaries) != (b.b in beneficiaries)}
        sided = [pairs[i] for i in sorted(sided_at)]
        flips = wilson(sum(b.outcome != g.outcome for b, g in pairs), len(pairs))
        wrong = wilson(sum(g.outcome != f"{g.better}_won" for _, g in pairs), len(pairs))
        flips_sided = wilson(sum(b.outcome != g.outcome for b, g in sided), len(sided))
        wrong_sided = wilson(sum(g.outcome != f"{g.better}_won" for _, g in sided), len(sided))
        wrong_bad = wilson(sum(b.outcome != f"{b.better}_won" for b, _ in pairs), len(pairs))
        gain = batch_stat([b.group_change_wei(coalition) - g.group_change_wei(coalition) for b, g in pairs], groups)
        absolute = batch_stat([b.group_change_wei(coalition) for b, _ in pairs], groups)

        def opponent(r: DuelResult, beneficiaries: set[str] = beneficiaries) -> str:
            return r.b if r.a in beneficiaries else r.a

        victim = batch_stat([(b.change_wei(opponent(b)) - g.change_wei(opponent(g))) if i in sided_at else 0
                             for i, (b, g) in enumerate(pairs)], groups) if sided else None
        appealed = sum(bool(b.appealed_by) for b, _ in sided)
        details = [
            f"coalition: {100 * f:.0f} % of stake, {A8_FORMS[form]}; it has a side in {len(sided)} of {len(pairs)} "
            f"duels; loser's appeal policy: {appeal} ({appealed} appeals in those duels)",
            f"flipped (final verdict differs from the same duel with the coalition judging honestly): {flips.pct()} "
            f"of all duels ({flips_sided.pct()} of the coalition's); honest-only error rate (final verdict against "
            f"the better answer, ties and voids included) {wrong.pct()} ({wrong_sided.pct()} on the coalition's "
            f"duels); with collusion {wrong_bad.pct()}",
            f"colluders' gain vs. judging honestly {gain.cr()} cr per duel (their absolute change {absolute.cr()} cr)",
        ]
        ok = flips.hi <= wrong.mean and gain.hi <= 0
        cells.append(Cell("A8", f"f = {f}, {A8_FORMS[form]}, appeal {appeal}", accuracy, len(pairs), gain, victim,
                          f"flipped {flips.pct()} vs honest err {100 * wrong.mean:.1f} %", verdict(ok),
                          "share of flipped verdicts among all duels (upper bound) <= the honest-only error rate, and "
                          "colluders' gain vs. judging honestly (upper bound) <= 0", details,
                          {"flipped": asdict(flips), "honest_error": asdict(wrong), "wrong_with_collusion":
                           asdict(wrong_bad), "flipped_in_coalition_duels": asdict(flips_sided),
                           "honest_error_in_coalition_duels": asdict(wrong_sided), "sided_duels": len(sided),
                           "absolute_wei": asdict(absolute)}))
    return cells


# ---- A9: lazy judging -------------------------------------------------------------------------------------------


def _a9_run(seeds: Sequence[int], accuracy: float, n: int, warmup: int, served_better: bool,
            strategy: str) -> tuple[list[tuple[int, int, int]], list[int]]:
    def run(seed: int) -> list[tuple[int, int, int]]:
        chain = new_chain("a9-better" if served_better else "a9", seed, accuracy)
        honest = field_nodes(chain, 10)
        total = 10 * STAKE
        top = ""
        if served_better:  # the origin routes to an executor whose answer beats B's as often as judges are right
            top = chain.add("top", stake_wei=STAKE, quality=accuracy, credit_wei=CREDIT).address
            total += STAKE
        s = chain.add("s", stake_wei=total // 9, serves=False, credit_wei=CREDIT,
                      judge=JUDGE_STRATEGIES[strategy]).address  # 10 % of all stake

        def one(i: int) -> tuple[int, int, int]:
            origin = origin_of(chain, i, honest)
            a = top or chain.route(origin, f"d{i}")
            assert a is not None
            r = run_duel(chain, origin, a, f"d{i}")
            seats = sum(rd.seats.count(s) for rd in r.rounds)
            decisions = sum(s in rd.seats for rd in r.rounds)
            return r.change_wei(s), seats, decisions

        return play(chain, one, n, warmup)

    return per_seed(seeds, run)


def job_a9(seeds: Sequence[int], accuracy: float, n: int, warmup: int, served_better: bool) -> list[Cell]:
    call = _call_price_wei()
    runs = {name: _a9_run(seeds, accuracy, n, warmup, served_better, name) for name in JUDGE_STRATEGIES}
    honest_obs, groups = runs["honest"]
    seats = [o[1] for o in honest_obs]
    net = [o[0] - JUDGE_CALLS * call * o[2] for o in honest_obs]
    honest_net = ratio_stat(net, seats, groups)
    honest_gross = ratio_stat([o[0] for o in honest_obs], seats, groups)
    per_seat = {name: ratio_stat([o[0] for o in obs], [o[1] for o in obs], groups) for name, (obs, _) in runs.items()}
    diffs = {}
    for name, (obs, _) in runs.items():
        if name == "honest":
            continue
        assert [o[1] for o in obs] == seats  # same seats in every variant: paired
        diffs[name] = ratio_stat([h - o[0] for h, o in zip(net, obs, strict=True)], seats, groups)
    setting = ("origin routes to an executor better than B as often as judges are right" if served_better
               else "A and B from the same stake-weighted field")
    details = [
        f"a judge with 10 % of stake ({sum(seats)} seats in {len(seats)} duels); {setting}",
        f"honest: {honest_gross.cr()} cr per seat, {honest_net.cr()} cr after its {JUDGE_CALLS} model calls per "
        f"decision priced at the {call // CR}-credit delegation fee each (node.settings fee_wei)",
        "lazy, per seat: " + "; ".join(f"{k} {v.cr()} cr" for k, v in per_seat.items() if k != "honest"),
        "honest (net) minus lazy, paired per seat: " + "; ".join(f"{k} {v.cr()} cr" for k, v in diffs.items()),
    ]
    worst = min(diffs, key=lambda k: diffs[k].lo)
    ok = honest_net.lo > 0 and all(d.lo > 0 for d in diffs.values())
    return [Cell("A9", f"lazy judging; {'served answer better' if served_better else 'field'}", accuracy,
                 len(seats), None, None,
                 f"honest net {honest_net.cr()}/seat; closest lazy: {worst} ({diffs[worst].cr()})", verdict(ok),
                 "honest judging's net earnings per seat > every lazy strategy's (paired lower bound > 0) and > 0",
                 details, {"honest_net_per_seat_wei": asdict(honest_net), "per_seat_wei": {k: asdict(v) for k, v in
                                                                                          per_seat.items()},
                           "honest_minus_lazy_wei": {k: asdict(v) for k, v in diffs.items()}})]
