"""SVC membership-inference attack ("Model Sparsity Can Simplify Machine Unlearning", SalUn).

An RBF `SVC(C=3, gamma="auto")` is fitted on one feature of the model's output at a time,
with shadow members labelled 1 and shadow non-members labelled 0, then scored on targets.
Every data argument is a pair `(probs, y)`: probabilities (N, C) and integer labels (N,),
as torch tensors or numpy arrays. Scores are fractions in [0, 1], as in the reference's
eval_result.json.

Two things make the attack faster and leave every prediction unchanged: the fits run in parallel
threads (libsvm releases the GIL), and each distinct target row is predicted once (libsvm predicts
every row on its own, so repeated rows get the same answer).
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from sklearn.svm import SVC

import distributed

FEATURES = ("correctness", "confidence", "entropy", "m_entropy", "prob")
EPS = 1e-12  # floor for probabilities inside logarithms


def _numpy(a, dtype):
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def _log(p):
    return np.log(np.maximum(p, EPS))


def features(probs, y):
    """Attack features as a dict name -> float64 array (N, k); k = 1 except `prob` (k = C).

    `m_entropy` is the modified entropy of Song & Mittal (2021), using each row's own label:
    -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).
    """
    p, y = _numpy(probs, np.float64), _numpy(y, np.int64)
    n = len(y)
    if n == 0:
        out = {name: np.zeros((0, 1)) for name in FEATURES}
        out["prob"] = p.reshape(0, p.shape[1] if p.ndim == 2 else 0)
        return out
    rows = np.arange(n)
    p_y = p[rows, y]
    own = np.zeros_like(p, dtype=bool)
    own[rows, y] = True
    m_ent = -np.where(own, (1.0 - p) * _log(p), p * _log(1.0 - p)).sum(axis=1)
    return {
        "correctness": (p.argmax(axis=1) == y).astype(np.float64)[:, None],
        "confidence": p_y[:, None],
        "entropy": -(p * _log(p)).sum(axis=1)[:, None],
        "m_entropy": m_ent[:, None],
        "prob": p,
    }


def _size(data):
    return 0 if data is None else len(data[1])


def predict_distinct(clf, x):
    """`clf.predict(x)`, computed once per distinct row of `x`."""
    if len(x) == 0:
        return np.zeros(0)
    rows, inverse = np.unique(x, axis=0, return_inverse=True)
    return clf.predict(rows)[inverse.reshape(-1)]


def svc_attacks(attacks, feature_names=FEATURES):
    """Several attacks at once: {key: (shadow_in, shadow_out, target_in, target_out)} -> {key: scores}.

    Scores are per feature, as `svc_attack` gives them. Every (attack, feature) fit runs in one pool of
    `torch.get_num_threads()` threads; under torchrun every rank must call it, each fits its share of them and
    every rank gets every score.
    """
    fits = []
    for key, (shadow_in, shadow_out, target_in, target_out) in attacks.items():
        f_in, f_out = features(*shadow_in), features(*shadow_out)
        targets = [(features(*t), label) for t, label in ((target_in, 1), (target_out, 0)) if _size(t) > 0]
        fits += [(key, name, f_in[name], f_out[name], [(f[name], label) for f, label in targets])
                 for name in feature_names]

    def score(fit):
        _, _, x_in, x_out, targets = fit
        clf = SVC(C=3, gamma="auto", kernel="rbf")
        clf.fit(np.concatenate([x_in, x_out]), np.concatenate([np.ones(len(x_in)), np.zeros(len(x_out))]))
        fracs = [np.mean(predict_distinct(clf, x) == label) for x, label in targets]
        return float(np.mean(fracs)) if fracs else float("nan")

    mine = list(enumerate(fits))[distributed.rank()::distributed.world_size()]  # under torchrun: shared out
    with ThreadPoolExecutor(max(1, min(torch.get_num_threads(), len(mine)))) as pool:
        scores = distributed.merged(dict(zip([i for i, _ in mine], pool.map(score, [f for _, f in mine]))))
    out = {key: {} for key in attacks}
    for i, (key, name, *_) in enumerate(fits):
        out[key][name] = scores[i]
    return out


def svc_attack(shadow_in, shadow_out, target_in=None, target_out=None, feature_names=FEATURES):
    """Per-feature attack score as a fraction in [0, 1]; NaN when both targets are empty.

    The score is the mean, over the non-empty targets, of the fraction of `target_in`
    predicted member and the fraction of `target_out` predicted non-member.
    """
    return svc_attacks({0: (shadow_in, shadow_out, target_in, target_out)}, feature_names)[0]


def _slice(data, start, stop=None):
    return data[0][start:stop], data[1][start:stop]


def efficacy_sets(retain, test, forget):
    """The forget-efficacy attack's sets, with n = min(len(retain), len(test)): shadow members = retain[:n],
    shadow non-members = test[:n], target non-members = forget. (The reference's n is len(test): the same
    whenever retain is the larger set, as in the papers; a smaller retain set keeps the classes balanced.)"""
    n = min(_size(retain), _size(test))
    return _slice(retain, 0, n), _slice(test, 0, n), None, forget


def privacy_sets(retain, test):
    """The reference's training-privacy sets, with n = min(len(retain), len(test)) // 2 (the reference's n is
    len(test) // 2): shadow retain[:n] (members) vs test[:n] (non-members); targets all of retain[n:] (members)
    and test[n:] (non-members)."""
    n = min(_size(retain), _size(test)) // 2
    return _slice(retain, 0, n), _slice(test, 0, n), _slice(retain, n), _slice(test, n)


def forget_efficacy(retain, test, forget, feature_names=FEATURES):
    """MIA-Efficacy: fraction of forget examples predicted non-member, per feature."""
    return svc_attack(*efficacy_sets(retain, test, forget), feature_names)


def training_privacy(retain, test, feature_names=FEATURES):
    """Training privacy: mean of the fractions of retain[n:] predicted member and test[n:] non-member."""
    return svc_attack(*privacy_sets(retain, test), feature_names)
