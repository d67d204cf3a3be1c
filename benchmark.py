"""The papers' benchmark: every unlearning method, without and with the SalUn saliency mask, over seeds.

For each seed s (which selects the validation split and the forget set; the model is initialized with
--train_seed s): train the original model (main_baseline.py), retrain it without the forget set (the gold
standard, method `retrain`), then run each method on the original model as it is and with a saliency mask
computed on the forget set (main_forget.py --mask_ratio), evaluate, and print the papers' table: UA,
MIA-Efficacy, RA, TA, Avg. Gap to retrain and RTE, mean ± std over seeds; and a second table with each
method's Avg. Gap without and with the mask. The original model ("Original", method raw) is shown too.

Presets (suite/presets.py, docs/presets.md):
  digits         scikit-learn's 8x8 digits, resnet20s, forget 10% at random, 3 seeds (default; ~10 min, 2 cores)
  fashionmnist   Fashion-MNIST from Debian's package at 14x14, resnet20s, forget 10% at random, 3 seeds
  cifar10        the papers' setting: ResNet-18, 182 epochs at lr 0.1 (drops at 91, 136); retrain 160 epochs
                 at 0.1; FT 10 epochs at 0.01; GA 5 at 1e-4; RL 10 at 0.013; l1-sparse 10 at 0.01 with
                 alpha 5e-4; forget 4,500 training images at random; SalUn's Table 1 printed beside each row
  cifar10-class  the same, forgetting all of class 0

Files in --save_dir: seed_<s>/original/ (the original model), seed_<s>/<run>/ (one folder per method run,
with eval_result.json), logs/, results.md, results.csv, results.json, avg_gap.png, ua_vs_ta.png.
A second invocation reuses every finished run and does only what is missing.

  python benchmark.py                                   # digits, the full table
  python benchmark.py --preset cifar10 --device cuda --seeds 1,2,3
  python benchmark.py --print-commands > runs.sh        # one command per run, in dependency order
  python benchmark.py --collect DIR [DIR ...]           # the tables from eval_result.json files
  python benchmark.py --search                          # the validation search behind the preset's values
"""
import argparse
import contextlib
import copy
import itertools
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from types import SimpleNamespace

from tqdm import tqdm

import utils
from arg_parser import Parser, pos_int, ratio
from suite import tables
from suite.presets import (METHOD_ORDER, PRESETS, REFERENCE, SEARCH_SEED, UNMASKED_ONLY, flags, label,
                           order_key)
from utils import UserError

# Arguments that may differ between a finished run and a new invocation without changing its result.
NEUTRAL_ARGS = {"save_dir", "model_path", "resume", "device", "gpu", "data", "data_dir", "num_workers", "print_freq",
                "checkpoint", "run_name"}
RUN_ERRORS = (UserError, RuntimeError, ValueError, ArithmeticError)  # recorded as a failed run; the rest goes on
SEARCH_MARKER = "search_marker.json"  # --collect skips folders holding it
SEARCH_VAL_DROP = 5.0  # --search: a value may cost at most this many points of validation accuracy


def seeds_arg(text):
    """'3' -> [1, 2, 3]; '1,5,9' -> [1, 5, 9]; '4,' -> [4]."""
    try:
        if "," not in text:
            return list(range(1, pos_int(text) + 1))
        return [int(v) for v in text.split(",") if v.strip()]
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"'{text}' is neither a seed count nor a comma-separated seed list") from None


def parse(argv=None):
    p = Parser(prog="benchmark.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="digits", choices=sorted(PRESETS))
    p.add_argument("--methods", type=lambda t: [m for m in t.split(",") if m], default=None,
                   help="comma-separated methods (default: every method of the preset); retrain always runs")
    p.add_argument("--seeds", type=seeds_arg, default=None, help="a count (3 means 1,2,3) or a list (1,5,9 or 4,)")
    p.add_argument("--mask_ratio", type=ratio, default=None, help="saliency mask ratio (default: the preset's)")
    p.add_argument("--scenario", choices=["random", "class"], default=None,
                   help="random: the preset's forget-set size at random; class: all of its forget class")
    p.add_argument("--epochs", type=pos_int, default=None, help="epochs of the original model and of retrain")
    p.add_argument("--unlearn_epochs", type=pos_int, default=None, help="epochs of every other training method")
    p.add_argument("--device", default=None, help="passed to every run (default: auto, CUDA when available)")
    p.add_argument("--data", default=None, help="dataset folder passed to every run")
    p.add_argument("--save_dir", default="./benchmark_results", help="runs, logs and result files")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--print-commands", dest="print_commands", action="store_true",
                      help="print one shell command per run (dependency order) and exit")
    mode.add_argument("--collect", nargs="+", metavar="DIR", help="build the tables from eval_result.json files")
    mode.add_argument("--search", action="store_true", help="validation search over the preset's grids")
    return p.parse_args(argv)


def resolve(args):
    """The preset with the command line's overrides applied."""
    cfg = copy.deepcopy(PRESETS[args.preset])
    cfg["preset"] = args.preset
    cfg["scenario"] = args.scenario or cfg["scenario"]
    cfg["mask_ratio"] = args.mask_ratio or cfg["mask_ratio"]
    cfg["seeds"] = args.seeds or list(range(1, cfg["seeds"] + 1))
    known = [m for m in METHOD_ORDER if m in cfg["methods"]] + [m for m in cfg["methods"] if m not in METHOD_ORDER]
    wanted = args.methods or known
    unknown = [m for m in wanted if m not in cfg["methods"]]
    if unknown:
        raise UserError(f"preset {args.preset} has no method '{unknown[0]}'; choose from: {', '.join(known)}")
    cfg["run_methods"] = sorted(set(wanted) | {REFERENCE}, key=lambda m: order_key(m, False))
    if args.epochs:
        cfg["train"]["epochs"] = cfg["methods"][REFERENCE]["unlearn_epochs"] = args.epochs
    if args.unlearn_epochs:
        for method, options in cfg["methods"].items():
            if method != REFERENCE and "unlearn_epochs" in options:
                options["unlearn_epochs"] = args.unlearn_epochs
    cfg["device"], cfg["data_root"], cfg["save_dir"] = args.device, args.data, args.save_dir
    return cfg


# ---------------------------------------------------------------- the runs

@dataclass
class Run:
    seed: int
    method: str  # "original" for the original model
    masked: bool
    script: str
    argv: list
    folder: str  # where its eval_result.json goes
    options: dict = field(default_factory=dict)

    @property
    def label(self):
        return "original model" if self.method == "original" else label(self.method, self.masked)

    @property
    def command(self):
        return shlex.join(["python", "-u", self.script, *self.argv])


def common_argv(cfg, seed):
    argv = ["--dataset", cfg["dataset"], "--arch", cfg["arch"], "--seed", str(seed), "--train_seed", str(seed)]
    if cfg["scenario"] == "class":
        argv += ["--class_to_replace", str(cfg["forget_class"])]
    else:
        argv += ["--num_indexes_to_replace", str(cfg["num_forget"])]
    argv += flags(cfg["data"])
    argv += ["--data", cfg["data_root"]] if cfg["data_root"] else []
    argv += ["--device", cfg["device"]] if cfg["device"] else []
    return argv


def original_run(cfg, seed, root):
    folder = os.path.join(root, f"seed_{seed}", "original")
    argv = common_argv(cfg, seed) + flags(cfg["train"]) + ["--save_dir", folder, "--resume"]
    return Run(seed, "original", False, "main_baseline.py", argv, folder)


def forget_run(cfg, seed, root, method, masked, options=None, run_name=None):
    import main_forget
    options = {"decreasing_lr": cfg["train"]["decreasing_lr"], **cfg["methods"][method], **(options or {})}
    ratio_ = cfg["mask_ratio"] if masked else None
    name = run_name or main_forget.run_name(SimpleNamespace(run_name=None, mask=None, mask_ratio=ratio_,
                                                            unlearn=method))
    seed_dir = os.path.join(root, f"seed_{seed}")
    argv = common_argv(cfg, seed) + ["--unlearn", method] + flags(options)
    argv += ["--mask_ratio", format(ratio_, "g")] if masked else []
    argv += ["--run_name", name] if run_name else []
    argv += ["--model_path", os.path.join(seed_dir, "original", "checkpoint.pt"), "--save_dir", seed_dir, "--resume"]
    return Run(seed, method, masked, "main_forget.py", argv, os.path.join(seed_dir, name), options)


def plan(cfg, root):
    """Every run in dependency order: the original models first, then each seed's method runs."""
    runs = [original_run(cfg, s, root) for s in cfg["seeds"]]
    for s in cfg["seeds"]:
        for method in cfg["run_methods"]:
            runs.append(forget_run(cfg, s, root, method, False))
            if method not in UNMASKED_ONLY:
                runs.append(forget_run(cfg, s, root, method, True))
    return runs


def _entry(run):
    import main_baseline
    import main_forget
    return (main_baseline if run.script == "main_baseline.py" else main_forget).main.__wrapped__


def _check_args(run, stored, where):
    """A finished run is reused only when it was made with the arguments this invocation asks for."""
    import main_baseline
    import main_forget
    planned = (main_baseline if run.script == "main_baseline.py" else main_forget).parse(run.argv)
    for key, value in vars(planned).items():
        if key in stored and key not in NEUTRAL_ARGS and stored[key] != value:
            raise UserError(f"'{where}' was made with --{key} {stored[key]}, this benchmark asks for {value}; "
                            f"choose another --save_dir or delete that run folder")


def _finished(run):
    """The finished run's eval_result (checked against the planned arguments), else None."""
    path = os.path.join(run.folder, "eval_result.json")
    if not os.path.exists(path):
        return None
    result = utils.read_json(path, "result")
    stored = result.get("args") if run.method == "original" else None
    args_path = os.path.join(run.folder, "args.json")
    if stored is None and os.path.exists(args_path):
        stored = utils.read_json(args_path, "run arguments")
    _check_args(run, stored or {}, run.folder)
    return result


def _record(run, result, wall=None):
    return {"method": run.method, "masked": run.masked, "seed": run.seed, "summary": result["summary"],
            "accuracy": result.get("accuracy"), "run": result.get("run"), "folder": run.folder, "wall_seconds": wall}


def _say(bar, text):
    bar.write(text)
    sys.stdout.flush()


def _summary_line(run, result, wall):
    s = result.get("summary")
    took = "reused" if wall is None else f"{wall:.0f} s"
    if s is None:
        return f"seed {run.seed}  {run.label:<22} done ({took})"
    return (f"seed {run.seed}  {run.label:<22} UA {s['UA']:6.2f}  MIA {s['MIA_efficacy']:6.2f}  RA {s['RA']:6.2f}  "
            f"TA {s['TA']:6.2f}  RTE {s['RTE_minutes']:.3f} min  ({took})")


def execute(runs, root, quiet=False):
    """Run what is missing (in-process, output to root/logs/), reuse what is finished.

    A run that fails (divergence, a bad value) is recorded in <run folder>/failed.json and skipped on the next
    invocation while its arguments stay the same; the benchmark goes on. Returns (records, failures, counts).
    """
    records, failures, broken = [], [], {}
    counts = {"ran": 0, "reused": 0, "failed": 0}
    logs = utils.ensure_dir(os.path.join(root, "logs"))
    bar = tqdm(runs, desc="benchmark", unit="run", file=sys.stderr, dynamic_ncols=True, disable=quiet or None)
    for run in bar:
        bar.set_description(f"seed {run.seed} {run.label}")
        marker = os.path.join(run.folder, "failed.json")
        result = _finished(run)
        error = None
        if result is not None:
            counts["reused"] += 1
            if not quiet:
                _say(bar, _summary_line(run, result, None))
        elif run.seed in broken:
            error = f"its original model failed: {broken[run.seed]}"
        elif os.path.exists(marker) and utils.read_json(marker, "failure record").get("argv") == run.argv:
            error = utils.read_json(marker, "failure record")["error"] + f" (recorded in {marker}; delete it to retry)"
        else:
            log = os.path.join(logs, f"seed_{run.seed}_{os.path.basename(run.folder)}.log")
            start = time.perf_counter()
            try:
                with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                    print(f"$ {run.command}", flush=True)
                    try:
                        result = _entry(run)(run.argv)
                    except RUN_ERRORS:
                        traceback.print_exc()
                        raise
            except RUN_ERRORS as err:
                error = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
                utils.write_json({"error": error, "argv": run.argv, "run": {"unlearn": run.method, "seed": run.seed,
                                                                            "masked": run.masked}}, marker)
                error += f" (log: {log})"
            else:
                if os.path.exists(marker):
                    os.remove(marker)
                wall = time.perf_counter() - start
                counts["ran"] += 1
                result = result or utils.read_json(os.path.join(run.folder, "eval_result.json"), "result")
                if not quiet:
                    _say(bar, _summary_line(run, result, wall))
                if run.method != "original":
                    records.append(_record(run, result, wall))
                continue
        if error is not None:
            counts["failed"] += 1
            if run.method == "original":
                broken[run.seed] = error
            failures.append({"method": run.method, "masked": run.masked, "seed": run.seed, "error": error})
            _say(bar, f"seed {run.seed}  {run.label:<22} FAILED: {error}")
        elif run.method != "original":
            records.append(_record(run, result))
    bar.close()
    return records, [f for f in failures if f["method"] != "original"], counts


# ---------------------------------------------------------------- modes

def settings(cfg, device_note=None):
    forget = (f"all training examples of class {cfg['forget_class']}" if cfg["scenario"] == "class" else
              f"{cfg['num_forget']} training examples at random")
    out = {"preset": cfg["preset"], "dataset / model": f"{cfg['dataset']} / {cfg['arch']}", "forget set": forget,
           "seeds": ", ".join(map(str, cfg["seeds"])), "saliency mask ratio": cfg["mask_ratio"],
           "original model": " ".join(flags(cfg["train"])),
           "methods": "; ".join(f"{m}: {' '.join(flags(cfg['methods'][m])) or '-'}" for m in cfg["run_methods"])}
    if device_note:
        out["device"] = device_note
    return out


def report(save_dir, meta, records, failures, published, plots=True):
    rows = tables.aggregate(records, failures, published)
    masking = tables.masking_table(rows)
    written = tables.write_outputs(save_dir, meta, rows, masking, records, failures, plots)
    print("\n" + tables.main_table(rows))
    if masking:
        print("\nAvg. Gap without and with the saliency mask\n\n" + tables.mask_table(masking))
    print("\nwrote " + ", ".join(written))
    return rows, masking


def run_benchmark(cfg, plots=True):
    start = time.perf_counter()
    runs = plan(cfg, cfg["save_dir"])
    records, failures, counts = execute(runs, cfg["save_dir"])
    minutes = (time.perf_counter() - start) / 60
    device = str(utils.resolve_device(cfg["device"] or "auto"))
    meta = {"title": f"Unlearning benchmark: {cfg['preset']}", "config": cfg,
            "settings": {**settings(cfg, device), "wall time": f"{minutes:.1f} min for this invocation "
                                                                f"({counts['ran']} runs made, {counts['reused']} "
                                                                f"reused, {counts['failed']} failed)"}}
    rows, masking = report(cfg["save_dir"], meta, records, failures, cfg["published"] and cfg["scenario"] == "random",
                           plots)
    print(f"benchmark: {minutes:.1f} min ({counts['ran']} runs made, {counts['reused']} reused, "
          f"{counts['failed']} failed)")
    return {"rows": rows, "masking": masking, "records": records, "failures": failures, "counts": counts,
            "minutes": minutes}


def print_commands(cfg):
    runs = plan(cfg, cfg["save_dir"])
    originals = sum(r.method == "original" for r in runs)
    print(f"# {len(runs)} runs; the first {originals} train the original models and must finish before the "
          f"others (which are independent of each other); then: python benchmark.py --collect {cfg['save_dir']}",
          file=sys.stderr)
    for run in runs:
        print(run.command)
    return runs


def collect(dirs, save_dir, plots=True):
    """The tables from eval_result.json (and failed.json) files found under `dirs`."""
    records, failures, seen = [], [], {}
    for top in dirs:
        if not os.path.isdir(top):
            raise UserError(f"--collect: '{top}' is not a folder")
        for folder, subdirs, files in os.walk(top):
            subdirs.sort()
            if SEARCH_MARKER in files and folder != top:
                subdirs[:] = []  # a --search folder inside: its runs are not benchmark rows
                continue
            if "eval_result.json" in files:
                path = os.path.join(folder, "eval_result.json")
                result = utils.read_json(path, "result")
                if not isinstance(result.get("run"), dict) or "summary" not in result:
                    continue  # an original model's result: no unlearning run
                run = result["run"]
                key = (run["unlearn"], run.get("mask") is not None, run["seed"])
                if key in seen:
                    raise UserError(f"--collect: two results for {label(*key[:2])}, seed {key[2]}: '{seen[key]}' "
                                    f"and '{path}'; collect them separately")
                seen[key] = path
                records.append({"method": key[0], "masked": key[1], "seed": key[2], "summary": result["summary"],
                                "accuracy": result.get("accuracy"), "run": run, "folder": folder})
            elif "failed.json" in files:
                fail = utils.read_json(os.path.join(folder, "failed.json"), "failure record")
                if fail.get("run", {}).get("unlearn") not in (None, "original"):
                    failures.append({"method": fail["run"]["unlearn"], "masked": bool(fail["run"].get("masked")),
                                     "seed": fail["run"]["seed"], "error": fail["error"]})
    if not records:
        raise UserError(f"--collect: no eval_result.json of an unlearning run under {', '.join(dirs)}")
    runs = [r["run"] for r in records]
    kinds = sorted({(r.get("dataset"), r.get("arch"), r.get("num_forget"), r.get("class_to_replace")) for r in runs},
                   key=str)
    published = kinds == [("cifar10", "resnet18", 4500, -1)]
    seeds = sorted({r["seed"] for r in records})
    meta = {"title": "Unlearning benchmark (collected)",
            "settings": {"folders": ", ".join(dirs), "dataset / model": "; ".join(f"{d} / {a}" for d, a, *_ in kinds),
                         "forget set size": ", ".join(str(k[2]) for k in kinds), "seeds": ", ".join(map(str, seeds))}}
    return report(save_dir, meta, records, failures, published, plots)


def search(cfg, plots=True):
    """Choose each method's value on the validation split of SEARCH_SEED (not a benchmark seed).

    Score = mean |method - retrain| over UA, RA, MIA-Efficacy and validation accuracy (the test set is not
    looked at). A value qualifies when the method acts (its UA exceeds the original model's) without costing
    more than SEARCH_VAL_DROP points of validation accuracy; the qualifying value with the lowest score wins.
    """
    root = os.path.join(cfg["save_dir"], "search")
    grids = {m: g for m, g in cfg.get("search", {}).items() if m in cfg["run_methods"]}
    if not grids:
        raise UserError(f"preset {cfg['preset']} has no search grid for the chosen methods")
    cfg = {**cfg, "seeds": [SEARCH_SEED]}
    utils.write_json({"preset": cfg["preset"], "seed": SEARCH_SEED}, os.path.join(root, SEARCH_MARKER))
    runs = [original_run(cfg, SEARCH_SEED, root), forget_run(cfg, SEARCH_SEED, root, "raw", False),
            forget_run(cfg, SEARCH_SEED, root, REFERENCE, False)]
    for method, grid in grids.items():
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            name = method + "".join(f"_{k}{format(v, 'g')}" for k, v in point.items())
            runs.append(forget_run(cfg, SEARCH_SEED, root, method, False, point, run_name=name))
    records, failures, _ = execute(runs, root)
    by_folder = {r["folder"]: r for r in records}
    orig, ref = (by_folder.get(r.folder) for r in runs[1:3])
    if orig is None or ref is None:
        raise UserError("--search: the original model or the retrained model failed; see the logs in " + root)

    def score(r):
        keys = ("UA", "RA", "MIA_efficacy")
        gaps = [abs(r["summary"][k] - ref["summary"][k]) for k in keys]
        return (sum(gaps) + abs(r["accuracy"]["val"] - ref["accuracy"]["val"])) / 4

    lines, chosen = [], {}
    for run in runs[3:]:
        r = by_folder.get(run.folder)
        point = {k: run.options[k] for k in grids[run.method]}
        if r is None:
            lines.append({"method": run.method, **point, "failed": True})
            continue
        ok = r["summary"]["UA"] > orig["summary"]["UA"] and \
            r["accuracy"]["val"] >= orig["accuracy"]["val"] - SEARCH_VAL_DROP
        line = {"method": run.method, **point, "UA": r["summary"]["UA"], "MIA": r["summary"]["MIA_efficacy"],
                "RA": r["summary"]["RA"], "val": r["accuracy"]["val"], "score": score(r), "qualifies": ok}
        lines.append(line)
        best = chosen.get(run.method)
        if ok and (best is None or line["score"] < best["score"]):
            chosen[run.method] = line
    text = _search_text(cfg, orig, ref, lines, chosen)
    utils.write_json({"lines": lines, "chosen": chosen, "original": orig["summary"], "retrain": ref["summary"]},
                     os.path.join(root, "search.json"))
    with open(os.path.join(root, "search.md"), "w") as f:
        f.write(text)
    print(text + f"\nwrote {os.path.join(root, 'search.md')}")
    return lines, chosen


def _search_text(cfg, orig, ref, lines, chosen):
    out = [f"# Validation search: preset {cfg['preset']}, seed {SEARCH_SEED}", "",
           f"original: UA {orig['summary']['UA']:.2f}, val {orig['accuracy']['val']:.2f}; retrain: UA "
           f"{ref['summary']['UA']:.2f}, RA {ref['summary']['RA']:.2f}, MIA {ref['summary']['MIA_efficacy']:.2f}, "
           f"val {ref['accuracy']['val']:.2f}", "",
           "| method | values | UA | MIA | RA | val | score | qualifies | chosen |", "|" + "---|" * 9]
    for ln in lines:
        values = " ".join(f"{k}={v:g}" for k, v in ln.items() if k not in
                          ("method", "UA", "MIA", "RA", "val", "score", "qualifies", "failed"))
        if ln.get("failed"):
            out.append(f"| {ln['method']} | {values} | failed | | | | | no | |")
            continue
        mark = "**yes**" if chosen.get(ln["method"]) is ln else ""
        out.append(f"| {ln['method']} | {values} | {ln['UA']:.2f} | {ln['MIA']:.2f} | {ln['RA']:.2f} | "
                   f"{ln['val']:.2f} | {ln['score']:.2f} | {'yes' if ln['qualifies'] else 'no'} | {mark} |")
    missing = [m for m in dict.fromkeys(ln["method"] for ln in lines) if m not in chosen]
    if missing:
        out += ["", "no value qualified for: " + ", ".join(missing)]
    return "\n".join(out) + "\n"


@utils.cli
def main(argv=None):
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to continue (finished runs are kept)", file=sys.stderr)
        sys.exit(130)


def _main(argv):
    args = parse(argv)
    if args.collect:
        return collect(args.collect, args.save_dir, args.plots)
    cfg = resolve(args)
    if args.print_commands:
        return print_commands(cfg)
    if args.search:
        return search(cfg, args.plots)
    return run_benchmark(cfg, args.plots)


if __name__ == "__main__":
    main()
