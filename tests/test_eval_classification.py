"""Telepathy scoring rules (telepathy.md "Evaluation"; telepathy_reference.md sections 3 and 5)."""
import numpy as np
import pytest

from latentjax.eval import classification as cl

AGNEWS = ["world", "sports", "business", "science"]
AGNEWS_EXTRA = {"science": cl.AGNEWS_SCIENCE_ALIASES}


def test_label_word_in_lowercased_output():
    assert cl.label_in_output(" Positive.</s>", "positive")
    assert not cl.label_in_output(" Negative", "positive")
    assert cl.label_in_output("this is NEGATIVE, not positive", "positive")  # substring rule: both count
    assert cl.label_in_output("this is NEGATIVE, not positive", "negative")
    assert not cl.label_in_output("", "positive")


def test_agnews_science_synonyms_and_banking77_underscores():
    sci = cl.label_aliases("science", AGNEWS_EXTRA)
    assert sci == ("science", "technology", "tech", "sci/tech", "scitech")
    assert cl.label_in_output(" Sci/Tech news", sci)
    assert cl.label_in_output("TECHNOLOGY", sci)
    assert not cl.label_in_output("technology", cl.label_aliases("business", AGNEWS_EXTRA))
    b77 = cl.label_aliases("card_arrival")
    assert b77 == ("card_arrival", "card arrival")
    assert cl.label_in_output("my Card Arrival is late", b77)
    assert cl.label_in_output("card_arrival", b77)
    assert not cl.label_in_output("card delivery", b77)
    assert cl.label_aliases("Refund_not_showing_up")[0] == "refund_not_showing_up"


def test_parse_label_earliest_then_longest():
    sets = [cl.label_aliases(x, AGNEWS_EXTRA) for x in AGNEWS]
    assert cl.parse_label(" Sports, then world", sets) == 1
    assert cl.parse_label("tech and business", sets) == 3
    assert cl.parse_label("nothing useful", sets) is None
    sets = [("card",), ("card_arrival", "card arrival")]
    assert cl.parse_label("card arrival", sets) == 1  # same start: longer alias wins


def test_passkey_rules():
    # The seed's example: gold 93810 read as "899991188" has no digit in place.
    assert cl.passkey_score("899991188", "93810") == (False, 0)
    assert cl.passkey_score("The code is 93810.", 93810) == (True, 5)
    assert cl.passkey_score("9 3 8 1 0", "93810") == (True, 5)      # digits concatenated equal the code
    assert cl.passkey_score("x93810y7", "93810") == (True, 5)       # code occurs in the output
    assert cl.passkey_score("93811", "93810") == (False, 4)
    assert cl.passkey_score("938", "93810") == (False, 3)           # missing positions count as wrong
    assert cl.passkey_score("", "93810") == (False, 0)
    exact, digits = cl.passkey_digit_accuracy(["93810", "93811", "938", "0"], ["93810"] * 4)
    assert exact == 0.25
    assert digits == pytest.approx((5 + 4 + 3 + 0) / 20)
    with pytest.raises(ValueError):
        cl.passkey_digit_accuracy(["1"], [])


def test_label_scoring_predictions():
    ll = np.array([[-1.0, -2.0], [-3.0, -0.5], [-1.0, -1.0]])
    assert cl.label_scoring_predictions(ll).tolist() == [0, 1, 0]  # a tie goes to the lower id
    # sum vs mean per token: label 1 has 3 tokens
    ll = np.array([[-2.0, -4.5]])
    assert cl.label_scoring_predictions(ll).tolist() == [0]
    assert cl.label_scoring_predictions(ll, num_tokens=[1, 3]).tolist() == [1]
    with pytest.raises(ValueError):
        cl.label_scoring_predictions([1.0, 2.0])


def test_confusion_matrix_shape_and_counts():
    golds = [0, 0, 1, 1, 2, 2, 2]
    preds = [0, 1, 1, None, 2, 0, -1]
    m = cl.confusion_matrix(golds, preds, num_classes=3)
    assert m.shape == (3, 4)
    assert m.tolist() == [[1, 1, 0, 0],
                          [0, 1, 0, 1],
                          [1, 0, 1, 1]]
    assert m.sum() == len(golds)
    assert m.sum(axis=1).tolist() == [2, 2, 3]
    m = cl.confusion_matrix([0, 1, 1], [1, 1, 0], num_classes=2, unparsed_column=False)
    assert m.shape == (2, 2) and m.tolist() == [[0, 1], [1, 1]]
    with pytest.raises(ValueError):
        cl.confusion_matrix([0], [None], num_classes=2, unparsed_column=False)
    with pytest.raises(ValueError):
        cl.confusion_matrix([0], [2], num_classes=2)
    with pytest.raises(ValueError):
        cl.confusion_matrix([3], [0], num_classes=2)


def test_per_class_accuracy():
    rows = cl.per_class_accuracy([0, 0, 1, 1, 1], [True, False, True, True, False], num_classes=3)
    assert [(r["label"], r["n"], r["correct"]) for r in rows] == [(0, 2, 1), (1, 3, 2), (2, 0, 0)]
    assert rows[1]["accuracy"] == pytest.approx(2 / 3)
    assert np.isnan(rows[2]["accuracy"])


def test_score_label_generations_agnews():
    outputs = [" world news", " Technology", " sports and business", "???", " business"]
    golds = [0, 3, 2, 1, 2]
    correct, preds = cl.score_label_generations(outputs, golds, AGNEWS, AGNEWS_EXTRA)
    assert correct.tolist() == [True, True, True, False, True]
    assert preds == [0, 3, 1, None, 2]
    m = cl.confusion_matrix(golds, preds, num_classes=4)
    assert m[2, 1] == 1 and m[1, 4] == 1 and np.trace(m) == 3
