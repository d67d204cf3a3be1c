"""SVC membership-inference attack ("Model Sparsity Can Simplify Machine Unlearning", SalUn).

An RBF `SVC(C=3, gamma="auto")` is fitted on one feature of the model's output at a time,
with shadow members labelled 1 and shadow non-members labelled 0, then scored on targets.
Every data argument is a pair `(probs, y)`: probabilities (N, C) and integer labels (N,),
as torch tensors or numpy arrays.
"""

import numpy as np
import torch
from sklearn.svm import SVC

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


def svc_attack(shadow_in, shadow_out, target_in=None, target_out=None, feature_names=FEATURES):
    """Per-feature attack score in percent (0..100); NaN when both targets are empty.

    The score is the mean, over the non-empty targets, of the fraction of `target_in`
    predicted member and the fraction of `target_out` predicted non-member.
    """
    f_in, f_out = features(*shadow_in), features(*shadow_out)
    targets = [(features(*t), label) for t, label in ((target_in, 1), (target_out, 0)) if _size(t) > 0]
    labels = np.concatenate([np.ones(_size(shadow_in)), np.zeros(_size(shadow_out))])
    scores = {}
    for name in feature_names:
        clf = SVC(C=3, gamma="auto", kernel="rbf")
        clf.fit(np.concatenate([f_in[name], f_out[name]]), labels)
        fracs = [np.mean(clf.predict(f[name]) == label) for f, label in targets]
        scores[name] = float(np.mean(fracs)) * 100.0 if fracs else float("nan")
    return scores


def _slice(data, start, stop):
    return data[0][start:stop], data[1][start:stop]


def forget_efficacy(retain, test, forget):
    """MIA-Efficacy: percent of forget examples predicted non-member.

    Shadow members are the first `len(test)` retain examples, shadow non-members are the test set.
    """
    return svc_attack(_slice(retain, 0, _size(test)), test, target_out=forget)


def training_privacy(retain, test):
    """Attack fitted on the first halves of retain/test and scored on the second halves.

    With n = min(len(retain), len(test)) // 2: shadow = retain[:n] vs test[:n],
    targets = retain[n:2n] (members) and test[n:2n] (non-members).
    """
    n = min(_size(retain), _size(test)) // 2
    return svc_attack(_slice(retain, 0, n), _slice(test, 0, n), _slice(retain, n, 2 * n), _slice(test, n, 2 * n))
