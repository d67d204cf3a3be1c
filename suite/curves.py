"""`benchmark.py --curves`: how each method's result depends on its learning rate, without and with the saliency
mask, and how the masked methods depend on the mask ratio (SalUn's stability claim, as a number).

Per seed: the original model and its retrain (the gold standard); each method at its preset learning rate times
3^k, k = -4..4 (from doing nothing to collapse), unmasked and masked at the preset's mask ratio; RL and FT masked
at the mask ratios of RATIOS. Each point gives Avg. Gap, UA and TA over the seeds with 95% Student t intervals,
and, per learning rate, the paired difference mask - no mask.

Stability, SalUn's claim that the mask keeps RL from overshooting: for each seed and arm, the headroom, the
width in decades from the arm's lowest Avg. Gap up to the largest learning rate above it before which the gap
stays within TOLERANCE points of that lowest (a diverged run counts as beyond it); learning rates below the best
do not count, since there a method does too little rather than too much. Reported per arm (mean over seeds) and
as the paired difference mask - no mask with its interval. A point "collapsed" on a seed when its test accuracy
is more than COLLAPSE points below that seed's retrain.

Every point is an ordinary main_forget.py run (folder seed_<s>/curve_<method>_lr<lr>[_mask<ratio>]), so a second
invocation reuses what is finished. Writes <save_dir>/curves.md, curves.json and curves.png.
"""
import math
import os
import time

import utils
from evaluation import avg_gap
from suite.presets import REFERENCE, display
from suite.runs import execute, forget_run, original_run, preflight
from suite.tables import t_interval
from utils import UserError

DEFAULT_METHODS = ("RL", "FT", "GA", "FT_prune", "SalUn_soft")  # the default methods of the learning-rate curves
FACTORS = tuple(3.0 ** k for k in range(-4, 5))  # x the preset's learning rate
RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)
RATIO_METHODS = ("RL", "FT")
TOLERANCE = 1.0  # points of Avg. Gap: the stability range
COLLAPSE = 5.0  # points of test accuracy below the seed's retrain


def _name(method, lr, ratio):
    return f"curve_{method}_lr{lr:g}" + (f"_mask{ratio:g}" if ratio else "")


def plan(cfg, methods):
    """(runs, points): every run in dependency order, and {run folder: (method, lr, mask ratio or None)}."""
    bad = [m for m in methods if m == REFERENCE or "unlearn_lr" not in cfg["methods"].get(m, {})]
    if bad:
        raise UserError(f"--curves: '{bad[0]}' has no learning rate in preset {cfg['preset']}; choose from: "
                        + ", ".join(m for m, o in cfg["methods"].items() if "unlearn_lr" in o and m != REFERENCE))
    root, runs, points = cfg["save_dir"], [], {}
    for seed in cfg["seeds"]:
        runs += [original_run(cfg, seed, root), forget_run(cfg, seed, root, REFERENCE, False)]
        wanted = [(m, cfg["methods"][m]["unlearn_lr"] * f, r) for m in methods for f in FACTORS
                  for r in (None, cfg["mask_ratio"])]
        wanted += [(m, cfg["methods"][m]["unlearn_lr"], r) for m in methods if m in RATIO_METHODS for r in RATIOS
                   if r != cfg["mask_ratio"]]
        for method, lr, ratio in wanted:
            run = forget_run({**cfg, "mask_ratio": ratio}, seed, root, method, ratio is not None, {"unlearn_lr": lr},
                             run_name=_name(method, lr, ratio))
            runs.append(run)
            points[run.folder] = (method, lr, ratio)
    return runs, points


def _cell(stat, digits=2):
    if stat["mean"] is None:
        return "-"
    if stat["low"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def headroom(lrs, gaps):
    """Decades from the lowest of `gaps` (None: a diverged run) up to the last of the ascending `lrs` before the
    gap leaves TOLERANCE of that lowest."""
    finite = [g if g is not None else math.inf for g in gaps]
    best = min(range(len(finite)), key=finite.__getitem__)
    hi = best
    while hi < len(finite) - 1 and finite[hi + 1] <= finite[best] + TOLERANCE:
        hi += 1
    return math.log10(lrs[hi] / lrs[best])


def summarize(records, points, cfg, methods):
    """Per method: the learning-rate curve of each arm, mask - no mask per learning rate, the stability widths and
    the mask-ratio sweep (RL and FT)."""
    refs = {r["seed"]: r["summary"] for r in records if r["method"] == REFERENCE and not r["masked"]}
    values = {}  # (method, lr, ratio) -> {seed: (gap, UA, TA)}
    for r in records:
        if r["folder"] in points and r["seed"] in refs:
            s = r["summary"]
            values.setdefault(points[r["folder"]], {})[r["seed"]] = (avg_gap(s, refs[r["seed"]]), s["UA"], s["TA"])
    seeds = sorted(refs)

    def point(key):
        by_seed = values.get(key, {})
        stat = {name: t_interval([v[i] for v in by_seed.values()]) for i, name in enumerate(("gap", "UA", "TA"))}
        stat["collapsed"] = sum(v[2] < refs[s]["TA"] - COLLAPSE for s, v in by_seed.items())
        return {**stat, "seeds": sorted(by_seed)}

    out = {}
    for method in methods:
        base, arms = cfg["methods"][method]["unlearn_lr"], {"no mask": None, "mask": cfg["mask_ratio"]}
        lrs = [base * f for f in FACTORS]
        curve = {arm: [{"lr": lr, **point((method, lr, ratio))} for lr in lrs] for arm, ratio in arms.items()}
        diffs = []
        for lr in lrs:
            a, b = values.get((method, lr, None), {}), values.get((method, lr, cfg["mask_ratio"]), {})
            diffs.append({"lr": lr, **t_interval([b[s][0] - a[s][0] for s in seeds if s in a and s in b])})
        widths = {arm: {} for arm in arms}
        for arm, ratio in arms.items():
            for s in seeds:  # every point is planned for every seed: a missing one diverged
                gaps = [values.get((method, lr, ratio), {}).get(s, (None,))[0] for lr in lrs]
                if any(g is not None for g in gaps):
                    widths[arm][s] = headroom(lrs, gaps)
        common = [s for s in seeds if all(s in widths[a] for a in arms)]
        stability = {arm: t_interval(list(w.values())) for arm, w in widths.items()}
        stability["mask - no mask"] = t_interval([widths["mask"][s] - widths["no mask"][s] for s in common])
        entry = {"preset_lr": base, "curve": curve, "difference": diffs, "stability_decades": stability}
        if method in RATIO_METHODS:
            ratios = sorted({*RATIOS, cfg["mask_ratio"]})
            entry["mask_ratio"] = [{"ratio": r, **point((method, base, r))} for r in ratios]
            entry["mask_ratio"].append({"ratio": 1.0, "note": "no mask", **point((method, base, None))})
        out[method] = entry
    return out


def render(data):
    """curves.md from what curves.json holds."""
    cfg, summary, minutes = data["config"], data["methods"], data["run_minutes"]
    lines = [f"# {data['meta']['title']}, {cfg['scenario']} forgetting", "",
             f"Seeds {', '.join(map(str, cfg['seeds']))}; learning rate = the preset's x 3^k, k = -4..4; mask ratio "
             f"{cfg['mask_ratio']:g} in the masked arm. Cells: mean [95% Student t interval] over seeds; 'collapsed': "
             f"seeds whose test accuracy is more than {COLLAPSE:g} points below their retrain's. Headroom: decades "
             f"of learning rate from an arm's lowest Avg. Gap up to where the gap leaves {TOLERANCE:g} point of it "
             f"(per seed; a diverged run leaves it). The runs took {minutes:.1f} min in all.", ""]
    for method, e in summary.items():
        name = display(method)
        lines += [f"## {name} (preset learning rate {e['preset_lr']:g})", "",
                  "| lr | Avg. Gap, no mask | Avg. Gap, mask | mask - no mask | UA no mask / mask | TA no mask / mask "
                  "| collapsed no mask / mask |", "|---|---|---|---|---|---|---|"]
        for a, b, d in zip(e["curve"]["no mask"], e["curve"]["mask"], e["difference"]):
            lines.append(f"| {a['lr']:.3g} | {_cell(a['gap'])} | {_cell(b['gap'])} | {_cell(d)} | "
                         f"{_cell(a['UA'], 1)} / {_cell(b['UA'], 1)} | {_cell(a['TA'], 1)} / {_cell(b['TA'], 1)} | "
                         f"{a['collapsed']} / {b['collapsed']} |")
        st = e["stability_decades"]
        lines += ["", f"Headroom (decades): no mask {_cell(st['no mask'])}, mask {_cell(st['mask'])}; "
                      f"mask - no mask {_cell(st['mask - no mask'])}.", ""]
        if "mask_ratio" in e:
            lines += ["| mask ratio | Avg. Gap | UA | TA | collapsed |", "|---|---|---|---|---|"]
            lines += [f"| {p['ratio']:g}{' (no mask)' if p.get('note') else ''} | {_cell(p['gap'])} | "
                      f"{_cell(p['UA'], 1)} | {_cell(p['TA'], 1)} | {p['collapsed']} |" for p in e["mask_ratio"]]
            lines.append("")
    if data["failures"]:
        lines += ["## Failed runs", ""] + [f"- seed {f['seed']}, {f['method']}{' + mask' if f['masked'] else ''}: "
                                           f"{f['error']}" for f in data["failures"]] + [""]
    return "\n".join(lines)


def plot(path, summary, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(summary)
    fig, axes = plt.subplots(rows, 2, figsize=(9, 2.6 * rows), squeeze=False)
    for (method, e), (left, right) in zip(summary.items(), axes):
        for arm, color, shift in (("no mask", "C0", 0.97), ("mask", "C1", 1.03)):
            pts = [p for p in e["curve"][arm] if p["gap"]["mean"] is not None]
            left.errorbar([p["lr"] * shift for p in pts], [p["gap"]["mean"] for p in pts],
                          yerr=[p["gap"]["half_width"] or 0 for p in pts], marker="o", capsize=3, color=color,
                          label=arm)
        left.axvline(e["preset_lr"], color="0.6", ls=":", lw=0.8)
        left.set_xscale("log")
        left.set_xlabel("unlearning learning rate")
        left.set_ylabel(f"{display(method)}: Avg. Gap")
        left.legend(fontsize=7)
        if "mask_ratio" in e:
            pts = [p for p in e["mask_ratio"] if p["gap"]["mean"] is not None]
            right.errorbar([p["ratio"] for p in pts], [p["gap"]["mean"] for p in pts],
                           yerr=[p["gap"]["half_width"] or 0 for p in pts], marker="o", capsize=3, color="C1")
            right.set_xlabel("mask ratio (1 = no mask)")
            right.set_ylabel("Avg. Gap")
        else:
            right.axis("off")
    fig.suptitle(title + " (mean and 95% t interval over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_curves(cfg, methods, plots=True, runner=execute):
    """Run (or reuse) every point and write curves.md, curves.json and curves.png into cfg["save_dir"]; returns
    what curves.json holds."""
    utils.resolve_device(cfg["device"] or "auto")
    preflight(cfg)
    start = time.perf_counter()
    runs, points = plan(cfg, methods)
    records, failures, counts, run_minutes = runner(runs, cfg["save_dir"])
    summary = summarize(records, points, cfg, methods)
    meta = {"title": f"Learning-rate and mask-ratio curves: {cfg['preset']}",
            "settings": {"dataset / model": f"{cfg['dataset']} / {cfg['arch']}",
                         "forget set": f"class {cfg['forget_class']}" if cfg["scenario"] == "class" else
                         f"{cfg['num_forget']} training examples at random", "seeds": ", ".join(map(str, cfg["seeds"])),
                         "time": f"{run_minutes:.1f} min summed over the runs' wall times"}}
    out = {"meta": meta, "config": cfg, "methods": summary, "failures": failures, "counts": counts,
           "run_minutes": run_minutes}
    utils.write_json(out, os.path.join(cfg["save_dir"], "curves.json"))
    text = render(out)
    utils.write_text(text, os.path.join(cfg["save_dir"], "curves.md"))
    if plots:
        plot(os.path.join(cfg["save_dir"], "curves.png"), summary, f"{cfg['preset']}, {cfg['scenario']}")
    print(text)
    print(f"curves: {(time.perf_counter() - start) / 60:.1f} min; wrote {cfg['save_dir']}/curves.md")
    return out
