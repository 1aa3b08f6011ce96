"""MATH / GSM8K / MMLU answer rules of latentjax.eval.math_answers."""
import json
import math
import os

import numpy as np
import pytest

from latentjax.eval import math_answers as ma


def _rows(data_dir, relpath):
    """Rows of a shared data file (the conftest's `data_dir` fixture skips when ../shared/data is absent)."""
    path = os.path.join(data_dir, relpath)
    if not os.path.exists(path):
        pytest.skip(f"{path} absent")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------- \boxed{} extraction

@pytest.mark.parametrize("text, expected", [
    ("so $\\boxed{2}$.", "2"),
    ("first \\boxed{1} then \\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),  # last box, nested braces
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("\\boxed{{a}{b}{c}}", "{a}{b}{c}"),
    ("answer \\fbox{7}", "7"),
    ("\\fbox{7} and \\boxed{8}", "8"),  # \boxed wins over a later-or-earlier \fbox, as HM
    ("\\boxed {5}", "5"),
    ("our answer is $\\boxed 2$.", "2"),  # brace-less form (two MATH train solutions)
    ("\\boxed{3} ... \\boxed{\\frac{1}{2}", None),  # the last box never closes (truncated)
    ("no box here, 42", None),
    ("", None),
])
def test_extract_boxed(text, expected):
    assert ma.extract_boxed(text) == expected


def test_extract_boxed_matches_answer_field_of_all_math_rows(data_dir):
    for split in ("math/test.jsonl", "math/train.jsonl", "math500/test.jsonl"):
        rows = _rows(data_dir, split)
        bad = [r["unique_id"] for r in rows if ma.extract_boxed(r["solution"]) != r["answer"]]
        assert not bad, (split, bad[:5])
        assert all(ma.is_math_equiv(r["answer"], r["answer"]) for r in rows)


# ---------------------------------------------------------------- Hendrycks normalisation

# hendrycks/math modeling/math_equivalence_test.py, every case (inputs as Python literals there).
HENDRYCKS_CASES = [
    ("\\tfrac{1}{2} + \\frac1{72}", "\\\\frac{1}{2} + 2/3", False),
    ("10, 4, -2", "4, 10, -2", False),
    ("10, 4, 2", "4, 12, 2", False),
    ("\\tfrac{1}{2} +\\! \\frac1{72}", "\\\\dfrac{1}{2} +\\frac{1}{72}", True),
    ("10\\text{ units}", "10 ", True),
    ("10\\text{ units}", "100 ", False),
    ("10", "\\$10", True),
    ("\\left(x-2\\right)\\left(x+2\\right)", "(x-2)(x+2)", True),
    ("0.1, 4, 2", "4, .1, 2", False),
    ("0.1", ".1", True),
    ("10\\%", "10", True),
    ("10\\sqrt{3} + \\sqrt4", "10\\sqrt3 + \\sqrt{4}", True),
    ("\\frac34i", "\\frac{3}{4}i", True),
    ("\\tfrac83", "\\frac{8}{3}", True),
    ("5x - 7y + 11z + 4 = 0", "x + y - z + 2 = 0", False),
    ("1/2", "\\frac{1}{2}", True),
]

# The spec's list (subliminal.md "Evaluate"), one case per rule; last column: HM result (False where only the
# spec's extra "trailing .0" rule makes them equal).
SPEC_CASES = [
    ("\\frac{1}{2}", "\\dfrac{1}{2}", True, True),
    ("\\tfrac{3}{4}", "\\frac34", True, True),
    ("0.5", "\\frac{1}{2}", True, True),
    (".5", "\\frac{1}{2}", True, True),          # leading "." -> "0.", then 0.5 -> 1/2
    ("0.25", ".25", True, True),
    ("3/4", "\\frac{3}{4}", True, True),         # a/b vs \frac{a}{b}
    ("3 / 4", "\\frac{3}{4}", True, True),       # spaces go before the a/b rewrite
    ("3/4x", "\\frac{3}{4}x", False, False),     # only a whole-string integer a/b is rewritten
    ("10\\%", "10", True, True),
    ("5\\text{ cm}", "5", True, True),
    ("5 \\text{ cm}^2", "5", True, True),
    ("5\\text{cm}", "5", False, False),          # units only when introduced by "\text{ "
    ("90^\\circ", "90", True, True),
    ("90^{\\circ}", "90", True, True),
    ("\\$18.50", "18.50", True, True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True, True),
    ("1,\\!000", "1,000", True, True),
    ("x=5", "5", True, True),                    # left side of at most 2 characters dropped
    ("k = 5", "5", True, True),
    ("xyz=5", "5", False, False),
    ("y = 2x + 3", "2x+3", True, True),
    ("12.0", "12", True, False),                 # trailing .0: the spec's addition to HM
    ("12.00", "12", True, False),
    ("1.05", "1.5", False, False),
    ("2.50", "2.5", False, False),               # only all-zero decimals are dropped
    ("\\sqrt2", "\\sqrt{2}", True, True),
    ("\\frac{1}{2}", "\\frac{2}{4}", False, False),  # no algebra in the primary metric
    ("-3", "-3", True, True),
]


@pytest.mark.parametrize("a, b, expected", HENDRYCKS_CASES)
def test_hendrycks_own_unit_tests(a, b, expected):
    assert ma.hendrycks_is_equiv(a, b) is expected
    assert ma.is_math_equiv(a, b) is expected


@pytest.mark.parametrize("a, b, spec, hm", SPEC_CASES)
def test_spec_normalisation_cases(a, b, spec, hm):
    assert ma.is_math_equiv(a, b) is spec
    assert ma.is_math_equiv(b, a) is spec
    assert ma.hendrycks_is_equiv(a, b) is hm


def test_normalisation_failures_fall_back_to_raw_equality():
    two_units = "1\\text{ cm} + 2\\text{ m}"  # HM asserts a single "\text{ "
    with pytest.raises(ValueError):
        ma.hendrycks_strip_string(two_units)
    assert ma.hendrycks_is_equiv(two_units, two_units)
    assert not ma.hendrycks_is_equiv(two_units, "1")
    assert ma.hendrycks_is_equiv("x\\sqrt", "x\\sqrt") and not ma.hendrycks_is_equiv("x\\sqrt", "x")
    assert ma.hendrycks_is_equiv(None, None) and not ma.hendrycks_is_equiv("1", None)
    assert not ma.is_math_equiv(None, "1") and not ma.is_math_equiv(None, None)
    assert ma.hendrycks_strip_string("") == ""
    assert ma.hendrycks_strip_string("\\frac1") == "\\frac1"  # HM returns the string when a short tail


def test_normalized_forms():
    assert ma.hendrycks_strip_string("\\dfrac{1}{2}") == "\\frac{1}{2}"
    assert ma.hendrycks_strip_string("\\frac12") == "\\frac{1}{2}"
    assert ma.hendrycks_strip_string("\\frac1{72}") == "\\frac{1}{72}"
    assert ma.normalize_math_answer("12.0") == "12"
    assert ma.normalize_math_answer("(1.0, 2.50)") == "(1,2.50)"


# ---------------------------------------------------------------- lenient (seed) metric

def test_lenient_extraction_order():
    assert ma.lenient_math_answer("... \\boxed{\\frac{3}{4}} so 7") == ("\\frac{3}{4}", "boxed")
    assert ma.lenient_math_answer("the value boxed{12} ok") == ("12", "boxed")  # WMD retries without backslash
    assert ma.lenient_math_answer("Thus the answer is 42.\nDone") == ("42", "keyword")
    assert ma.lenient_math_answer("I also got x = 3") == ("got x = 3", "keyword")  # WMD's "so" fires in "also"
    assert ma.lenient_math_answer("we get 3/4 and 7") == ("7", "last_number")
    assert ma.lenient_math_answer("we get 3/4") == ("3/4", "last_number")
    assert ma.lenient_math_answer("nothing numeric") == (None, None)


def test_lenient_equivalence():
    assert ma.lenient_math_equiv("3/4", "\\frac{3}{4}")
    assert ma.lenient_math_equiv("0.750", "0.75")             # floats within 1e-6
    assert ma.lenient_math_equiv("\\text{(B)}", "(b)")       # WMD unwraps \text and lower-cases
    assert ma.lenient_math_equiv("12.0", "12")               # includes the primary metric
    assert not ma.lenient_math_equiv("5", "6")
    assert not ma.lenient_math_equiv(None, "6")
    assert not ma.lenient_math_equiv("9^9^9", "9")           # screened: never handed to sympy


def test_lenient_sympy_step():
    pytest.importorskip("sympy")
    assert ma.lenient_math_equiv("2*x+x", "3*x")
    assert ma.lenient_math_equiv("sqrt(8)", "2*sqrt(2)")
    assert ma.lenient_math_equiv("\\frac{6}{8}", "0.75")  # WMD: \frac{6}{8} -> 6/8, then sympy
    assert not ma.lenient_math_equiv("2*x+x", "3*x", use_sympy=False)
    assert not ma.lenient_math_equiv("x+1", "x+2")
    assert not ma.lenient_math_equiv("__import__(os)", "1")


def test_score_math_record():
    rec = ma.score_math("Hence $\\boxed{\\dfrac{1}{2}}$.", "\\frac{1}{2}")
    assert rec == {"extracted": "\\dfrac{1}{2}", "correct": True, "lenient_answer": "\\dfrac{1}{2}",
                   "lenient_rule": "boxed", "correct_lenient": True}
    rec = ma.score_math("The answer is 1/2", "\\frac{1}{2}")
    assert rec["extracted"] is None and rec["correct"] is False
    assert rec["lenient_rule"] == "keyword" and rec["correct_lenient"] is True
    rec = ma.score_math("The answer is 0.5", "\\frac{1}{2}")  # WMD's keyword capture stops at any "."
    assert (rec["lenient_answer"], rec["correct_lenient"]) == ("0", False)


# ---------------------------------------------------------------- GSM8K

def test_gsm8k_on_real_rows(data_dir):
    rows = _rows(data_dir, "gsm8k/test.jsonl")
    assert len(rows) == 1319
    n_comma = 0
    for row in rows:
        last_line = row["answer"].strip().split("\n")[-1]
        assert last_line.startswith("#### ")
        expected = last_line[5:].strip().replace(",", "")
        n_comma += "," in last_line
        gold = ma.gsm8k_gold(row["answer"])
        assert gold == expected
        assert float(gold) == int(gold)  # every test gold is an integer
        pred, rule = ma.extract_gsm8k_prediction(row["answer"])
        assert (pred, rule) == (gold, "####")
        rec = ma.score_gsm8k(row["answer"], row["answer"])
        assert rec["correct"] and rec["correct_official"]
    assert n_comma == 14


def test_gsm8k_real_row_with_wrong_completion(data_dir):
    row = _rows(data_dir, "gsm8k/test.jsonl")[0]  # Janet's ducks, gold 18
    assert ma.gsm8k_gold(row["answer"]) == "18"
    rec = ma.score_gsm8k("She sells 16 - 3 - 4 = 9 eggs for $2 each, so $18.\nWait, 9 * 3 = 27", row["answer"])
    assert (rec["extracted"], rec["rule"], rec["correct"]) == ("27", "last_number", False)
    assert rec["official_extracted"] == ma.GSM8K_INVALID and not rec["correct_official"]
    rec = ma.score_gsm8k("9 * 2 = 18, so the answer is \\boxed{18}. Check: 18 + 0 = 18.5", row["answer"])
    assert (rec["extracted"], rec["rule"], rec["correct"]) == ("18", "boxed", True)


@pytest.mark.parametrize("text, expected", [
    ("The total is \\boxed{1,234} dollars", ("1234", "boxed")),
    ("\\boxed{\\$ 18.00}", ("18.00", "boxed")),
    ("5 + 3 = 8\n#### 8", ("8", "####")),
    ("#### $1,000. Then 5", ("1000", "####")),
    ("#### -3 and later 4", ("-3", "####")),
    ("I have 5 apples and 7 pears.", ("7", "last_number")),
    ("costs 1,250,000 total", ("1250000", "last_number")),
    ("\\boxed{x} and 12", ("12", "last_number")),  # a box with no number falls through
    ("no digits", (None, None)),
])
def test_extract_gsm8k_prediction(text, expected):
    assert ma.extract_gsm8k_prediction(text) == expected


def test_gsm8k_official_rule_is_exact_string():
    assert ma.gsm8k_official_extract("so #### 1,234") == "1234"
    assert ma.gsm8k_official_extract("#### 18.00") == "18.00"
    assert ma.gsm8k_official_extract("####18") == ma.GSM8K_INVALID  # needs the space
    assert ma.gsm8k_official_extract("the answer is 18") == ma.GSM8K_INVALID
    rec = ma.score_gsm8k("#### 18.00", "#### 18")
    assert rec["correct"] and not rec["correct_official"]  # numeric vs official string comparison
    assert ma.score_gsm8k("#### 18.", "#### 18")["correct_official"] is False  # official captures the period
    assert ma.gsm8k_numbers_equal("18.00001", "18") and not ma.gsm8k_numbers_equal("18.001", "18")
    assert not ma.gsm8k_numbers_equal(None, "18") and not ma.gsm8k_numbers_equal("1.2.3", "18")
    with pytest.raises(ValueError):
        ma.gsm8k_gold("no hashes")


# ---------------------------------------------------------------- MMLU

def test_format_mmlu_prompt_on_real_row(data_dir):
    row = _rows(data_dir, "mmlu_math/test.jsonl")[0]
    prompt = ma.format_mmlu_prompt(row["question"], row["choices"])
    assert prompt == (
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n\n"
        "A. 0\nB. 4\nC. 2\nD. 6\n\n"
        "Answer with only the letter (A, B, C, or D):")
    assert ma.mmlu_gold_letter(row["answer"]) == "B"
    with pytest.raises(ValueError):
        ma.format_mmlu_prompt("q", ["a", "b"])


def test_letter_from_logprobs():
    assert ma.letter_from_logprobs([-2.0, -0.1, -3.0, -1.0]) == "B"
    scores = np.log(np.array([[0.1, 0.2, 0.6, 0.1], [0.4, 0.4, 0.1, 0.1], [0.0, 0.0, 0.0, 1.0]]) + 1e-30)
    assert ma.letter_from_logprobs(scores) == ["C", "A", "D"]  # a tie goes to the first letter
    with pytest.raises(ValueError):
        ma.letter_from_logprobs([0.0, 1.0, 2.0])
    with pytest.raises(ValueError):
        ma.letter_from_logprobs([0.0, float("nan"), 0.0, 0.0])


def test_choice_logprobs_combines_token_variants():
    probs = np.full(10, 0.01)
    probs[[1, 2, 3, 4, 5, 6, 7, 8]] = [0.05, 0.30, 0.10, 0.02, 0.20, 0.10, 0.02, 0.12]
    lp = np.log(probs / probs.sum())
    ids = [[1, 5], [2], [3, 6], [4, 7, 8]]  # e.g. "A" and " A" for letter A
    got = ma.choice_logprobs(lp, ids)
    expected = np.log([probs[[1, 5]].sum(), probs[2], probs[[3, 6]].sum(), probs[[4, 7, 8]].sum()]) \
        - math.log(probs.sum())
    assert got == pytest.approx(expected, abs=1e-12)
    assert ma.letter_from_logprobs(got) == "B"
    assert ma.choice_logprobs(lp, ids, reduce="max") == pytest.approx(lp[[5, 2, 3, 8]], abs=1e-12)
    batch = ma.choice_logprobs(np.stack([lp, lp]), ids)
    assert batch.shape == (2, 4)


@pytest.mark.parametrize("text, expected", [
    (" B", "B"),
    ("c) because", "C"),
    ("The correct choice: D", "D"),
    ("Answer: C", "A"),        # WMD reads the first character first
    ("BECAUSE it is", "B"),    # the quirk the reference names
    ("The option is (d)", "D"),
    ("none", None),
    ("", None),
])
def test_extract_mmlu_letter_seed_rule(text, expected):
    assert ma.extract_mmlu_letter(text) == expected


def test_prompts_of_the_seed():
    assert ma.format_math_prompt("What is 1+1?") == (
        "Solve this problem step by step. Put your final answer in \\boxed{}.\n\nProblem: What is 1+1?")
    assert ma.format_gsm8k_prompt("Q?") == (
        "Solve this problem step by step. Put your final answer as a number.\n\nProblem: Q?")
