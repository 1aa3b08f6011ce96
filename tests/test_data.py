"""latentjax.data: grain determinism, per-process shards, iterator checkpoints, transforms, local datasets."""
import json
import os

import datasets
import grain
import numpy as np
import pytest

from latentjax.data import (Pad, PadBatch, Tokenize, TokenizePromptCompletion, find_data_dir, label_names,
                            load_split, make_loader)
from latentjax.data.sources import SOURCES, UnknownDataError

ROWS = [{"i": i} for i in range(37)]


def ids(loader, n=None):
    """The `i` of every row of the first n batches (all when n is None), batch by batch."""
    it = iter(loader)
    out = []
    for batch in it:
        out.append(batch["i"].tolist())
        if n is not None and len(out) == n:
            break
    return out


def flat(batches):
    return [i for b in batches for i in b]


# ---------------------------------------------------------------- order and shards

def test_same_seed_same_order_different_seed_different_order():
    a = flat(ids(make_loader(ROWS, 4, seed=1, num_epochs=1, drop_remainder=False)))
    b = flat(ids(make_loader(ROWS, 4, seed=1, num_epochs=1, drop_remainder=False)))
    c = flat(ids(make_loader(ROWS, 4, seed=2, num_epochs=1, drop_remainder=False)))
    assert a == b
    assert sorted(a) == sorted(c) == list(range(37))
    assert a != c and a != list(range(37))
    assert flat(ids(make_loader(ROWS, 4, seed=1, shuffle=False, num_epochs=1, drop_remainder=False))) == list(range(37))


@pytest.mark.parametrize("num_epochs", [3, None])
def test_each_epoch_is_a_new_permutation(num_epochs):
    stream = flat(ids(make_loader(ROWS, 1, seed=0, num_epochs=num_epochs), n=3 * 37))
    epochs = [stream[k * 37:(k + 1) * 37] for k in range(3)]
    assert all(sorted(e) == list(range(37)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3


def test_drop_remainder_and_batch_shapes():
    batches = ids(make_loader(ROWS, 5, seed=0, num_epochs=1, drop_remainder=True))
    assert [len(b) for b in batches] == [5] * 7
    batches = ids(make_loader(ROWS, 5, seed=0, num_epochs=1, drop_remainder=False))
    assert [len(b) for b in batches] == [5] * 7 + [2]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_process_shards_disjoint_and_complete(n):
    shards = [flat(ids(make_loader(ROWS, 2 * n, seed=5, num_epochs=1, drop_remainder=False,
                                   num_processes=n, process_index=p))) for p in range(n)]
    assert sum(len(s) for s in shards) == 37
    assert sorted(flat(shards)) == list(range(37))


class Noise(grain.transforms.RandomMap):
    def random_map(self, ex, rng):
        return {**ex, "r": int(rng.integers(1 << 30))}


def with_noise(loader, n=None):
    return [list(zip(b["i"].tolist(), b["r"].tolist())) for b in list(loader)[:n]]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_global_batches_do_not_depend_on_process_count(n):
    """Global batch j (union over processes) is batch j of the single-process loader, random transforms
    included; all processes yield the same number of batches when finite epochs drop the remainder."""
    single = with_noise(make_loader(ROWS, 12, seed=3, num_epochs=2, transforms=[Noise()]))
    per_process = [with_noise(make_loader(ROWS, 12, seed=3, num_epochs=2, transforms=[Noise()],
                                          num_processes=n, process_index=p)) for p in range(n)]
    assert {len(b) for b in per_process} == {len(single)} == {6}  # 74 rows -> 6 global batches of 12
    for j, batch in enumerate(single):
        parts = [b[j] for b in per_process]
        assert all(len(p) == 12 // n for p in parts)
        assert sorted(flat(parts)) == sorted(batch)


def test_shard_arguments_are_checked():
    with pytest.raises(ValueError, match="divisible"):
        make_loader(ROWS, 5, seed=0, num_processes=2, process_index=0)
    with pytest.raises(ValueError, match="both"):
        make_loader(ROWS, 4, seed=0, num_processes=2)
    with pytest.raises(ValueError, match="process_index"):
        make_loader(ROWS, 4, seed=0, num_processes=2, process_index=2)


def test_random_map_is_seeded_and_differs_between_epochs():
    run = lambda seed: flat(with_noise(make_loader(ROWS, 1, seed=seed, transforms=[Noise()], num_epochs=2)))  # noqa
    a = run(0)
    assert a == run(0) != run(1)
    first, second = dict(a[:37]), dict(a[37:])
    assert all(first[i] != second[i] for i in range(37))


def test_plain_function_and_filter_transforms():
    loader = make_loader(ROWS, 4, seed=0, shuffle=False, num_epochs=1, drop_remainder=False,
                         transforms=[lambda ex: {"i": ex["i"] * 10}, _Even()])
    assert flat(ids(loader)) == [i * 10 for i in range(37) if i % 2 == 0]


class _Even(grain.transforms.Filter):
    def filter(self, ex):
        return ex["i"] % 20 == 0


# ---------------------------------------------------------------- checkpoints

def test_iterator_state_round_trip():
    loader = make_loader(ROWS, 4, seed=7)
    it = iter(loader)
    for _ in range(11):  # past the first epoch boundary
        next(it)
    state = it.get_state()
    json.dumps(state)
    want = [next(it)["i"].tolist() for _ in range(12)]
    fresh = iter(make_loader(ROWS, 4, seed=7))
    fresh.set_state(state)
    assert [next(fresh)["i"].tolist() for _ in range(12)] == want


def test_iterator_state_in_orbax_composite_checkpoint(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    it = iter(make_loader(ROWS, 4, seed=7, num_processes=1, process_index=0))
    for _ in range(5):
        next(it)
    params = {"w": np.arange(3.0)}
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(5, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                             data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    want = [next(it)["i"].tolist() for _ in range(6)]

    fresh = iter(make_loader(ROWS, 4, seed=7, num_processes=1, process_index=0))
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        restored = mngr.restore(5, args=ocp.args.Composite(params=ocp.args.StandardRestore(params),
                                                           data=grain.checkpoint.CheckpointRestore(fresh)))
    np.testing.assert_array_equal(restored["params"]["w"], params["w"])
    assert [next(fresh)["i"].tolist() for _ in range(6)] == want


# ---------------------------------------------------------------- transforms

@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>", "hello", "world", "a", "b",
             "c", "d"]
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>", additional_special_tokens=["<|user|>", "<|assistant|>", "<|end|>"])
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    return tok


def test_tokenize(tok):
    out = Tokenize(tok, field="text").map({"text": "hello world", "label": 1})
    assert out["input_ids"].tolist() == [1, 7, 8] and out["input_ids"].dtype == np.int32 and out["label"] == 1
    out = Tokenize(tok, prefix="sender_", add_special_tokens=False, add_eos=True).map({"text": "a b"})
    assert out["sender_input_ids"].tolist() == [9, 10, 2]


def test_prompt_completion_plain_and_chat(tok):
    ex = {"prompt": "hello world", "completion": "a b"}
    out = TokenizePromptCompletion(tok).map(ex)
    assert out["input_ids"].tolist() == [1, 7, 8, 9, 10, 2]
    assert out["loss_mask"].tolist() == [0, 0, 0, 1, 1, 1]
    out = TokenizePromptCompletion(tok, chat_template=True).map(ex)
    # <|user|> hello world <|end|> <|assistant|> | a b <|end|>
    assert out["input_ids"].tolist() == [4, 7, 8, 6, 5, 9, 10, 6]
    assert out["loss_mask"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    out = TokenizePromptCompletion(tok, chat_template=True, completion_field=None, prefix="q_",
                                   system="c").map(ex)
    # <|system|> (not in the vocabulary: <unk>) c <|end|> <|user|> hello world <|end|> <|assistant|>
    assert out["q_input_ids"].tolist() == [3, 11, 6, 4, 7, 8, 6, 5]
    assert out["q_loss_mask"].tolist() == [0] * 8


def test_pad_fixed_left_right_and_truncation():
    ex = {"input_ids": np.array([5, 6, 7]), "loss_mask": np.array([0, 1, 1])}
    r = Pad(5, pad_id=0).map(ex)
    assert r["input_ids"].tolist() == [5, 6, 7, 0, 0]
    assert r["attention_mask"].tolist() == [1, 1, 1, 0, 0]
    assert r["loss_mask"].tolist() == [0, 1, 1, 0, 0]
    left = Pad(5, pad_id=9, side="left").map(ex)
    assert left["input_ids"].tolist() == [9, 9, 5, 6, 7]
    assert left["attention_mask"].tolist() == [0, 0, 1, 1, 1]
    assert left["loss_mask"].tolist() == [0, 0, 0, 1, 1]
    assert Pad(2).map(ex)["input_ids"].tolist() == [5, 6]
    t = Pad(2, truncation="left").map(ex)
    assert t["input_ids"].tolist() == [6, 7] and t["loss_mask"].tolist() == [1, 1]
    # no loss_mask: every real token counts
    assert Pad(4).map({"input_ids": np.array([3])})["loss_mask"].tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError):
        Pad(4, side="middle")


def test_pad_buckets():
    pad = Pad([8, 2, 4])
    assert [pad.target(n) for n in (0, 1, 2, 3, 4, 5, 8, 9)] == [2, 2, 2, 4, 4, 8, 8, 8]
    assert pad.map({"input_ids": np.arange(3)})["input_ids"].shape == (4,)
    assert pad.map({"input_ids": np.arange(11)})["input_ids"].tolist() == list(range(8))


def test_pad_batch_to_bucket_and_batch_size():
    exs = [{"input_ids": np.arange(1, n + 1), "y": n} for n in (1, 3)]
    b = PadBatch(Pad([2, 4, 8], pad_id=0, side="left"))(exs)
    assert b["input_ids"].tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    assert b["attention_mask"].tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]]
    assert b["y"].tolist() == [1, 3]
    b = PadBatch([Pad(4), Pad([2, 4], prefix="r_")], batch_size=3)(
        [{"input_ids": np.arange(2), "r_input_ids": np.arange(1)}])
    assert b["input_ids"].shape == (3, 4) and b["r_input_ids"].shape == (3, 2)
    assert b["attention_mask"].tolist() == [[1, 1, 0, 0], [0] * 4, [0] * 4]
    assert b["r_loss_mask"].tolist() == [[1, 0], [0, 0], [0, 0]]


def test_loader_with_tokenize_and_bucketed_batches(tok):
    rows = [{"text": " ".join(["a"] * n)} for n in range(1, 13)]
    loader = make_loader(rows, 3, seed=0, num_epochs=1, transforms=[Tokenize(tok)],
                         batch_fn=PadBatch(Pad([4, 8, 16], pad_id=tok.pad_token_id)))
    batches = list(loader)
    assert len(batches) == 4
    for b in batches:
        longest = b["attention_mask"].sum(1).max()
        assert b["input_ids"].shape[1] == min(x for x in (4, 8, 16) if x >= longest)
        assert set(b) == {"text", "input_ids", "attention_mask", "loss_mask"}
        assert b["input_ids"].dtype == np.int32
        np.testing.assert_array_equal(b["input_ids"][:, 0], 1)  # BOS first (right padding)


def test_worker_processes_give_the_same_batches_and_state():
    rows = [{"i": i} for i in range(40)]
    want = ids(make_loader(rows, 4, seed=2), n=8)
    it = iter(make_loader(rows, 4, seed=2, worker_count=2))
    try:
        got = [next(it)["i"].tolist() for _ in range(5)]
        state = it.get_state()
        got += [next(it)["i"].tolist() for _ in range(3)]
    finally:
        it.close()
    assert got == want
    it = iter(make_loader(rows, 4, seed=2, worker_count=2))
    try:
        it.set_state(state)
        assert [next(it)["i"].tolist() for _ in range(3)] == want[5:]
    finally:
        it.close()


# ---------------------------------------------------------------- sources

def test_unknown_name_or_split_lists_known():
    with pytest.raises(UnknownDataError, match="Known datasets.*sst2: train, validation"):
        load_split("sst3", "train")
    with pytest.raises(UnknownDataError, match="it has: train, validation"):
        load_split("sst2", "test")
    with pytest.raises(KeyError):
        label_names("nope")


def test_missing_local_file_offline_is_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"gsm8k/test\.jsonl does not exist.*hub is disabled"):
        load_split("gsm8k", "test", data_dir=str(tmp_path))


def test_data_dir_from_environment(tmp_path, monkeypatch):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "validation.jsonl").write_text('{"idx": 0, "sentence": "good ", "label": 1}\n')
    monkeypatch.setenv("LATENTJAX_DATA_DIR", str(tmp_path))
    assert find_data_dir() == str(tmp_path)
    assert load_split("sst2", "validation")[0] == {"idx": 0, "sentence": "good ", "label": 1}


def test_local_file_paths(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n')
    ds = load_split(str(path))
    assert len(ds) == 2 and ds[1] == {"a": 2, "b": "y"}
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,x\n")
    assert load_split(str(csv), "test")[0] == {"a": 1, "b": "x"}
    with pytest.raises(ValueError, match="expected one of"):
        load_split(str(tmp_path / "x.txt"))


DATA_DIR = find_data_dir()
needs_data = pytest.mark.skipif(DATA_DIR is None or not os.path.isdir(DATA_DIR),
                                reason=f"real data absent ({DATA_DIR or 'no shared/data beside the checkout'}; "
                                       "set $LATENTJAX_DATA_DIR)")

EXPECTED = {  # (name, split): (rows, fields), from shared/data/README.md
    ("sst2", "train"): (67349, {"idx", "sentence", "label"}),
    ("sst2", "validation"): (872, {"idx", "sentence", "label"}),
    ("ag_news", "train"): (8794, {"text", "label"}),
    ("ag_news", "test"): (7600, {"text", "label"}),
    ("banking77", "train"): (10003, {"text", "label", "label_name"}),
    ("banking77", "test"): (3080, {"text", "label", "label_name"}),
    ("gsm8k", "train"): (7473, {"question", "answer"}),
    ("gsm8k", "test"): (1319, {"question", "answer"}),
    ("math", "train"): (7500, {"unique_id", "problem", "level", "type", "solution", "answer"}),
    ("math", "test"): (5000, {"unique_id", "problem", "level", "type", "solution", "answer"}),
    ("math500", "test"): (500, {"problem", "solution", "answer", "subject", "level", "unique_id"}),
    ("mmlu_math", "test"): (1064, {"subject", "question", "choices", "answer"}),
    ("mmlu_math", "test_extra"): (240, {"subject", "question", "choices", "answer"}),
    ("mmlu_math", "dev"): (25, {"subject", "question", "choices", "answer"}),
    ("mmlu_math", "dev_extra"): (10, {"subject", "question", "choices", "answer"}),
}


def test_expected_covers_the_registry():
    assert set(EXPECTED) == {(n, s) for n, src in SOURCES.items() for s in src.splits}


@needs_data
@pytest.mark.parametrize("name,split", sorted(EXPECTED))
def test_local_split_rows_and_fields(name, split):
    rows, fields = EXPECTED[name, split]
    ds = load_split(name, split)
    assert len(ds) == rows
    assert set(ds.column_names) == fields


@needs_data
def test_banking77_label_names_in_hf_order():
    names = label_names("banking77")
    with open(os.path.join(DATA_DIR, "banking77", "labels.json")) as f:
        assert names == json.load(f)
    assert len(names) == 77 and names[0] == "activate_my_card"
    assert names[51] == "Refund_not_showing_up" and names[53] == "reverted_card_payment?"
    test = load_split("banking77", "test")
    assert all(names[i] == n for i, n in zip(test["label"], test["label_name"]))
    assert label_names("sst2") == ["negative", "positive"] and label_names("gsm8k") is None


@needs_data
def test_real_split_through_the_loader():
    ds = load_split("sst2", "validation")
    batches = list(make_loader(ds, 16, seed=0, num_epochs=1))
    assert len(batches) == 872 // 16
    b = batches[0]
    assert b["label"].shape == (16,) and b["sentence"].shape == (16,) and b["label"].dtype.kind == "i"
