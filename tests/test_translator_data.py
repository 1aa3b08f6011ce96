"""Translator data: curriculum switching, prompts, the few-shot prefix, batches through grain, official scoring."""
from __future__ import annotations

import numpy as np
import pytest

from latentjax.bridge.tiny import save_byte_tokenizer
from latentjax.data.pipeline import make_loader
from latentjax.translator import data as D
from latentjax.translator.evaluate import collapse_stats, score

ROWS = [{"question": f"Q{i}: what is {i} + {i}?", "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
        for i in range(12)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(save_byte_tokenizer(str(tmp_path_factory.mktemp("tok"))))


def test_mode_at_step_curriculum():
    assert [D.mode_at_step(s, "soft_only", 0) for s in (1, 500)] == ["soft_only"] * 2
    assert [D.mode_at_step(s, "soft_plus_text", 3) for s in (1, 2, 3, 4)] == (
        ["soft_plus_text"] * 2 + ["soft_only"] * 2)
    with pytest.raises(ValueError, match="mode must be one of"):
        D.mode_at_step(1, "text_only", 0)


def test_prompts_and_few_shot_prefix_are_deterministic():
    a = D.few_shot_prefix(ROWS, 3, seed=42)
    assert a == D.few_shot_prefix(ROWS, 3, seed=42) and a != D.few_shot_prefix(ROWS, 3, seed=7)
    assert a.startswith(D.FEW_SHOT_HEADER + "\n\nQ: ")
    assert a.count("\nA: ") == 3 and a.count("\n#### ") == 3 and "<<" in a
    for block in a.split("\n\n")[1:]:  # "Q: {question}\nA: {rationale}\n#### {answer}"
        q, rest = block.split("\nA: ")
        row = next(r for r in ROWS if "Q: " + r["question"] == q)
        assert rest == D.rationale_and_answer(row["answer"])[0] + "\n#### " + D.rationale_and_answer(row["answer"])[1]
    item = D.eval_prompt("How many?", a)
    assert item.startswith(a) and item.endswith("\n\nQ: How many?\nA: Let's think step by step.\n\nAnswer:")
    assert D.eval_prompt("How many?", "") == D.TRAIN_PROMPT.format(question="How many?")
    assert D.TRAIN_PROMPT.format(question="X").endswith("Problem:\nX\n\nAnswer:")
    assert D.context_text("soft_only", "P") == (D.FORMAT_LINE, True)
    assert D.context_text("soft_plus_text", "P") == ("P" + D.FORMAT_LINE, True)
    assert D.rationale_and_answer("a\nb\n#### 1,234") == ("a\nb", "1234")


def test_batches_switch_mode_at_the_curriculum_step(tok):
    k, batch = 3, 4
    enc = D.Encode(tok, tok, k, batch, mode="soft_plus_text", curriculum_steps=3, context="mode", teacher="prompt",
                   sender_max_tokens=64)
    loader = iter(make_loader(D.gsm8k_examples(ROWS), batch, seed=0, transforms=[enc],
                              batch_fn=D.pad_batch(0, 0, k, 64, 256)))
    batches = [next(loader) for _ in range(4)]
    assert set(batches[0]) == set(D.BATCH_KEYS)
    assert [b["step"].tolist() for b in batches] == [[s] * batch for s in (1, 2, 3, 4)]
    assert [int(b["soft_only"].max()) for b in batches] == [0, 0, 1, 1]
    b1, b3 = batches[0], batches[2]
    # soft_plus_text rows carry the prompt after the K slots; soft_only rows only BOS + the format line.
    fmt = tok(D.FORMAT_LINE)["input_ids"]
    row3 = b3["receiver_input_ids"][0][b3["receiver_attention_mask"][0] > 0]
    np.testing.assert_array_equal(row3[k:k + len(fmt)], fmt)
    row1 = b1["receiver_input_ids"][0][b1["receiver_attention_mask"][0] > 0]
    assert len(row1) > len(row3) and "Problem:" in tok.decode(row1[k:])
    # The loss mask covers exactly the solution + EOS; the soft slots are first; the teacher has K tokens.
    for b in (b1, b3):
        ids, loss = b["receiver_input_ids"][0], b["receiver_loss_mask"][0]
        assert tok.decode(ids[loss > 0][:-1]) in {r["answer"] for r in ROWS}
        assert loss[:k].sum() == 0 and ids[loss > 0][-1] == tok.eos_token_id
    assert b1["teacher_input_ids"].shape == (batch, k) and b1["prompt_input_ids"].shape[1] >= k
    assert b1["sender_attention_mask"][0, -1] == 1  # left-padded sender


def test_reference_context_is_soft_tokens_then_solution(tok):
    enc = D.Encode(tok, tok, 2, 4, mode="soft_only", context="reference")
    out = enc.map_with_index(0, ROWS[5])
    ids, loss = out["receiver_input_ids"], out["receiver_loss_mask"]
    assert loss[:2].sum() == 0 and loss[2:].all()
    assert tok.decode(ids[2:-1]) == ROWS[5]["answer"]
    teacher = D.Encode(tok, tok, 6, 4, teacher="answer").map_with_index(0, ROWS[5])["teacher_input_ids"]
    assert tok.decode(teacher) == ROWS[5]["answer"][:6]
    with pytest.raises(ValueError, match="train_context"):
        D.Encode(tok, tok, 2, 4, context="none")


def test_official_scoring_and_collapse_stats():
    gold = "blah\n#### 1,234"
    assert score("so #### 1,234 done", gold) == {"extracted": "1234", "correct": True}
    assert score("the answer is 1234", gold) == {"extracted": "[invalid]", "correct": False}  # no fallback
    assert score("#### 12 then #### 1234", gold)["extracted"] == "12"  # the first match
    assert score("####1234", gold)["correct"] is False  # the official pattern needs the space
    recs = [{"extracted": e, "correct": c} for e, c in
            [("1", False), ("1", False), ("10", False), ("[invalid]", False), ("7", True)]]
    s = collapse_stats(recs, top=2)
    assert s["n"] == 5 and s["correct"] == 1 and s["invalid"] == 1 and s["invalid_rate"] == 0.2
    assert s["distinct_answers"] == 4 and s["top_outputs"] == [["1", 2], ["10", 1]]
    assert 0 <= s["ci95"][0] <= 0.2 <= s["ci95"][1]


def test_format_token_id_and_positions(tok):
    assert tok.decode([D.format_token_id(tok)]) == "#"  # byte-level: the first '#'
    import jax.numpy as jnp

    from latentjax.translator.forward import text_positions

    mask = jnp.asarray([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 1, 1]])  # row 1: soft tokens, left padding, text
    np.testing.assert_array_equal(text_positions(mask, 2, "shifted"), [[0, 1, 2, 3, 4, 4], [0, 1, 1, 1, 2, 3]])
    np.testing.assert_array_equal(text_positions(mask, 2, "text_first"),
                                  [[-2, -1, 0, 1, 2, 2], [-2, -1, -1, -1, 0, 1]])
    with pytest.raises(ValueError, match="positions"):
        text_positions(mask, 2, "rope")
