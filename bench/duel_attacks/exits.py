"""Leaving: right after answering (A6), and griefing a node's exit with a late duel (A7)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from eth_utils.crypto import keccak

from duel_attacks.common import (
    CR,
    CREDIT,
    EPOCH,
    PARAMS,
    STAKE,
    START_BLOCK,
    Cell,
    drive,
    field_nodes,
    new_chain,
    origin_of,
    per_seed,
    play,
    refuse,
    verdict,
)
from duel_attacks.stats import batch_stat, wilson
from wwwserve.sim.duels import (
    DuelChain,
    DuelResult,
    DuelRun,
)

# ---- A6: leave right after answering ----------------------------------------------------------------------------


def a6_refusal() -> str:
    chain = DuelChain(PARAMS, "a6-refusal", atomic=True)
    for name in ("h0", "h1", "h2", "h3"):
        chain.add(name, stake_wei=STAKE, credit_wei=CREDIT)
    att = chain.add("att", stake_wei=STAKE, credit_wei=CREDIT).address
    origin = chain.by_name["h0"].address
    chain.mine_to(START_BLOCK)
    run = DuelRun(chain, origin, att, "leave")
    work = run.attest()
    model = chain.model
    model.leave(att, block_number=chain.block)
    model.request_unstake(att, STAKE, now_s=chain.now_s, block_number=chain.block)
    opened = run.open(work=work)
    early = refuse(chain, lambda: model.withdraw_stake(att, now_s=chain.now_s, block_number=chain.block))
    chain.mine_to(chain.block + int(PARAMS.unbonding_period_s / chain.block_time_s) + 1)
    withdrawn = model.withdraw_stake(att, now_s=chain.now_s, block_number=chain.block)
    return (f"after leave() and unstaking everything: openDuel {'accepted' if opened else 'refused'}; "
            f"withdrawStake at once → '{early}'; after the unbonding period, the duel still open, it returns "
            f"{withdrawn // CR:,} of {STAKE // CR:,} credits: the bond stays reserved until the duel ends")


def _a6_run(seeds: Sequence[int], accuracy: float, n: int, warmup: int, leave: bool,
            names: dict[str, str]) -> tuple[list[DuelResult], list[int]]:
    def run(seed: int) -> list[DuelResult]:
        chain = new_chain("a6", seed, accuracy)
        honest = field_nodes(chain, 9)
        # It re-stakes after every duel while the old stake unbonds (each unstake restarts the period): credit for it.
        att = names["att"] = chain.add("att", stake_wei=STAKE, quality=0.39,
                                       credit_wei=CREDIT + (n + warmup) * STAKE).address
        model = chain.model

        def one(i: int) -> DuelResult:
            duel = DuelRun(chain, origin_of(chain, i, honest), att, f"d{i}")
            work = duel.attest()  # A answered and signed ...
            if leave:  # ... and leaves at once, with all its stake
                model.leave(att, block_number=chain.block)
                model.request_unstake(att, model.active_stake[att], now_s=chain.now_s, block_number=chain.block)
            result = drive(chain, duel) if duel.open(work=work) else duel.result
            if leave:  # it comes back later with fresh stake (restore_stakes), as the attacker did
                act, unb, bonded = model._account(att)
                if (unb > 0 and chain.now_s >= model.unbonding_end.get(att, 0) and act + unb > bonded
                        and chain.block > model.unbonding_block.get(att, 0) + PARAMS.duel_span_blocks):
                    model.withdraw_stake(att, now_s=chain.now_s, block_number=chain.block)
                model.register(att, bytes(keccak(text="pubkey/att")), "sim://att", [chain.model_name], "",
                               block_number=chain.block, value_wei=model.registration_value_wei(att))
            return result

        return play(chain, one, n, warmup)

    return per_seed(seeds, run)


def job_a6(seeds: Sequence[int], accuracy: float, n: int, warmup: int) -> list[Cell]:
    names: dict[str, str] = {}
    left, groups = _a6_run(seeds, accuracy, n, warmup, True, names)
    stayed, stay_groups = _a6_run(seeds, accuracy, n, warmup, False, names)
    att = names["att"]
    opened = wilson(sum(r.outcome != "refused" for r in left), len(left))
    profit = batch_stat([r.change_wei(att) for r in left], groups)
    profit_stay = batch_stat([r.change_wei(att) for r in stayed], stay_groups)
    victim = batch_stat([r.change_wei(r.b) if r.b else 0 for r in left], groups)
    details = [
        f"A (win rate 0.39) leaves and unstakes everything right after answering: the origin still opened "
        f"{opened.pct()} of the duels; A's change per duel {profit.cr()} cr (staying: {profit_stay.cr()} cr)",
        a6_refusal(),
    ]
    ok = opened.mean == 1.0 and profit.hi <= 0
    return [Cell("A6", "leave() right after answering", accuracy, len(left), profit, victim,
                 f"opened {opened.pct()}", verdict(ok),
                 "the duel opens anyway (liability outlives leave()) and the leaver's profit upper bound <= 0",
                 details, {"opened": asdict(opened), "staying_wei": asdict(profit_stay)})]


# ---- A7: exit griefing --------------------------------------------------------------------------------------------


def job_a7(seeds: Sequence[int], accuracy: float, n: int, warmup: int) -> list[Cell]:
    obs: list[tuple[DuelResult, int, int]] = []
    groups: list[int] = []
    names: dict[str, str] = {}
    ttl_blocks = int(PARAMS.attestation_ttl_s / 1.0)
    for seed in seeds:
        chain = new_chain("a7", seed, accuracy)
        field_nodes(chain, 9)
        v = names["v"] = chain.add("v", stake_wei=STAKE, credit_wei=CREDIT).address
        g = names["g"] = chain.add("g", stake_wei=0, credit_wei=CREDIT).address
        model = chain.model

        def one(i: int, chain: DuelChain = chain, v: str = v, g: str = g,
                model: Any = model) -> tuple[DuelResult, int, int]:
            t0 = chain.block
            duel = DuelRun(chain, g, v, f"d{i}")
            work = duel.attest()  # v's last work for the griefer ...
            model.request_unstake(v, model.active_stake[v], now_s=chain.now_s, block_number=chain.block)  # ... exit
            normal = max(math.ceil(model.unbonding_end[v] / chain.block_time_s),
                         model.unbonding_block[v] + PARAMS.duel_span_blocks + 1)
            chain.mine_to(t0 + ttl_blocks)  # the griefer opens as late as the attestation allows
            result = drive(chain, duel) if duel.open(work=work) else duel.result
            chain.mine_to(max(chain.block, normal))
            act, unb, bonded = model._account(v)
            if unb > 0 and act + unb > bonded:
                model.withdraw_stake(v, now_s=chain.now_s, block_number=chain.block)
            return result, max(0, result.settled_block - normal), normal - t0

        got = play(chain, one, n, warmup, stride=32 * EPOCH)
        obs += got
        groups.append(len(got))
    profit = batch_stat([r.change_wei(names["g"]) for r, _, _ in obs], groups)
    victim = batch_stat([r.change_wei(names["v"]) for r, _, _ in obs], groups)
    extra = [e for _, e, _ in obs]
    locked = wilson(sum(e > 0 for e in extra), len(extra))
    details = [
        f"the victim unstakes everything right after its last answer; the griefer opens a duel on that work at "
        f"the last moment (ATTESTATION_TTL = {PARAMS.attestation_ttl_s} s): the victim's exit is delayed beyond "
        f"its own unbonding (withdrawable {obs[0][2]} blocks after the request) in {locked.pct()} of duels, "
        f"by at most {max(extra)} blocks, and then only its bond ({PARAMS.duel_bond_wei // CR} credits) is held; at "
        "fcc8a9e 5 credits locked the whole stake for 1,580 blocks",
        f"the griefer pays {profit.cr()} cr per duel; the victim's change {victim.cr()} cr (an honest duel's: A at "
        "equal quality loses its bond about half the time)",
        "nobody can hold a duel open: anyone may draw B (answerDuel draws it too) and settle after each window",
    ]
    ok = profit.hi <= 0
    return [Cell("A7", "exit griefing: open on an exiting node's work", accuracy, len(obs), profit, victim,
                 f"exit delayed in {locked.pct()}, max {max(extra)} blocks", verdict(ok),
                 "attacker's profit upper bound <= 0; a lock holds only the bond, for at most the duel", details,
                 {"extra_lock_blocks_max": max(extra), "delayed": asdict(locked)})]
