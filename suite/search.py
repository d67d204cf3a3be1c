"""`benchmark.py --search`: choose a preset's method values on the validation split of search seeds."""
import itertools
import os

import utils
from suite.presets import REFERENCE, SEARCH_SEEDS
from suite.runs import execute, forget_run, original_run, preflight
from utils import UserError

SEARCH_MARKER = "search_marker.json"  # --collect skips folders holding it
SEARCH_VAL_DROP = 5.0  # a value may cost at most this many points of validation accuracy on any search seed


def search(cfg, plots=True):
    """Choose each method's value on the validation splits of SEARCH_SEEDS (no benchmark seed, no test set).

    Per seed, score = mean |method - retrain| over UA, RA, MIA-Efficacy and validation accuracy. A value
    qualifies when the method acts (its mean UA exceeds the original models' mean UA) and costs at most
    SEARCH_VAL_DROP points of validation accuracy on every search seed; the qualifying value with the lowest
    mean score wins (the first in grid order on a tie). When no value acts, the lowest mean score among the
    values that keep the validation accuracy wins.
    """
    utils.resolve_device(cfg["device"] or "auto")
    root = os.path.join(cfg["save_dir"], "search")
    grids = {m: g for m, g in cfg.get("search", {}).items() if m in cfg["run_methods"]}
    if not grids:
        raise UserError(f"preset {cfg['preset']} has no search grid for the chosen methods")
    seeds = list(SEARCH_SEEDS)
    cfg = {**cfg, "seeds": seeds}
    preflight(cfg)
    utils.write_json({"preset": cfg["preset"], "seeds": seeds}, os.path.join(root, SEARCH_MARKER))
    points = [(method, dict(zip(grid, values))) for method, grid in grids.items()
              for values in itertools.product(*grid.values())]
    runs, refs = [], {}
    for seed in seeds:
        refs[seed] = (forget_run(cfg, seed, root, "raw", False), forget_run(cfg, seed, root, REFERENCE, False))
        runs += [original_run(cfg, seed, root), *refs[seed]]
    grid_runs = {}
    for method, point in points:
        name = method + "".join(f"_{k}{format(v, 'g')}" for k, v in point.items())
        for seed in seeds:
            grid_runs[(name, seed)] = forget_run(cfg, seed, root, method, False, point, run_name=name)
    records, _, _, _ = execute(runs + list(grid_runs.values()), root)
    by_folder = {r["folder"]: r for r in records}
    base = {seed: tuple(by_folder.get(run.folder) for run in refs[seed]) for seed in seeds}
    if any(None in pair for pair in base.values()):
        raise UserError("--search: an original or retrained model failed; see the logs in " + root)
    lines = []
    for method, point in points:
        name = method + "".join(f"_{k}{format(v, 'g')}" for k, v in point.items())
        results = [by_folder.get(grid_runs[(name, seed)].folder) for seed in seeds]
        lines.append({"method": method, **point, **summarize(results, [base[s] for s in seeds])})
    chosen = choose(lines)
    text = _search_text(cfg, seeds, base, lines, chosen)
    utils.write_json({"seeds": seeds, "lines": lines, "chosen": chosen,
                      "original": {s: base[s][0]["summary"] for s in seeds},
                      "retrain": {s: base[s][1]["summary"] for s in seeds}}, os.path.join(root, "search.json"))
    with open(os.path.join(root, "search.md"), "w") as f:
        f.write(text)
    print(text + f"\nwrote {os.path.join(root, 'search.md')}")
    return lines, chosen


def _val(r):
    return r["accuracy"]["val"]


def summarize(results, bases):
    """One grid point over the search seeds: mean UA, MIA, RA, val and score; whether it acts and keeps val.

    `results[i]` is the point's record on seed i (None when the run failed), `bases[i]` the (original,
    retrain) records of seed i.
    """
    if any(r is None for r in results):
        return {"failed": True}
    n = len(results)
    mean = lambda f: sum(f(r) for r in results) / n  # noqa: E731
    scores = [(abs(r["summary"]["UA"] - ref["summary"]["UA"]) + abs(r["summary"]["RA"] - ref["summary"]["RA"])
               + abs(r["summary"]["MIA_efficacy"] - ref["summary"]["MIA_efficacy"]) + abs(_val(r) - _val(ref))) / 4
              for r, (_, ref) in zip(results, bases)]
    acts = mean(lambda r: r["summary"]["UA"]) > sum(orig["summary"]["UA"] for orig, _ in bases) / n
    keeps = all(_val(r) >= _val(orig) - SEARCH_VAL_DROP for r, (orig, _) in zip(results, bases))
    return {"UA": mean(lambda r: r["summary"]["UA"]), "MIA": mean(lambda r: r["summary"]["MIA_efficacy"]),
            "RA": mean(lambda r: r["summary"]["RA"]), "val": mean(_val), "min_val_change": min(
                _val(r) - _val(orig) for r, (orig, _) in zip(results, bases)),
            "score": sum(scores) / n, "qualifies": acts and keeps, "keeps_val": keeps}


def choose(lines):
    """{method: the winning line}: the lowest score among the qualifying values (the first in grid order on
    a tie); when none qualifies, among the values that keep the validation accuracy."""
    chosen = {}
    for method in dict.fromkeys(ln["method"] for ln in lines):
        mine = [ln for ln in lines if ln["method"] == method and not ln.get("failed")]
        pool = [ln for ln in mine if ln["qualifies"]] or [ln for ln in mine if ln["keeps_val"]]
        if pool:
            chosen[method] = min(pool, key=lambda ln: ln["score"])
    return chosen


def _values(line):
    return " ".join(f"{k}={v:g}" for k, v in line.items() if k not in
                    ("method", "UA", "MIA", "RA", "val", "min_val_change", "score", "qualifies", "keeps_val",
                     "failed"))


def _search_text(cfg, seeds, base, lines, chosen):
    out = [f"# Validation search: preset {cfg['preset']}, seeds {', '.join(map(str, seeds))}", ""]
    for seed in seeds:
        orig, ref = base[seed]
        r = ref["summary"]
        out.append(f"- seed {seed}: original UA {orig['summary']['UA']:.2f}, val {_val(orig):.2f}; retrain UA "
                   f"{r['UA']:.2f}, RA {r['RA']:.2f}, MIA {r['MIA_efficacy']:.2f}, val {_val(ref):.2f}")
    out += ["", "Means over the seeds; 'worst val' is the lowest change of validation accuracy from the original "
            "model over the seeds.", "",
            "| method | values | UA | MIA | RA | val | worst val | score | qualifies | chosen |", "|" + "---|" * 10]
    for ln in lines:
        if ln.get("failed"):
            out.append(f"| {ln['method']} | {_values(ln)} | failed | | | | | | no | |")
            continue
        mark = "**yes**" if chosen.get(ln["method"]) is ln else ""
        out.append(f"| {ln['method']} | {_values(ln)} | {ln['UA']:.2f} | {ln['MIA']:.2f} | {ln['RA']:.2f} | "
                   f"{ln['val']:.2f} | {ln['min_val_change']:+.2f} | {ln['score']:.2f} | "
                   f"{'yes' if ln['qualifies'] else 'no'} | {mark} |")
    out += ["", "chosen: " + "; ".join(f"{m} {_values(ln)}" for m, ln in chosen.items())]
    fallback = [m for m, ln in chosen.items() if not ln["qualifies"]]
    if fallback:
        out += ["", "no value acts (UA above the original's) for: " + ", ".join(fallback) + "; chosen among the "
                "values that keep the validation accuracy"]
    return "\n".join(out) + "\n"
