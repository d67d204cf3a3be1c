"""The benchmark's numbers: per-run records -> per-seed values (Avg. Gap to that seed's retrain of the same arm),
rows (mean ± std over seeds), the paired comparisons (mask vs no mask; sparse vs dense) with t intervals, Holm's
correction and the split-halves check (suite/stats.py), and the files (results.md, .csv, .json, PNG plots).

A record is {"method", "masked", "seed", "sparsity" (0: the dense arm), "summary": eval_result's summary, ...};
a failure is {"method", "masked", "seed", "sparsity", "error"}. Standard deviations are sample standard
deviations (n - 1), 0 for a single seed.
"""
import csv
import math
import os

import utils
from evaluation import avg_gap
from suite import stats
from suite.presets import PUBLISHED, PUBLISHED_TITLE, REFERENCE, display, label, order_key

METRICS = (("UA", "UA"), ("MIA_efficacy", "MIA-Efficacy"), ("RA", "RA"), ("TA", "TA"))
COLUMNS = METRICS + (("avg_gap", "Avg. Gap"), ("RTE_minutes", "RTE (min)"))
CONFIDENCE = 0.95
INTERVAL = "95% Student t interval of the mean paired difference, n - 1 degrees of freedom"


def _finite(values):
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def mean_std(values):
    """(mean, sample std) of the finite values; (None, None) when there are none; std 0 for one value."""
    values = _finite(values)
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def t_interval(values, confidence=CONFIDENCE):
    """Mean of the finite `values` with its Student t interval: mean ± t_{(1 + confidence) / 2, n - 1} x std / sqrt(n).

    Returns {"n", "mean", "std", "half_width", "low", "high"}; the last three are None below two values.
    """
    from scipy.stats import t

    values = _finite(values)
    n, (mean, std) = len(values), mean_std(values)
    if n < 2:
        return {"n": n, "mean": mean, "std": std, "half_width": None, "low": None, "high": None}
    half = float(t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "half_width": half, "low": mean - half, "high": mean + half}


def verdict(interval, what="mask"):
    """What the interval of (mask - no mask), or of (sparse - dense) with what="sparse", says: it reduces /
    increases the gap only when the interval excludes 0."""
    if interval["low"] is None:
        return "n/a"
    if interval["high"] < 0:
        return f"{what} reduces the gap"
    if interval["low"] > 0:
        return f"{what} increases the gap"
    return "no detectable difference"


def _stat(values):
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "values": values}


def arm(record):
    """The record's sparsity arm (0.0: dense)."""
    return float(record.get("sparsity") or 0.0)


def row_key(r):
    return arm(r), order_key(r["method"], r["masked"])


def per_seed(records):
    """One entry per finished run, in the table's order then by seed: method, masked, seed, sparsity, UA,
    MIA_efficacy, RA, TA, avg_gap (to that seed's retrain of the same arm; None without one) and RTE_minutes."""
    refs = {(r["seed"], arm(r)): r["summary"] for r in records if r["method"] == REFERENCE and not r["masked"]}
    out = []
    for r in sorted(records, key=lambda r: (row_key(r), r["seed"])):
        s, ref = r["summary"], refs.get((r["seed"], arm(r)))
        out.append({"method": r["method"], "masked": bool(r["masked"]), "seed": r["seed"], "sparsity": arm(r),
                    **{key: s.get(key) for key, _ in METRICS},
                    "avg_gap": avg_gap(s, ref) if ref is not None else None,
                    "RTE_minutes": s.get("RTE_minutes")})
    return out


def aggregate(records, failures=(), published=False):
    """One row per (method, masked), in the papers' order; Avg. Gap per seed against that seed's retrain."""
    groups = {}
    for entry in per_seed(records):
        groups.setdefault((entry["method"], entry["masked"], entry["sparsity"]), []).append(entry)
    failed = {}
    for f in failures:
        failed.setdefault((f["method"], bool(f["masked"]), arm(f)), []).append(f["seed"])
    rows = []
    for method, masked, sparsity in sorted(set(groups) | set(failed), key=lambda k: (k[2], order_key(*k[:2]))):
        runs = groups.get((method, masked, sparsity), [])
        row = {"label": label(method, masked, sparsity), "method": method, "masked": masked, "sparsity": sparsity,
               "seeds": [e["seed"] for e in runs], "failed_seeds": sorted(failed.get((method, masked, sparsity), []))}
        for key, _ in METRICS + (("RTE_minutes", ""),):
            row[key] = _stat([e[key] for e in runs])
        with_ref = [e for e in runs if e["avg_gap"] is not None]
        row["avg_gap"] = {**_stat([e["avg_gap"] for e in with_ref]), "seeds": [e["seed"] for e in with_ref]}
        known = published and not sparsity and (method, masked) in PUBLISHED
        row["published"] = list(PUBLISHED[(method, masked)]) if known else None
        rows.append(row)
    return rows


def paired(base, other):
    """The per-seed difference other - base of two Avg. Gap stats, with its t interval."""
    first, second = (dict(zip(g["seeds"], g["values"])) for g in (base, other))
    seeds = [s for s in base["seeds"] if s in second]
    diffs = [second[s] - first[s] for s in seeds]
    return {"seeds": seeds, "values": diffs, **t_interval(diffs)}


def _brief(gap):
    return {"mean": gap["mean"], "std": gap["std"], "n": len(gap["seeds"])}


def masking_table(rows):
    """Each method run both ways: Avg. Gap without and with the mask, and the paired difference (with - without,
    per seed) with its t interval and verdict, p-value, Holm's correction (primary family: SalUn vs RL) and the
    split-halves check. The RL entry compares SalUn (RL + mask) with RL."""
    by_key = {(r["method"], r["masked"], r["sparsity"]): r for r in rows}
    out = []
    for row in rows:
        twin = by_key.get((row["method"], True, row["sparsity"]))
        if row["masked"] or twin is None:
            continue
        plain, masked = row["avg_gap"], twin["avg_gap"]
        difference = paired(plain, masked)
        out.append({"method": row["method"], "label": label(row["method"], False, row["sparsity"]),
                    "comparison": f"{twin['label']} - {row['label']}",
                    "without_mask": _brief(plain), "with_mask": _brief(masked),
                    "difference": difference, "interval": INTERVAL, "verdict": verdict(difference)})
    stats.correct(out, stats.PRIMARY_MASK)
    return stats.split_check(out, t_interval)


def sparse_table(rows):
    """Each method run on the dense and on a sparse original model (unmasked): Avg. Gap to each arm's own retrain,
    the paired difference sparse - dense with its t interval, p-value, Holm's correction (primary family: FT, GA,
    FF and IU) and the split-halves check; and, within each arm, the method's change against that arm's
    untouched model (Avg. Gap of the method - Avg. Gap of Original, paired by seed)."""
    by_key = {(r["method"], r["masked"], r["sparsity"]): r for r in rows}
    out = []
    for row in rows:
        dense = by_key.get((row["method"], False, 0.0))
        if row["masked"] or not row["sparsity"] or row["method"] == REFERENCE or dense is None:
            continue
        difference = paired(dense["avg_gap"], row["avg_gap"])
        entry = {"method": row["method"], "label": display(row["method"]),
                 "sparsity": row["sparsity"], "comparison": f"{row['label']} - {dense['label']}",
                 "dense": _brief(dense["avg_gap"]), "sparse": _brief(row["avg_gap"]), "difference": difference,
                 "interval": INTERVAL, "verdict": verdict(difference, "sparse")}
        if row["method"] != "raw":
            entry["vs_original"] = {}
            for name, r in (("dense", dense), ("sparse", row)):
                raw = by_key.get(("raw", False, r["sparsity"]))
                entry["vs_original"][name] = paired(raw["avg_gap"], r["avg_gap"]) if raw else None
        out.append(entry)
    stats.correct(out, stats.PRIMARY_SPARSE)
    return stats.split_check(out, t_interval)


def fmt(stat, digits=2):
    if not stat or stat.get("mean") is None:
        return "—"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _seeds_cell(row):
    text = str(len(row["seeds"]))
    if row["failed_seeds"]:
        text += f" ({len(row['failed_seeds'])} failed)"
    return text


def _md_table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def main_table(rows):
    show_published = any(r["published"] for r in rows)
    show_values = any(r.get("values") for r in rows)  # --tuned: the values each arm ran at
    header = ["Method"] + [name for _, name in COLUMNS] + ["Seeds"] + ([PUBLISHED_TITLE] if show_published else [])
    header += ["Values"] if show_values else []
    lines = []
    for r in rows:
        if not r["seeds"]:
            cells = [r["label"]] + ["failed"] * len(COLUMNS) + [_seeds_cell(r)]
        else:
            cells = [r["label"]] + [fmt(r[key], 3 if key == "RTE_minutes" else 2) for key, _ in COLUMNS]
            cells.append(_seeds_cell(r))
        if show_published:
            cells.append(" / ".join("—" if v is None else f"{v:.2f}" for v in r["published"]) if r["published"] else "")
        if show_values:
            cells.append(r.get("values") or "")
        lines.append(cells)
    return _md_table(header, lines)


def _interval_cell(stat, digits=2):
    return "—" if stat["low"] is None else f"[{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def _p_cell(c):
    if c.get("p") is None:
        return "—"
    return f"{c['p']:.3g} / {c['p_holm']:.3g} ({c['family']})"


SIGN = {"reduces": "−", "increases": "+", "no detectable difference": "0", "n/a": "n/a"}


def _halves_cell(c):
    parts = c.get("halves") or []
    if len(parts) != 2 or parts[0]["mean"] is None or parts[1]["mean"] is None:
        return "—"
    cells = [f"{h['mean']:+.2f} ({SIGN[h['direction']]})" for h in parts]
    return " / ".join(cells) + (" **differ**" if c["stable"] is False else "")


def _verdict_cell(c, what):
    return c["holm"] if c["holm"] in ("n/a", "no detectable difference") else f"{what} {c['holm']} the gap"


STAT_HEADER = ["95% CI (Student t)", "p / Holm p (family)", "Verdict (Holm)", "Halves (1st / 2nd)"]


def _stat_cells(c, what):
    return [_interval_cell(c["difference"]), _p_cell(c), _verdict_cell(c, what), _halves_cell(c)]


def mask_table(masking):
    header = ["Method", "Avg. Gap (no mask)", "Avg. Gap (+ mask)", "Paired seeds", "Difference (mask - no mask)"]
    lines = [[m["label"], fmt(m["without_mask"]), fmt(m["with_mask"]), str(m["difference"]["n"]),
              fmt(m["difference"])] + _stat_cells(m, "mask") for m in masking]
    return _md_table(header + STAT_HEADER, lines)


def sparse_md(sparse):
    header = ["Method", "Sparsity", "Avg. Gap (dense)", "Avg. Gap (sparse)", "Paired seeds",
              "Difference (sparse - dense)"] + STAT_HEADER + ["vs Original, dense", "vs Original, sparse"]
    lines = []
    for c in sparse:
        versus = [("—" if not c.get("vs_original") or c["vs_original"][k] is None else
                   f"{c['vs_original'][k]['mean']:+.2f} {_interval_cell(c['vs_original'][k])}")
                  for k in ("dense", "sparse")]
        lines.append([c["label"], f"{100 * c['sparsity']:g}%", fmt(c["dense"]), fmt(c["sparse"]),
                      str(c["difference"]["n"]), fmt(c["difference"])] + _stat_cells(c, "sparsity") + versus)
    return _md_table(header, lines)


def salun_vs_rl(masking):
    """The explicit SalUn line (RL's entry of the masking table); None when RL was not run both ways."""
    rl = next((m for m in masking if m["method"] == "RL"), None)
    if rl is None:
        return None
    d = rl["difference"]
    mean = "—" if d["mean"] is None else f"{d['mean']:+.2f}"
    return (f"SalUn vs RL: Avg. Gap of SalUn (RL + mask) minus RL's, paired over {d['n']} seeds: mean {mean}, "
            f"95% CI {_interval_cell(d)}: {rl['verdict']}.")


NOTES = """UA = 100 - accuracy on the forget set; MIA-Efficacy = percent of forget examples an SVC membership
attack (confidence feature) calls non-members; RA / TA = accuracy on the retained training data / test set;
RTE = minutes of the unlearning step alone. Avg. Gap = mean |method - retrain| over UA, MIA-Efficacy, RA and
TA, computed per seed against that seed's retrained model, then averaged. Every number is mean ± sample
standard deviation over seeds; Seeds counts the finished runs."""

MASK_NOTES = """Difference: per seed, Avg. Gap with the mask minus without (paired by seed), mean ± sample std over
the paired seeds. 95% CI: Student t interval of the mean difference with n - 1 degrees of freedom,
mean ± t(0.975, n - 1) x std / sqrt(n) (t = 12.71, 4.30, 3.18 for 2, 3, 4 seeds). Verdict: "mask reduces the
gap" when the whole interval is below 0, "mask increases the gap" when it is above 0, "no detectable
difference" when it contains 0, "n/a" with fewer than two paired seeds. p: the paired two-sided t test; Holm p:
Holm's step-down correction within the family (primary: RL with and without the mask, decided in advance;
secondary: every other method of this table); Verdict (Holm): the direction when Holm p < 0.05. Halves: the
mean difference of the first and of the second half of the seeds (in seed order) with the sign of each half's
own verdict
(−: reduces, +: increases, 0: no detectable difference); "differ" marks halves whose verdicts disagree."""

SPARSE_NOTES = """Each arm's Avg. Gap is measured against its own gold standard: the dense arm's against retraining the
dense model without the forget set, the sparse arm's against retraining the pruned model (same zeros) without
it. Difference: per seed, sparse - dense (below 0: the method lands closer to its gold standard on the sparse
model, the seed paper's claim). Holm's families: primary FT, GA, FF and IU (the paper's methods, decided in
advance), secondary every other method. vs Original: per seed, the method's Avg. Gap minus the untouched
model's (Original) in the same arm, with its 95% t interval; pruning alone can move the model and its gold
standard toward each other, and this column shows what the method itself adds."""


def write_outputs(save_dir, meta, rows, masking, records, failures, plots=True):
    """results.md, results.csv, results.json and the plots; returns the written paths."""
    utils.ensure_dir(save_dir)
    paths = {name: os.path.join(save_dir, name) for name in ("results.md", "results.csv", "results.json")}
    text = render_markdown(meta, rows, masking, failures)
    with open(paths["results.md"], "w") as f:
        f.write(text)
    write_csv(paths["results.csv"], rows)
    utils.write_json({"meta": meta, "rows": rows, "masking": masking, "sparse": sparse_table(rows),
                      "per_seed": per_seed(records), "runs": records, "failed": failures}, paths["results.json"])
    written = list(paths.values())
    if plots:
        written += make_plots(save_dir, rows, masking, meta.get("title", ""))
    return written


def render_markdown(meta, rows, masking, failures):
    parts = [f"# {meta.get('title', 'Unlearning benchmark')}", ""]
    parts += [f"- {k}: {v}" for k, v in meta.get("settings", {}).items() if v is not None]
    parts += ["", main_table(rows), "", NOTES, ""]
    if masking:
        parts += ["## Avg. Gap without and with the saliency mask", "", mask_table(masking), ""]
        if salun_vs_rl(masking):
            parts += [salun_vs_rl(masking), ""]
        parts += [MASK_NOTES, ""]
    sparse = sparse_table(rows)
    if sparse:
        parts += ["## Avg. Gap on the dense and on the sparse original model", "", sparse_md(sparse), "",
                  SPARSE_NOTES, ""]
    if failures:
        parts += ["## Failed runs", ""]
        parts += [f"- seed {f['seed']}, {label(f['method'], f['masked'], arm(f))}: {f['error']}" for f in failures]
        parts.append("")
    return "\n".join(parts)


def write_csv(path, rows):
    keys = [key for key, _ in COLUMNS]
    header = ["label", "method", "masked", "sparsity", "seeds", "failed_seeds"]
    header += [f"{k}_{s}" for k in keys for s in ("mean", "std")]
    header += ["published_" + k for k in ("UA", "MIA_efficacy", "RA", "TA", "avg_gap", "RTE_minutes")]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            line = [r["label"], r["method"], int(r["masked"]), f"{r['sparsity']:g}", " ".join(map(str, r["seeds"])),
                    " ".join(map(str, r["failed_seeds"]))]
            line += ["" if r[k][s] is None else f"{r[k][s]:.6g}" for k in keys for s in ("mean", "std")]
            line += ["" if v is None else v for v in r["published"]] if r["published"] else [""] * 6
            w.writerow(line)


def _spread(k, width=0.12):
    """x offsets for k points side by side, so that equal values stay visible."""
    return [width * (j - (k - 1) / 2) / max(k - 1, 1) for j in range(k)]


def make_plots(save_dir, rows, masking, title):
    """avg_gap.png (every seed's Avg. Gap per method without and with the mask, a seed's pair joined),
    mask_difference.png (every seed's difference mask - no mask, the mean and its 95% t interval) and
    ua_vs_ta.png (UA against TA: every seed, and mean ± std per row)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []

    def save(fig, name):
        fig.tight_layout()
        out.append(os.path.join(save_dir, name))
        fig.savefig(out[-1], dpi=120)
        plt.close(fig)

    by_key = {(r["method"], r["masked"]): r["avg_gap"] for r in rows if not r["sparsity"]}
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != REFERENCE and r["avg_gap"]["values"]
                                 and not r["sparsity"]))
    if methods:
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(methods)), 3.8))
        legend = {False: "no mask", True: "+ saliency mask"}
        for x, method in enumerate(methods):
            placed = {}
            for masked, side, color in ((False, -0.2, "C0"), (True, 0.2, "C1")):
                gap = by_key.get((method, masked))
                if not gap or not gap["values"]:
                    continue
                xs = [x + side + d for d in _spread(len(gap["values"]))]
                placed[masked] = dict(zip(gap["seeds"], zip(xs, gap["values"])))
                ax.scatter(xs, gap["values"], color=color, s=18, zorder=3, label=legend.pop(masked, None))
                ax.hlines(gap["mean"], x + side - 0.12, x + side + 0.12, color=color, lw=2)
            for seed in set(placed.get(False, {})) & set(placed.get(True, {})):
                (x0, y0), (x1, y1) = placed[False][seed], placed[True][seed]
                ax.plot([x0, x1], [y0, y1], color="0.6", lw=0.7, zorder=1)
        ax.set_xticks(range(len(methods)), [display(m) for m in methods])
        ax.set_ylabel("Avg. Gap to retrain (lower is better)")
        ax.set_title(title + " (dots: seeds, grey lines join a seed's pair, dashes: means)", fontsize=9)
        ax.legend(fontsize=8)
        save(fig, "avg_gap.png")
    if masking:
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(masking)), 3.8))
        for x, m in enumerate(masking):
            d = m["difference"]
            ax.scatter([x - 0.1 + o for o in _spread(len(d["values"]))], d["values"], color="C0", s=18, zorder=3)
            if d["low"] is not None:
                ax.errorbar(x + 0.15, d["mean"], yerr=d["half_width"], fmt="D", color="k", markersize=5, capsize=4)
        ax.axhline(0, color="0.5", lw=0.8)
        names = ["SalUn vs RL" if m["method"] == "RL" else display(m["method"]) for m in masking]
        ax.set_xticks(range(len(masking)), names)
        ax.set_ylabel("Avg. Gap: mask - no mask (below 0: mask helps)")
        ax.set_title(title + " (dots: seeds; diamond and bar: mean, 95% Student t interval)", fontsize=9)
        save(fig, "mask_difference.png")
    points = [r for r in rows if r["UA"]["mean"] is not None and r["TA"]["mean"] is not None]
    if points:
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        colors = plt.get_cmap("tab20").colors
        for i, r in enumerate(points):
            marker = "*" if r["method"] == REFERENCE else ("^" if r["masked"] else "o")
            color = colors[i % len(colors)]
            seeds = [(u, t) for u, t in zip(r["UA"]["values"], r["TA"]["values"]) if u is not None and t is not None]
            ax.scatter(*zip(*seeds), marker=marker, color=color, s=14, alpha=0.4)
            ax.errorbar(r["UA"]["mean"], r["TA"]["mean"], xerr=r["UA"]["std"], yerr=r["TA"]["std"], fmt=marker,
                        color=color, markersize=12 if marker == "*" else 6, capsize=2,
                        elinewidth=0.8, label=r["label"])
        ax.set_xlabel("UA (%): 100 - forget accuracy")
        ax.set_ylabel("TA (%): test accuracy")
        ax.set_title(title + " (small: each seed; large: mean ± std over seeds)", fontsize=9)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        save(fig, "ua_vs_ta.png")
    if any(r["sparsity"] for r in rows):
        save(sparsity_plot(plt, rows, title), "sparsity.png")
    return out


def sparsity_plot(plt, rows, title):
    """Avg. Gap (mean, 95% t interval over seeds) against the sparsity of the original model, per method; each arm
    against its own gold standard."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["sparsity"] and r["method"] != REFERENCE))
    for i, method in enumerate(methods):
        arms = sorted((r for r in rows if r["method"] == method and not r["masked"] and r["avg_gap"]["values"]),
                      key=lambda r: r["sparsity"])
        cis = [t_interval(r["avg_gap"]["values"]) for r in arms]
        xs = [100 * r["sparsity"] + 0.4 * (i - len(methods) / 2) for r in arms]
        ax.errorbar(xs, [c["mean"] for c in cis], yerr=[c["half_width"] or 0 for c in cis], marker="o", capsize=3,
                    label=display(method))
    ax.set_xlabel("sparsity of the original model (%; 0 = dense)")
    ax.set_ylabel("Avg. Gap to the arm's own retrain")
    ax.set_title(title + " (mean and 95% t interval over seeds)", fontsize=9)
    ax.legend(fontsize=8)
    return fig
