"""Answer extraction and scoring for the math benchmarks: MATH, GSM8K and MMLU (math subjects).

Rules, with the reference each one reproduces (shared/spec/subliminal.md "Evaluate",
subliminal_reference.md section 6, translator.md "Evaluation"):

MATH
- `extract_boxed`: content of the last `\\boxed{...}` (or, when the text has no `\\boxed`, the last
  `\\fbox{...}`), braces balanced: the search of Hendrycks' `last_boxed_only_string` (hendrycks/math
  modeling/dataset/util.py). Deliberate differences: `\\fbox{...}` content is returned (HM's `remove_boxed` drops
  it), whitespace between `\\boxed` and `{` is allowed, and the brace-less `\\boxed 2` (two MATH train solutions
  use it) gives the text up to the next `$` or line end, as lm-evaluation-harness does. An unbalanced (truncated)
  last box gives None.
- `hendrycks_strip_string` / `hendrycks_is_equiv`: HM `_strip_string` / `is_equiv` (modeling/math_equivalence.py)
  step for step, including its fallback to raw string equality when normalisation raises.
- `normalize_math_answer` / `is_math_equiv` (the primary metric): HM normalisation plus the one rule the
  subliminal spec lists that HM lacks, "trailing `.0`" (`12.0` and `12.00` read as `12`).
- `lenient_math_answer` / `lenient_math_equiv`: the seed's (WMD `answer_extraction.py`) extraction fallbacks and
  equivalence, as the clearly labelled secondary metric `lenient` (subliminal_reference.md 6.1 [choice]).

GSM8K
- `gsm8k_official_extract`: the official GSM8K rule the translator spec asks for: first `#### (-?[0-9.,]+)`,
  commas removed, `[invalid]` when absent, compared as exact strings.
- `extract_gsm8k_prediction`: the subliminal spec's rule: the number in the last `\\boxed{}`, else after `####`,
  else the last number in the text (the rule that fired is returned); `gsm8k_numbers_equal` compares as
  floats with WMD's tolerance 1e-4.

MMLU
- `format_mmlu_prompt`: WMD's zero-shot prompt (question, blank line, `A. ...` to `D. ...`, blank line, the
  letter instruction). Primary score: `letter_from_logprobs` (argmax over the four letters' next-token
  log-probabilities); WMD's generate-and-parse rule as `extract_mmlu_letter`.
"""
from __future__ import annotations

import re
from typing import Iterable, Optional, Sequence

import numpy as np

# ================================================================================================================
# MATH: \boxed{} extraction
# ================================================================================================================


def _balanced_brace_content(text: str, open_idx: int) -> Optional[str]:
    """Text between text[open_idx] == '{' and its matching '}', or None when it never closes."""
    depth = 0
    for i in range(open_idx, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_idx + 1:i]
    return None


def extract_boxed(text: str) -> Optional[str]:
    """Content of the last `\\boxed{...}` (else last `\\fbox{...}`), nested braces balanced; None if absent."""
    if text is None:
        return None
    for command in ("\\boxed", "\\fbox"):
        idx = text.rfind(command)
        if idx < 0:
            continue
        j = idx + len(command)
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            return _balanced_brace_content(text, j)
        if j > idx + len(command):  # "\\boxed 2$": the brace-less form, up to the next "$" or line end
            rest = re.split(r"[$\n]", text[j:], maxsplit=1)[0].strip()
            return rest or None
        return None
    return None


# ================================================================================================================
# MATH: Hendrycks normalisation (hendrycks/math modeling/math_equivalence.py), reproduced rule for rule
# ================================================================================================================


class _NormalizationError(ValueError):
    """Raised where HM's normalisation raises; `hendrycks_is_equiv` then falls back to raw equality."""


def _hm_fix_fracs(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{72}` -> `\\frac{1}{72}`; a one-character tail returns s unchanged."""
    head, *parts = s.split("\\frac")
    out = [head]
    for part in parts:
        out.append("\\frac")
        if not part:
            raise _NormalizationError("\\frac at end of string")
        if part[0] == "{":
            out.append(part)
            continue
        if len(part) < 2:
            return s
        a, b, rest = part[0], part[1], part[2:]
        out.append("{" + a + "}" + ("{" + b + "}" if b != "{" else b) + rest)
    return "".join(out)


def _hm_fix_a_slash_b(s: str) -> str:
    """`a/b` with a, b integers written canonically -> `\\frac{a}{b}`; anything else unchanged."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    if s != f"{a}/{b}":
        return s
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _hm_remove_right_units(s: str) -> str:
    """Drop everything from `\\text{ ` (a unit, by HM's observation); two such units raise."""
    if "\\text{ " not in s:
        return s
    parts = s.split("\\text{ ")
    if len(parts) != 2:
        raise _NormalizationError("more than one '\\text{ ' unit")
    return parts[0]


def _hm_fix_sqrt(s: str) -> str:
    """`\\sqrt3` -> `\\sqrt{3}` (one character only)."""
    if "\\sqrt" not in s:
        return s
    head, *parts = s.split("\\sqrt")
    out = [head]
    for part in parts:
        if not part:
            raise _NormalizationError("\\sqrt at end of string")
        out.append("\\sqrt" + part if part[0] == "{" else "\\sqrt{" + part[0] + "}" + part[1:])
    return "".join(out)


def hendrycks_strip_string(s: str) -> str:
    """HM `_strip_string`, in its order. May raise (HM does too; `hendrycks_is_equiv` handles it).

    newlines and `\\!` removed; `\\\\` -> `\\`; tfrac/dfrac -> frac; `\\left`/`\\right` removed; `^{\\circ}`/`^\\circ`
    removed; `\\$` removed; a right-hand `\\text{ unit}` dropped; `\\%` and `%` removed; " ." -> " 0.", "{." -> "{0.",
    leading "." -> "0."; one "=" with a left side of at most 2 characters -> the right side; `\\sqrt3` -> `\\sqrt{3}`;
    spaces removed; `\\frac12` -> `\\frac{1}{2}`; "0.5" -> `\\frac{1}{2}`; integer "a/b" -> `\\frac{a}{b}`.
    """
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = _hm_remove_right_units(s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _hm_fix_sqrt(s)
    s = s.replace(" ", "")
    s = _hm_fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _hm_fix_a_slash_b(s)


def _equiv_with(normalize, a: Optional[str], b: Optional[str]) -> bool:
    if a is None and b is None:
        return True
    if a is None or b is None:
        return False
    try:
        return normalize(a) == normalize(b)
    except (_NormalizationError, IndexError, ValueError):
        return a == b


def hendrycks_is_equiv(a: Optional[str], b: Optional[str]) -> bool:
    """HM `is_equiv`: exact equality after `hendrycks_strip_string`; raw equality if that raises; None == None."""
    return _equiv_with(hendrycks_strip_string, a, b)


_TRAILING_ZERO_DECIMALS = re.compile(r"(\d)\.0+(?!\d)")


def normalize_math_answer(s: str) -> str:
    """The spec's MATH normalisation: `hendrycks_strip_string`, then a trailing `.0...` dropped from numbers."""
    return _TRAILING_ZERO_DECIMALS.sub(r"\1", hendrycks_strip_string(s))


def is_math_equiv(pred: Optional[str], gold: Optional[str]) -> bool:
    """Primary MATH metric: equality after `normalize_math_answer` (HM plus trailing `.0`). None never matches gold."""
    if pred is None or gold is None:
        return False
    return _equiv_with(normalize_math_answer, pred, gold)


# ================================================================================================================
# MATH: the seed's lenient metric (WMD src/utils/answer_extraction.py)
# ================================================================================================================

_WMD_KEYWORD_PATTERNS = (
    re.compile(r"(?:the answer is|answer:|final answer:?)\s*[:\-]?\s*([^\n.]+)"),
    re.compile(r"(?:therefore|thus|hence)[,:]?\s*(?:the answer is)?\s*[:\-]?\s*([^\n.]+)"),
    # no word boundary, as in WMD: "so" also fires inside "also" / "solve"
    re.compile(r"(?:so|final answer)[,:]?\s*([^\n.]+)"),
)
_WMD_LAST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def lenient_math_answer(text: str) -> tuple[Optional[str], Optional[str]]:
    """(answer, rule) by WMD's order: "boxed" (balanced; also `boxed{` missing its backslash, as WMD retries),
    then "keyword" (WMD's three patterns on the lower-cased text, trailing `.!,;` trimmed), then "last_number"."""
    if text is None:
        return None, None
    boxed = extract_boxed(text)
    if boxed is None:
        idx = text.rfind("boxed{")
        if idx >= 0:
            boxed = _balanced_brace_content(text, idx + len("boxed"))
    if boxed is not None and boxed.strip():
        return boxed.strip(), "boxed"
    lowered = text.lower()
    for pattern in _WMD_KEYWORD_PATTERNS:
        m = pattern.search(lowered)
        if m:
            answer = re.sub(r"[.!,;]+$", "", m.group(1).strip())
            if answer:
                return answer, "keyword"
    numbers = _WMD_LAST_NUMBER.findall(text)
    if numbers:
        return numbers[-1], "last_number"
    return None, None


def _wmd_normalize(s: str) -> str:
    s = re.sub(r"\\(?:text|mathrm|mathbf)\{([^}]*)\}", r"\1", s)
    s = re.sub(r"\\frac\{([^}]*)\}\{([^}]*)\}", r"\1/\2", s)
    s = s.replace("$", "").replace(" ", "").lower()
    return re.sub(r"[.!,;:]+$", "", s)


_SAFE_SYMPY = re.compile(r"^[0-9a-z+\-*/^().]{1,40}$")
_SAFE_NAMES = {"sqrt", "pi"}


def _sympy_safe(s: str) -> bool:
    """Only short arithmetic in single-letter symbols, sqrt and pi, with small exponents: sympify evaluates its
    input as Python and can run for ever on towers like 9^9^9, so model output is screened first."""
    if not _SAFE_SYMPY.match(s) or "**" in s or "__" in s or s.count("^") > 1:
        return False
    if re.search(r"\^\(?-?\d{3,}", s):
        return False
    return all(len(name) == 1 or name in _SAFE_NAMES for name in re.findall(r"[a-z]+", s))


def lenient_math_equiv(pred: Optional[str], gold: Optional[str], use_sympy: bool = True) -> bool:
    """Secondary metric `lenient`: `is_math_equiv`, or WMD's `are_answers_equivalent` on WMD-normalised strings
    (equal strings; floats within 1e-6; `sympy.simplify(p - g) == 0`). The sympy step runs only on screened
    short arithmetic (see `_sympy_safe`) and is skipped when sympy is not installed."""
    if pred is None or gold is None:
        return False
    if is_math_equiv(pred, gold):
        return True
    p, g = _wmd_normalize(pred), _wmd_normalize(gold)
    if p == g:
        return True
    try:
        return abs(float(p) - float(g)) < 1e-6
    except ValueError:
        pass
    if not (use_sympy and _sympy_safe(p) and _sympy_safe(g)):
        return False
    try:
        import sympy
        return bool(sympy.simplify(sympy.sympify(p) - sympy.sympify(g)) == 0)
    except Exception:  # noqa: BLE001 - any parse or evaluation failure means "not shown equal"
        return False


def score_math(generation: str, gold_answer: str) -> dict:
    """One MATH item: {"extracted", "correct", "lenient_answer", "lenient_rule", "correct_lenient"}.

    `gold_answer` is the final answer (`answer` field of shared/data/math); use `extract_boxed(solution)` for a
    bare solution text.
    """
    extracted = extract_boxed(generation)
    lenient, rule = lenient_math_answer(generation)
    return {
        "extracted": extracted,
        "correct": is_math_equiv(extracted, gold_answer),
        "lenient_answer": lenient,
        "lenient_rule": rule,
        "correct_lenient": lenient_math_equiv(lenient, gold_answer),
    }


# ================================================================================================================
# GSM8K
# ================================================================================================================

GSM8K_INVALID = "[invalid]"
_GSM8K_OFFICIAL = re.compile(r"#### (\-?[0-9\.\,]+)")
_NUMBER = r"-?\d+(?:,\d{3})*(?:\.\d+)?"
_GSM8K_HASHES = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
_GSM8K_NUMBER = re.compile(_NUMBER)


def gsm8k_official_extract(text: str) -> str:
    """The official GSM8K rule (openai/grade-school-math): first `#### (-?[0-9.,]+)`, stripped, commas removed;
    `[invalid]` when absent. No last-number fallback; the translator spec compares these strings exactly."""
    m = _GSM8K_OFFICIAL.search(text or "")
    return m.group(1).strip().replace(",", "") if m else GSM8K_INVALID


def gsm8k_gold(answer: str) -> str:
    """Gold number of a GSM8K `answer` field (`... #### N`), commas removed."""
    gold = gsm8k_official_extract(answer)
    if gold == GSM8K_INVALID:
        raise ValueError(f"GSM8K answer without '#### N': {answer[-80:]!r}")
    return gold


def extract_gsm8k_prediction(text: str) -> tuple[Optional[str], Optional[str]]:
    """(number, rule): the last number inside the last `\\boxed{}` ("boxed"), else the number after the first
    `####` ("####", an optional `$` allowed), else the last number in the text ("last_number"); (None, None)
    if there is no number. Numbers keep their sign and decimals, thousands commas removed."""
    if not text:
        return None, None
    boxed = extract_boxed(text)
    if boxed is not None:
        found = _GSM8K_NUMBER.findall(boxed)
        if found:
            return found[-1].replace(",", ""), "boxed"
    m = _GSM8K_HASHES.search(text)
    if m:
        return m.group(1).replace(",", ""), "####"
    found = _GSM8K_NUMBER.findall(text)
    if found:
        return found[-1].replace(",", ""), "last_number"
    return None, None


def gsm8k_numbers_equal(pred: Optional[str], gold: Optional[str], tol: float = 1e-4) -> bool:
    """Numeric comparison with WMD's tolerance: |float(pred) - float(gold)| < tol; unparsable -> False."""
    if pred is None or gold is None:
        return False
    try:
        return abs(float(pred.replace(",", "")) - float(gold.replace(",", ""))) < tol
    except ValueError:
        return False


def score_gsm8k(generation: str, gold_answer: str) -> dict:
    """One GSM8K item under both rules: {"gold", "extracted", "rule", "correct", "official_extracted",
    "correct_official"}. `gold_answer` is the dataset's `answer` field (or a bare number)."""
    gold = gsm8k_official_extract(gold_answer)
    if gold == GSM8K_INVALID:
        gold = gold_answer.strip().replace(",", "")
    pred, rule = extract_gsm8k_prediction(generation)
    official = gsm8k_official_extract(generation)
    return {
        "gold": gold,
        "extracted": pred,
        "rule": rule,
        "correct": gsm8k_numbers_equal(pred, gold),
        "official_extracted": official,
        "correct_official": official != GSM8K_INVALID and official == gold,
    }


# ================================================================================================================
# Prompts of the seed's evaluation (WMD src/utils/config.py EvaluationConfig, src/evaluation/eval_mmlu.py)
# ================================================================================================================

MATH_PROMPT_TEMPLATE = "Solve this problem step by step. Put your final answer in \\boxed{{}}.\n\nProblem: {problem}"
GSM8K_PROMPT_TEMPLATE = "Solve this problem step by step. Put your final answer as a number.\n\nProblem: {problem}"
MMLU_INSTRUCTION = "Answer with only the letter (A, B, C, or D):"
MMLU_LETTERS = ("A", "B", "C", "D")


def format_math_prompt(problem: str) -> str:
    """WMD's zero-shot MATH prompt (no chat template)."""
    return MATH_PROMPT_TEMPLATE.format(problem=problem)


def format_gsm8k_prompt(question: str) -> str:
    """WMD's zero-shot GSM8K prompt (no chat template)."""
    return GSM8K_PROMPT_TEMPLATE.format(problem=question)


def format_mmlu_prompt(question: str, choices: Sequence[str]) -> str:
    """WMD's zero-shot MMLU prompt: question, blank line, `A. c0` .. `D. c3`, blank line, the letter instruction."""
    if len(choices) != len(MMLU_LETTERS):
        raise ValueError(f"MMLU needs {len(MMLU_LETTERS)} choices, got {len(choices)}")
    lines = "\n".join(f"{letter}. {choice}" for letter, choice in zip(MMLU_LETTERS, choices))
    return f"{question}\n\n{lines}\n\n{MMLU_INSTRUCTION}"


# ================================================================================================================
# MMLU letter scoring
# ================================================================================================================


def mmlu_gold_letter(answer: int) -> str:
    """Letter of the dataset's `answer` index (0-3)."""
    return MMLU_LETTERS[int(answer)]


def choice_logprobs(next_token_logprobs: np.ndarray, letter_token_ids: Sequence[Sequence[int]],
                    reduce: str = "logsumexp") -> np.ndarray:
    """[..., V] next-token log-probabilities -> [..., 4] one score per letter.

    `letter_token_ids[j]` lists the token ids that spell letter j (e.g. the ids of "A" and " A"); their
    log-probabilities are combined by `reduce` = "logsumexp" (probability of any spelling) or "max".
    """
    lp = np.asarray(next_token_logprobs, dtype=np.float64)
    cols = []
    for ids in letter_token_ids:
        sel = lp[..., list(ids)]
        if reduce == "logsumexp":
            m = sel.max(axis=-1, keepdims=True)
            cols.append((m + np.log(np.exp(sel - m).sum(axis=-1, keepdims=True)))[..., 0])
        elif reduce == "max":
            cols.append(sel.max(axis=-1))
        else:
            raise ValueError(f"reduce must be 'logsumexp' or 'max', got {reduce!r}")
    return np.stack(cols, axis=-1)


def letter_from_logprobs(scores: Iterable, letters: Sequence[str] = MMLU_LETTERS):
    """Argmax letter of per-choice scores: one letter for a [4] vector, a list for [N, 4]. Ties -> first letter."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.shape[-1] != len(letters):
        raise ValueError(f"last axis must have {len(letters)} scores, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("scores contain nan")
    idx = arr.argmax(axis=-1)
    if arr.ndim == 1:
        return letters[int(idx)]
    return [letters[int(i)] for i in idx.reshape(-1)]


_MMLU_ANSWER_WORD = re.compile(r"(?:answer|choice)[:\s]*([ABCD])", re.IGNORECASE)


def extract_mmlu_letter(text: str) -> Optional[str]:
    """WMD's generate-and-parse rule (`extract_mmlu_answer`): on the stripped, upper-cased text, its first character
    if A-D; else "answer"/"choice" + optional colon/space + a letter; else the first A-D anywhere (so "BECAUSE"
    reads as B); None if there is none."""
    t = (text or "").strip().upper()
    if t and t[0] in MMLU_LETTERS:
        return t[0]
    m = _MMLU_ANSWER_WORD.search(t)
    if m:
        return m.group(1).upper()
    for ch in t:
        if ch in MMLU_LETTERS:
            return ch
    return None

