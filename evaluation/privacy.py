"""Per-example privacy of unlearning: the NeurIPS 2023 Machine Unlearning Challenge's forgetting score and U-LiRA.

Both compare, for each forget example, the distribution of one statistic under unlearned models with its
distribution under models retrained without the forget set. The statistic is the logit-scaled confidence
(`logit_confidence`): log p_y - log sum_{k != y} p_k, i.e. z_y - logsumexp_{k != y} z_k for logits z, in
float64. The challenge's code exponentiates the max-shifted float32 logits in float32 (then normalizes in
float64) and adds 1e-45 inside both logarithms: where every other class trails the label by more than about 87
logits its probabilities become float32 subnormals and lose precision, beyond about 103.3 they are 0 and the
statistic saturates at ln(1e45) = 103.6 (-103.6 when the label trails by as much). Ours keeps growing there;
below about 87 the two agree up to float32 rounding.

Challenge score (the challenge's public evaluation code, metric.py and main.py of
google-deepmind/unlearning_evaluation; technical report "Machine Unlearning Metric", 2023):
  For example i, with K unlearned values u (one original model, K unlearning runs) and K retrained values r:
  - the "positive" population is the one with the larger median (the retrained one when its median is
    strictly larger, else the unlearned one);
  - if the narrower population's range (max - min) is under 1% of the wider one's, epsilon = 50 (the cap);
  - otherwise every decision rule of two families is tried, each giving rates over the K models:
    single threshold t (predict positive when c >= t), t on a grid over [min, max] of both populations with
    ceil(100 x (max - min)) points; double threshold (predict "peaky" when l <= c <= r, the peaky population
    being the one of smaller range, its range w): right ends r on a grid over [min + w - 2, max + 2] of the
    peaky population (ceil(100 x length) points), for each r 400 left ends on [r - w - 2, r - w + 2];
  - a rule with FPR = FNR = 0 separates perfectly: epsilon = infinity; a rule with exactly one of FPR, FNR
    equal to 0 is discarded; any other rule gives max(log(1 - delta - FPR) - log FNR,
    log(1 - delta - FNR) - log FPR), floored at 0 (a NaN from a log of a negative number is ignored);
    delta = 1e-5;
  - epsilon_i = the largest over the rules, capped at 50.
  Forgetting score F = mean over examples of the points of the bucket epsilon_i falls in: buckets
  [0, 0.5), [0.5, 1), ... worth 1, 1/2, 1/4, ..., as many as fit below ceil(ln(K - 1)); 0 beyond.
  Final score = F x (mean RA of the unlearned models / mean RA of the retrained ones)
                  x (mean TA of the unlearned models / mean TA of the retrained ones),
  accuracies being plain accuracies on the retain and test sets, averaged over the K models of each kind.
  Two details differ from the challenge's code and are documented here: (1) when no rule of either family
  gives a usable epsilon (neither a perfect separation nor both error rates above 0; e.g. two identical
  constant populations), the challenge's code stops with an assertion; here epsilon = 0. (2) Rates and
  epsilons are computed in float64 with exact counts (the challenge's code: float32 rates).

U-LiRA (Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of Privacy",
2024), a per-example likelihood-ratio attack (LiRA, Carlini et al. 2022) on the unlearned model:
  for example i, "in" models were trained with i and then unlearned it; "out" models were trained without i
  (retrained). The attacker fits a Gaussian to each population's statistic on shadow models and scores a
  target model by Lambda = log N(c; mu_in, sigma_in) - log N(c; mu_out, sigma_out), predicting "unlearned"
  when Lambda > 0. Here each model is a target in turn and the others are its shadow models (leave one out);
  means are per example, variances pooled over the examples per population (LiRA's global-variance variant,
  which Carlini et al. recommend with few shadow models). Leave-one-out assumes the models are independent: a
  target whose correlated partner (e.g. a model of the same initialization) sits in the other population biases
  the attack below chance, so suite/privacy.py gives retrained models train seeds no other model uses.
  Reported: the attack's accuracy (per example over its 2K target models, then averaged over examples; 50% =
  chance), and over all (example, target) pairs pooled: ROC AUC and the TPR at 1% FPR.
"""
import math

import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
WINDOW_MARGIN = 2.0  # how far the double-threshold grids reach beyond the peaky population
DEGENERATE_RATIO = 0.01  # a population this much narrower than the other gets the cap
BUCKET_WIDTH = 0.5
FPR_POINT = 0.01  # U-LiRA: TPR at this FPR
MIN_STD = 1e-6  # U-LiRA: floor of a fitted standard deviation


# ---------------------------------------------------------------- the statistic

def logit_confidence(logits, y):
    """log p_y - log sum_{k != y} p_k per row, computed as z_y - logsumexp_{k != y} z_k (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    rows = np.arange(len(y))
    own = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    top = others.max(axis=1)
    return own - (top + np.log(np.exp(others - top[:, None]).sum(axis=1)))


# ---------------------------------------------------------------- the challenge's epsilon and score

def _epsilons(fp, fn, n_pos, n_neg, delta):
    """Epsilon of each decision rule from its false-positive and false-negative counts: inf for a perfect
    separation, NaN for a discarded rule (exactly one error rate 0, or no finite value)."""
    fpr, fnr = fp / n_neg, fn / n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.fmax(np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr))
    eps = np.where(eps < 0, 0.0, eps)  # NaN stays NaN
    eps[(fp == 0) != (fn == 0)] = np.nan
    eps[(fp == 0) & (fn == 0)] = np.inf
    return eps


def _single_threshold(pos, neg):
    """(false positives, false negatives) of every rule "positive when c >= t"."""
    both = np.concatenate([pos, neg])
    lo, hi = both.min(), both.max()
    thresholds = np.linspace(lo, hi, int(math.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    fn = np.searchsorted(np.sort(pos), thresholds, side="left")  # positives below t
    fp = len(neg) - np.searchsorted(np.sort(neg), thresholds, side="left")  # negatives at or above t
    return fp, fn


def _double_threshold(pos, neg):
    """(false positives, false negatives) of every rule "peaky when l <= c <= r", counted with the peakier
    population (the smaller range) as the positive class."""
    if np.ptp(pos) >= np.ptp(neg):
        pos, neg = neg, pos
    width = np.ptp(pos)
    lo, hi = pos.min() + width - WINDOW_MARGIN, pos.max() + WINDOW_MARGIN
    right = np.linspace(lo, hi, int(math.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    n_left = int(math.ceil(2 * WINDOW_MARGIN * THRESHOLDS_PER_UNIT))
    left = np.linspace(right - width - WINDOW_MARGIN, right - width + WINDOW_MARGIN, n_left, axis=1)

    def inside(values):  # how many values lie in [left, right], per rule (none when left > right)
        s = np.sort(values)
        count = np.searchsorted(s, right, side="right")[:, None] - np.searchsorted(s, left, side="left")
        return np.maximum(count, 0).ravel()

    return inside(neg), len(pos) - inside(pos)


def example_epsilon(unlearned, retrained, delta=DELTA, cap=EPSILON_CAP):
    """The challenge's epsilon of one example from its statistic under the unlearned and retrained models."""
    u, r = np.asarray(unlearned, dtype=np.float64), np.asarray(retrained, dtype=np.float64)
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    spans = sorted((np.ptp(pos), np.ptp(neg)))
    if spans[1] > 0 and spans[0] / spans[1] < DEGENERATE_RATIO:
        return float(cap)
    # Epsilon depends on a rule only through its error counts: evaluate each (fp, fn) pair that occurs once.
    # The double-threshold rules count with their own positive class, which has the same size K here.
    if len(pos) != len(neg):
        raise ValueError("the unlearned and retrained populations must have the same number of models")
    (fp_d, fn_d), (fp_s, fn_s) = _double_threshold(pos, neg), _single_threshold(pos, neg)
    k = len(pos) + 1
    seen = np.zeros(k * k, dtype=bool)
    seen[np.concatenate([fp_d, fp_s]) * k + np.concatenate([fn_d, fn_s])] = True
    fp, fn = np.divmod(np.flatnonzero(seen), k)
    eps = _epsilons(fp, fn, len(pos), len(neg), delta)
    eps = eps[~np.isnan(eps)]
    if len(eps) == 0:
        return 0.0  # no rule tells the populations apart (the challenge's code stops here)
    return float(min(max(eps.max(), 0.0), cap))


def epsilons(unlearned, retrained, delta=DELTA, cap=EPSILON_CAP):
    """Per-example epsilons from (K_u, n) unlearned and (K_r, n) retrained statistics."""
    u, r = np.asarray(unlearned, dtype=np.float64), np.asarray(retrained, dtype=np.float64)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise ValueError(f"statistics must be (models, examples) arrays with the same examples; got {u.shape} "
                         f"and {r.shape}")
    return np.array([example_epsilon(u[:, i], r[:, i], delta, cap) for i in range(u.shape[1])])


def buckets(num_models):
    """[(upper end, points)]: [0, 0.5) is worth 1, [0.5, 1) 1/2, ... while the upper end <= ceil(ln(K - 1))."""
    top = math.ceil(math.log(num_models - 1)) if num_models > 1 else 0
    out, start, points = [], 0.0, 1.0
    while start + BUCKET_WIDTH <= top:
        out.append((start + BUCKET_WIDTH, points))
        start, points = start + BUCKET_WIDTH, points / 2
    return out


def example_points(eps, num_models):
    """Points of each epsilon: those of the first bucket it lies below the upper end of, else 0."""
    table = buckets(num_models)
    return np.array([next((p for upper, p in table if e < upper), 0.0) for e in np.asarray(eps, dtype=float)])


def forgetting_score(eps, num_models):
    """The challenge's forgetting score: the mean of the examples' bucket points."""
    return float(example_points(eps, num_models).mean()) if len(eps) else float("nan")


def final_score(forget_score, retain_unlearned, retain_retrained, test_unlearned, test_retrained):
    """Forgetting score x (mean RA unlearned / mean RA retrained) x (mean TA unlearned / mean TA retrained)."""
    return forget_score * (np.mean(retain_unlearned) / np.mean(retain_retrained)) * \
        (np.mean(test_unlearned) / np.mean(test_retrained))


def challenge(unlearned, retrained, accuracy_unlearned, accuracy_retrained):
    """The challenge's numbers for one method. unlearned, retrained: (K, n) statistics; accuracy_*: lists of
    {"retain", "test"} per model. Returns epsilons, forgetting score, final score and the accuracy means."""
    eps = epsilons(unlearned, retrained)
    f = forgetting_score(eps, len(unlearned))
    ra_u, ra_r = [a["retain"] for a in accuracy_unlearned], [a["retain"] for a in accuracy_retrained]
    ta_u, ta_r = [a["test"] for a in accuracy_unlearned], [a["test"] for a in accuracy_retrained]
    return {"epsilon": eps.tolist(), "forgetting_score": f, "score": float(final_score(f, ra_u, ra_r, ta_u, ta_r)),
            "RA": float(np.mean(ra_u)), "TA": float(np.mean(ta_u)), "RA_retrained": float(np.mean(ra_r)),
            "TA_retrained": float(np.mean(ta_r)), "max_epsilon_scored": buckets(len(unlearned))[-1][0]
            if buckets(len(unlearned)) else 0.0}


# ---------------------------------------------------------------- U-LiRA

def _fit(values):
    """Per-example means and the pooled (over examples) within-example variance of (m, n) values."""
    mean = values.mean(axis=0)
    var = ((values - mean) ** 2).sum() / (values.shape[1] * (values.shape[0] - 1)) if len(values) > 1 else None
    return mean, var


def _log_normal(x, mean, var):
    return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def ulira_scores(stats_in, stats_out):
    """Leave-one-out U-LiRA: Lambda (2K, n) for every (target model, example); rows: the K "in" (unlearned)
    models, then the K "out" (retrained) ones. A population with a single shadow model left borrows the other
    population's pooled variance."""
    a_in, a_out = np.asarray(stats_in, dtype=np.float64), np.asarray(stats_out, dtype=np.float64)
    if a_in.ndim != 2 or a_out.shape[1:] != a_in.shape[1:] or min(len(a_in), len(a_out)) < 2:
        raise ValueError(f"U-LiRA needs (models >= 2, examples) statistics for both populations; got "
                         f"{a_in.shape} and {a_out.shape}")
    rows = []
    for side, own, other in ((0, a_in, a_out), (1, a_out, a_in)):
        for j in range(len(own)):
            (m_own, v_own), (m_other, v_other) = _fit(np.delete(own, j, axis=0)), _fit(other)
            v_own = v_other if v_own is None else v_own
            v_own, v_other = max(v_own, MIN_STD ** 2), max(v_other, MIN_STD ** 2)
            (m_in, v_in), (m_out, v_out) = ((m_own, v_own), (m_other, v_other)) if side == 0 else \
                ((m_other, v_other), (m_own, v_own))
            rows.append(_log_normal(own[j], m_in, v_in) - _log_normal(own[j], m_out, v_out))
    return np.array(rows)


def roc_auc(scores, labels):
    """Area under the ROC curve (ties count one half), from ranks."""
    from scipy.stats import rankdata
    scores, labels = np.asarray(scores, dtype=float).ravel(), np.asarray(labels, dtype=bool).ravel()
    n_pos, n_neg = labels.sum(), (~labels).sum()
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tpr_at_fpr(scores, labels, fpr=FPR_POINT):
    """The largest TPR of a rule "positive when score >= t" whose FPR is at most `fpr`."""
    scores, labels = np.asarray(scores, dtype=float).ravel(), np.asarray(labels, dtype=bool).ravel()
    neg = np.sort(scores[~labels])[::-1]
    allowed = int(math.floor(fpr * len(neg) + 1e-9))  # false positives allowed
    # the threshold just above the (allowed + 1)-th largest negative score
    if allowed >= len(neg):
        return 1.0
    bar = neg[allowed]
    return float((scores[labels] > bar).mean())


def ulira(stats_in, stats_out):
    """U-LiRA accuracy (mean over examples of the per-example accuracy at Lambda > 0), ROC AUC and TPR at 1% FPR
    over all (example, target model) pairs, and the per-example accuracies."""
    scores = ulira_scores(stats_in, stats_out)
    labels = np.zeros_like(scores, dtype=bool)
    labels[:len(stats_in)] = True
    per_example = ((scores > 0) == labels).mean(axis=0)
    return {"accuracy": float(per_example.mean()), "auc": roc_auc(scores, labels),
            "tpr_at_1pct_fpr": tpr_at_fpr(scores, labels), "example_accuracy": per_example.tolist()}
