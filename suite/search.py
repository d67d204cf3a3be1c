"""`benchmark.py --search`: choose a preset's method values on the validation split of search seeds."""
import itertools
import os

import utils
from suite.presets import REFERENCE, SEARCH_SEEDS
from suite.runs import execute, forget_run, original_run, preflight
from utils import UserError

SEARCH_MARKER = "search_marker.json"  # --collect skips folders holding it
SEARCH_VAL_DROP = 5.0  # a value may cost at most this many points of validation accuracy on any search seed


def search(cfg, plots=True, runner=execute):
    """Choose each method's value on the validation splits of SEARCH_SEEDS (no benchmark seed, no test set).

    Per seed, score = mean |method - retrain| over UA, RA, MIA-Efficacy and validation accuracy. A value keeps
    the validation accuracy when on every search seed it is at most SEARCH_VAL_DROP points below the original
    model's (a failed run does not). Among those values, in this order of preference: the method acts (its mean
    UA exceeds the original models' mean UA); every grid neighbour keeps the validation accuracy too (the value
    is not at the edge of collapse); the lowest mean score; the first in grid order.
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
    records, _, _, _ = runner(runs + list(grid_runs.values()), root)
    by_folder = {r["folder"]: r for r in records}
    base = {seed: tuple(by_folder.get(run.folder) for run in refs[seed]) for seed in seeds}
    if any(None in pair for pair in base.values()):
        raise UserError("--search: an original or retrained model failed; see the logs in " + root)
    lines = []
    for method, point in points:
        name = method + "".join(f"_{k}{format(v, 'g')}" for k, v in point.items())
        results = [by_folder.get(grid_runs[(name, seed)].folder) for seed in seeds]
        lines.append({"method": method, **point, **summarize(results, [base[s] for s in seeds])})
    lines = with_neighbours(lines, grids)
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
    """One grid point over the search seeds: mean UA, MIA, RA, val and score; whether it acts and keeps val on
    every seed.

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
            "score": sum(scores) / n, "acts": acts, "keeps_val": keeps}


def _neighbours(line, grid):
    """The grid points one step away from `line` along one hyperparameter (the others fixed), as value tuples."""
    point = [line[k] for k in grid]
    out = []
    for axis, values in enumerate(grid.values()):
        i = values.index(point[axis])
        out += [tuple(point[:axis] + [values[j]] + point[axis + 1:]) for j in (i - 1, i + 1) if 0 <= j < len(values)]
    return out


def with_neighbours(lines, grids):
    """The lines, each with "neighbours_keep_val": whether every grid neighbour keeps the validation accuracy."""
    keeps = {(ln["method"], tuple(ln[k] for k in grids[ln["method"]])): ln.get("keeps_val", False) for ln in lines}
    return [{**ln, "neighbours_keep_val": all(keeps[(ln["method"], p)] for p in _neighbours(ln, grids[ln["method"]]))}
            for ln in lines]


def choose(lines):
    """{method: the winning line} among the values that keep the validation accuracy: one that acts before one
    that does not, then one whose grid neighbours keep the validation accuracy, then the lowest score, then
    the first in grid order."""
    chosen = {}
    for method in dict.fromkeys(ln["method"] for ln in lines):
        pool = [ln for ln in lines if ln["method"] == method and not ln.get("failed") and ln["keeps_val"]]
        if pool:
            chosen[method] = min(pool, key=lambda ln: (not ln["acts"], not ln["neighbours_keep_val"], ln["score"]))
    return chosen


def _values(line):
    return " ".join(f"{k}={v:g}" for k, v in line.items() if k not in
                    ("method", "UA", "MIA", "RA", "val", "min_val_change", "score", "acts", "keeps_val",
                     "neighbours_keep_val", "failed"))


def _search_text(cfg, seeds, base, lines, chosen):
    out = [f"# Validation search: preset {cfg['preset']}, seeds {', '.join(map(str, seeds))}", ""]
    for seed in seeds:
        orig, ref = base[seed]
        r = ref["summary"]
        out.append(f"- seed {seed}: original UA {orig['summary']['UA']:.2f}, val {_val(orig):.2f}; retrain UA "
                   f"{r['UA']:.2f}, RA {r['RA']:.2f}, MIA {r['MIA_efficacy']:.2f}, val {_val(ref):.2f}")
    out += ["", f"Means over the seeds; 'worst val' is the lowest change of validation accuracy from the original "
            f"model over the seeds; 'keeps val': worst val >= -{SEARCH_VAL_DROP:g}; 'edge': a grid neighbour does "
            "not keep val.", "",
            "| method | values | UA | MIA | RA | val | worst val | score | acts | keeps val | edge | chosen |",
            "|" + "---|" * 12]
    yes = {True: "yes", False: "no"}
    for ln in lines:
        edge = yes[not ln["neighbours_keep_val"]]
        if ln.get("failed"):
            out.append(f"| {ln['method']} | {_values(ln)} | failed | | | | | | | no | {edge} | |")
            continue
        mark = "**yes**" if chosen.get(ln["method"]) is ln else ""
        out.append(f"| {ln['method']} | {_values(ln)} | {ln['UA']:.2f} | {ln['MIA']:.2f} | {ln['RA']:.2f} | "
                   f"{ln['val']:.2f} | {ln['min_val_change']:+.2f} | {ln['score']:.2f} | {yes[ln['acts']]} | "
                   f"{yes[ln['keeps_val']]} | {edge} | {mark} |")
    out += ["", "chosen: " + "; ".join(f"{m} {_values(ln)}" for m, ln in chosen.items())]
    inert = [m for m, ln in chosen.items() if not ln["acts"]]
    if inert:
        out += ["", "no value that keeps val acts (UA above the original's) for: " + ", ".join(inert)]
    edge = [m for m, ln in chosen.items() if ln["acts"] and not ln["neighbours_keep_val"]]
    if edge:
        out += ["", "every acting value is at the edge of collapse for: " + ", ".join(edge) + "; a finer grid around "
                "the chosen value may show a safer one"]
    return "\n".join(out) + "\n"
