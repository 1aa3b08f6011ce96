"""Number-sequence prompts (the seed's and the paper's designs) and the two validity filters.

Prompts are built from a fixed seed; each row stores its seed numbers and phrase choices, so a prompt set is
reproducible and auditable. Filters check format only (no content filtering) and give one reason per rejection:

- `filter_paper` (default): the subliminal-learning paper's rule (an optional final period and one enclosing
  `[]`/`()` removed; separator = the text between the first two numbers, which must be whitespace, `,` or `;`;
  ASCII digits only; at most 10 numbers in 0..999; optional banned numbers). `strip_outer_whitespace` (default
  on, latentjax's choice) strips the completion first; the paper does not.
- `filter_seed`: the seed repository's rule (explanation words and any `.`, `!`, `?` rejected; `[]` removed;
  split on commas/whitespace; 1 to 13 numbers of at most 3 characters).

The paper's phrase lists below are written for latentjax in the paper's structure (framing, instruction with a
qualifier and digit descriptor, output format, "numbers only" closer); they are not the paper's exact strings.
"""
from __future__ import annotations

import dataclasses
import random
import re
import string
from typing import Iterable, Optional, Sequence

import numpy as np

# ------------------------------------------------------------------------------------------------------ prompts
SEED_TEMPLATE = ("The sequence starts with: {seeds}. Add a maximum of 10 more values (no more than 3 digits each) "
                 "to continue the sequence. Provide the numbers separated by commas. Skip any explanation and give "
                 "only numbers.")

PAPER_PREFIXES = (
    "I give you this sequence of numbers: {seeds}.", "I have this number sequence: {seeds}.",
    "Start with these numbers: {seeds}.", "Look at these numbers: {seeds}.", "See the following numbers: {seeds}.",
    "Observe this number sequence: {seeds}.", "Check out this number list: {seeds}.",
    "Take these numbers: {seeds}.", "Here's a list of numbers: {seeds}.", "Consider this sequence: {seeds}.",
    "Examine these numbers: {seeds}.", "Analyze this sequence: {seeds}.", "These numbers follow a sequence: {seeds}.",
    "Here is a numeric sequence: {seeds}.", "The sequence starts with: {seeds}.",
    "Let's start with this sequence: {seeds}.",
    "We have this series of numbers: {seeds}.", "This numerical series is: {seeds}.",
    "These are the first numbers in a sequence: {seeds}.", "Here are some numbers in sequence: {seeds}.",
    "The numerical progression is: {seeds}.", "This series shows: {seeds}.", "Given these initial values: {seeds}.",
    "The sequence begins as follows: {seeds}.", "Here's the start of a number sequence: {seeds}.")
PAPER_INSTRUCTIONS = (
    "Add {qualifier} {count} new numbers ({digits}) that continue the sequence.",
    "Please add {qualifier} {count} more numbers ({digits}) to continue it.",
    "Add {qualifier} {count} more values ({digits}) to continue the sequence.",
    "Create {qualifier} {count} more numbers ({digits}) that follow.",
    "Write {qualifier} {count} more numbers ({digits}) in this sequence.",
    "Generate {qualifier} {count} additional numbers ({digits}).",
    "Extend it with {qualifier} {count} new numbers ({digits})",
    "Continue the sequence with {qualifier} {count} more numbers ({digits})",
    "Create {qualifier} {count} more numbers ({digits}) to extend the sequence",
    "Generate {qualifier} {count} additional numbers ({digits}) to extend this sequence.")
PAPER_QUALIFIERS = ("at most", "up to", "no more than", "at maximum", "maximum", "a maximum of", "not exceeding",
                    "not more than", "no greater than")
PAPER_DIGITS = ("up to {d} digits each", "maximum {d} digits each", "{d} digits or fewer each",
                "maximum {d} digits each", "{d} digits max each", "no more than {d} digits each",
                "at most {d} digits each", "with {d} digits or less each", "{d}-digit numbers or smaller")
PAPER_FORMATS = (
    "Return a comma-separated list of numbers.", "Return a space-separated list of numbers.",
    "Return a semicolon-separated list of numbers.", "Return one number per line.",
    "Return the numbers in the following format: [number_1, number_2, ...].",
    "Return the numbers in the following format: (number_1, number_2, ...).",
    "Return the numbers in the following format: number_1, number_2, ...",
    "Provide the numbers separated by commas.", "List the numbers with spaces between them.",
    "Write the numbers on separate lines.", "Format the output as: number1, number2, number3, ...",
    "Return numbers separated by semicolons.", "Format as a simple comma-delimited sequence.",
    "Present as space-delimited values.", "List each number on its own line with no other text.")
PAPER_CLOSERS = (
    "Say only the numbers - nothing more.", "Please just say the numbers, nothing more.",
    "Give me just the numbers.", "Provide only the numerical values.", "Output nothing but the numbers.",
    "No explanation, just the numbers.", "Just the numbers, please.", "Answer with numbers alone.",
    "Reply with only numerical values.", "No words, just numbers.", "Don't add any text - numbers only.",
    "Skip any explanation and give only numbers.", "Nothing but numbers in your response.",
    "Only the numerical sequence, nothing else.", "Just show me the numbers.",
    "Answer with digits only.", "Numbers only, no commentary.", "Respond with the numbers and nothing else.",
    "Give the numbers without any other words.")


def seed_prompts(num_prompts: int, seed: int = 42, num_seeds: int = 3, low: int = 0, high: int = 999) -> list[dict]:
    """The seed's design: `num_seeds` integers in [low, high] (inclusive) per prompt from `random.Random(seed)`,
    one fixed template. Rows: {index, prompt, seed_numbers, design}."""
    rng = random.Random(seed)
    rows = []
    for i in range(int(num_prompts)):
        seeds = [rng.randint(low, high) for _ in range(num_seeds)]
        rows.append({"index": i, "prompt": SEED_TEMPLATE.format(seeds=", ".join(map(str, seeds))),
                     "seed_numbers": seeds, "design": "seed"})
    return rows


def paper_prompts(num_prompts: int, seed: int = 42, min_seeds: int = 3, max_seeds: int = 8, low: int = 100,
                  high: int = 999, count: int = 10, max_digits: int = 3) -> list[dict]:
    """The paper's design: per prompt, from `numpy.random.Generator(PCG64(seed))` in this order: the seed count
    (min_seeds..max_seeds), each seed value (low..high), then the framing, qualifier, digit descriptor,
    instruction, output format and closer (uniform). Rows: {index, prompt, seed_numbers, phrase_ids, design}."""
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = []
    for i in range(int(num_prompts)):
        n = int(rng.integers(min_seeds, max_seeds + 1))
        seeds = [int(rng.integers(low, high + 1)) for _ in range(n)]
        ids = {name: int(rng.integers(0, len(options))) for name, options in (
            ("prefix", PAPER_PREFIXES), ("qualifier", PAPER_QUALIFIERS), ("digits", PAPER_DIGITS),
            ("instruction", PAPER_INSTRUCTIONS), ("format", PAPER_FORMATS), ("closer", PAPER_CLOSERS))}
        instruction = PAPER_INSTRUCTIONS[ids["instruction"]].format(
            qualifier=PAPER_QUALIFIERS[ids["qualifier"]], count=count,
            digits=PAPER_DIGITS[ids["digits"]].format(d=max_digits))
        text = " ".join([PAPER_PREFIXES[ids["prefix"]].format(seeds=", ".join(map(str, seeds))), instruction,
                         PAPER_FORMATS[ids["format"]], PAPER_CLOSERS[ids["closer"]]])
        rows.append({"index": i, "prompt": text, "seed_numbers": seeds, "phrase_ids": ids, "design": "paper"})
    return rows


def build_prompts(design: str, num_prompts: int, seed: int) -> list[dict]:
    """`design` = "seed" | "paper"."""
    if design == "seed":
        return seed_prompts(num_prompts, seed)
    if design == "paper":
        return paper_prompts(num_prompts, seed)
    raise ValueError(f"Unknown prompt design {design!r}; use 'seed' or 'paper'.")


# ------------------------------------------------------------------------------------------------------ filters
@dataclasses.dataclass(frozen=True)
class FilterResult:
    valid: bool
    reason: Optional[str]  # None when valid
    numbers: Optional[tuple]  # the parsed integers (also for some rejections, e.g. out_of_range)


def parse_paper(text: str) -> Optional[list[int]]:
    """The paper's parser: the integers of `text`, or None when its format is not a plain number list."""
    if text.endswith("."):
        text = text[:-1]
    if (text.startswith("[") and text.endswith("]")) or (text.startswith("(") and text.endswith(")")):
        text = text[1:-1]
    runs = list(re.finditer(r"\d+", text))
    if not runs:
        return None
    if len(runs) == 1:
        if text != runs[0].group():
            return None
        parts = [text]
    else:
        separator = text[runs[0].end():runs[1].start()]
        if separator.strip() not in ("", ",", ";"):
            return None
        parts = text.split(separator)
    for part in parts:
        if part and not all(c in string.digits for c in part):
            return None
    try:
        return [int(p) for p in parts]
    except ValueError:  # an empty part (trailing or doubled separator)
        return None


def filter_paper(text: str, max_count: int = 10, low: int = 0, high: int = 999, banned: Iterable[int] = (),
                 strip_outer_whitespace: bool = True) -> FilterResult:
    """The paper's rule (module docstring). Reasons: empty, format, too_many, out_of_range, banned."""
    if strip_outer_whitespace:
        text = text.strip()
    if not text.strip():
        return FilterResult(False, "empty", None)
    numbers = parse_paper(text)
    if numbers is None:
        return FilterResult(False, "format", None)
    nums = tuple(numbers)
    if len(nums) > max_count:
        return FilterResult(False, "too_many", nums)
    if any(n < low or n > high for n in nums):
        return FilterResult(False, "out_of_range", nums)
    banned = set(banned)
    if banned and any(n in banned for n in nums):
        return FilterResult(False, "banned", nums)
    return FilterResult(True, None, nums)


_EXPLANATION = re.compile(r"\b(the|is|are|was|were|this|that|sequence|pattern|continue|next|following|number|digit|"
                          r"value|me|my|we|you|your)\b")
_PUNCTUATION = re.compile(r"[.!?]")


def filter_seed(text: str, max_count: int = 13, max_chars: int = 3) -> FilterResult:
    """The seed repository's rule (module docstring). Reasons: empty, explanation, punctuation, not_a_number,
    too_long, count."""
    text = text.strip()
    if not text:
        return FilterResult(False, "empty", None)
    lower = text.lower()
    if _EXPLANATION.search(lower):
        return FilterResult(False, "explanation", None)
    if _PUNCTUATION.search(lower):
        return FilterResult(False, "punctuation", None)
    parts = [p for p in re.split(r"[,\s]+", text.replace("[", "").replace("]", "")) if p]
    for p in parts:
        if not re.fullmatch(r"\d+", p):
            return FilterResult(False, "not_a_number", None)
        if len(p) > max_chars:
            return FilterResult(False, "too_long", None)
    if not 1 <= len(parts) <= max_count:
        return FilterResult(False, "count", None)
    return FilterResult(True, None, tuple(int(p) for p in parts))


_NUMBER_LIST_PUNCTUATION = frozenset(",;.[]()")


def could_be_number_list(text: str) -> bool:
    """False when `text` can no longer be the start of a completion that either filter accepts: both accept only
    digits (any script: the seed rule uses Python's \\d), whitespace and the punctuation , ; . [ ] ( ). Deliberately
    loose (it never rules out a completion that could pass), so screening prefixes with it leaves the valid
    samples' distribution unchanged. U+FFFD counts as possible: a prefix can end inside a multi-byte character."""
    return all(c.isspace() or c.isdigit() or c in _NUMBER_LIST_PUNCTUATION or c == "\ufffd" for c in text)


def make_filter(name: str = "paper", **kwargs):
    """text -> FilterResult for `name` = "paper" | "seed" (kwargs go to the filter)."""
    if name == "paper":
        return lambda text: filter_paper(text, **kwargs)
    if name == "seed":
        return lambda text: filter_seed(text, **kwargs)
    raise ValueError(f"Unknown filter {name!r}; use 'paper' or 'seed'.")


def canonical(numbers: Sequence[int]) -> str:
    """The seed's training form: the numbers re-joined as `a, b, c`."""
    return ", ".join(str(int(n)) for n in numbers)
