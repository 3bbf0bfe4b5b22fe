"""What an origin can try: duel a victim against its own identity (A1), choose which duels to open or which
request bytes to publish (A2), withhold evidence (A5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

from eth_utils.crypto import keccak

from duel_attacks.common import (
    CR,
    CREDIT,
    PARAMS,
    STAKE,
    START_BLOCK,
    Cell,
    drive,
    field_nodes,
    forged,
    new_chain,
    per_seed,
    play,
    refuse,
    verdict,
)
from duel_attacks.stats import batch_stat, wilson
from wwwserve.ledger.work import WorkAttestation, request_bytes
from wwwserve.sim.duels import (
    DuelChain,
    DuelResult,
    DuelRun,
    Evidence,
    run_duel,
)

# ---- A1: an origin duels a victim against its own identity --------------------------------------------------


def a1_refusals() -> list[tuple[str, str]]:
    """What the contract says to the ways of naming a node over work it did not attest."""
    chain = DuelChain(PARAMS, "a1-refusals", atomic=True)
    for name in ("h0", "h1", "h2", "v"):
        chain.add(name, stake_wei=STAKE, credit_wei=CREDIT)
    chain.add("att", stake_wei=0, credit_wei=CREDIT)
    chain.add("att-zero", stake_wei=0, credit_wei=CREDIT)
    chain.mine_to(START_BLOCK)
    att = chain.by_name["att"].address
    v = chain.by_name["v"].address
    zero = chain.by_name["att-zero"].address
    out = []
    run = DuelRun(chain, att, v, "forged")
    out.append(("the victim, over work it never signed (signed by the attacker)",
                _open_reason(run, forged(chain, run, "att"))))
    out.append(("the attacker's own zero-stake identity as A", _open_reason(DuelRun(chain, att, zero, "zero"))))
    out.append(("the origin itself as A", _open_reason(DuelRun(chain, att, att, "self"))))
    out.append(("work the origin had not committed to duel (wantsDuel = false)",
                _open_reason(DuelRun(chain, att, v, "uncommitted"), wants_duel=False)))
    first = DuelRun(chain, att, v, "twice")
    work = first.attest()
    first.open(work=work)
    out.append(("the same work a second time", _open_reason(DuelRun(chain, att, v, "twice"), work=work)))
    stale = DuelRun(chain, att, v, "stale")
    old = stale.attest()
    chain.mine_to(chain.block + int(PARAMS.attestation_ttl_s / chain.block_time_s) + 1)
    out.append(("work older than ATTESTATION_TTL", _open_reason(stale, work=old)))
    return out


def _open_reason(run: DuelRun, work: WorkAttestation | None = None, wants_duel: bool = True) -> str:
    return "accepted (!)" if run.open(wants_duel, work) else run.result.refused


def job_a1(seeds: Sequence[int], accuracy: float, n: int, warmup: int) -> list[Cell]:
    names: dict[str, str] = {}

    def run(seed: int) -> list[DuelResult]:
        chain = new_chain("a1", seed, accuracy)
        field_nodes(chain, 9)
        for name, stake in (("v", STAKE), ("att", 0), ("att-b", STAKE)):
            names[name] = chain.add(name, stake_wei=stake, credit_wei=CREDIT).address

        def one(i: int) -> DuelResult:  # the attacker's origin delegates to the victim and duels every answer
            return run_duel(chain, names["att"], names["v"], f"d{i}")

        return play(chain, one, n, warmup)

    results, groups = per_seed(seeds, run)
    attacker = [names["att"], names["att-b"]]
    profit = batch_stat([r.group_change_wei(attacker) for r in results], groups)
    victim = batch_stat([r.change_wei(names["v"]) for r in results], groups)
    drawn = wilson(sum(r.b == names["att-b"] for r in results), len(results))
    share = 1 / 10  # att-b's stake among the stake B is drawn from (9 honest + att-b; never the origin or A)
    refusals = a1_refusals()
    details = [f"B was the attacker's identity in {drawn.pct()} of duels (its stake share: {100 * share:.0f} %): "
               "the origin cannot choose B",
               "refused by the contract: " + "; ".join(f"{what} → '{why}'" for what, why in refusals),
               "the victim's loss is an honest duel's (A at equal quality loses its bond about half the time and "
               "never gains); the attacker pays the escrow for it"]
    ok = profit.hi <= 0 and all(why != "accepted (!)" for _, why in refusals)
    return [Cell("A1", "origin duels victim, own staked identity hoping to be B", accuracy, len(results), profit,
                 victim, f"B = attacker {drawn.pct()}", verdict(ok),
                 "naming a node without its attestation reverts; attacker's profit upper bound <= 0", details,
                 {"refusals": refusals, "b_is_attacker": asdict(drawn)})]


# ---- A2: the origin's choices (selection by omission, sampling parameters) -----------------------------------


def a2_refusals() -> list[tuple[str, str]]:
    chain = DuelChain(PARAMS, "a2-refusals", atomic=True)
    for name in ("h0", "h1", "h2", "h3", "v"):
        chain.add(name, stake_wei=STAKE, credit_wei=CREDIT)
    chain.add("att", stake_wei=0, credit_wei=CREDIT)
    chain.mine_to(START_BLOCK)
    att, v = chain.by_name["att"].address, chain.by_name["v"].address
    out = []
    run = DuelRun(chain, att, v, "other-params")
    work = run.attest()
    short = request_bytes("chat", {"model": chain.model_name, "max_tokens": 1,
                                   "messages": [{"role": "user", "content": "other-params"}]})
    claimed = WorkAttestation(**{**work.__dict__, "request_hash": bytes(keccak(short))})
    out.append(("open over the same answer with other sampling parameters (max_tokens 1) than A signed",
                _open_reason(run, work=claimed)))
    run = DuelRun(chain, att, v, "publish-other")
    run.open()
    chain.mine_to(run.due_block)
    model = chain.model
    b = model.draw_challenger(att, run.duel_id, block_number=chain.block, blockhash=chain.blockhash)
    model.answer_duel(b, run.duel_id, b"\x00" * 32, block_number=chain.block, blockhash=chain.blockhash)
    assert run._work is not None
    out.append(("publish other request bytes (max_tokens 1) for the challenger",
                refuse(chain, lambda: model.publish_request(att, run.duel_id, run._work, run.inspect_salt,  # type: ignore[arg-type]
                                                            short, block_number=chain.block))))
    return out


def _selection_runs(seeds: Sequence[int], accuracy: float, n: int, warmup: int, ally: bool, select: bool,
                    names: dict[str, str]) -> tuple[list[DuelResult], list[int], int]:
    committed = 0

    def run(seed: int) -> list[DuelResult]:
        nonlocal committed
        chain = new_chain("a2-ally" if ally else "a2", seed, accuracy)
        field_nodes(chain, 9)
        target = "ally" if ally else "v"
        for name, stake in ((target, STAKE), ("att", 0)):
            names[name] = chain.add(name, stake_wei=stake, credit_wei=CREDIT).address

        def one(i: int) -> DuelResult | None:
            nonlocal committed
            duel = DuelRun(chain, names["att"], names[target], f"d{i}")
            if i >= warmup:
                committed += 1
            # The origin committed to duel this request before it was answered; now it looks at the answer
            # (its own noisy estimate, as good as a judge) and opens only the duels it likes.
            if select and duel.estimate_a_bad(accuracy) == ally:
                return None
            return drive(chain, duel) if duel.open() else duel.result

        return play(chain, one, n, warmup)

    results, groups = per_seed(seeds, run)
    return results, groups, committed


def job_a2(seeds: Sequence[int], accuracy: float, n: int, warmup: int) -> list[Cell]:
    cells = []
    refusals = a2_refusals()
    for ally in (False, True):
        names: dict[str, str] = {}
        sel, groups, committed = _selection_runs(seeds, accuracy, n, warmup, ally, True, names)
        base, base_groups, _ = _selection_runs(seeds, accuracy, n, warmup, ally, False, names)
        if ally:
            attacker = [names["att"], names["ally"]]
            victim = batch_stat([r.change_wei(r.b) if r.b else 0 for r in sel], groups)
            victim_base = batch_stat([r.change_wei(r.b) if r.b else 0 for r in base], base_groups)
            who = "the drawn challenger B"
        else:
            attacker = [names["att"]]
            victim = batch_stat([r.change_wei(names["v"]) for r in sel], groups)
            victim_base = batch_stat([r.change_wei(names["v"]) for r in base], base_groups)
            who = "the victim A"
        profit = batch_stat([r.group_change_wei(attacker) for r in sel], groups)
        profit_base = batch_stat([r.group_change_wei(attacker) for r in base], base_groups)
        opened = len(sel) / committed
        details = [
            f"opened {len(sel)} of {committed} committed duels ({100 * opened:.0f} %): the origin's estimate at "
            f"accuracy {accuracy}",
            f"{who}'s change per opened duel: {victim.cr()} cr selected, {victim_base.cr()} cr when every committed "
            f"duel is opened; per committed duel {victim.mean * opened / CR:+.2f} cr",
            f"attacker's profit per opened duel {profit.cr()} cr (opening all: {profit_base.cr()} cr); per committed "
            f"duel {profit.mean * opened / CR:+.2f} cr",
        ]
        if not ally:
            details.append("refused: " + "; ".join(f"{what} → '{why}'" for what, why in refusals)
                           + " (B answers the request bytes A signed; judges derive the truncation from them)")
        variant = ("origin + A ally open only A's good-looking answers" if ally
                   else "selection by omission: origin opens only bad-looking answers")
        ok = profit.hi <= 0 and (ally or all(why != "accepted (!)" for _, why in refusals))
        cells.append(Cell("A2", variant, accuracy, len(sel), profit, victim,
                          f"{who.split()[-1]} Δ {victim.cr()} vs {victim_base.cr()} cr", verdict(ok),
                          "attacker's profit upper bound <= 0 (victim's loss reported beside it)", details,
                          {"committed": committed, "opened": len(sel), "victim_all_opened_wei": asdict(victim_base),
                           "attacker_all_opened_wei": asdict(profit_base), "refusals": refusals}))
    return cells


# ---- A5: withholding evidence -----------------------------------------------------------------------------------


A5_MODES = {
    "plays it out": None,
    "withholds the request from B when A's answer looks bad": "b_if_bad",
    "withholds A's answer from the judges when it looks bad": "judges_if_bad",
    "withholds the request from B always": "b_always",
}


def _a5_run(seeds: Sequence[int], accuracy: float, n: int, warmup: int, mode: str | None,
            names: dict[str, str]) -> tuple[list[DuelResult], list[int]]:
    def evidence(run: DuelRun) -> Evidence:
        bad = mode == "b_always" or (mode in ("b_if_bad", "judges_if_bad") and run.estimate_a_bad(accuracy))
        if not bad:
            return Evidence()
        if mode == "judges_if_bad":
            return Evidence(origin_serves_answer_a=False, a_serves_answer_a=False)
        return Evidence(origin_serves_request=False, a_serves_request=False, origin_publishes=False)

    def run(seed: int) -> list[DuelResult]:
        chain = new_chain("a5", seed, accuracy)
        field_nodes(chain, 9)
        for name, stake in (("ally", STAKE), ("att", 0)):
            names[name] = chain.add(name, stake_wei=stake, credit_wei=CREDIT).address

        def one(i: int) -> DuelResult:
            return run_duel(chain, names["att"], names["ally"], f"d{i}", evidence=evidence)

        return play(chain, one, n, warmup)

    return per_seed(seeds, run)


def job_a5(seeds: Sequence[int], accuracy: float, n: int, warmup: int) -> list[Cell]:
    names: dict[str, str] = {}
    runs = {label: _a5_run(seeds, accuracy, n, warmup, mode, names) for label, mode in A5_MODES.items()}
    base, _ = runs["plays it out"]
    cells = []
    for label, (results, groups) in runs.items():
        coalition = [names["att"], names["ally"]]
        profit = batch_stat([r.group_change_wei(coalition) for r in results], groups)
        gain = batch_stat([r.group_change_wei(coalition) - b.group_change_wei(coalition)
                           for r, b in zip(results, base, strict=True)], groups)
        victim = batch_stat([r.change_wei(r.b) if r.b else 0 for r in results], groups)
        judges = batch_stat([math.fsum(r.change_wei(s) for s in {s for rd in r.rounds for s in rd.seats})
                             for r in results], groups)
        outcomes = {o: sum(r.outcome == o for r in results) for o in ("a_won", "b_won", "tie", "voided", "cancelled")}
        details = [
            f"origin + its executor A (coalition): {profit.cr()} cr per duel; vs. playing the same duels out: "
            f"{gain.cr()} cr; vs. not opening them (nothing forces an origin to open): {profit.cr()} cr",
            f"the challenger B: {victim.cr()} cr per duel; the judges together: {judges.cr()} cr; outcomes "
            + ", ".join(f"{k} {v}" for k, v in outcomes.items()),
        ]
        if "request" in label:
            details.append("a withheld request cancels the duel (REQUEST_WITHHELD): B keeps its fee, the rest of "
                           "the escrow goes to the reserve, no judge is drawn (none taxed), no bond moves")
        if "judges" in label:
            details.append("judges who get no answer of A from anyone vote B: A loses its bond")
        cells.append(Cell("A5", f"origin allied with A {label}", accuracy, len(results), profit, victim,
                          f"coalition vs. playing out {gain.cr()} cr", verdict(profit.hi <= 0),
                          "attacker's profit upper bound <= 0 (gain vs. playing out reported beside it)", details,
                          {"gain_vs_playing_out_wei": asdict(gain), "outcomes": outcomes,
                           "judges_wei": asdict(judges)}))
    return cells
