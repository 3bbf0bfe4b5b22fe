"""The incentives benchmark's pure parts (bench/quality_classes/): the reference judge's verdicts, win rates,
judge agreement against the intended ordering, and stake shares per class; and that bench/incentives.py loads
and reads its options."""

from __future__ import annotations

import pytest
from bench_scripts import load_bench_script

# bench/incentives.py puts bench/ on sys.path for bench/harness/ and bench/quality_classes/
bi = load_bench_script("incentives.py", "bench_incentives")

from quality_classes import analysis, judge  # noqa: E402  (bench/quality_classes/, on sys.path now)


def test_the_script_reads_its_options() -> None:
    args = bi.parse_args(["--quick", "--judge", "own", "--accuracy", "0"])
    assert (args.requests, args.accuracy, args.rate, args.judge) == (40, 0, 1.0, "own")
    with pytest.raises(SystemExit):
        bi.parse_args(["--judge", "http://127.0.0.1:9/v1"])  # a judge URL needs --judge-model


def test_reference_judge_prefers_real_words_then_length() -> None:
    from wwwserve.judge.prompt import build_prompt

    vocab = judge.vocabulary(["the answer is four because two plus two makes four"])
    honest = "The answer is four, because two plus two makes four."
    cut = "The answer is"
    noise = "qzx vbwk plorf tyj mmxq zzkv ufw"
    assert judge.text_quality(noise, vocab) < judge.text_quality(cut, vocab) < judge.text_quality(honest, vocab)
    for better, worse in ((honest, cut), (honest, noise), (cut, noise)):
        prompts = build_prompt("What is 2+2?", better, worse)
        assert judge.reference_verdict(prompts.in_order, vocab) == "A"
        assert judge.reference_verdict(prompts.swapped, vocab) == "B"
    same = build_prompt("What is 2+2?", honest, honest)
    assert judge.reference_verdict(same.in_order, vocab) == "#"
    assert judge.reference_verdict("not a judge prompt", vocab) == "#"


def duel(i: int, a: str, b: str, outcome: str, votes: tuple[str, ...], judges: tuple[str, ...]) -> object:
    return analysis.DuelRow(i, a, b, outcome, votes, judges)


DUELS = [
    duel(1, "a", "c", "A", ("A", "A", "abstain"), ("b", "b", "c")),  # a beats c
    duel(2, "c", "b", "B", ("B", "B", "A"), ("a", "a", "c")),  # b beats c; c's judge disagrees
    duel(3, "b", "a", "A", ("A", "A", "B"), ("c", "c", "c")),  # b beats a (judges wrong twice)
    duel(4, "a", "b", "tie", ("abstain", "abstain", "abstain"), ("c", "c", "c")),
    duel(5, "a", "a", "B", ("B", "B", "B"), ("b", "b", "c")),  # same class: no agreement to score
    duel(6, "a", "c", "open", ("none", "none", "none"), ("b", "b", "c")),  # not settled: ignored
]


def test_win_rates_count_decided_duels_per_class() -> None:
    rates = analysis.win_rates(DUELS)
    assert rates["a"] == {"duels": 5, "won": 2, "lost": 2, "tied": 1, "win_rate": 0.5}
    assert rates["b"] == {"duels": 3, "won": 2, "lost": 0, "tied": 1, "win_rate": 1.0}
    assert rates["c"] == {"duels": 2, "won": 0, "lost": 2, "tied": 0, "win_rate": 0.0}
    assert analysis.win_rates([])["a"]["win_rate"] is None


def test_pair_table_and_judge_agreement_use_the_intended_ordering() -> None:
    pairs = analysis.pair_table(DUELS)
    assert pairs["a-c"] == {"better": 1} and pairs["b-c"] == {"better": 1}
    assert pairs["a-b"] == {"worse": 1, "tie": 1} and pairs["a-a"] == {"decided": 1}
    agreement = analysis.judge_agreement(DUELS)
    assert agreement["a"] == {"agree": 2}
    assert agreement["b"] == {"agree": 2}
    assert agreement["c"] == {"abstain": 4, "disagree": 3, "agree": 1}


def test_class_shares_over_the_executors() -> None:
    classes = {"a1": "a", "b1": "b", "c1": "c", "c2": "c"}
    balances = {"a1": (300, 700), "b1": (100, 900), "c1": (0, 0), "c2": (100, 900)}
    shares = analysis.class_shares(balances, classes)
    assert shares["a"] == (0.6, 1000 / 3000) and shares["c"] == (0.2, 1000 / 3000)
    rows = [{"t_s": 0.0, "node": n, "stake_wei": s, "credit_wei": c} for n, (s, c) in balances.items()]
    rows.append({"t_s": 1.0, "node": "a1", "stake_wei": 1, "credit_wei": 1})  # an incomplete sample: skipped
    series = analysis.shares_over_time(rows, classes)
    assert len(series) == 1 and series[0]["stake_a"] == 0.6


def test_duel_events_are_read_from_the_origins_metrics() -> None:
    from wwwserve.node.metrics import Metrics

    metrics = Metrics()
    for event in ("opened", "opened", "no_second_executor"):
        metrics.count("wwwserve_duels_total", event=event)
    metrics.count("wwwserve_judge_steps_total", step="commit")
    assert analysis.duel_events(metrics.render()) == {"opened": 2, "no_second_executor": 1}
