"""Screened number generation: the prefix test never rules out a completion a filter accepts, screening without
boundaries is plain generation, and with boundaries every row equals unscreened greedy decoding up to where it was
stopped (re-prefilling prompt + tokens so far continues exactly where the cache would)."""
from __future__ import annotations

import random

import jax
import numpy as np
import pytest

import latentjax
from latentjax.inference.sampling import SamplingConfig
from latentjax.subliminal import generate_phase as gp
from latentjax.subliminal.numbers import could_be_number_list, filter_paper, filter_seed
from tests.test_models import left_padded

STOPS = (3,)


class _NumberTokenizer:
    """Decodes ids as space-joined numbers, enough for the screen's text test."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(int(i)) for i in ids)


def _sampler(path):
    model = latentjax.from_pretrained(path)
    return gp.Sampler(model.config, model.params, _NumberTokenizer(), model.mesh, model.rules)


def test_prefix_test_never_rules_out_an_accepted_completion():
    for text in ("123, 456, 789", "[123, 456]", "(123, 456)", "123\n456", "123; 456", "123, 456, 789.", " 7"):
        assert filter_paper(text).valid or filter_seed(text).valid
        assert all(could_be_number_list(text[:i]) for i in range(len(text) + 1)), text
    for text in ("Sure, 1, 2", "1, 2 and 3", "The next", "12-3", "1 + 2"):
        assert not could_be_number_list(text)
    rng = random.Random(0)
    alphabet = list("0123456789 ,;.[]()\n") + ["a", "-", "١"]  # an Arabic-Indic digit: the seed rule accepts it
    accepted = 0
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))
        if filter_paper(text).valid or filter_seed(text).valid:
            accepted += 1
            assert all(could_be_number_list(text[:i]) for i in range(len(text) + 1)), text
    assert accepted > 500  # the property was exercised on many accepted strings


def test_without_boundaries_it_is_plain_generation(tiny_dirs):
    sampler = _sampler(tiny_dirs["llama31"])
    ids, mask = left_padded(np.random.RandomState(3), [5, 9, 7, 4])
    kw = dict(max_new_tokens=10, sampling=SamplingConfig(temperature=1.0, top_p=0.9), stop_token_ids=STOPS,
              pad_token_id=0)
    key = jax.random.key(5)
    tokens, lengths = gp.generate_rows(sampler, ids, mask, rng=key, **kw)
    s_tokens, s_lengths, screened = gp.sample_screened(sampler, ids, mask, screen=(), alive=lambda t: False,
                                                       stage_rows=2, rng=key, **kw)
    np.testing.assert_array_equal(s_tokens, tokens)
    np.testing.assert_array_equal(s_lengths, lengths)
    assert not screened.any()


@pytest.mark.parametrize("alive_rule", ["always", "last_even"])
def test_greedy_screened_rows_follow_unscreened_generation(tiny_dirs, alive_rule):
    sampler = _sampler(tiny_dirs["llama31"])
    ids, mask = left_padded(np.random.RandomState(4), [6, 11, 3, 8, 5])
    new, screen = 14, (3, 7)
    stops = (int(np.asarray(gp.generate_rows(sampler, ids, mask, max_new_tokens=new, sampling=SamplingConfig(),
                                             pad_token_id=0)[0])[1, 5]),)  # row 1 stops at its 6th token
    kw = dict(max_new_tokens=new, sampling=SamplingConfig(), stop_token_ids=stops, pad_token_id=0)
    ref_tokens, ref_lengths = gp.generate_rows(sampler, ids, mask, rng=jax.random.key(0), **kw)
    alive = (lambda text: True) if alive_rule == "always" else (lambda text: int(text.split()[-1]) % 2 == 0)
    tokens, lengths, screened = gp.sample_screened(sampler, ids, mask, screen=screen, alive=alive, stage_rows=2,
                                                   rng=jax.random.key(1), **kw)
    cut_any = False
    for r in range(ids.shape[0]):
        stop_at = int(ref_lengths[r])
        cut = next((b for b in screen if b < stop_at and not alive(_NumberTokenizer().decode(ref_tokens[r, :b]))),
                   None)
        if cut is None:
            assert not screened[r] and lengths[r] == stop_at
            np.testing.assert_array_equal(tokens[r], ref_tokens[r])
        else:
            cut_any = True
            assert screened[r] and lengths[r] == cut
            np.testing.assert_array_equal(tokens[r, :cut], ref_tokens[r, :cut])
            assert (tokens[r, cut:] == 0).all()
    assert ref_lengths[1] == 6 and lengths[1] <= 6  # a stop token ends a row inside a stage
    assert cut_any == (alive_rule == "last_even")  # the odd-token rule stopped some row early
