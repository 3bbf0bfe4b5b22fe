"""The judge's prompt and how its reply becomes a vote (DESIGN.md §4).

A judge is asked, with the reference implementation's prompt, which of two answers to one question is
better, **twice**: once with the duelists' answers as A and B, once swapped. A vote counts only when both
orders name the same duelist; otherwise the judge abstains (LLM judges favour a position, and a small
model mostly answers the same letter whatever the answers say).

Parsing: the reference rule (`parse_vote_reference`: '#' in the last five characters abstains, else the
last 'A' or 'B' anywhere in the reply) reads "Answer B is better" as B only by luck of the letter order
and "B. As shown..." as A. `parse_vote` reads the reply as a reviewer would: a bare letter, a letter
marked as the choice ("Final answer: B", "**A**", "Answer B is better"), or '#'; a reply that names both
letters without saying which it picks, or neither, is an abstention.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from wwwserve.ledger.records import Vote

__all__ = [
    "REFERENCE_PROMPT",
    "Choice",
    "JudgePrompt",
    "build_prompt",
    "combine_orders",
    "parse_vote",
    "parse_vote_reference",
    "prompt_answers",
    "truncate_answer",
]

REFERENCE_PROMPT = (
    "You are a careful and strict reviewer. Your task is to choose the better answer between the two "
    "options below. Your evaluation criteria include: 1. Correctness of the answer 2. Completeness of "
    "the answer 3. Strict adherence to the instructions\n\n"
    "Question: {question}\n\n"
    "Answer A: {answer_a}\n\n"
    "Answer B: {answer_b}\n\n"
    "Please provide your choice directly: output only A or B; if unable to distinguish, output #."
)
"""The reference implementation's judge prompt (PAPER.md §4.2), with its three slots."""

# The reference truncates each answer to int(max_tokens * 1.2) characters before judging.
TRUNCATE_FACTOR = 1.2


class Choice(enum.Enum):
    """What one judging call (or the pair of them) concluded."""

    A = "A"
    B = "B"
    ABSTAIN = "#"

    def swapped(self) -> Choice:
        """The same choice seen from the other A/B order."""
        return {Choice.A: Choice.B, Choice.B: Choice.A}.get(self, Choice.ABSTAIN)

    @property
    def vote(self) -> Vote:
        """The on-chain vote this choice is, read with the duelists in the duel's order (A = the executor):
        what `combine_orders` concludes. A letter is the prompt's, not the chain's, until then."""
        return {Choice.A: Vote.A, Choice.B: Vote.B}.get(self, Vote.ABSTAIN)


@dataclass(frozen=True)
class JudgePrompt:
    """The two prompts one judge sends: the duelists in their order, then swapped."""

    in_order: str
    swapped: str


def truncate_answer(text: str, max_tokens: int | None) -> str:
    """`text` cut to int(max_tokens * 1.2) characters, as the reference does (whole text when None)."""
    if max_tokens is None:
        return text
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    return text[: int(max_tokens * TRUNCATE_FACTOR)]


def build_prompt(question: str, answer_a: str, answer_b: str, max_tokens: int | None = None) -> JudgePrompt:
    """Both prompts for one duel: (A = first duelist, B = second) and the swapped order.

    `question` is the user's request as text (for a chat, its messages rendered by the caller);
    `max_tokens` is the request's output budget, used to truncate the answers like the reference.
    """
    first, second = truncate_answer(answer_a, max_tokens), truncate_answer(answer_b, max_tokens)
    return JudgePrompt(
        in_order=REFERENCE_PROMPT.format(question=question, answer_a=first, answer_b=second),
        swapped=REFERENCE_PROMPT.format(question=question, answer_a=second, answer_b=first),
    )


def prompt_answers(prompt: str) -> tuple[str, str] | None:
    """The two (truncated) answers of a prompt `build_prompt` made, A then B; None for any other text.
    For scripted and heuristic judges that read the prompt rather than ask a model."""
    if not prompt.lstrip().startswith(REFERENCE_PROMPT.split("{", 1)[0].strip()):
        return None
    try:
        rest = prompt.split("\n\nAnswer A: ", 1)[1]
        answer_a, rest = rest.split("\n\nAnswer B: ", 1)
        answer_b = rest.rsplit("\n\nPlease provide your choice", 1)[0]
    except (IndexError, ValueError):
        return None
    return answer_a, answer_b


def parse_vote_reference(reply: str) -> Choice:
    """The reference rule: '#' in the last 5 characters abstains; else the last 'A' or 'B' in the reply."""
    if "#" in reply[-5:]:
        return Choice.ABSTAIN
    last_a, last_b = reply.rfind("A"), reply.rfind("B")
    if last_a < 0 and last_b < 0:
        return Choice.ABSTAIN
    return Choice.A if last_a > last_b else Choice.B


# Reasoning models wrap their deliberation in <think>...</think>; only what follows is the reply.
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
# A letter on its own: not inside a word ("As", "Both"), not a list marker like "A)" followed by text.
_BARE = re.compile(r"^[\s*_`'\"(\[]*(A|B|#)[\s*_`'\".)\]]*$", re.IGNORECASE)
# A letter marked as the choice: "answer: B", "choice is A", "I choose B", "B is better", "**A**".
_MARKED = [
    # A declaration, not a mention: "the answer is B", "Final answer: A", "I prefer answer B" (but not
    # "answer A" alone, which names an option).
    re.compile(r"(?:(?:final|my|the|better|best|correct)\s+(?:answer|option|choice)|choice|verdict|vote|decision|"
               r"output|choose|chose|pick|select|prefer|(?:i'd|i\s+would|i)\s+say)"
               r"\s*(?:is|:|=|-)?\s*[*_`'\"(\[]*\s*(?:answer\s+|option\s+)?(A|B|#)(?![A-Za-z0-9])", re.IGNORECASE),
    re.compile(r"(?<![A-Za-z0-9])(?:answer\s+)?(A|B)[*_`'\")\]]*\s+is\s+(?:the\s+)?(?:better|best|superior|"
               r"more\s+correct|correct)", re.IGNORECASE),
    re.compile(r"\*\*\s*(?:answer\s+)?(A|B)\s*\*\*"),
    re.compile(r"\\boxed\{\s*(A|B)\s*\}"),
]
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])(A|B)(?![A-Za-z0-9])")


def _choice(letter: str) -> Choice:
    return Choice.ABSTAIN if letter == "#" else Choice(letter.upper())


def parse_vote(reply: str) -> Choice:
    """The vote a judge's reply expresses (see the module docstring); ABSTAIN when it does not say.

    Looked for, in order: a bare letter (or '#') as the whole reply; the last letter marked as the
    choice; a single standalone capital letter A or B; '#' alone on the last line. Anything else
    (both letters, no letter, empty) abstains.
    """
    text = _THINK.sub("", reply).strip()
    if not text:
        return Choice.ABSTAIN
    bare = _BARE.match(text)
    if bare:
        return _choice(bare.group(1))
    marked: list[tuple[int, str]] = []
    for pattern in _MARKED:
        marked += [(m.start(1), m.group(1)) for m in pattern.finditer(text)]
    if marked:
        letters = {letter.upper() for _, letter in marked}
        if len(letters) == 1:
            return _choice(letters.pop())
        return _choice(max(marked)[1])  # the reply changed its mind: its last word counts
    standalone = {m.group(1) for m in _STANDALONE.finditer(text)}
    if len(standalone) == 1:
        return _choice(standalone.pop())
    last_line = text.splitlines()[-1].strip()
    if _BARE.match(last_line):
        return _choice(_BARE.match(last_line).group(1))  # type: ignore[union-attr]
    return Choice.ABSTAIN


def combine_orders(in_order: Choice, swapped: Choice) -> Choice:
    """The judge's vote over both A/B orders, in terms of the first order: counted only if they agree.

    `in_order` is the reply to the prompt with the duelists as (A, B); `swapped` the reply to (B, A).
    """
    if in_order is Choice.ABSTAIN or swapped is Choice.ABSTAIN:
        return Choice.ABSTAIN
    return in_order if swapped.swapped() is in_order else Choice.ABSTAIN
