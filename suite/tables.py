"""The benchmark's numbers: per-run records -> rows (mean ± std over seeds, Avg. Gap to that seed's retrain),
the masking table, and the files (results.md, results.csv, results.json, PNG plots).

A record is {"method", "masked", "seed", "summary": eval_result's summary, ...}; a failure is
{"method", "masked", "seed", "error"}. Standard deviations are sample standard deviations (n - 1),
0 for a single seed.
"""
import csv
import math
import os

import utils
from evaluation import avg_gap
from suite.presets import NAMES, PUBLISHED, PUBLISHED_TITLE, REFERENCE, label, order_key

METRICS = (("UA", "UA"), ("MIA_efficacy", "MIA-Efficacy"), ("RA", "RA"), ("TA", "TA"))
COLUMNS = METRICS + (("avg_gap", "Avg. Gap"), ("RTE_minutes", "RTE (min)"))


def mean_std(values):
    """(mean, sample std) of the finite values; (None, None) when there are none; std 0 for one value."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _stat(values):
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "values": values}


def aggregate(records, failures=(), published=False):
    """One row per (method, masked), in the papers' order; Avg. Gap per seed against that seed's retrain."""
    refs = {r["seed"]: r["summary"] for r in records if r["method"] == REFERENCE and not r["masked"]}
    groups = {}
    for r in records:
        groups.setdefault((r["method"], bool(r["masked"])), []).append(r)
    failed = {}
    for f in failures:
        failed.setdefault((f["method"], bool(f["masked"])), []).append(f["seed"])
    rows = []
    for method, masked in sorted(set(groups) | set(failed), key=lambda k: order_key(*k)):
        runs = sorted(groups.get((method, masked), []), key=lambda r: r["seed"])
        row = {"label": label(method, masked), "method": method, "masked": masked,
               "seeds": [r["seed"] for r in runs], "failed_seeds": sorted(failed.get((method, masked), []))}
        for key, _ in METRICS + (("RTE_minutes", ""),):
            row[key] = _stat([r["summary"].get(key) for r in runs])
        with_ref = [r for r in runs if r["seed"] in refs]
        row["avg_gap"] = _stat([avg_gap(r["summary"], refs[r["seed"]]) for r in with_ref])
        row["avg_gap"]["seeds"] = [r["seed"] for r in with_ref]
        row["published"] = list(PUBLISHED[(method, masked)]) if published and (method, masked) in PUBLISHED else None
        rows.append(row)
    return rows


def masking_table(rows):
    """Each method run both ways: Avg. Gap without and with the mask, and the per-seed change (with - without)."""
    by_key = {(r["method"], r["masked"]): r for r in rows}
    out = []
    for row in rows:
        if row["masked"] or (row["method"], True) not in by_key:
            continue
        plain, masked = row["avg_gap"], by_key[(row["method"], True)]["avg_gap"]
        with_seed = dict(zip(masked["seeds"], masked["values"]))
        changes = [with_seed[s] - v for s, v in zip(plain["seeds"], plain["values"]) if s in with_seed]
        change = _stat(changes)
        out.append({"method": row["method"], "label": NAMES.get(row["method"], row["method"]),
                    "without_mask": {k: plain[k] for k in ("mean", "std")},
                    "with_mask": {k: masked[k] for k in ("mean", "std")}, "change": change,
                    "mask_reduces_gap": None if change["mean"] is None else change["mean"] < 0})
    return out


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
    header = ["Method"] + [name for _, name in COLUMNS] + ["Seeds"] + ([PUBLISHED_TITLE] if show_published else [])
    lines = []
    for r in rows:
        if not r["seeds"]:
            cells = [r["label"]] + ["failed"] * len(COLUMNS) + [_seeds_cell(r)]
        else:
            cells = [r["label"]] + [fmt(r[key], 3 if key == "RTE_minutes" else 2) for key, _ in COLUMNS]
            cells.append(_seeds_cell(r))
        if show_published:
            cells.append(" / ".join(f"{v:.2f}" for v in r["published"]) if r["published"] else "")
        lines.append(cells)
    return _md_table(header, lines)


def mask_table(masking):
    header = ["Method", "Avg. Gap (no mask)", "Avg. Gap (+ mask)", "Change (mask - no mask)", "Mask reduces the gap"]
    lines = [[m["label"], fmt(m["without_mask"]), fmt(m["with_mask"]), fmt(m["change"]),
              {True: "yes", False: "no", None: "—"}[m["mask_reduces_gap"]]] for m in masking]
    return _md_table(header, lines)


NOTES = """UA = 100 - accuracy on the forget set; MIA-Efficacy = percent of forget examples an SVC membership
attack (confidence feature) calls non-members; RA / TA = accuracy on the retained training data / test set;
RTE = minutes of the unlearning step alone. Avg. Gap = mean |method - retrain| over UA, MIA-Efficacy, RA and
TA, computed per seed against that seed's retrained model, then averaged. Every number is mean ± sample
standard deviation over seeds."""


def write_outputs(save_dir, meta, rows, masking, records, failures, plots=True):
    """results.md, results.csv, results.json and the plots; returns the written paths."""
    utils.ensure_dir(save_dir)
    paths = {name: os.path.join(save_dir, name) for name in ("results.md", "results.csv", "results.json")}
    text = render_markdown(meta, rows, masking, failures)
    with open(paths["results.md"], "w") as f:
        f.write(text)
    write_csv(paths["results.csv"], rows)
    utils.write_json({"meta": meta, "rows": rows, "masking": masking, "runs": records, "failed": failures},
                     paths["results.json"])
    written = list(paths.values())
    if plots:
        written += make_plots(save_dir, rows, masking, meta.get("title", ""))
    return written


def render_markdown(meta, rows, masking, failures):
    parts = [f"# {meta.get('title', 'Unlearning benchmark')}", ""]
    parts += [f"- {k}: {v}" for k, v in meta.get("settings", {}).items()]
    parts += ["", main_table(rows), "", NOTES, ""]
    if masking:
        parts += ["## Avg. Gap without and with the saliency mask", "", mask_table(masking), ""]
    if failures:
        parts += ["## Failed runs", ""]
        parts += [f"- seed {f['seed']}, {label(f['method'], f['masked'])}: {f['error']}" for f in failures]
        parts.append("")
    return "\n".join(parts)


def write_csv(path, rows):
    keys = [key for key, _ in COLUMNS]
    header = ["label", "method", "masked", "seeds", "failed_seeds"]
    header += [f"{k}_{s}" for k in keys for s in ("mean", "std")]
    header += ["published_" + k for k in ("UA", "MIA_efficacy", "RA", "TA", "avg_gap", "RTE_minutes")]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            line = [r["label"], r["method"], int(r["masked"]), " ".join(map(str, r["seeds"])),
                    " ".join(map(str, r["failed_seeds"]))]
            line += ["" if r[k][s] is None else f"{r[k][s]:.6g}" for k in keys for s in ("mean", "std")]
            line += r["published"] if r["published"] else [""] * 6
            w.writerow(line)


def make_plots(save_dir, rows, masking, title):
    """avg_gap.png (Avg. Gap per method, without / with mask) and ua_vs_ta.png (UA against TA, every row)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    bars = [r for r in rows if r["method"] != REFERENCE and not r["masked"] and r["avg_gap"]["mean"] is not None]
    if bars:
        masked = {m["method"]: m["with_mask"] for m in masking}
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(bars)), 3.6))
        xs = range(len(bars))
        ax.bar([x - 0.2 for x in xs], [r["avg_gap"]["mean"] for r in bars], 0.4,
               yerr=[r["avg_gap"]["std"] for r in bars], capsize=3, label="no mask")
        with_mask = [masked.get(r["method"], {"mean": None}) for r in bars]
        ax.bar([x + 0.2 for x, m in zip(xs, with_mask) if m["mean"] is not None],
               [m["mean"] for m in with_mask if m["mean"] is not None], 0.4,
               yerr=[m["std"] for m in with_mask if m["mean"] is not None], capsize=3, label="+ saliency mask")
        ax.set_xticks(list(xs), [NAMES.get(r["method"], r["method"]) for r in bars])
        ax.set_ylabel("Avg. Gap to retrain (lower is better)")
        ax.set_title(title, fontsize=9)
        ax.legend()
        fig.tight_layout()
        out.append(os.path.join(save_dir, "avg_gap.png"))
        fig.savefig(out[-1], dpi=120)
        plt.close(fig)
    points = [r for r in rows if r["UA"]["mean"] is not None and r["TA"]["mean"] is not None]
    if points:
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        colors = plt.get_cmap("tab20").colors
        for i, r in enumerate(points):
            marker = "*" if r["method"] == REFERENCE else ("^" if r["masked"] else "o")
            ax.errorbar(r["UA"]["mean"], r["TA"]["mean"], xerr=r["UA"]["std"], yerr=r["TA"]["std"], fmt=marker,
                        color=colors[i % len(colors)], markersize=12 if marker == "*" else 6, capsize=2,
                        elinewidth=0.8, label=r["label"])
        ax.set_xlabel("UA (%): 100 - forget accuracy")
        ax.set_ylabel("TA (%): test accuracy")
        ax.set_title(title + " (mean ± std over seeds)", fontsize=9)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        out.append(os.path.join(save_dir, "ua_vs_ta.png"))
        fig.savefig(out[-1], dpi=120)
        plt.close(fig)
    return out
