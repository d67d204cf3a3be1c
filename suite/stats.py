"""Paired comparisons across seeds: p-values, the Holm correction within a family, and the split-halves check.

Every comparison is a per-seed difference d_s (for example Avg. Gap with the mask minus without). Its p-value is
the two-sided paired Student t test of mean(d) = 0. The comparisons decided in advance (SalUn vs RL; sparse vs
dense for the seed paper's methods FT, GA, FF and IU) form the primary family, every other comparison of the
same table the secondary family; Holm's step-down correction is applied within each family, so that each
family's chance of one or more false verdicts stays at most 5%. The split-halves check repeats the verdict on
the first and the second half of the seeds (in seed order): a verdict that another draw of seeds (or another
CPU, which in effect draws other seeds) would reverse shows up as halves that disagree.
"""
import math

ALPHA = 0.05
PRIMARY_MASK = ("RL",)  # SalUn = RL + saliency mask, against RL
PRIMARY_SPARSE = ("FT", "GA", "fisher_new", "wfisher")  # the seed paper's approximate methods


def p_value(values):
    """Two-sided p-value of the paired t test of mean 0 (None below two values; 0 or 1 without spread)."""
    from scipy.stats import t

    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    return float(2 * t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def holm(p_values):
    """Holm's adjusted p-values, in the input's order (None stays None and does not count in the family):
    the i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m, out, running = len(ranked), [None] * len(p_values), 0.0
    for j, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


def direction(mean, p, alpha=ALPHA, lower="reduces", higher="increases"):
    """'reduces' / 'increases' when p < alpha, 'no detectable difference' otherwise, 'n/a' without p."""
    if p is None or mean is None:
        return "n/a"
    if p >= alpha:
        return "no detectable difference"
    return lower if mean < 0 else higher


def halves(seeds, values):
    """The differences of the first and of the second half of the seeds (in seed order; an odd one out goes to
    the second half): [(seeds, values), (seeds, values)]."""
    pairs = sorted(zip(seeds, values))
    cut = len(pairs) // 2
    return [([s for s, _ in part], [v for _, v in part]) for part in (pairs[:cut], pairs[cut:])]


def correct(comparisons, primary):
    """Add 'family' ('primary' when c['method'] is in `primary`), 'p', 'p_holm' and 'holm' (the direction at
    Holm's level) to every comparison, in place; each needs c['difference'] with 'values' and 'mean'."""
    for c in comparisons:
        c["family"] = "primary" if c["method"] in primary else "secondary"
        c["p"] = p_value(c["difference"]["values"])
    for family in ("primary", "secondary"):
        members = [c for c in comparisons if c["family"] == family]
        for c, adjusted in zip(members, holm([c["p"] for c in members])):
            c["p_holm"] = adjusted
            c["holm"] = direction(c["difference"]["mean"], adjusted)
    return comparisons


def split_check(comparisons, interval):
    """Add 'halves': each half's mean, interval and direction (unadjusted), and 'stable': whether the two halves
    give the same direction (None when a half has fewer than two seeds), to every comparison in place;
    `interval(values)` is the t interval."""
    for c in comparisons:
        d = c["difference"]
        parts = []
        for seeds, values in halves(d["seeds"], d["values"]):
            ci = interval(values)
            parts.append({"seeds": seeds, **ci, "direction": direction(ci["mean"], p_value(values))})
        c["halves"] = parts
        directions = {p["direction"] for p in parts}
        c["stable"] = None if "n/a" in directions else len(directions) == 1
    return comparisons
