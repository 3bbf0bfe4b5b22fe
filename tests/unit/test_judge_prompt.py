"""The judge's prompt, vote parsing on tricky replies, and the both-orders rule (judge/prompt.py)."""

from __future__ import annotations

import pytest

from wwwserve.judge.prompt import (
    REFERENCE_PROMPT,
    Choice,
    build_prompt,
    combine_orders,
    parse_vote,
    parse_vote_reference,
    truncate_answer,
)


def test_prompt_is_the_reference_text_in_both_orders() -> None:
    prompt = build_prompt("What is 2+2?", "4", "5")
    assert prompt.in_order.startswith("You are a careful and strict reviewer.")
    assert "1. Correctness of the answer 2. Completeness of the answer 3. Strict adherence" in prompt.in_order
    assert prompt.in_order.endswith("output only A or B; if unable to distinguish, output #.")
    assert "Question: What is 2+2?" in prompt.in_order
    assert "Answer A: 4\n\nAnswer B: 5" in prompt.in_order
    assert "Answer A: 5\n\nAnswer B: 4" in prompt.swapped
    assert prompt.in_order == REFERENCE_PROMPT.format(question="What is 2+2?", answer_a="4", answer_b="5")


def test_answers_are_truncated_like_the_reference() -> None:
    assert truncate_answer("x" * 100, 10) == "x" * 12  # int(10 * 1.2)
    assert truncate_answer("short", 10) == "short"
    assert truncate_answer("x" * 100, None) == "x" * 100
    prompt = build_prompt("q", "a" * 50, "b" * 50, max_tokens=5)
    assert "Answer A: aaaaaa\n" in prompt.in_order and "Answer B: bbbbbb\n" in prompt.in_order
    with pytest.raises(ValueError):
        truncate_answer("x", 0)


@pytest.mark.parametrize(
    ("reply", "vote"),
    [
        ("A", Choice.A),
        ("B", Choice.B),
        ("#", Choice.ABSTAIN),
        (" b ", Choice.B),
        ("A.", Choice.A),
        ("**B**", Choice.B),
        ("`A`", Choice.A),
        ("(B)", Choice.B),
        ("Final answer: A", Choice.A),
        ("The better answer is B.", Choice.B),
        ("My choice: **A**", Choice.A),
        ("I prefer answer B over A", Choice.B),
        ("A or B? I'd say B", Choice.B),
        ("The answer is \\boxed{A}", Choice.A),
        # A letter inside a word is not a vote ("As", "Both").
        ("B. As shown above, it is complete.", Choice.B),
        ("Both answers are equally good. #", Choice.ABSTAIN),
        # Mentioning both answers is not choosing; saying which is better is.
        ("Answer A is better than answer B", Choice.A),
        ("Answer B is wrong; Answer A is correct.", Choice.A),
        ("Answer A: wrong. Answer B: right. Final answer: B", Choice.B),
        # A reply that changes its mind: the last declared choice counts.
        ("Final answer: A. Wait, no. Final answer: B", Choice.B),
        ("I cannot decide between A and B.", Choice.ABSTAIN),
        ("Both are fine.", Choice.ABSTAIN),
        ("", Choice.ABSTAIN),
        ("   \n  ", Choice.ABSTAIN),
        # Reasoning models: only what follows the thinking counts.
        ("<think>A looks right, but B is more complete... A? B?</think>\nB", Choice.B),
        ("<think>Let me compare A and B.</think>", Choice.ABSTAIN),
        ("Comparing the two...\nA", Choice.A),
    ],
)
def test_parse_vote_reads_the_choice(reply: str, vote: Choice) -> None:
    assert parse_vote(reply) is vote


@pytest.mark.parametrize(
    ("reply", "vote"),
    [
        ("A", Choice.A),
        ("B", Choice.B),
        ("equal #", Choice.ABSTAIN),
        # The reference's rule: the last capital A or B anywhere, so these read wrongly; ours do not.
        ("B. As shown above", Choice.A),
        ("Answer B is better than Answer A", Choice.A),
        ("nothing", Choice.ABSTAIN),
    ],
)
def test_reference_parser_is_kept_for_comparison(reply: str, vote: Choice) -> None:
    assert parse_vote_reference(reply) is vote


def test_both_orders_must_agree_for_a_vote() -> None:
    # In the swapped prompt the first duelist is "B": agreeing replies are (A, B) and (B, A).
    assert combine_orders(Choice.A, Choice.B) is Choice.A
    assert combine_orders(Choice.B, Choice.A) is Choice.B
    # Position bias: the same letter both times says nothing about the answers.
    assert combine_orders(Choice.A, Choice.A) is Choice.ABSTAIN
    assert combine_orders(Choice.B, Choice.B) is Choice.ABSTAIN
    for other in Choice:
        assert combine_orders(Choice.ABSTAIN, other) is Choice.ABSTAIN
        assert combine_orders(other, Choice.ABSTAIN) is Choice.ABSTAIN


def test_swapped_maps_letters_and_keeps_abstention() -> None:
    assert Choice.A.swapped() is Choice.B
    assert Choice.B.swapped() is Choice.A
    assert Choice.ABSTAIN.swapped() is Choice.ABSTAIN


def test_prompt_answers_reads_back_what_build_prompt_wrote() -> None:
    from wwwserve.judge.prompt import prompt_answers

    prompts = build_prompt("Q?", "first\n\nwith a blank line", "second", max_tokens=None)
    assert prompt_answers(prompts.in_order) == ("first\n\nwith a blank line", "second")
    assert prompt_answers(prompts.swapped) == ("second", "first\n\nwith a blank line")
    assert prompt_answers("What is the capital of France?") is None
