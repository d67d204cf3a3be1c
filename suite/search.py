"""`benchmark.py --search`: tune each method's values per arm (without and with the saliency mask) with Optuna, on
the validation splits of the search seeds (none of the benchmark's seeds, never the test set).

One study per (preset, scenario, method, arm), named `<preset>-<scenario>-<method>-<arm>` (arm `plain`, or
`mask<ratio>` for the saliency-mask arm), in the SQLite database <save_dir>/search/optuna.db; TPE, seeded per
trial from SAMPLER_SEED and the trial's number. The search space comes from the preset's "search" entry (`space`).
A trial runs the method with its values on every search seed, as ordinary runs of suite.runs (finished runs are
reused; the run folder's name holds the values). Its value is the mean score over the seeds, score = mean
|method - retrain| over UA, RA, MIA-Efficacy and validation accuracy (lower is better); its constraint: the
validation accuracy stays at most SEARCH_VAL_DROP points below the original model's on every search seed (a failed
run breaks it).

Resuming and sharing: a worker asks for trials until each study has `trials` COMPLETE ones (counting the trials
other workers are running), one trial per study at a time, and runs every trial of such a round through one
runner call (so --launcher local fills its slots). A worker records a heartbeat for its running trials; a trial
whose worker was killed goes stale after GRACE seconds and is retried with the same values (its finished runs
are reused), and an interrupted worker hands its trials back at once. Several workers started with the same
command share the studies; the search seeds' own models are trained by one of them while the others wait.

The choice (under a lock, so that one worker probes at a time): among the feasible trials, one with which the
method acts (mean UA above the original models') before one that does not, then the lowest value. A candidate is
kept only when it is off the edge of collapse: every neighbour (each log-scaled value x and / STEP, a uniform one
UNIFORM_STEP of its range up and down, a categorical one the adjacent choices; the others fixed) keeps the
validation accuracy too. Up to PROBED candidates are probed in order; when all are at the edge, the first is
chosen and search.md says so.
"""
import contextlib
import fcntl
import math
import os
import threading
import time
import warnings

import utils
from suite.presets import REFERENCE, SEARCH_SEEDS, display
from suite.runs import execute, forget_run, original_run, preflight
from unlearn import METHODS
from utils import UserError

SEARCH_MARKER = "search_marker.json"  # --collect skips folders holding it
SEARCH_VAL_DROP = 5.0  # a value may cost at most this many points of validation accuracy on any search seed
TRIALS = 20  # default --trials: COMPLETE trials per study
WIDEN = 3.0  # a log-scaled value ranges over the grid's min / WIDEN .. max x WIDEN
UNIFORM = ("neggrad_beta", "salun_soft_ratio")  # shares in (0, 1): uniform over the grid's range
STEP = 2.0  # the collapse-edge probe's neighbours of a log-scaled value: x / STEP and x STEP
UNIFORM_STEP = 0.1  # ... of a uniform value: this share of its range down and up
PROBED = 3  # candidates probed per study before the first is taken at the edge
DIGITS = 3  # significant digits of a sampled float: the run folder's name holds it, a rerun finds it
SAMPLER_SEED = 0
HEARTBEAT = 30  # seconds between a worker's heartbeats for its running trials
GRACE = 120  # a running trial without a heartbeat for this long belongs to a killed worker: retried
POLL = 10.0  # seconds between looks at studies whose last trials other workers are running
FAILED_SCORE = 100.0  # the value recorded for a trial with a failed run (its constraint is broken too)
STORAGE = "optuna.db"


# ---------------------------------------------------------------- search space, values, run names

def _int_flags():
    from commands import forget
    return {k for k, v in vars(forget.parse([])).items() if isinstance(v, int) and not isinstance(v, bool)}


def space(grid):
    """Optuna distributions from a preset's grid: integer flags (epochs, last_k) categorical over the grid's
    values; UNIFORM shares uniform over the grid's range; every other value (learning rates, strengths)
    log-uniform from the grid's min / WIDEN to its max x WIDEN."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    ints, out = _int_flags(), {}
    for key, values in grid.items():
        if key in ints:
            out[key] = CategoricalDistribution(sorted(set(values)))
        elif key in UNIFORM:
            out[key] = FloatDistribution(float(min(values)), float(max(values)))
        else:
            out[key] = FloatDistribution(min(values) / WIDEN, max(values) * WIDEN, log=True)
    return out


def describe(dist):
    """'log 0.0333 .. 2.1', 'uniform 0.9 .. 0.999', '5, 10'."""
    if hasattr(dist, "choices"):
        return ", ".join(format(c, "g") for c in dist.choices)
    return f"{'log' if dist.log else 'uniform'} {dist.low:.3g} .. {dist.high:.3g}"


def rounded(value):
    return value if isinstance(value, int) else float(f"{value:.{DIGITS}g}")


def arm_name(masked, ratio):
    return f"mask{ratio:g}" if masked else "plain"


def study_name(cfg, method, masked):
    return f"{cfg['preset']}-{cfg['scenario']}-{method}-{arm_name(masked, cfg['mask_ratio'])}"


def run_name(method, values, masked, ratio):
    """The run folder of a method at these values: FT_unlearn_lr0.3_unlearn_epochs5[_saliency_0.5]."""
    name = method + "".join(f"_{k}{format(v, 'g')}" for k, v in values.items())
    return name + (f"_saliency_{ratio:g}" if masked else "")


def values_text(values):
    return " ".join(f"{k}={format(v, 'g')}" for k, v in values.items())


def neighbours(values, dists):
    """The values one step away along one key, the others fixed (see the module's docstring)."""
    out = []
    for key, dist in dists.items():
        v = values[key]
        if hasattr(dist, "choices"):
            i = list(dist.choices).index(v)
            steps = [dist.choices[j] for j in (i - 1, i + 1) if 0 <= j < len(dist.choices)]
        elif dist.log:
            steps = [v / STEP, v * STEP]
        else:
            width = UNIFORM_STEP * (dist.high - dist.low)
            steps = [max(dist.low, v - width), min(dist.high, v + width)]
        for s in steps:
            point = {**values, key: rounded(s)}
            if point[key] != v and point not in out:
                out.append(point)
    return out


# ---------------------------------------------------------------- one seed's numbers, a trial's summary

def _val(r):
    return r["accuracy"]["val"]


def summarize(results, bases):
    """One set of values over the search seeds: mean UA, MIA, RA, val and score; whether it acts and keeps val
    on every seed.

    `results[i]` is the record on seed i (None when the run failed), `bases[i]` the (original, retrain)
    records of seed i.
    """
    if any(r is None for r in results):
        return {"failed": True, "keeps_val": False, "acts": False, "score": FAILED_SCORE,
                "min_val_change": -FAILED_SCORE}
    n = len(results)
    mean = lambda f: sum(f(r) for r in results) / n  # noqa: E731
    scores = [(abs(r["summary"]["UA"] - ref["summary"]["UA"]) + abs(r["summary"]["RA"] - ref["summary"]["RA"])
               + abs(r["summary"]["MIA_efficacy"] - ref["summary"]["MIA_efficacy"]) + abs(_val(r) - _val(ref))) / 4
              for r, (_, ref) in zip(results, bases)]
    acts = mean(lambda r: r["summary"]["UA"]) > sum(orig["summary"]["UA"] for orig, _ in bases) / n
    change = min(_val(r) - _val(orig) for r, (orig, _) in zip(results, bases))
    score = sum(scores) / n
    if not math.isfinite(score):
        return {"failed": True, "keeps_val": False, "acts": False, "score": FAILED_SCORE,
                "min_val_change": -FAILED_SCORE}
    return {"UA": mean(lambda r: r["summary"]["UA"]), "MIA": mean(lambda r: r["summary"]["MIA_efficacy"]),
            "RA": mean(lambda r: r["summary"]["RA"]), "val": mean(_val), "min_val_change": change,
            "score": score, "acts": acts, "keeps_val": change >= -SEARCH_VAL_DROP, "failed": False}


# ---------------------------------------------------------------- Optuna: storage, studies, heartbeats

def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("--search needs the optuna package: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@contextlib.contextmanager
def exclusive(root, name):
    """One worker at a time in this block (a file lock under the search folder; other workers wait)."""
    with open(os.path.join(root, f".{name}.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sampler(number):
    return _optuna().samplers.TPESampler(seed=SAMPLER_SEED + number)


def storage(root):
    """The search folder's SQLite storage, with heartbeats (a killed worker's trials are retried)."""
    optuna = _optuna()
    url = "sqlite:///" + os.path.abspath(os.path.join(root, STORAGE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 120}}, heartbeat_interval=HEARTBEAT, grace_period=GRACE,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))


def open_studies(root, names):
    """{name: study} in the search folder's storage (created or loaded)."""
    optuna = _optuna()
    with exclusive(root, "storage"):  # one process creates the tables
        store = storage(root)
        return {name: optuna.create_study(study_name=name, storage=store, direction="minimize",
                                          sampler=_sampler(0), load_if_exists=True) for name in names}


def _states(study):
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    return {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.RUNNING,
                                                           TrialState.WAITING)}


def _needs(study, trials):
    """Whether this worker should ask the study for a trial: a retry waits, or fewer than `trials` are complete
    or running."""
    from optuna.trial import TrialState
    n = _states(study)
    return n[TrialState.WAITING] > 0 or n[TrialState.COMPLETE] + n[TrialState.RUNNING] < trials


def _running(study):
    from optuna.trial import TrialState
    return _states(study)[TrialState.RUNNING]


class Heartbeat:
    """Records a heartbeat for the given trials now and every HEARTBEAT seconds until the block ends."""

    def __init__(self, store, trial_ids):
        self.store, self.ids, self.stop = store, list(trial_ids), threading.Event()

    def _beat(self):
        for trial_id in self.ids:
            with contextlib.suppress(Exception):  # a trial finished meanwhile, a locked database: the next beat
                self.store.record_heartbeat(trial_id)

    def __enter__(self):
        self._beat()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self):
        while not self.stop.wait(HEARTBEAT):
            self._beat()

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _suggest(trial, key, dist):
    if hasattr(dist, "choices"):
        return trial.suggest_categorical(key, list(dist.choices))
    return trial.suggest_float(key, dist.low, dist.high, log=dist.log)


def _ask(study, dists):
    """A new trial (a retried one first) and its values rounded to DIGITS significant digits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize": we beat ourselves
        trial = study.ask()
    study.sampler = _sampler(trial.number)  # distinct across workers, reproducible for one
    values = {k: rounded(_suggest(trial, k, d)) for k, d in dists.items()}
    return trial, values


# ---------------------------------------------------------------- the search

class Arm:
    """One study: a method on one arm, its search space and its runs on the search seeds."""

    def __init__(self, cfg, root, method, masked, grid):
        self.cfg, self.root, self.method, self.masked = cfg, root, method, masked
        self.name, self.space, self.grid = study_name(cfg, method, masked), space(grid), grid
        self.label = display(method) + (" + mask" if masked else "")

    def runs(self, values):
        name = run_name(self.method, values, self.masked, self.cfg["mask_ratio"])
        return [forget_run(self.cfg, seed, self.root, self.method, self.masked, values, run_name=name)
                for seed in self.cfg["seeds"]]


def _arms(cfg, root, grids):
    out = []
    for method, grid in grids.items():
        out.append(Arm(cfg, root, method, False, grid))
        if cfg.get("masked_arm", True) and METHODS[method].maskable:
            out.append(Arm(cfg, root, method, True, grid))
    return out


def _evaluate(runs, by_folder, bases):
    results = [by_folder.get(run.folder) for run in runs]
    line = summarize(results, bases)
    line["wall_seconds"] = round(sum((r or {}).get("wall_seconds") or 0 for r in results), 2)
    return line


def search(cfg, trials=TRIALS, runner=execute):
    """Tune every chosen method on each arm (see the module's docstring); writes search.md and search.json in
    <save_dir>/search and returns the search.json content."""
    utils.resolve_device(cfg["device"] or "auto")
    if trials < 1:
        raise UserError(f"--trials {trials}: a study needs at least one trial")
    root = os.path.join(cfg["save_dir"], "search")
    grids = {m: g for m, g in cfg.get("search", {}).items() if m in cfg["run_methods"]}
    if not grids:
        raise UserError(f"preset {cfg['preset']} has no search space for the chosen methods")
    seeds = list(SEARCH_SEEDS)
    cfg = {**cfg, "seeds": seeds}
    preflight(cfg)
    _optuna()
    utils.ensure_dir(root)
    utils.write_json({"preset": cfg["preset"], "seeds": seeds}, os.path.join(root, SEARCH_MARKER))
    start = time.perf_counter()
    refs = {seed: (forget_run(cfg, seed, root, "raw", False), forget_run(cfg, seed, root, REFERENCE, False))
            for seed in seeds}
    with exclusive(root, "base"):  # one worker trains the search seeds' models; the others then reuse them
        records, _, _, _ = runner([r for s in seeds for r in (original_run(cfg, s, root), *refs[s])], root)
    by_folder = {r["folder"]: r for r in records}
    bases = [tuple(by_folder.get(run.folder) for run in refs[s]) for s in seeds]
    if any(None in pair for pair in bases):
        raise UserError("--search: an original or retrained model failed; see the logs in " + root)
    arms = _arms(cfg, root, grids)
    studies = open_studies(root, [a.name for a in arms])
    made = _trials(arms, studies, trials, bases, runner, root)
    with exclusive(root, "choose"):  # one worker probes and writes; the next finds the probes done
        out = _choose_all(cfg, arms, studies, bases, runner, root, trials)
        out["invocation_minutes"] = round((time.perf_counter() - start) / 60, 2)
        out["trials_made_here"] = made
        summary = _write(root, cfg, out, bases)
    return summary


def _trials(arms, studies, trials, bases, runner, root):
    """Ask, run and tell until every study has `trials` complete trials; returns how many this worker made."""
    optuna = _optuna()
    made = 0
    while True:
        batch = []
        for arm in arms:
            study = studies[arm.name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            if _needs(study, trials):
                trial, values = _ask(study, arm.space)
                batch.append((arm, trial, values, arm.runs(values)))
        if not batch:
            if any(_running(studies[a.name]) for a in arms):  # other workers' last trials (or a killed one's)
                time.sleep(POLL)
                continue
            return made
        store = studies[arms[0].name]._storage
        try:
            with Heartbeat(store, [t._trial_id for _, t, _, _ in batch]):
                records, _, _, _ = runner([run for *_, runs in batch for run in runs], root)
        except BaseException:  # interrupted: hand the trials back, to be asked again with the same values
            for arm, trial, _, _ in batch:
                study = studies[arm.name]
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                study.enqueue_trial(trial.params)
            raise
        by_folder = {r["folder"]: r for r in records}
        for arm, trial, values, runs in batch:
            line = _evaluate(runs, by_folder, bases)
            for key in ("UA", "MIA", "RA", "val", "min_val_change", "score", "acts", "keeps_val", "failed",
                        "wall_seconds"):
                if key in line:
                    trial.set_user_attr(key, line[key])
            trial.set_user_attr("values", values)
            # <= 0: feasible, the validation accuracy kept on every search seed (TPE samples near feasible trials)
            trial.set_constraint("val_drop", -line["min_val_change"] - SEARCH_VAL_DROP)
            studies[arm.name].tell(trial, line["score"])
            made += 1
            mark = "failed" if line["failed"] else f"score {line['score']:.2f}, worst val {line['min_val_change']:+.2f}"
            print(f"{arm.name} trial {trial.number}: {values_text(values)}: {mark}", flush=True)


def _complete(study):
    from optuna.trial import TrialState
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def _line(t):
    return {"trial": t.number, "values": t.user_attrs["values"],
            **{k: t.user_attrs[k] for k in ("UA", "MIA", "RA", "val", "min_val_change", "score", "acts",
                                            "keeps_val", "failed", "wall_seconds") if k in t.user_attrs}}


def _choose_all(cfg, arms, studies, bases, runner, root, trials):
    """Per study: its trials, the probed candidates and the chosen values (see the module's docstring)."""
    lines = {a.name: sorted((_line(t) for t in _complete(studies[a.name])), key=lambda ln: ln["trial"])
             for a in arms}
    queue = {a.name: sorted((ln for ln in lines[a.name] if ln["keeps_val"]),
                            key=lambda ln: (not ln["acts"], ln["score"], ln["trial"]))[:PROBED] for a in arms}
    probes = {a.name: [] for a in arms}
    chosen = {}
    while True:
        batch = []
        for arm in arms:
            if arm.name in chosen or len(probes[arm.name]) >= len(queue[arm.name]):
                continue
            candidate = queue[arm.name][len(probes[arm.name])]
            points = neighbours(candidate["values"], arm.space)
            batch.append((arm, candidate, [(p, arm.runs(p)) for p in points]))
        if not batch:
            break
        records, _, _, _ = runner([run for *_, pts in batch for _, runs in pts for run in runs], root)
        by_folder = {r["folder"]: r for r in records}
        for arm, candidate, pts in batch:
            near = [{"values": p, **_evaluate(runs, by_folder, bases)} for p, runs in pts]
            edge = not all(n["keeps_val"] for n in near)
            probes[arm.name].append({"trial": candidate["trial"], "values": candidate["values"], "edge": edge,
                                     "neighbours": near})
            if not edge:
                chosen[arm.name] = {**candidate, "edge": False}
    studies_out = {}
    for arm in arms:
        pick = chosen.get(arm.name)
        if pick is None and queue[arm.name]:  # every probed candidate at the edge: the first, marked
            pick = {**queue[arm.name][0], "edge": True}
        studies_out[arm.name] = {
            "method": arm.method, "arm": arm_name(arm.masked, cfg["mask_ratio"]), "masked": arm.masked,
            "label": arm.label, "space": {k: describe(d) for k, d in arm.space.items()}, "trials": lines[arm.name],
            "complete_trials": len(lines[arm.name]), "probes": probes[arm.name], "chosen": pick,
            "wall_seconds": round(sum(ln.get("wall_seconds") or 0 for ln in lines[arm.name]) + sum(
                n.get("wall_seconds") or 0 for p in probes[arm.name] for n in p["neighbours"]), 2)}
    return {"preset": cfg["preset"], "scenario": cfg["scenario"], "mask_ratio": cfg["mask_ratio"],
            "trials_per_study": trials, "studies": studies_out}


def _write(root, cfg, out, bases):
    """search.json (the studies of earlier searches in this folder kept, these replaced) and search.md."""
    path = os.path.join(root, "search.json")
    old = utils.read_json(path, "search summary") if os.path.exists(path) else {}
    if not isinstance(old, dict) or (old.get("preset"), old.get("scenario")) != (cfg["preset"], cfg["scenario"]):
        old = {}
    seeds = cfg["seeds"]
    summary = {**out, "seeds": seeds, "storage": os.path.join(root, STORAGE),
               "studies": {**old.get("studies", {}), **out["studies"]},
               "original": {str(s): b[0]["summary"] | {"val": _val(b[0])} for s, b in zip(seeds, bases)},
               "retrain": {str(s): b[1]["summary"] | {"val": _val(b[1])} for s, b in zip(seeds, bases)}}
    utils.write_json(summary, path)
    text = search_text(summary)
    with open(os.path.join(root, "search.md"), "w") as f:
        f.write(text)
    print(text + f"\nwrote {os.path.join(root, 'search.md')} and search.json")
    return summary


def _yes(flag):
    return "yes" if flag else "no"


def search_text(summary):
    """search.md: per (method, arm) the space, every trial, the probes and the choice; the chosen values first."""
    seeds = summary["seeds"]
    out = [f"# Validation search (Optuna): preset {summary['preset']}, {summary['scenario']} forgetting, "
           f"seeds {', '.join(map(str, seeds))}", ""]
    for s in seeds:
        o, r = summary["original"][str(s)], summary["retrain"][str(s)]
        out.append(f"- seed {s}: original UA {o['UA']:.2f}, val {o['val']:.2f}; retrain UA {r['UA']:.2f}, RA "
                   f"{r['RA']:.2f}, MIA {r['MIA_efficacy']:.2f}, val {r['val']:.2f}")
    studies = summary["studies"]
    out += ["", f"One Optuna study per method and arm (TPE; the last invocation asked for "
            f"{summary['trials_per_study']} complete trials per study and took {summary['invocation_minutes']:.1f} "
            "min; 'run minutes': the summed wall time of a study's runs, trials and probes); score = mean "
            "|method - retrain| over UA, RA, MIA-Efficacy and validation accuracy, over the seeds; feasible: "
            f"validation accuracy at most {SEARCH_VAL_DROP:g} points below the original's on every seed; chosen: "
            "a feasible trial that acts (mean UA above the original's) before one that does not, then the lowest "
            f"score, kept when every neighbour (x and / {STEP:g}, adjacent epochs) keeps the validation accuracy "
            "too.", "", "## Chosen values", "",
            "| study | method | arm | values | trials | UA | MIA | RA | val | worst val | score | acts | edge | "
            "run minutes |", "|" + "---|" * 14]
    for name, st in studies.items():
        c = st["chosen"]
        minutes = f"{st['wall_seconds'] / 60:.1f}"
        if c is None:
            out.append(f"| {name} | {st['method']} | {st['arm']} | none kept val | {st['complete_trials']} | | | | | "
                       f"| | | | {minutes} |")
            continue
        out.append(f"| {name} | {st['method']} | {st['arm']} | {values_text(c['values'])} | {st['complete_trials']} | "
                   f"{c['UA']:.2f} | {c['MIA']:.2f} | {c['RA']:.2f} | {c['val']:.2f} | {c['min_val_change']:+.2f} | "
                   f"{c['score']:.2f} | {_yes(c['acts'])} | {_yes(c['edge'])} | {minutes} |")
    edge = [n for n, st in studies.items() if st["chosen"] and st["chosen"]["edge"]]
    if edge:
        out += ["", f"Every probed candidate (up to {PROBED}) is at the edge of collapse for: {', '.join(edge)}; the "
                "best of them is chosen."]
    inert = [n for n, st in studies.items() if st["chosen"] and not st["chosen"]["acts"]]
    if inert:
        out += ["", "No feasible value acts for: " + ", ".join(inert)]
    for name, st in studies.items():
        out += ["", f"## {name}", "", "Space: " + "; ".join(f"`{k}` {d}" for k, d in st["space"].items()), "",
                "| trial | values | UA | MIA | RA | val | worst val | score | acts | keeps val | probed | chosen |",
                "|" + "---|" * 12]
        probed = {p["trial"]: "edge" if p["edge"] else "off the edge" for p in st["probes"]}
        pick = st["chosen"]["trial"] if st["chosen"] else None
        for ln in sorted(st["trials"], key=lambda ln: ln["score"]):
            head = f"| {ln['trial']} | {values_text(ln['values'])} |"
            if ln.get("failed"):
                out.append(head + " failed | | | | | | | no | | |")
                continue
            out.append(head + f" {ln['UA']:.2f} | {ln['MIA']:.2f} | {ln['RA']:.2f} | {ln['val']:.2f} | "
                       f"{ln['min_val_change']:+.2f} | {ln['score']:.2f} | {_yes(ln['acts'])} | "
                       f"{_yes(ln['keeps_val'])} | {probed.get(ln['trial'], '')} | "
                       f"{'**yes**' if ln['trial'] == pick else ''} |")
        for p in st["probes"]:
            cells = ", ".join(f"{values_text(n['values'])}: "
                              f"{'failed' if n.get('failed') else format(n['min_val_change'], '+.2f')}"
                              for n in p["neighbours"])
            out.append(f"\nProbe of trial {p['trial']} (worst val of each neighbour): {cells}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- --tuned: the benchmark at each arm's values

def tuned_values(folder, cfg):
    """{method: {"plain" | "masked": {"values": {...}, "source": text}}} for the benchmark's methods, from the
    search.json of a finished search in `folder` (the search folder or the --save_dir above it)."""
    for path in (os.path.join(folder, "search.json"), os.path.join(folder, "search", "search.json")):
        if os.path.isfile(path):
            break
    else:
        raise UserError(f"--tuned: no finished search in '{folder}' (no search.json); run benchmark.py --search "
                        f"first")
    summary = utils.read_json(path, "search summary")
    if not isinstance(summary, dict) or not isinstance(summary.get("studies"), dict):
        raise UserError(f"--tuned: '{path}' is not the summary of an Optuna search; run benchmark.py --search again")
    if (summary.get("preset"), summary.get("scenario")) != (cfg["preset"], cfg["scenario"]):
        raise UserError(f"--tuned: '{path}' is a search of preset {summary.get('preset')}, "
                        f"{summary.get('scenario')} forgetting; this benchmark is {cfg['preset']}, {cfg['scenario']}")
    out = {}
    for method in cfg["run_methods"]:
        for key, masked in (("plain", False), ("masked", True)):
            study = summary["studies"].get(study_name(cfg, method, masked))
            if study and study.get("chosen"):
                c = study["chosen"]
                out.setdefault(method, {})[key] = {
                    "values": c["values"], "source": f"search trial {c['trial']}" + (", at the edge" if c["edge"]
                                                                                     else "")}
    if not out:
        raise UserError(f"--tuned: the search in '{os.path.dirname(path)}' chose no values for "
                        f"{', '.join(cfg['run_methods'])} (mask ratio {cfg['mask_ratio']:g})")
    return out
