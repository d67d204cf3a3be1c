"""The benchmark's runs: one `Run` per call of main_baseline.py / main_imp.py / main_forget.py, planned in
dependency order, executed in-process (output to <root>/logs/), finished runs found and reused.

Per seed: the dense original model (seed_<s>/original/); for each sparsity S of `cfg["sparsity"]` the sparse
original (seed_<s>/sparse_<S>/: main_imp.py prunes the dense original once by magnitude, rewinds to the
--train_seed initialization and retrains with the pruned weights at zero); then every method on the dense
original, without and with the saliency mask, and unmasked on each sparse original, where retrain re-trains the
sparse model without the forget set (the sparse arm's gold standard) and the pruned weights stay zero."""
import contextlib
import fcntl
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from types import SimpleNamespace

from tqdm import tqdm

import utils
from suite.presets import flags, label
from unlearn import METHODS
from utils import UserError

# Arguments that may differ between a finished run and a new invocation without changing its result.
NEUTRAL_ARGS = {"save_dir", "model_path", "resume", "device", "gpu", "data", "data_dir", "num_workers", "print_freq",
                "checkpoint", "run_name", "fast_eval", "save_every_steps"}
RUN_ERRORS = (UserError, RuntimeError, ValueError, ArithmeticError)  # recorded as a failed run; the rest goes on
SUMMARY_KEYS = ("UA", "RA", "TA", "MIA_efficacy")


def preflight(cfg):
    """Load the dataset and draw every seed's forget set once, so that a missing dataset or an impossible
    forget set ends the benchmark with one line before anything is written (instead of failing every run)."""
    import dataset
    raw = dataset.load_dataset(cfg["dataset"], cfg["data_root"] or "./data", input_size=cfg["data"].get("input_size"),
                               train_subset=cfg["data"].get("train_subset"))
    for seed in cfg["seeds"]:
        dataset.make_splits(raw, seed, cfg["forget_class"] if cfg["scenario"] == "class" else -1,
                            None if cfg["scenario"] == "class" else cfg["num_forget"])


def train_size(cfg):
    """The number of training examples after the validation split (the same for every seed: 10% of each class)."""
    import dataset
    raw = dataset.load_dataset(cfg["dataset"], cfg["data_root"] or "./data", input_size=cfg["data"].get("input_size"),
                               train_subset=cfg["data"].get("train_subset"))
    return len(dataset.split_train_val(raw.y_train.cpu().numpy(), 0)[0])


@dataclass
class Run:
    seed: int
    method: str  # "original" for the original model
    masked: bool
    script: str
    argv: list
    folder: str  # where its eval_result.json goes
    options: dict = field(default_factory=dict)  # main_forget flags of a method run
    run_name: str = None  # a folder name other than main_forget's default (the --search runs)
    sparsity: float = 0.0  # the arm: 0 for the dense original model, else the pruned share of its weights
    after: str = None  # the folder of the run that must finish first (the model this one starts from)

    @property
    def label(self):
        if self.method == "original":
            return "original model" + (f" ({100 * self.sparsity:g}% sparse)" if self.sparsity else "")
        return self.run_name or label(self.method, self.masked, self.sparsity)

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
    argv += ["--save_every_steps", str(cfg["save_every_steps"])] if cfg["save_every_steps"] else []
    return argv


def original_run(cfg, seed, root):
    folder = os.path.join(root, f"seed_{seed}", "original")
    argv = common_argv(cfg, seed) + flags(cfg["train"]) + ["--save_dir", folder, "--resume"]
    return Run(seed, "original", False, "main_baseline.py", argv, folder)


def sparse_dir(root, seed, sparsity):
    return os.path.join(root, f"seed_{seed}", f"sparse_{sparsity:g}")


def sparse_run(cfg, seed, root, sparsity):
    """The sparse original model: OMP of the seed's dense original at `sparsity`, rewound to its initialization
    (--train_seed) and retrained with the pruned weights at zero (the last state's checkpoint.pt)."""
    folder, dense = sparse_dir(root, seed, sparsity), os.path.join(root, f"seed_{seed}", "original")
    argv = common_argv(cfg, seed) + flags(cfg["train"]) + [
        "--prune", "omp", "--rate", format(sparsity, "g"), "--prune_type", "lt",
        "--model_path", os.path.join(dense, "checkpoint.pt"), "--save_dir", folder, "--resume"]
    return Run(seed, "original", False, "main_imp.py", argv, folder, sparsity=sparsity, after=dense)


def model_of(root, seed, sparsity):
    """(folder holding the arm's method runs, the model they start from, the run that makes it)."""
    if not sparsity:
        seed_dir = os.path.join(root, f"seed_{seed}")
        return seed_dir, os.path.join(seed_dir, "original", "checkpoint.pt"), os.path.join(seed_dir, "original")
    folder = sparse_dir(root, seed, sparsity)
    return folder, os.path.join(folder, "state_1", "checkpoint.pt"), folder


def forget_run(cfg, seed, root, method, masked, options=None, run_name=None, sparsity=0.0):
    from unlearn.apply import run_name as default_name
    options = {"decreasing_lr": cfg["train"]["decreasing_lr"], **cfg["methods"][method], **(options or {})}
    ratio_ = cfg["mask_ratio"] if masked else None
    name = run_name or default_name(SimpleNamespace(run_name=None, mask=None, mask_path=None,
                                                            mask_ratio=ratio_, unlearn=method))
    save_dir, model, after = model_of(root, seed, sparsity)
    argv = common_argv(cfg, seed) + ["--unlearn", method, "--fast_eval"] + flags(options)
    argv += ["--mask_ratio", format(ratio_, "g")] if masked else []
    argv += ["--run_name", name] if run_name else []
    argv += ["--model_path", model, "--save_dir", save_dir, "--resume"]
    return Run(seed, method, masked, "main_forget.py", argv, os.path.join(save_dir, name), options, run_name,
               sparsity, after)


def arm_options(cfg, method, masked):
    """The values of a method on one arm that differ from the preset's: those a search chose for that arm when
    the benchmark runs with --tuned (cfg["tuned"], see suite.search.tuned_values), else none."""
    return (cfg.get("tuned") or {}).get(method, {}).get("masked" if masked else "plain", {}).get("values")


def plan(cfg, root):
    """Every run in dependency order: the original models (dense, then sparse) first, then each seed's method
    runs: dense without and with the mask (unless cfg["masked_arm"] is False), each at its arm's values
    (arm_options), then each sparse arm unmasked."""
    sparsities = cfg.get("sparsity") or []
    runs = [original_run(cfg, s, root) for s in cfg["seeds"]]
    runs += [sparse_run(cfg, s, root, sp) for s in cfg["seeds"] for sp in sparsities]
    for s in cfg["seeds"]:
        for method in cfg["run_methods"]:
            runs.append(forget_run(cfg, s, root, method, False, arm_options(cfg, method, False)))
            if METHODS[method].maskable and cfg.get("masked_arm", True):
                runs.append(forget_run(cfg, s, root, method, True, arm_options(cfg, method, True)))
        for sp in sparsities:
            runs += [forget_run(cfg, s, root, method, False, sparsity=sp) for method in cfg["run_methods"]]
    return runs


def _script(run):
    from commands import baseline, forget, imp
    return {"main_baseline.py": baseline, "main_imp.py": imp, "main_forget.py": forget}[run.script]


def _entry(run):
    return _script(run).main.__wrapped__


def _check_args(run, stored, where):
    """A finished run is reused only when it was made with the arguments this invocation asks for."""
    planned = _script(run).parse(run.argv)
    for key, value in vars(planned).items():
        if key in stored and key not in NEUTRAL_ARGS and stored[key] != value:
            raise UserError(f"'{where}' was made with --{key} {stored[key]}, this benchmark asks for {value}; "
                            f"choose another --save_dir or delete that run folder")


def read_result(path, unlearning=True):
    """An eval_result.json as a dict; an unlearning run's must hold the table's numbers and its run fields."""
    result = utils.read_json(path, "result")
    fix = "delete it or choose another folder"
    if not isinstance(result, dict):
        raise UserError(f"'{path}' is not a run result (a JSON object was expected); {fix}")
    if unlearning:
        summary, run = result.get("summary"), result.get("run")
        numbers = isinstance(summary, dict) and all(isinstance(summary.get(k), (int, float)) and not
                                                    isinstance(summary.get(k), bool) for k in SUMMARY_KEYS)
        if not numbers or not isinstance(run, dict) or not {"unlearn", "seed"} <= set(run):
            raise UserError(f"'{path}' lacks the summary numbers ({', '.join(SUMMARY_KEYS)}) or the run fields "
                            f"of an unlearning result; {fix}")
    return result


def _finished(run):
    """The finished run's eval_result (checked against the planned arguments), else None."""
    path = os.path.join(run.folder, "eval_result.json")
    if not os.path.exists(path):
        return None
    result = read_result(path, unlearning=run.method != "original")
    stored = result.get("args") if run.method == "original" else None
    args_path = os.path.join(run.folder, "args.json")
    if stored is None and os.path.exists(args_path):
        stored = utils.read_json(args_path, "run arguments")
    _check_args(run, stored if isinstance(stored, dict) else {}, run.folder)
    return result


def _record(run, result, wall=None):
    return {"method": run.method, "masked": run.masked, "seed": run.seed, "sparsity": run.sparsity,
            "summary": result["summary"],
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


def log_path(run, root):
    """The file a run's output goes to: <root>/logs/seed_<s>_<run folder name>.log."""
    return os.path.join(root, "logs", f"seed_{run.seed}_{os.path.basename(run.folder)}.log")


def reusable(run, check_lock=True):
    """The finished run's eval_result (see _finished), else None; stops with one line when a live process holds
    the run folder's lock (check_lock=False where the writer may be on another machine, whose pid means nothing
    here)."""
    result = _finished(run)
    if result is None and check_lock and os.path.isdir(run.folder):
        with utils.RunLock(run.folder):  # another live writer there: stop with one line, record nothing
            pass
    return result


def mark_failed(run, error):
    """<run folder>/failed.json: what --collect reports for a run that failed."""
    utils.write_json({"error": error, "argv": run.argv,
                      "run": {"unlearn": run.method, "seed": run.seed, "masked": run.masked, "sparsity": run.sparsity}},
                     os.path.join(run.folder, "failed.json"))


def clear_failed(run):
    marker = os.path.join(run.folder, "failed.json")
    if os.path.exists(marker):
        os.remove(marker)


def finished_result(run, result=None):
    """After a successful attempt: its failure record removed, its eval_result."""
    clear_failed(run)
    if isinstance(result, dict):
        return result
    return utils.read_json(os.path.join(run.folder, "eval_result.json"), "result")  # main_imp returns its states


def _attempt(run, log):
    """Run one script in-process with its output in `log`: (eval_result, None) or (None, error text)."""
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
        mark_failed(run, error)
        return None, f"{error} (log: {log})"
    return finished_result(run, result), None


def store_time(root, key, seconds):
    """Add one run's wall seconds to <root>/logs/times.json (under a file lock: runs may finish at once in
    several processes); returns every stored time (only reads them when `seconds` is None)."""
    logs = utils.ensure_dir(os.path.join(root, "logs"))
    path = os.path.join(logs, "times.json")
    if seconds is None:
        return utils.read_json(path, "run times") if os.path.exists(path) else {}
    with open(os.path.join(logs, ".times.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        times = utils.read_json(path, "run times") if os.path.exists(path) else {}
        times[key] = seconds
        utils.write_json(times, path)
    return times


class Tally:
    """The benchmark's account of its runs, in the order they are reported: records of the unlearning runs,
    failure records, counts of runs made, reused and failed, and each run's wall time (root/logs/times.json)."""

    def __init__(self, root):
        self.root = root
        self.records, self.failures, self.broken = [], [], {}
        self.counts = {"ran": 0, "reused": 0, "failed": 0}
        self.times = store_time(root, None, None)

    def key(self, run):
        return os.path.relpath(run.folder, self.root)

    def blocked(self, run):
        """The error of a run whose original model failed, else None."""
        return f"its original model failed: {self.broken[run.after]}" if run.after in self.broken else None

    def add(self, run, result=None, error=None, wall=None):
        """One run's outcome (a result and wall=None: reused; a result and its wall seconds: made now; an
        error: failed); returns its line for the log on screen."""
        if error is not None:
            self.counts["failed"] += 1
            if run.method == "original":
                self.broken[run.folder] = error
            else:
                self.failures.append({"method": run.method, "masked": run.masked, "seed": run.seed,
                                      "sparsity": run.sparsity, "error": error})
            return f"seed {run.seed}  {run.label:<22} FAILED: {error}"
        key = self.key(run)
        if wall is None:
            self.counts["reused"] += 1
            line, wall = _summary_line(run, result, None), self.times.get(key)
        else:
            self.counts["ran"] += 1
            self.times = store_time(self.root, key, wall)
            line = _summary_line(run, result, wall)
        if run.method != "original":
            self.records.append(_record(run, result, wall))
        return line

    def minutes(self, runs):
        """The runs' summed wall minutes (reused runs included)."""
        return sum(self.times.get(self.key(r)) or 0 for r in runs) / 60


def execute(runs, root, quiet=False):
    """Run what is missing (in-process, output to root/logs/), reuse what is finished.

    A run that fails (divergence, a bad value) is recorded in <run folder>/failed.json (for --collect) and the
    benchmark goes on; the next invocation tries it again. Each run's wall time is kept in root/logs/times.json
    so that the time of the whole benchmark survives resumed invocations.
    Returns (records, failures, counts, minutes): counts of runs made, reused and failed; the runs' summed
    wall minutes (reused runs included).
    """
    tally = Tally(root)
    bar = tqdm(runs, desc="benchmark", unit="run", file=sys.stderr, dynamic_ncols=True, disable=quiet or None)
    for run in bar:
        bar.set_description(f"seed {run.seed} {run.label}")
        result = reusable(run)
        error = None if result is not None else tally.blocked(run)
        if result is not None or error is not None:
            line = tally.add(run, result, error)
        else:
            start = time.perf_counter()
            result, error = _attempt(run, log_path(run, root))
            line = tally.add(run, result, error, round(time.perf_counter() - start, 2))
        if not quiet or error is not None:
            _say(bar, line)
    bar.close()
    return tally.records, tally.failures, tally.counts, tally.minutes(runs)
