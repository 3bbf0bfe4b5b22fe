"""`wwwserve duel ...`: duels recorded on-chain, read through a local index of the contract's events (one
duel in detail, the newest duels, the leaderboard)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from wwwserve.cli.common import console, contract_address, fmt_wei, index_start_block, options_of, web3_for
from wwwserve.judge.outcomes import duel_explanation
from wwwserve.ledger.records import Vote

duel_app = typer.Typer(help="Inspect duels recorded on-chain (read through a local index of the contract's events).",
                       no_args_is_help=True)


VOTE_WORDS: dict[Vote | None, str] = {
    None: "not revealed", Vote.A: "A", Vote.B: "B", Vote.ABSTAIN: "abstain", Vote.NO_EVIDENCE: "no evidence",
}


def _duel_index(ctx: typer.Context) -> Any:
    """A local index of the contract's events, brought up to the chain head.

    Duel ids are hashes, not a counter, and the contract keeps no hashes in storage, so duels are
    listed from their events. The index lives in WWWSERVE_HOME (one file per chain and contract) and
    only reads new blocks on later calls; a restarted devnet (same address, other blocks) rebuilds it.
    """
    from wwwserve.ledger.home import wwwserve_home
    from wwwserve.ledger.indexer import Indexer, IndexerReorgError

    opts = options_of(ctx)
    w3 = web3_for(opts.rpc_url)
    address = contract_address(w3, opts)
    chain_id = int(w3.eth.chain_id)
    start = index_start_block(chain_id, address)
    path = wwwserve_home() / "cli" / f"index-{chain_id}-{address}.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)

    def open_synced() -> Any:
        index = Indexer(w3, address, f"sqlite:///{path}", start_block=start)
        with console.status("reading the contract's events ..."):
            index.sync()
        return index

    try:
        return open_synced()
    except IndexerReorgError:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return open_synced()


def _votes_summary(seats: Any) -> str:
    """`A/B/abstain/no evidence/silent` seat counts of one round ("-" before its seats are drawn)."""
    if not seats:
        return "-"
    counts = [sum(s.vote == v for s in seats) for v in (1, 2, 3, 4, None)]
    return "/".join(map(str, counts))


@duel_app.command("show")
def duel_show(ctx: typer.Context, duel_id: Annotated[int, typer.Argument(min=0, help="Duel id.")]) -> None:
    """Who duelled over which request, the answers, both rounds' seats and votes, the outcome, what moved,
    and why a duel was cancelled or voided, with its transactions."""
    from wwwserve.ledger.errors import UnknownDuelError
    from wwwserve.ledger.work import model_hash

    index = _duel_index(ctx)
    d = index.duel(duel_id)
    if d is None:
        raise UnknownDuelError("Duel: unknown duel", f"duel show {duel_id}")
    # the contract keys models by the hash of their name; any registered node's list names it
    names = {"0x" + model_hash(m).hex(): m for n in index.nodes(active_only=False) for m in n.models}
    title = f"duel {d.id}: {d.status.replace('_', ' ')}" + (f", {d.outcome.replace('_', ' ')}" if d.outcome else "")
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value")
    rows: list[tuple[str, object]] = [
        ("origin", d.origin), ("A (executor)", d.a), ("B (challenger)", d.b or "not drawn yet"),
        ("request id", d.request_id), ("request hash", d.request_hash),
        ("model", f"{names.get(d.model_hash, 'unknown name')} ({d.model_hash})"),
        ("answer A hash", d.answer_a_hash),
        ("answer B hash", d.answer_b_hash or ("could not get the request" if d.publish_deadline else "not yet")),
        ("bond (each duelist)", fmt_wei(d.bond_wei)), ("escrow", fmt_wei(d.escrow_wei)),
        ("opened in block", d.opened_block), ("seed block", d.seed_block),
        ("answer deadline block", d.answer_deadline),
    ]
    if d.publish_deadline is not None:
        rows.append(("publish deadline block", d.publish_deadline))
    if d.request is not None:
        rows.append(("request (published on-chain)", f"{len(d.request)} bytes"))
    for k, v in rows:
        table.add_row(k, str(v))
    windows = {1: (d.commit_end_r1, d.reveal_end_r1), 2: (d.commit_end_r2, d.reveal_end_r2)}
    for round_, (commit_end, reveal_end) in windows.items():
        if round_ > d.round:
            continue
        if round_ == 2:
            table.add_row("appeal", f"by {d.appellant}, deposit {fmt_wei(d.appeal_deposit_wei or 0)}")
        table.add_row(f"round {round_}", f"commit until block {commit_end}, reveal until block {reveal_end}")
        seats = d.seats(round_)
        if not seats:
            table.add_row(f"round {round_} seats", "not drawn yet")
        for seat in seats:
            vote = VOTE_WORDS.get(seat.vote, str(seat.vote))
            if seat.vote is None and seat.commitment is None:
                vote = "no commitment"
            table.add_row(f"round {round_} seat {seat.position + 1}", f"{seat.judge}: {vote}")
    if d.status == "settled":
        table.add_row("verdict", f"{(d.outcome or '').replace('_', ' ')} in round {d.final_round}, "
                                 f"seats A {d.votes_a} / B {d.votes_b}")
        table.add_row("stake moved", fmt_wei(d.stake_moved_wei or 0))
    why = duel_explanation(d)
    if why:
        table.add_row("why", why)
    console.print(table)
    moves = index.stake_moves(d.id)
    if moves:
        money = Table(title="value moved")
        for column in ("node", "what", "amount"):
            money.add_column(column, justify="right" if column == "amount" else "left")
        for m in moves:
            money.add_row(m.node, m.kind.replace("_", " "), fmt_wei(m.amount_wei))
        console.print(money)
    txs = Table(title="transactions")
    for column in ("block", "event", "transaction"):
        txs.add_column(column)
    for e in index.duel_events(d.id):
        txs.add_row(str(e.block_number), e.name, e.tx_hash)
    console.print(txs)


@duel_app.command("list")
def duel_list(
    ctx: typer.Context,
    last: Annotated[int, typer.Option("--last", min=1, help="How many of the newest duels.")] = 20,
) -> None:
    """The newest duels: who duelled, their state, the outcome and each round's votes."""
    index = _duel_index(ctx)
    duels = index.duels(limit=last)
    if not duels:
        console.print("no duel has been opened yet")
        return
    table = Table(title=f"duels (newest {len(duels)}); votes are seats for A/B/abstain/no evidence/silent")
    for column in ("id", "state", "outcome", "A", "B", "round 1", "round 2"):
        table.add_column(column)
    for d in duels:
        outcome = (d.outcome or d.cancel_reason or "-").replace("_", " ")
        table.add_row(str(d.id), d.status.replace("_", " "), outcome, d.a, d.b or "-",
                      _votes_summary(d.seats(1)), _votes_summary(d.seats(2)))
    console.print(table)


@duel_app.command("leaderboard")
def duel_leaderboard(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the standings as JSON.")] = False,
) -> None:
    """Rank nodes by their settled duels (A against B): wins, losses, ties, win rate, Bradley–Terry score
    with 95 % CI."""
    from wwwserve.judge.leaderboard import bradley_terry, results_from_duels

    index = _duel_index(ctx)
    results = results_from_duels(d for d in index.duels(limit=None) if d.status == "settled")
    standings = bradley_terry(results)
    if as_json:
        typer.echo(json.dumps([{**dataclasses.asdict(s), "win_rate": s.win_rate} for s in standings], indent=2))
        return
    if not standings:
        console.print("no settled duel yet: nothing to rank")
        return
    table = Table(title=f"leaderboard ({len(results)} settled duels; score = Bradley–Terry log-strength, "
                        "0 = network mean)")
    for column in ("rank", "node", "duels", "won", "lost", "tied", "win rate", "score", "95 % CI"):
        table.add_column(column)
    for rank, s in enumerate(standings, start=1):
        rate = "-" if s.win_rate is None else f"{s.win_rate:.2f}"
        table.add_row(str(rank), s.node, str(s.duels), str(s.wins), str(s.losses), str(s.ties), rate,
                      f"{s.score:+.2f}", f"[{s.ci_low:+.2f}, {s.ci_high:+.2f}]")
    console.print(table)
