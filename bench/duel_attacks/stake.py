"""How stake is placed: grinding the judge panel (A3) and splitting one stake into Sybil identities (A4)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from duel_attacks.common import (
    CREDIT,
    EPOCH,
    GRIND_TRIES,
    STAKE,
    Cell,
    drive,
    field_nodes,
    new_chain,
    origin_of,
    per_seed,
    play,
    verdict,
)
from duel_attacks.stats import Stat, batch_stat, wilson
from wwwserve.sim.duels import (
    DuelChain,
    DuelResult,
    DuelRun,
    colluding,
    run_duel,
)

# ---- A3: panel grinding -------------------------------------------------------------------------------------


def _binomial_two_of_three(chain: DuelChain, run: DuelRun, coalition: Sequence[str]) -> float:
    """P(>= 2 of 3 seats) for the coalition in this duel: its share of the frozen stake the seats are drawn
    from (the epoch of the seed block; with replacement, nobody excluded: the duel's own parties may sit)."""
    model = chain.model
    tree = model.sortition
    epoch = model.duels[run.duel_id].seed_block // EPOCH
    f = sum(tree.frozen_leaf_weight(model.nodes[c].leaf, epoch) for c in coalition) / tree.frozen_total(epoch)
    return 3 * f * f * (1 - f) + f**3


def _a3_run(seeds: Sequence[int], accuracy: float, n: int, warmup: int, grind: bool, collude: bool,
            names: dict[str, str]) -> tuple[list[tuple[DuelResult, float]], list[int]]:
    def run(seed: int) -> list[tuple[DuelResult, float]]:
        chain = new_chain("a3", seed, accuracy)
        honest = field_nodes(chain, 9)
        coalition = [f"c{k}" for k in range(3)]
        addresses = [chain.add(c, stake_wei=STAKE // 3, credit_wei=CREDIT).address for c in coalition]
        names.update(zip(coalition, addresses, strict=True))
        if collude:
            for c in addresses:
                chain.members[c].judge = colluding(addresses)
        model = chain.model

        def one(i: int) -> tuple[DuelResult, float] | None:
            origin = origin_of(chain, i, honest)
            a = chain.route(origin, f"d{i}")
            assert a is not None
            duel = DuelRun(chain, origin, a, f"d{i}", auto_answer=False)
            if not duel.open():
                return None
            chain.mine_to(duel.due_block)
            duel.advance()  # B drawn; it has the request and is about to answer, which draws the panel
            p2 = math.nan
            if not duel.done:
                p2 = _binomial_two_of_three(chain, duel, addresses)
                if grind:  # re-roll: every stake change re-rolled the panel at fcc8a9e
                    for k in range(GRIND_TRIES):
                        model.stake(addresses[k % 3], 1, block_number=chain.block)
                duel.b_answered()
            result = drive(chain, duel)
            for c in addresses:  # take the grinding wei out again (unbonding: out of the draw tree)
                extra = model.active_stake.get(c, 0) - STAKE // 3
                if extra > 0:
                    model.request_unstake(c, extra, now_s=chain.now_s, block_number=chain.block)
            return result, p2

        return play(chain, one, n, warmup)

    return per_seed(seeds, run)


def job_a3(seeds: Sequence[int], accuracy: float, n: int, warmup: int) -> list[Cell]:
    names: dict[str, str] = {}
    attack, groups = _a3_run(seeds, accuracy, n, warmup, True, True, names)
    base, _ = _a3_run(seeds, accuracy, n, warmup, False, True, names)  # the same coalition, no re-rolls
    honest, _ = _a3_run(seeds, accuracy, n, warmup, False, False, names)
    coalition = [names[f"c{k}"] for k in range(3)]
    judged = [(r, p) for r, p in attack if r.rounds]
    two = wilson(sum(r.seats_of(coalition) >= 2 for r, _ in judged), len(judged))
    expected = math.fsum(p for _, p in judged) / len(judged)
    same = sum(ra.rounds[0].seats == rb.rounds[0].seats for (ra, _), (rb, _) in zip(attack, base, strict=True)
               if ra.rounds and rb.rounds)
    both = sum(1 for (ra, _), (rb, _) in zip(attack, base, strict=True) if ra.rounds and rb.rounds)
    profit = batch_stat([r.group_change_wei(coalition) for r, _ in attack], groups)
    gain = batch_stat([ra.group_change_wei(coalition) - rb.group_change_wei(coalition)
                       for (ra, _), (rb, _) in zip(attack, base, strict=True)], groups)
    # everyone else, with the re-rolls vs. without (the reserve counts as nobody's)
    victim = batch_stat([-(ra.group_change_wei(coalition) - rb.group_change_wei(coalition))
                         - ra.reserve_change_wei + rb.reserve_change_wei
                         for (ra, _), (rb, _) in zip(attack, base, strict=True)], groups)
    collusion = batch_stat([ra.group_change_wei(coalition) - rh.group_change_wei(coalition)
                            for (ra, _), (rh, _) in zip(attack, honest, strict=True)], groups)
    details = [
        f"coalition (10 % of stake, 3 identities, {GRIND_TRIES} re-stakes per duel after the seed block) held >= 2 "
        f"of 3 seats in {two.pct()} of {len(judged)} panels; binomial at its frozen stake share: "
        f"{100 * expected:.1f} %; at fcc8a9e: 100 %",
        f"round-1 panels identical with and without the re-rolls in {same} of {both} duels",
        f"what the re-rolls gained the coalition (paired with the same coalition not re-rolling): {gain.cr()} cr "
        f"per duel; its change per duel {profit.cr()} cr, of which voting for its own members rather than "
        f"honestly gained {collusion.cr()} cr (collusion: see A8)",
    ]
    ok = two.lo <= expected <= two.hi and same == both and gain.hi <= 0
    return [Cell("A3", "panel grinding: 10 % stake, 3 identities", accuracy, len(attack), gain, victim,
                 f">=2/3 seats {two.pct()} (binomial {100 * expected:.1f} %)", verdict(ok),
                 "the coalition cannot change its panels: share of >= 2-seat panels matches the binomial "
                 "(within the interval), re-rolls change no panel, and they gain nothing (upper bound <= 0)", details,
                 {"two_of_three": asdict(two), "binomial": expected, "identical_panels": [same, both],
                  "coalition_change_wei": asdict(profit), "collusion_gain_wei": asdict(collusion)})]


# ---- A4: Sybil splitting ------------------------------------------------------------------------------------


def _a4_run(seeds: Sequence[int], accuracy: float, n: int, warmup: int, k: int) -> dict[str, Any]:
    obs: list[tuple[int, bool, int, bool, int]] = []
    groups: list[int] = []
    delegated = [0, 0]
    for seed in seeds:
        chain = new_chain("a4", seed, accuracy)
        honest = field_nodes(chain, 9)
        ops = [chain.add(f"op{j}", stake_wei=STAKE // k, quality=0.39, credit_wei=CREDIT).address for j in range(k)]
        for op in ops:
            chain.members[op].judge = colluding(ops)  # its identities vote for each other when they sit

        def one(i: int, chain: DuelChain = chain, honest: list[str] = honest,
                ops: list[str] = ops) -> tuple[int, bool, int, bool, int]:
            origin = origin_of(chain, i, honest)
            a = chain.route(origin, f"d{i}")
            assert a is not None
            r = run_duel(chain, origin, a, f"d{i}")
            own = r.a in ops or r.b in ops
            return r.group_change_wei(ops), r.a in ops, r.seats_of(ops), own, r.seats_of(ops) if own else 0

        got = play(chain, one, n, warmup)
        obs += got
        groups.append(len(got))
        rng = random.Random(f"{chain.seed}/routing")
        peers = chain.peers()
        for j in range(4 * n):  # the origin's PoS routing over the same stakes, more requests
            first = chain.route(rng.choice(honest), f"route-{j}", peers)
            delegated[0] += first in ops
            delegated[1] += 1
    own_duels = [o for o in obs if o[3]]
    return {
        "profit": batch_stat([o[0] for o in obs], groups),
        "a_share": wilson(sum(o[1] for o in obs), len(obs)),
        "delegated": wilson(*delegated),
        "seats": batch_stat([o[2] for o in obs], groups),
        "own_seats": wilson(sum(o[4] > 0 for o in own_duels), len(own_duels)),
        "n": len(obs),
    }


def job_a4(seeds: Sequence[int], accuracy: float, n: int, warmup: int) -> list[Cell]:
    runs = {k: _a4_run(seeds, accuracy, n, warmup, k) for k in (1, 2, 10)}
    ref = runs[1]
    cells = []
    for k, m in runs.items():
        same = {key: m[key].overlaps(ref[key]) for key in ("profit", "delegated", "seats")}
        details = [
            f"operator: win rate 0.39, 1,000 credits of stake in {k} identit{'y' if k == 1 else 'ies'} (10 % of "
            "stake); its identities vote for each other when one sits on another's panel",
            f"profit per duel {m['profit'].cr()} cr; share of delegations (node.routing, {m['delegated'].n} "
            f"requests) {m['delegated'].pct()}; A in {m['a_share'].pct()} of duels; seats per panel "
            f"{m['seats'].num()} (of 3); sits on its own duels' panels in {m['own_seats'].pct()} of them",
        ]
        if k > 1:
            diff = m["seats"].mean - ref["seats"].mean
            half = math.hypot(m["seats"].half, ref["seats"].half)
            details.append("overlaps k = 1: " + ", ".join(f"{key} {'yes' if v else 'NO'}" for key, v in same.items())
                           + f"; seats per panel minus k = 1's: {diff:+.3f} ± {half:.3f} (seats exclude nobody, "
                           "the dueling identity included, so they follow stake however it is split)")
        cells.append(Cell("A4", f"one stake split into k = {k}", accuracy, m["n"], m["profit"], None,
                          f"deleg. {m['delegated'].pct()}; seats {m['seats'].num()}",
                          verdict(all(same.values())) if k > 1 else "INFO",
                          "profit, delegated share and seats per panel overlap k = 1's intervals", details,
                          {key: asdict(v) if isinstance(v, Stat) else v for key, v in m.items()}))
    return cells
