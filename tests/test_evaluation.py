"""Tests for the evaluation package: hand-computed features, attack scores, accuracy and gaps."""

import math

import numpy as np
import pytest
import torch
from sklearn.svm import SVC
from torch import nn

import dataset
from evaluation import (
    FEATURES,
    accuracy,
    avg_gap,
    efficacy_sets,
    evaluate,
    features,
    forget_efficacy,
    predict_distinct,
    predict_probs,
    privacy_sets,
    svc_attack,
    svc_attacks,
    training_privacy,
)
from utils import UserError

PROBS = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
LABELS = np.array([0, 2])


def test_features_by_hand():
    f = features(torch.tensor(PROBS), torch.tensor(LABELS))
    assert set(f) == set(FEATURES)
    assert all(v.dtype == np.float64 for v in f.values())
    np.testing.assert_array_equal(f["correctness"], [[1.0], [0.0]])
    np.testing.assert_allclose(f["confidence"], [[0.7], [0.3]])
    ent0 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    ent1 = -(0.2 * math.log(0.2) + 0.5 * math.log(0.5) + 0.3 * math.log(0.3))
    np.testing.assert_allclose(f["entropy"], [[ent0], [ent1]])
    # row 0, label 0: -(1 - 0.7) ln 0.7 - 0.2 ln 0.8 - 0.1 ln 0.9
    m0 = -(0.3 * math.log(0.7)) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9)
    # row 1, label 2: -(1 - 0.3) ln 0.3 - 0.2 ln 0.8 - 0.5 ln 0.5
    m1 = -(0.7 * math.log(0.3)) - 0.2 * math.log(0.8) - 0.5 * math.log(0.5)
    np.testing.assert_allclose(f["m_entropy"], [[m0], [m1]])
    assert f["m_entropy"][0, 0] == pytest.approx(0.1621672, abs=1e-6)
    np.testing.assert_allclose(f["prob"], PROBS)


def test_m_entropy_uses_each_rows_label():
    # Row 1 scored with label 0 (as if one label served all rows) gives a different number.
    with_label_0 = -(0.8 * math.log(0.2)) - 0.5 * math.log(0.5) - 0.3 * math.log(0.7)
    own = features(PROBS, LABELS)["m_entropy"][1, 0]
    assert own != pytest.approx(with_label_0)
    assert features(PROBS, np.array([0, 0]))["m_entropy"][1, 0] == pytest.approx(with_label_0)


def test_features_finite_at_zero_and_one():
    f = features(np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), np.array([0, 1]))
    assert all(np.isfinite(v).all() for v in f.values())
    assert f["entropy"][0, 0] == 0.0 and f["m_entropy"][0, 0] == 0.0
    assert f["m_entropy"][1, 0] > 20.0  # confidently wrong: huge modified entropy


def test_features_empty():
    f = features(torch.empty(0, 0), torch.empty(0, dtype=torch.long))
    assert all(len(v) == 0 for v in f.values())


def _synthetic(rng, n, confidence, classes=4):
    """Rows with true-class probability ~confidence; the rest spread over the other classes."""
    y = rng.integers(0, classes, n)
    p_y = np.clip(confidence + rng.normal(0, 0.03, n), 0.01, 0.999)
    rest = rng.dirichlet(np.ones(classes - 1), n) * (1 - p_y)[:, None]
    probs = np.empty((n, classes))
    for i in range(n):
        probs[i] = np.insert(rest[i], y[i], p_y[i])
    return probs, y


def _hand_fit(x_in, x_out):
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(np.concatenate([x_in, x_out]), np.concatenate([np.ones(len(x_in)), np.zeros(len(x_out))]))
    return clf


def _conf(data):
    probs, y = data
    return probs[np.arange(len(y)), y][:, None]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return {
        "retain": _synthetic(rng, 80, 0.95),
        "test": _synthetic(rng, 40, 0.5),
        "forget_out": _synthetic(rng, 30, 0.5),
        "forget_in": _synthetic(rng, 30, 0.95),
    }


def test_forget_efficacy_matches_hand_fit(data):
    retain, test = data["retain"], data["test"]
    clf = _hand_fit(_conf(retain)[:40], _conf(test))  # shadow members = first len(test) retain
    for key, expected_side in (("forget_out", 1.0), ("forget_in", 0.0)):
        scores = forget_efficacy(retain, test, data[key])
        hand = np.mean(clf.predict(_conf(data[key])) == 0)  # a fraction, as in the reference
        assert scores["confidence"] == hand
        assert abs(scores["confidence"] - expected_side) <= 0.1
        assert list(scores) == list(FEATURES)


def test_forget_efficacy_all_features_match_hand_fit(data):
    retain, test, forget = data["retain"], data["test"], data["forget_out"]
    scores = forget_efficacy(retain, test, forget)
    f_in, f_out, f_t = features(retain[0][:40], retain[1][:40]), features(*test), features(*forget)
    for name in FEATURES:
        clf = _hand_fit(f_in[name], f_out[name])
        assert scores[name] == np.mean(clf.predict(f_t[name]) == 0)


def test_training_privacy_scores_all_of_the_rest_of_retain(data):
    retain, test = data["retain"], data["test"]  # n = len(test) // 2 = 20
    scores = training_privacy(retain, test)
    clf = _hand_fit(_conf(retain)[:20], _conf(test)[:20])
    frac_in = np.mean(clf.predict(_conf(retain)[20:]) == 1)  # all 60 of retain[20:80]
    frac_out = np.mean(clf.predict(_conf(test)[20:]) == 0)
    assert scores["confidence"] == (frac_in + frac_out) / 2
    assert scores["confidence"] >= 0.9
    shadow_in, shadow_out, target_in, target_out = privacy_sets(retain, test)
    assert [len(s[1]) for s in (shadow_in, shadow_out, target_in, target_out)] == [20, 20, 60, 20]


def test_training_privacy_by_hand():
    # One feature value per group: shadow members at confidence 0.9, shadow non-members at 0.3.
    # The fit calls >= 0.6 a member: 3 of the 4 target members and 2 of the 2 target non-members are right.
    def rows(confs):
        return np.array([[c, 1 - c] for c in confs]), np.zeros(len(confs), dtype=int)
    retain = rows([0.9, 0.9, 0.95, 0.85, 0.2, 0.9])
    test = rows([0.3, 0.3, 0.35, 0.25])
    scores = training_privacy(retain, test, ("confidence",))
    assert scores == {"confidence": (3 / 4 + 2 / 2) / 2}


def test_svc_attack_skips_missing_targets(data):
    retain, test = data["retain"], data["test"]
    both = svc_attack(retain, test, data["forget_in"], data["forget_out"])
    only_in = svc_attack(retain, test, data["forget_in"], None)
    only_out = svc_attack(retain, test, (np.empty((0, 4)), np.empty(0, dtype=int)), data["forget_out"])
    for name in FEATURES:
        assert both[name] == pytest.approx((only_in[name] + only_out[name]) / 2)
    assert math.isnan(svc_attack(retain, test)["confidence"])


def _float32_outputs(rng, n, margin):
    """Softmax of float32 logits with a large true-class margin: many confidences are exactly 1.0."""
    y = rng.integers(0, 10, n)
    logits = rng.normal(0, 2, (n, 10))
    logits[np.arange(n), y] += rng.normal(margin, 6, n)
    return torch.softmax(torch.tensor(logits, dtype=torch.float32), dim=1), torch.tensor(y)


def test_fast_attack_predicts_exactly_what_the_plain_svc_predicts():
    rng = np.random.default_rng(1)
    retain, test, forget = (_float32_outputs(rng, 600, 18), _float32_outputs(rng, 200, 12),
                            _float32_outputs(rng, 150, 12))
    assert (features(*forget)["confidence"] == 1.0).sum() > 10  # repeated rows, predicted once
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the fits run in two threads
    try:
        fast = svc_attacks({"efficacy": efficacy_sets(retain, test, forget), "privacy": privacy_sets(retain, test)})
    finally:
        torch.set_num_threads(before)

    def part(data, start, stop=None):
        return data[0][start:stop], data[1][start:stop]

    plain_sets = {"efficacy": (part(retain, 0, 200), test, [(forget, 0)]),
                  "privacy": (part(retain, 0, 100), part(test, 0, 100), [(part(retain, 100), 1), (part(test, 100), 0)])}
    for key, (s_in, s_out, targets) in plain_sets.items():
        f_in, f_out = features(*s_in), features(*s_out)
        for name in FEATURES:
            clf = _hand_fit(f_in[name], f_out[name])
            fracs = []
            for t, label in targets:
                x = features(*t)[name]
                pred = clf.predict(x)
                assert np.array_equal(predict_distinct(clf, x), pred)
                fracs.append(np.mean(pred == label))
            assert fast[key][name] == np.mean(fracs), (key, name)


def _splits_and_model():
    raw = dataset.load_dataset("digits")
    splits = dataset.make_splits(raw, 1, -1, 100)
    torch.manual_seed(0)
    return splits, nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def test_evaluate_full_and_fast_give_the_same_numbers():
    splits, model = _splits_and_model()
    full = evaluate(model, splits, "cpu", rte_minutes=1.5)
    fast = evaluate(model, splits, "cpu", rte_minutes=1.5, full=False)
    assert set(full) == {"accuracy", "SVC_MIA_forget_efficacy", "SVC_MIA_training_privacy", "summary",
                         "eval_seconds"}
    assert set(fast) == {"accuracy", "SVC_MIA_forget_efficacy", "summary", "eval_seconds"}
    assert fast["accuracy"] == full["accuracy"] and fast["summary"] == full["summary"]
    assert fast["SVC_MIA_forget_efficacy"] == {"confidence": full["SVC_MIA_forget_efficacy"]["confidence"]}
    for key in ("SVC_MIA_forget_efficacy", "SVC_MIA_training_privacy"):
        assert list(full[key]) == list(FEATURES) and all(0.0 <= v <= 1.0 for v in full[key].values())
    s = full["summary"]
    assert s["MIA_efficacy"] == 100 * full["SVC_MIA_forget_efficacy"]["confidence"]
    assert s["UA"] == 100 - full["accuracy"]["forget"] and s["RTE_minutes"] == 1.5
    assert 0 < fast["eval_seconds"] and 0 < full["eval_seconds"]


def test_evaluate_refuses_a_diverged_model():
    splits, model = _splits_and_model()
    with torch.no_grad():
        model[1].bias[0] = float("nan")
    with pytest.raises(UserError, match="NaN or infinite"):
        evaluate(model, splits, "cpu")


def test_accuracy():
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    assert accuracy(probs, torch.tensor([0, 1, 1, 0])) == pytest.approx(50.0)
    assert accuracy(probs, torch.tensor([0, 1, 0, 1])) == pytest.approx(100.0)
    assert math.isnan(accuracy(torch.empty(0, 0), torch.empty(0, dtype=torch.long)))


def test_predict_probs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Dropout(0.5), nn.Linear(8, 5))
    model.train()
    x = torch.rand(7, 3, 2, 2)
    probs = predict_probs(model, x, torch.device("cpu"), batch_size=3)
    assert model.training
    assert probs.shape == (7, 5) and probs.dtype == torch.float32 and probs.device.type == "cpu"
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(7))
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1)
    torch.testing.assert_close(probs, expected)
    assert not predict_probs(model, x, "cpu").requires_grad
    assert not model.training  # eval mode is kept when it was the previous mode
    assert predict_probs(model, x[:0], "cpu").shape == (0, 0)


def test_avg_gap():
    result = {"UA": 10.0, "RA": 95.0, "TA": 90.0, "MIA_efficacy": 20.0, "RTE_minutes": 1.0}
    reference = {"UA": 6.0, "RA": 99.0, "TA": 88.0, "MIA_efficacy": 30.0, "RTE_minutes": 9.0}
    assert avg_gap(result, reference) == pytest.approx((4 + 4 + 2 + 10) / 4)
    assert avg_gap(result, reference, keys=("UA",)) == pytest.approx(4.0)


def test_attack_sets_balanced_when_retain_is_smaller_than_test():
    """The reference takes len(test) retain examples; with fewer retain examples both classes keep n rows."""
    retain = (torch.rand(30, 4), torch.zeros(30, dtype=torch.long))
    test = (torch.rand(100, 4), torch.zeros(100, dtype=torch.long))
    forget = (torch.rand(5, 4), torch.zeros(5, dtype=torch.long))
    s_in, s_out, _, target = efficacy_sets(retain, test, forget)
    assert len(s_in[1]) == len(s_out[1]) == 30 and len(target[1]) == 5
    s_in, s_out, t_in, t_out = privacy_sets(retain, test)
    assert len(s_in[1]) == len(s_out[1]) == 15 and len(t_in[1]) == 15 and len(t_out[1]) == 85
    big = (torch.rand(300, 4), torch.zeros(300, dtype=torch.long))
    assert len(efficacy_sets(big, test, forget)[0][1]) == 100  # the reference's len(test)
