"""latentjax.eval: the model-free parts of evaluation (answer parsing, scoring rules, statistics, reports).

Modules: `stats` (intervals and tests), `math_answers` (MATH / GSM8K / MMLU answers), `classification` (Telepathy
label and passkey scoring, confusion matrix), `reports` (JSONL / JSON / markdown / PNG). No JAX here.
"""
from latentjax.eval.classification import (AGNEWS_SCIENCE_ALIASES, confusion_matrix, label_aliases, label_in_output,
                                           label_scoring_predictions, parse_label, passkey_digit_accuracy,
                                           passkey_score, per_class_accuracy, score_label_generations)
from latentjax.eval.math_answers import (extract_boxed, extract_gsm8k_prediction, extract_mmlu_letter,
                                         format_mmlu_prompt, gsm8k_gold, gsm8k_official_extract, hendrycks_is_equiv,
                                         is_math_equiv, letter_from_logprobs, lenient_math_equiv, score_gsm8k,
                                         score_math)
from latentjax.eval.reports import (markdown_table, plot_accuracy_vs_tokens, plot_benchmark_bars, read_jsonl,
                                    write_eval_outputs, write_json, write_jsonl)
from latentjax.eval.stats import (accuracy_by_group, accuracy_summary, bootstrap_mean_ci, fisher_exact_test,
                                  holm_adjust, mcnemar_exact, paired_bootstrap_diff, paired_permutation_test,
                                  t_interval, two_proportion_ztest, welch_ttest, wilson_interval)

__all__ = [
    "AGNEWS_SCIENCE_ALIASES", "accuracy_by_group", "accuracy_summary", "bootstrap_mean_ci", "confusion_matrix",
    "extract_boxed", "extract_gsm8k_prediction", "extract_mmlu_letter", "fisher_exact_test", "format_mmlu_prompt",
    "gsm8k_gold", "gsm8k_official_extract", "hendrycks_is_equiv", "holm_adjust", "is_math_equiv", "label_aliases",
    "label_in_output", "label_scoring_predictions", "letter_from_logprobs", "lenient_math_equiv", "markdown_table",
    "mcnemar_exact", "paired_bootstrap_diff", "paired_permutation_test", "parse_label", "passkey_digit_accuracy",
    "passkey_score", "per_class_accuracy", "plot_accuracy_vs_tokens", "plot_benchmark_bars", "read_jsonl",
    "score_gsm8k", "score_label_generations", "score_math", "t_interval", "two_proportion_ztest", "welch_ttest",
    "wilson_interval", "write_eval_outputs", "write_json", "write_jsonl",
]
