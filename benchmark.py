"""The papers' benchmark: every unlearning method, without and with the SalUn saliency mask, over seeds.

For each seed s (which selects the validation split and the forget set; the model is initialized with
--train_seed s): train the original model (main_baseline.py), retrain it without the forget set (the gold
standard, method `retrain`), then run each method on the original model as it is and with a saliency mask
computed on the forget set (main_forget.py --mask_ratio), evaluate, and print the papers' table: UA,
MIA-Efficacy, RA, TA, Avg. Gap to retrain and RTE, mean ± std over seeds; and a second table with each
method's Avg. Gap without and with the mask and their difference paired by seed, with its 95% Student t
interval and a verdict (SalUn vs RL is RL's line). The original model ("Original", method raw) is shown too.

Presets (suite/presets.py, docs/presets.md):
  digits         scikit-learn's 8x8 digits, resnet20s, forget 10% at random, 3 seeds (default; 93 runs,
                 2.1 minutes measured on 2 idle CPU cores)
  fashionmnist   the first 5,000 Fashion-MNIST training images (Debian's package) at 14x14, resnet20s,
                 forget 10% at random, 3 seeds (93 runs; about 70 minutes of runs measured on 2 partly shared CPU cores)
  cifar10        the papers' setting: ResNet-18, 182 epochs at lr 0.1 (drops at 91, 136); retrain 160 epochs
                 at 0.1; FT 10 epochs at 0.01; GA 5 at 1e-4; RL 10 at 0.013; l1-sparse 10 at 0.01 with
                 alpha 5e-4; forget 4,500 training images at random; SalUn's Table 1 printed beside each row
  cifar10-class  the same, forgetting all of class 0

Files in --save_dir: seed_<s>/original/ (the original model), seed_<s>/<run>/ (one folder per method run,
with eval_result.json), logs/, results.md, results.csv, results.json (with every seed's values),
avg_gap.png, mask_difference.png, ua_vs_ta.png.
A second invocation reuses every finished run and does only what is missing.

--search tunes the values of each method on each arm (without, with the saliency mask) separately: one Optuna
study (TPE) per preset, scenario, method and arm, --trials complete trials each, in <save_dir>/search/optuna.db;
a killed search resumes where it stopped, and the same command started several times (here, in other terminals,
or as Slurm jobs on a shared disk) shares the studies. It writes search/search.md and search/search.json
(docs/search.md). --tuned <that folder> then runs the benchmark with each arm at its own chosen values; without
it both arms run at the preset's shared values.

  python benchmark.py                                   # digits, the full table
  python benchmark.py --preset cifar10 --device cuda --seeds 1,2,3
  python benchmark.py --print-commands > runs.sh        # one command per run, in dependency order
  python benchmark.py --collect DIR [DIR ...]           # the tables from eval_result.json files
  python benchmark.py --search --trials 20             # Optuna: tune each method per arm on seeds 0 and 99
  python benchmark.py --tuned DIR --save_dir OUT        # the table with each arm at the values DIR's search chose
  python benchmark.py --curves --seeds 3                # learning-rate and mask-ratio curves, both arms
  python benchmark.py --privacy 16                      # per-example privacy (challenge score, U-LiRA): privacy.md
  python benchmark.py --privacy 16 --seeds 1,2,3        # the same on 3 forget sets, U-LiRA with t intervals
  python benchmark.py --launcher local --jobs 4         # 4 runs at once on this machine
  python benchmark.py --launcher slurm --slurm_partition gpu   # every run a Slurm job; then --collect
"""
import argparse
import copy
import functools
import os
import sys
import time

import utils
from arg_parser import Parser
from argtypes import fraction, nonneg_int, pos_int, ratio
from suite import launch, tables
from suite.curves import DEFAULT_METHODS as CURVE_METHODS
from suite.curves import run_curves
from suite.presets import METHOD_ORDER, PRESETS, REFERENCE, flags, label, order_key
from suite.runs import execute, plan, preflight, read_result, train_size
from suite.runs import arm_options
from suite.search import SEARCH_MARKER, TRIALS, search, tuned_values
from unlearn import METHODS
from utils import UserError


def seeds_arg(text):
    """'3' -> [1, 2, 3]; '1,5,9' -> [1, 5, 9]; '4,' -> [4]."""
    try:
        if "," not in text:
            return list(range(1, pos_int(text) + 1))
        return [int(v) for v in text.split(",") if v.strip()]
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"'{text}' is neither a seed count nor a comma-separated seed list") from None


def fractions(text):
    """'0.5,0.9,0.95' -> [0.5, 0.9, 0.95]: each in (0, 1), none twice."""
    values = [fraction(v) for v in text.split(",") if v.strip()]
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of distinct fractions in (0, 1)")
    return values


def parse(argv=None):
    p = Parser(prog="benchmark.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="digits", choices=sorted(PRESETS))
    p.add_argument("--methods", type=lambda t: [m for m in t.split(",") if m], default=None,
                   help="comma-separated methods (default: every method of the preset); retrain always runs, and "
                        "the untouched model (raw) with --sparsity")
    p.add_argument("--seeds", type=seeds_arg, default=None, help="a count (3 means 1,2,3) or a list (1,5,9 or 4,)")
    p.add_argument("--mask_ratio", type=ratio, default=None, help="saliency mask ratio (default: the preset's)")
    p.add_argument("--scenario", choices=["random", "class"], default=None,
                   help="random: the preset's forget-set size at random; class: all of its forget class")
    p.add_argument("--forget_ratio", type=fraction, default=None,
                   help="random scenario: forget this fraction of the training examples (after the validation "
                        "split), instead of the preset's count")
    p.add_argument("--sparsity", type=fractions, default=None, metavar="S[,S...]",
                   help="add a sparse arm per value: the original model pruned once by magnitude (OMP) to this "
                        "share of its convolution weights, rewound and retrained (main_imp.py); every method runs "
                        "on it unmasked against its own gold standard (the pruned model retrained without the "
                        "forget set); e.g. 0.95, the seed paper's setting")
    p.add_argument("--no-mask", dest="masked_arm", action="store_false",
                   help="skip the saliency-mask arm (run every method unmasked only)")
    p.add_argument("--epochs", type=pos_int, default=None, help="epochs of the original model and of retrain")
    p.add_argument("--unlearn_epochs", type=pos_int, default=None, help="epochs of every other training method")
    p.add_argument("--device", default=None, help="passed to every run (default: auto, CUDA when available)")
    p.add_argument("--data", default=None, help="dataset folder passed to every run")
    p.add_argument("--save_every_steps", type=nonneg_int, default=0, metavar="N",
                   help="passed to every run: a checkpoint also after every N-th step of an epoch, where a resumed "
                        "run continues (default 0: at the end of every epoch only)")
    p.add_argument("--save_dir", default="./benchmark_results", help="runs, logs and result files")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--print-commands", dest="print_commands", action="store_true",
                      help="print one shell command per run (dependency order) and exit")
    mode.add_argument("--collect", nargs="+", metavar="DIR", help="build the tables from eval_result.json files")
    mode.add_argument("--search", action="store_true",
                      help="tune each method per arm with Optuna on the search seeds' validation splits "
                           "(resumable, shareable by several workers; docs/search.md)")
    mode.add_argument("--curves", action="store_true",
                      help="learning-rate curves without and with the mask, and the mask-ratio sweep "
                           f"(suite/curves.py; default methods {','.join(CURVE_METHODS)})")
    mode.add_argument("--privacy", type=int, metavar="K", default=None,
                      help="per-example privacy instead of the table: the unlearning challenge's score and U-LiRA "
                           "from K unlearned and K retrained models per method, on the preset's first seed or on "
                           "each of --seeds (suite/privacy.py)")
    p.add_argument("--trials", type=pos_int, default=None,
                   help=f"--search: complete trials per study, i.e. per method and arm (default {TRIALS})")
    p.add_argument("--tuned", metavar="DIR", default=None,
                   help="run each arm at the values the search in DIR chose for it (DIR: a --search's save_dir or "
                        "its search/ folder); methods or arms without a chosen value keep the preset's")
    launch.add_flags(p)
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
    always = {REFERENCE, "raw"} if args.sparsity else {REFERENCE}  # each arm's gold standard and untouched model
    cfg["run_methods"] = sorted(set(wanted) | always, key=lambda m: order_key(m, False))
    if args.epochs:
        cfg["train"]["epochs"] = cfg["methods"][REFERENCE]["unlearn_epochs"] = args.epochs
    if args.unlearn_epochs:
        for method, options in cfg["methods"].items():
            if method != REFERENCE and "unlearn_epochs" in options:
                options["unlearn_epochs"] = args.unlearn_epochs
    cfg["device"], cfg["data_root"], cfg["save_dir"] = args.device, args.data, args.save_dir
    cfg["save_every_steps"] = args.save_every_steps
    cfg["sparsity"], cfg["masked_arm"] = args.sparsity or [], args.masked_arm
    if args.forget_ratio is not None:
        if cfg["scenario"] == "class":
            raise UserError("--forget_ratio sets the size of a random forget set; the class scenario forgets a "
                            "whole class")
        cfg["forget_ratio"] = args.forget_ratio
        cfg["num_forget"] = max(1, round(args.forget_ratio * train_size(cfg)))
    if args.tuned:
        cfg["tuned"] = tuned_values(args.tuned, cfg)
    return cfg


def arm_values(cfg):
    """{(method, masked): its flags and where they come from} when the arms run at values of their own (--tuned),
    else {}."""
    if not cfg.get("tuned"):
        return {}
    out = {}
    for method in cfg["run_methods"]:
        for masked in (False, True):
            if masked and (not METHODS[method].maskable or not cfg["masked_arm"]):
                continue
            own = arm_options(cfg, method, masked)
            entry = cfg["tuned"].get(method, {}).get("masked" if masked else "plain")
            text = " ".join(flags({**cfg["methods"][method], **(own or {})})) or "-"
            out[(method, masked)] = f"`{text}` ({entry['source'] if entry else 'preset'})"
    return out


# ---------------------------------------------------------------- modes

def settings(cfg, device_note=None):
    share = f" ({cfg['forget_ratio']:.0%} of the training set)" if cfg.get("forget_ratio") else ""
    forget = (f"all training examples of class {cfg['forget_class']}" if cfg["scenario"] == "class" else
              f"{cfg['num_forget']} training examples at random{share}")
    out = {"preset": f"{cfg['preset']} ({cfg['about']})", "dataset / model": f"{cfg['dataset']} / {cfg['arch']}",
           "forget set": forget,
           "seeds": ", ".join(map(str, cfg["seeds"])),
           "saliency mask ratio": cfg["mask_ratio"] if cfg["masked_arm"] else "no mask arm",
           "sparse arms": ", ".join(f"{100 * s:g}% (OMP, rewound to the initialization, retrained)"
                                    for s in cfg["sparsity"]) or None,
           "original model": " ".join(flags(cfg["train"])),
           "methods": "; ".join(f"{m}: {' '.join(flags(cfg['methods'][m])) or '-'}" for m in cfg["run_methods"])}
    if cfg.get("tuned"):
        out["methods"] = ("each arm at its own values, chosen by the search in --tuned (the table's Values column); "
                          "the preset's where the search chose none")
    if device_note:
        out["device"] = device_note
    return out


def original_accuracy(cfg):
    """Train and test accuracy of the seeds' original models, mean ± std (None before any is trained)."""
    accs = []
    for seed in cfg["seeds"]:
        path = os.path.join(cfg["save_dir"], f"seed_{seed}", "original", "eval_result.json")
        if os.path.exists(path):
            accs.append(utils.read_json(path).get("accuracy", {}))
    if not all("train" in a and "test" in a for a in accs) or not accs:
        return None
    cells = [tables.fmt(dict(zip(("mean", "std"), tables.mean_std([a[k] for a in accs])))) for k in ("train", "test")]
    return f"train {cells[0]}, test {cells[1]} (over {len(accs)} seeds)"


def report(save_dir, meta, records, failures, published, plots=True, values=None):
    rows = tables.aggregate(records, failures, published)
    for row in rows:
        if values and (row["method"], row["masked"]) in values and not row["sparsity"]:
            row["values"] = values[(row["method"], row["masked"])]
    masking = tables.masking_table(rows)
    written = tables.write_outputs(save_dir, meta, rows, masking, records, failures, plots)
    print("\n" + tables.main_table(rows))
    if masking:
        print("\nAvg. Gap without and with the saliency mask\n\n" + tables.mask_table(masking))
        print(f"({tables.INTERVAL})")
        if tables.salun_vs_rl(masking):
            print("\n" + tables.salun_vs_rl(masking))
    sparse = tables.sparse_table(rows)
    if sparse:
        print("\nAvg. Gap on the dense and on the sparse original model\n\n" + tables.sparse_md(sparse))
    print("\nwrote " + ", ".join(written))
    return rows, masking


def run_benchmark(cfg, plots=True, runner=execute):
    device = str(utils.resolve_device(cfg["device"] or "auto"))  # a bad --device fails here, not in every run
    preflight(cfg)
    start = time.perf_counter()
    runs = plan(cfg, cfg["save_dir"])
    records, failures, counts, run_minutes = runner(runs, cfg["save_dir"])
    minutes = (time.perf_counter() - start) / 60
    done = (f"{counts['ran']} runs made, {counts['reused']} reused, {counts['failed']} failed")
    meta = {"title": f"Unlearning benchmark: {cfg['preset']}", "config": cfg,
            "settings": {**settings(cfg, device), "original model accuracy": original_accuracy(cfg),
                         "time": f"{run_minutes:.1f} min summed over the runs' wall times; this invocation "
                                 f"{minutes:.1f} min ({done})"}}
    rows, masking = report(cfg["save_dir"], meta, records, failures, cfg["published"] and cfg["scenario"] == "random",
                           plots, arm_values(cfg))
    print(f"benchmark: {minutes:.1f} min ({done}); the runs took {run_minutes:.1f} min in all")
    return {"rows": rows, "masking": masking, "records": records, "failures": failures, "counts": counts,
            "run_minutes": run_minutes,
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
                result = read_result(path, unlearning=False)
                if "summary" not in result:
                    continue  # an original model's result: no unlearning run
                run = read_result(path)["run"]
                sparsity = round(float(run.get("sparsity") or 0.0), 3)  # measured: within a weight of the rate
                key = (run["unlearn"], run.get("mask") is not None, run["seed"], sparsity)
                if key in seen:
                    raise UserError(f"--collect: two results for {label(key[0], key[1], sparsity)}, seed {key[2]}: "
                                    f"'{seen[key]}' and '{path}'; collect them separately")
                seen[key] = path
                records.append({"method": key[0], "masked": key[1], "seed": key[2], "sparsity": sparsity,
                                "summary": result["summary"], "accuracy": result.get("accuracy"), "run": run,
                                "folder": folder})
            elif "failed.json" in files:
                path = os.path.join(folder, "failed.json")
                fail = utils.read_json(path, "failure record")
                if not isinstance(fail, dict) or not isinstance(fail.get("run"), dict) or "error" not in fail or \
                        not {"unlearn", "seed"} <= set(fail["run"]):
                    raise UserError(f"--collect: '{path}' is not a failure record written by benchmark.py")
                if fail["run"]["unlearn"] != "original":
                    failures.append({"method": fail["run"]["unlearn"], "masked": bool(fail["run"].get("masked")),
                                     "seed": fail["run"]["seed"], "sparsity": fail["run"].get("sparsity", 0.0),
                                     "error": fail["error"]})
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


@utils.cli
def main(argv=None):
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to continue (finished runs are kept)", file=sys.stderr)
        sys.exit(130)


def _main(argv):
    args = parse(argv)
    launch.check_flags(args)
    if args.collect:
        return collect(args.collect, args.save_dir, args.plots)
    if args.trials is not None and not args.search:
        raise UserError("--trials goes with --search")
    if args.tuned and (args.search or args.privacy is not None):
        raise UserError("--tuned runs the benchmark's table at a search's values; not with --search or --privacy")
    if args.tuned and args.sparsity:
        raise UserError("--tuned sets the values of the dense arms (without and with the mask); the search tunes no "
                        "sparse arm, so give --sparsity without --tuned")
    cfg = resolve(args)
    if cfg["sparsity"] and (args.launcher == "slurm" or args.search or args.curves or args.privacy is not None):
        raise UserError("--sparsity runs with the in-process and the local launcher, and not with --search, "
                        "--curves or --privacy")
    if args.curves and args.launcher == "slurm":
        raise UserError("--curves runs in this process or with --launcher local")
    if args.print_commands:
        return print_commands(cfg)
    if args.privacy is not None:
        from suite.privacy import run_privacy
        if args.launcher == "slurm":
            raise UserError("--privacy runs in this process, or in --jobs worker processes with --launcher local")
        cfg["seeds"] = args.seeds or cfg["seeds"][:1]  # without --seeds one forget set: the preset's first seed
        return run_privacy(cfg, args.privacy, args.plots, jobs=(args.jobs or 2) if args.launcher == "local" else 1)
    if args.launcher == "slurm":
        return launch.slurm_benchmark(cfg, args)
    runner = execute
    if args.launcher == "local":
        runner = functools.partial(launch.run_local, jobs=args.jobs, device=cfg["device"])
    if args.search:
        return search(cfg, args.trials or TRIALS, runner)
    if args.curves:
        return run_curves(cfg, args.methods or CURVE_METHODS, args.plots, runner)
    return run_benchmark(cfg, args.plots, runner)


if __name__ == "__main__":
    main()
