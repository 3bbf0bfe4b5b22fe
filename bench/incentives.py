"""Quality classes on a real network: do duels move stake from bad providers to good ones? (issue 4)

Anvil plus seven `wwwserve node run` processes:

  origin      a pure dispatcher (serves no model; `policy.p_inspect` of its offloaded requests become duels)
  a1, a2      class (a): SmolLM2-135M (`local` backend), honest
  b1, b2      class (b): the same model, degraded: every answer cut to `--degraded-tokens` tokens
  c1, c2      class (c): a random responder (random nonsense words; it also judges with them)
  j1, j2      judges only (`--judges`): they serve no requested model, so the contract can always draw
              K = 3 judges outside a duel even after a class has lost its stake

Every executor holds a fixed stake (`--stake`), topped up from its credit after a lost duel, so a class
that keeps losing drains its credit into the winners'. The origin sends MATH500 problems (`--requests`,
max_tokens `--max-tokens`) through itself; each becomes a duel with probability `--p-inspect`.

Judges (drawn by stake from the nodes not in the duel): classes (a) and (b) judge with
  --judge reference   a stand-in for a stronger judge model (default): an OpenAI-compatible endpoint this
                      benchmark serves (`judge.base_url`) that prefers the answer with more recognisable
                      words (vocabulary of the MATH500 problems and solutions) times its length. It is a
                      text heuristic, not an LLM; no model stronger than SmolLM2-135M can be fetched here.
  --judge own         their own SmolLM2-135M (the node's `judge.model`); measured to abstain almost always
  --judge URL         any OpenAI-compatible endpoint (with --judge-model), e.g. a vLLM serving a 7B model
Class (c) always judges with its own random words (it abstains: a lazy judge).

Before the network run, `--accuracy N` measures the 135M judge alone, in process: for N problems it asks
SmolLM2 the reference judge prompt in both orders on the three class pairs and counts votes that agree
with the intended ordering (a > b > c), against it, and abstentions.

The parts live in bench/quality_classes/ (the judges, the network run, the analysis, the report).

Outputs (under --out, default bench/results/incentives): requests.csv, duels.csv, shares.csv (stake and
stake+credit per class over time), shares.png (with matplotlib: `pip install -e '.[bench]'`), summary.json,
report.md, judge_accuracy.json (with --accuracy), and the printed report. Figures are printed, never
asserted.

Usage:
  python bench/incentives.py                        # ~25 min on 2 cores: accuracy (8 problems), 200 requests
  python bench/incentives.py --quick                # 2 problems, 40 requests: a smoke run
  python bench/incentives.py --judge own --accuracy 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(BENCH_DIR))

from harness.common import BenchError  # noqa: E402
from quality_classes.common import load_problems  # noqa: E402
from quality_classes.judge import measure_judge_accuracy  # noqa: E402
from quality_classes.network import run_network  # noqa: E402
from quality_classes.report import report  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 accuracy problems, 40 requests")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--rate", type=float, default=0.3,
                   help="Poisson arrivals per second (a busy SmolLM2 node declines work: faster arrivals leave "
                   "more requests, and duels, to the always-idle random responders)")
    p.add_argument("--concurrency", type=int, default=16, help="most requests in flight at once")
    p.add_argument("--seed", type=int, default=1, help="seed of the arrival times")
    p.add_argument("--p-inspect", type=float, default=0.9, help="share of offloaded requests that become duels")
    p.add_argument("--max-tokens", type=int, default=96, help="answer budget of each request")
    p.add_argument("--degraded-tokens", type=int, default=12, help="class (b)'s cut")
    p.add_argument("--judge", default="reference", help="reference | own | an OpenAI-compatible base URL")
    p.add_argument("--judge-model", default=None, help="model name at --judge URL")
    p.add_argument("--accuracy", type=int, default=8, help="problems for the in-process 135M judge test (0: skip)")
    p.add_argument("--judges", type=int, default=2,
                   help="extra judge-only nodes (with 6 executors alone, once a class is out of stake a duel "
                   "between two of the rest may have fewer than K = 3 eligible judges)")
    p.add_argument("--stake", type=float, default=0.1, help="fixed stake each executor holds (ETH)")
    p.add_argument("--credit", type=float, default=1.0, help="credit each executor starts with (ETH)")
    p.add_argument("--origin-credit", type=float, default=5.0, help="extra credit of the origin (ETH)")
    p.add_argument("--block-time", type=float, default=1.0,
                   help="seconds between mined blocks (the commit and reveal windows are 10 blocks each)")
    p.add_argument("--sample-every", type=float, default=3.0, help="seconds between balance samples")
    p.add_argument("--request-timeout", type=float, default=300.0)
    p.add_argument("--settle-timeout", type=float, default=180.0)
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "incentives")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.accuracy, args.rate = 40, min(args.accuracy, 2), 1.0
    if args.judge not in ("reference", "own") and not args.judge_model:
        p.error("--judge URL needs --judge-model")
    if args.rate <= 0 or args.requests < 1 or args.concurrency < 1:
        p.error("--rate, --requests and --concurrency must be positive")
    if not 0 <= args.p_inspect <= 1:
        p.error("--p-inspect must be between 0 and 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    try:
        problems = load_problems()
        accuracy = None
        if args.accuracy > 0:
            progress(f"measuring SmolLM2-135M as a judge on {args.accuracy} problems")
            accuracy = measure_judge_accuracy(problems[: args.accuracy], args.max_tokens, args.degraded_tokens,
                                              progress)
            (args.out / "judge_accuracy.json").write_text(json.dumps({"problems": args.accuracy, **accuracy},
                                                                    indent=2))
        result = run_network(args, problems, args.out, progress)
        report(result, accuracy, args, args.out)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
