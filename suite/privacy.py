"""`benchmark.py --privacy K`: per-example privacy of every method of the preset, with and without the mask.

For the preset's first seed s, or for each seed s of --seeds (its split and forget set; every model of that
seed shares them) and the train seeds t_1 = s, t_2 = s + 1000, ..., t_K = s + 1000 (K - 1):
  - original models O_j: trained as the benchmark trains its original model, with --train_seed t_j
    (O_1 is the benchmark's own seed_<s>/original, reused when it exists);
  - retrained models R_j: the method `retrain` with --train_seed r_j = t_j + 500 (the same K serve every
    method), a seed no original model and no unlearning run uses;
  - for each method m (and m + saliency mask): U(m, O_1, t_j), the method run on O_1 with --train_seed t_j
    (the challenge's K unlearned models of one original), and U(m, O_j, t_j) (U-LiRA's unlearned models, one
    per original; j = 1 is shared).
Why the retrained seeds are disjoint: the train seed sets a model's initialization and batch order, so R_j
trained with t_j would start from O_j's weights and be correlated with U(m, O_j, t_j). U-LiRA's leave-one-out
removes a target from its own population only; its correlated partner would stay in the other population's
fit and pull every target toward the wrong side (simulated at K = 16, a correlation of 0.3 between partners
gives accuracy 0.475 and AUC 0.46 where both are 0.5). Disjoint seeds make the two populations independent
samples and keep all K - 1 and K shadow models per fit; leaving each partner out of both fits would remove the
bias too, but costs a shadow model per fit and leaves R_j sharing its batch order with the challenge's
U(m, O_1, t_j).
The statistic is computed in float64 from the models' logits (evaluation/privacy.py). The challenge's code
exponentiates the max-shifted logits in float32: once every other class trails the label by more than about
87 logits precision is lost, beyond about 103 the statistic saturates at ln(1e45) = 103.6 (-103.6 when the
label trails); ours does not. privacy.md prints the largest |statistic| of the run, which says whether the two
differ there.
Per model only what the statistics need is computed: the forget set's logit-scaled confidences and the
retain, forget and test accuracies, stored in <save_dir>/privacy/seed_<s>/models/<run>/o<t>_u<t>.json
(written atomically; a second invocation reuses every finished file, and a finished benchmark run of the
same settings, seed_<s>/<run>/checkpoint.pt, is evaluated instead of run again). The methods run in-process
with the arguments the benchmark's runs get (suite/runs.py), the saliency mask as main_forget.py computes it.

With --launcher local --jobs N the models are made in N worker processes (spawned; each keeps its last
original model loaded), with the same statistics as in this process.

Outputs in --save_dir: privacy.md (the table), privacy.json (per method: every example's epsilon, the
medians of its statistic, its U-LiRA accuracy; the forget indices), privacy_epsilon.png (histograms).
Formulas: evaluation/privacy.py.

With several seeds (forget sets) each is run as above, in its own <save_dir>/privacy/seed_<s>/; no two seeds may
share a train seed (check_seeds: seeds less than 500 apart never do). privacy.md then starts with the summary
across forget sets (suite/privacy_summary.py: per row the U-LiRA accuracy and AUC of every seed, their mean and
95% Student t interval; per method the paired difference mask - no mask with its interval) followed by each
seed's table; privacy.json holds the summary and each seed's content ("per_seed"); the histograms go to
privacy_epsilon_seed_<s>.png.
"""
import contextlib
import copy
import json
import math
import os
import sys
import time

import numpy as np
from tqdm import tqdm

import utils
from evaluation import privacy as P
from evaluation.metrics import predict_logits
from suite import runs as bench_runs
from suite import tables
from suite.privacy_summary import summary, summary_md
from suite.presets import REFERENCE, display, flags, label, order_key
from unlearn import METHODS
from utils import UserError

SEED_STEP = 1000  # train seeds s, s + 1000, ...: apart from the benchmark's own seeds 1, 2, 3, ...
RETRAIN_OFFSET = 500  # retrained models: t + 500, disjoint from every original's and unlearning run's seed
SATURATION = 87.0  # |statistic| from which the challenge's float32 exponentials lose precision
NULL_EXAMPLES = 200  # Gaussian draws behind the "exact unlearning" reference score


def train_seeds(seed, k):
    return [seed + SEED_STEP * j for j in range(k)]


def retrain_seeds(seed, k):
    return [t + RETRAIN_OFFSET for t in train_seeds(seed, k)]


def variants(cfg):
    """(method, masked) of every row, in the benchmark's order; retrain is the reference, not a row."""
    out = []
    for m in cfg["run_methods"]:
        if m == REFERENCE:
            continue
        out.append((m, False))
        if METHODS[m].maskable:
            out.append((m, True))
    return sorted(out, key=lambda v: order_key(*v))


def run_name(method, masked):
    return f"{method}_saliency" if masked else method


class Plan:
    """Which models the statistics need, where their files go, and how each is made."""

    def __init__(self, cfg, k, seed):
        self.cfg, self.k, self.seed = cfg, k, seed
        self.root = cfg["save_dir"]
        self.dir = os.path.join(self.root, "privacy", f"seed_{self.seed}")
        self.seeds = train_seeds(self.seed, k)
        self.variants = variants(cfg)
        # (method, masked, original train seed, unlearning train seed); raw ignores the unlearning seed
        self.challenge = {v: [self.model_key(*v, self.seeds[0], t) for t in self.seeds] for v in self.variants}
        self.ulira = {v: [self.model_key(*v, t, t) for t in self.seeds] for v in self.variants}
        self.retrained = [(REFERENCE, False, self.seeds[0], t) for t in retrain_seeds(self.seed, k)]
        self.unlearned = list(dict.fromkeys(key for v in self.variants for key in self.challenge[v] + self.ulira[v]))

    @staticmethod
    def model_key(method, masked, t_orig, t_unlearn):
        return method, masked, t_orig, t_orig if method == "raw" else t_unlearn

    def original(self, t):
        """The benchmark's original-model run, with --train_seed t."""
        run = bench_runs.original_run(self.cfg, self.seed, self.root)
        if t == self.seed:
            return run
        folder = os.path.join(self.dir, "originals", f"train_seed_{t}")
        argv = bench_runs.common_argv(self.cfg, self.seed) + flags(self.cfg["train"])
        argv += ["--train_seed", str(t), "--save_dir", folder, "--resume"]
        return bench_runs.Run(self.seed, "original", False, "main_baseline.py", argv, folder)

    def forget_argv(self, key):
        method, masked, t_orig, t_unlearn = key
        run = bench_runs.forget_run(self.cfg, self.seed, self.root, method, masked)
        return run.argv + ["--train_seed", str(t_unlearn), "--model_path",
                           os.path.join(self.original(t_orig).folder, "checkpoint.pt")]

    def stats_path(self, key):
        method, masked, t_orig, t_unlearn = key
        return os.path.join(self.dir, "models", run_name(method, masked), f"o{t_orig}_u{t_unlearn}.json")

    def benchmark_run(self, key):
        """The benchmark's own run of this model (seed s, train seed s, original O_1), or None."""
        method, masked, t_orig, t_unlearn = key
        if t_orig != self.seed or t_unlearn != self.seed:
            return None
        return bench_runs.forget_run(self.cfg, self.seed, self.root, method, masked)


def _comparable(args):
    """The arguments that decide a model (as JSON stores them), not where its files go."""
    return json.loads(json.dumps({k: v for k, v in vars(args).items() if k not in bench_runs.NEUTRAL_ARGS}))


def _stored(path, args):
    """A finished statistics file made with these arguments, else None; one made with others is an error."""
    if not os.path.exists(path):
        return None
    data = utils.read_json(path, "model statistics")
    if not isinstance(data, dict) or not {"args", "confidence", "accuracy"} <= set(data):
        raise UserError(f"'{path}' is not a statistics file written by benchmark.py --privacy; delete it")
    planned = _comparable(args)
    for key, value in planned.items():
        if key in data["args"] and data["args"][key] != value:
            raise UserError(f"'{path}' was made with --{key} {data['args'][key]}, this evaluation asks for {value}; "
                            f"choose another --save_dir or delete '{os.path.dirname(os.path.dirname(path))}'")
    return data


def statistics(model, splits, device):
    """The forget set's logit-scaled confidences and the retain, forget and test accuracies (percent)."""
    out = {}
    for name in ("forget", "retain", "test"):
        x, y = splits.xy(name)
        logits = predict_logits(model, x, device).double()
        if not np.isfinite(logits.numpy()).all():
            raise UserError(f"the model's outputs on the {name} set are NaN or infinite: the run diverged")
        out[name] = (logits, y.cpu())
    accuracy = {k: float((v[0].argmax(1) == v[1]).double().mean() * 100) for k, v in out.items()}
    return {"confidence": P.logit_confidence(*out["forget"]).tolist(), "accuracy": accuracy}


class Runner:
    """Makes (or reuses) every model of a Plan, keeping one original model in memory at a time."""

    def __init__(self, plan, device, bar, log):
        import dataset
        from commands import forget
        self.plan, self.device, self.bar, self.log = plan, device, bar, log
        self.args0 = forget.parse(plan.forget_argv(plan.retrained[0]))
        self.splits = dataset.splits_from_args(self.args0, device)
        self.counts = {"made": 0, "reused": 0, "failed": 0}
        self.failures = {}
        self.current = (None, None, None)  # train seed, model, saliency mask

    def say(self, text):
        self.bar.write(text)
        sys.stdout.flush()

    @contextlib.contextmanager
    def logged(self, title):
        with open(self.log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            print(f"# {title}", flush=True)
            yield

    def ensure_original(self, t):
        run = self.plan.original(t)
        if bench_runs.reusable(run) is not None:  # a live writer of that folder: one line
            self.counts["reused"] += 1
        else:
            result, error = bench_runs._attempt(run, self.log)
            if result is None:
                raise UserError(f"the original model with --train_seed {t} failed: {error}")
            self.counts["made"] += 1
        self.bar.update()

    def original(self, t, masked=False):
        """The original model O(t), and with masked=True its saliency mask (computed once per original)."""
        import trainer
        from masks import saliency_scores, top_ratio
        if self.current[0] != t:
            path = os.path.join(self.plan.original(t).folder, "checkpoint.pt")
            model, _ = trainer.load_model(path, self.args0, self.splits.raw, self.device)
            self.current = (t, model, None)
        t, model, saliency = self.current
        if masked and saliency is None:
            scores = saliency_scores(model, *self.splits.xy("forget"), self.args0.batch_size)
            saliency = top_ratio(scores, self.plan.cfg["mask_ratio"])
            self.current = (t, model, saliency)
        return model, saliency if masked else None

    def unlearned(self, key, args):
        """Run the method on its original as main_forget.py does (without writing a run folder)."""
        import trainer
        from unlearn.apply import apply
        method, masked, t_orig, _ = key
        bench = self.plan.benchmark_run(key)
        ckpt = bench and os.path.join(bench.folder, "checkpoint.pt")
        if bench is not None and os.path.exists(ckpt) and bench_runs.reusable(bench, check_lock=False) is not None:
            model = copy.deepcopy(self.original(t_orig)[0])
            trainer.load_weights(model, utils.load_torch(ckpt, "finished run's checkpoint")["state_dict"],
                                 f"'{ckpt}'")
            return model, "benchmark run"
        original, saliency = self.original(t_orig, masked)
        return apply(args, copy.deepcopy(original), self.splits, self.device, saliency=saliency).model, None

    def model(self, key):
        """The statistics of one model: from its file, or computed and written; None when it failed."""
        from commands import forget
        args = forget.parse(self.plan.forget_argv(key))
        path = self.plan.stats_path(key)
        data = _stored(path, args)
        if data is not None:
            self.counts["reused"] += 1
            self.bar.update()
            return data
        method, masked, t_orig, t_unlearn = key
        self.bar.set_description(f"{label(method, masked)} o{t_orig} u{t_unlearn}")
        start = time.perf_counter()
        try:
            with self.logged(f"{label(method, masked)}: original train seed {t_orig}, train seed {t_unlearn}"):
                model, source = self.unlearned(key, args)
                stats = statistics(model, self.splits, self.device)
        except bench_runs.RUN_ERRORS as err:
            error = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
            self.failures.setdefault((method, masked), error)
            self.counts["failed"] += 1
            self.say(f"{label(method, masked)} (original {t_orig}, train seed {t_unlearn}) FAILED: {error}")
            self.bar.update()
            return None
        data = {"model": {"method": method, "masked": masked, "original_train_seed": t_orig,
                          "train_seed": t_unlearn, "from": source or "run in-process"},
                "args": _comparable(args), **stats, "seconds": round(time.perf_counter() - start, 3)}
        utils.write_json(data, path)
        self.counts["made"] += 1
        self.bar.update()
        return data


CHUNK = 4  # models per task in worker processes (a worker keeps its last original model loaded)


def _order(plan):
    """The models in the order they are made: retrained, then grouped by original (each is loaded and its
    saliency mask computed once)."""
    return list(plan.retrained) + [key for t in plan.seeds for key in plan.unlearned if key[2] == t]


def execute(plan, device, quiet=False, jobs=1):
    """Every model of the plan, made or reused, in this process or in `jobs` worker processes;
    returns ({key: statistics or None}, runner)."""
    total = len(plan.seeds) + len(plan.retrained) + len(plan.unlearned)
    logs = utils.ensure_dir(os.path.join(plan.dir, "logs"))
    bar = tqdm(total=total, desc="privacy", unit="model", file=sys.stderr, dynamic_ncols=True,
               disable=quiet or None)
    runner = Runner(plan, device, bar, os.path.join(logs, "privacy.log"))
    try:
        if jobs > 1:
            return _execute_parallel(plan, runner, jobs, logs), runner
        out = {}
        for t in plan.seeds:
            bar.set_description(f"original model, train seed {t}")
            runner.ensure_original(t)
        for key in _order(plan):
            out[key] = runner.model(key)
        return out, runner
    finally:
        bar.close()


# ---------------------------------------------------------------- worker processes (--launcher local --jobs N)

_WORKER = {}


def _init_worker(threads):
    import torch
    torch.set_num_threads(threads)


def _worker_runner(cfg, k, seed):
    import io
    runner = _WORKER.get("runner")
    if runner is None or runner.plan.seed != seed:
        plan = Plan(cfg, k, seed)
        log = os.path.join(plan.dir, "logs", f"privacy_worker_{os.getpid()}.log")
        runner = _WORKER["runner"] = Runner(plan, utils.resolve_device(cfg["device"] or "auto"),
                                            tqdm(disable=True, file=io.StringIO()), log)
    return runner


def _worker_original(cfg, k, seed, t):
    runner = _worker_runner(cfg, k, seed)
    before = dict(runner.counts)
    runner.ensure_original(t)
    return {c: runner.counts[c] - before[c] for c in before}


def _worker_models(cfg, k, seed, keys):
    runner = _worker_runner(cfg, k, seed)
    before = dict(runner.counts)
    out = [(key, runner.model(key), runner.failures.get(key[:2])) for key in keys]
    return out, {c: runner.counts[c] - before[c] for c in before}


def _execute_parallel(plan, runner, jobs, logs):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch
    out, bar = {}, runner.bar

    def collect(future, size):
        result = future.result()
        models, counts = result if isinstance(result, tuple) else ([], result)
        for key, data, failure in models:
            out[key] = data
            if failure is not None:
                runner.failures.setdefault(key[:2], failure)
        for c, n in counts.items():
            runner.counts[c] += n
        bar.update(size)

    order = _order(plan)
    chunks = [order[i:i + CHUNK] for i in range(0, len(order), CHUNK)]
    threads = max(1, torch.get_num_threads() // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        bar.set_description(f"original models ({jobs} workers)")
        for future in as_completed([pool.submit(_worker_original, plan.cfg, plan.k, plan.seed, t) for t in plan.seeds]):
            collect(future, 1)
        bar.set_description(f"models ({jobs} workers)")
        futures = {pool.submit(_worker_models, plan.cfg, plan.k, plan.seed, chunk): len(chunk) for chunk in chunks}
        for future in as_completed(futures):
            collect(future, futures[future])
    return out


def null_score(k, n=NULL_EXAMPLES, seed=0):
    """The forgetting score of exact unlearning at this K: two K-model samples of one Gaussian per example."""
    if not P.buckets(k):
        return 0.0
    rng = np.random.default_rng(seed)
    return P.forgetting_score(P.epsilons(rng.normal(size=(k, n)), rng.normal(size=(k, n))), k)


def evaluate_rows(plan, stats, failures):
    retrained = [stats[key] for key in plan.retrained]
    if any(s is None for s in retrained):
        raise UserError("a retrained model failed, so no method can be scored; see "
                        f"{os.path.join(plan.dir, 'logs', 'privacy.log')}")
    conf_r = np.array([s["confidence"] for s in retrained])
    acc_r = [s["accuracy"] for s in retrained]
    rows = [{"label": display(REFERENCE), "method": REFERENCE, "masked": False, "models": plan.k,
             "RA": float(np.mean([a["retain"] for a in acc_r])), "TA": float(np.mean([a["test"] for a in acc_r])),
             "UA": 100 - float(np.mean([a["forget"] for a in acc_r])),
             "median_confidence": np.median(conf_r, axis=0).tolist()}]
    for v in plan.variants:
        row = {"label": label(*v), "method": v[0], "masked": v[1], "models": plan.k}
        chall = [stats.get(key) for key in plan.challenge[v]]
        ul = [stats.get(key) for key in plan.ulira[v]]
        if v in failures or any(s is None for s in chall + ul):
            row["failed"] = failures.get(v, "a model is missing")
            rows.append(row)
            continue
        conf_u = np.array([s["confidence"] for s in chall])
        result = P.challenge(conf_u, conf_r, [s["accuracy"] for s in chall], acc_r)
        attack = P.ulira(np.array([s["confidence"] for s in ul]), conf_r)
        row.update({"score": result["score"], "forgetting_score": result["forgetting_score"],
                    "RA": result["RA"], "TA": result["TA"],
                    "UA": 100 - float(np.mean([s["accuracy"]["forget"] for s in chall])),
                    "epsilon": result["epsilon"], "median_epsilon": float(np.median(result["epsilon"])),
                    "ulira_accuracy": attack["accuracy"], "ulira_auc": attack["auc"],
                    "ulira_tpr_at_1pct_fpr": attack["tpr_at_1pct_fpr"],
                    "ulira_example_accuracy": attack["example_accuracy"],
                    "median_confidence": np.median(conf_u, axis=0).tolist(),
                    "median_confidence_ulira": np.median([s["confidence"] for s in ul], axis=0).tolist()})
        rows.append(row)
    return rows


def _cell(value, digits, scale=1.0):
    return "-" if value is None else f"{value * scale:.{digits}f}"


def table(rows):
    head = ["Method", "Score", "Forgetting score", "UA", "RA", "TA", "U-LiRA acc. (%)", "U-LiRA AUC",
            "U-LiRA TPR @ 1% FPR (%)", "median ε"]
    lines = []
    for r in rows:
        if "failed" in r:
            cells = [r["label"], f"failed: {r['failed']}"] + ["-"] * (len(head) - 2)
        else:
            cells = [r["label"], _cell(r.get("score"), 3), _cell(r.get("forgetting_score"), 3), _cell(r["UA"], 2),
                     _cell(r["RA"], 2), _cell(r["TA"], 2), _cell(r.get("ulira_accuracy"), 1, 100),
                     _cell(r.get("ulira_auc"), 3), _cell(r.get("ulira_tpr_at_1pct_fpr"), 1, 100),
                     _cell(r.get("median_epsilon"), 2)]
        lines.append(cells)
    return tables._md_table(head, lines)


def notes(k, null, largest):
    top = P.buckets(k)
    code = f"the challenge's code, whose float32 exponentials lose precision above {SATURATION:g} and saturate " \
        "at 103.6,"
    same = f"below {SATURATION:g}: {code} gives the same values up to rounding" if largest < SATURATION else \
        f"above {SATURATION:g}: {code} would give other values"
    scored = f"epsilons below {top[-1][0]:g} earn points" if top else "no epsilon earns points (K = 2)"
    return (f"Score: the NeurIPS 2023 unlearning challenge's final score, forgetting score x (RA / RA of retrain) x "
            f"(TA / TA of retrain), from {k} unlearned models of one original model and {k} retrained models; "
            f"per example epsilon from the challenge's decision rules (delta = 1e-5, cap 50); with K = {k} "
            f"{scored}. Exact unlearning (two samples of one distribution) would score about {null:.3f} at this "
            f"K (simulated), so compare rows with each other and with that value, not with 1. UA, RA, TA: "
            f"means over the {k} unlearned models of the score (percent). U-LiRA: per-example likelihood-ratio "
            f"attack telling an unlearned model ({k}, one per original model trained with the forget set) from a "
            f"retrained one ({k}, train seeds disjoint from the originals'), leave-one-out over the models; "
            f"accuracy 50% = chance. Statistic log p_y - log sum_(k != y) p_k in float64: its largest |value| over "
            f"every model here is {largest:.1f}, {same}. Formulas and what is scaled down: evaluation/privacy.py, "
            f"suite/privacy.py.")


def plot(path, rows, title, k):
    """privacy_epsilon.png: per method, the histogram of per-example epsilon in the challenge's buckets of 0.5;
    the last bin gathers everything from `limit` up (the cap 50 included); the dashed line: where points end."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [r for r in rows if "epsilon" in r]
    if not shown:
        return None
    top = P.buckets(k)[-1][0] if P.buckets(k) else 0.0
    limit = max(top, 4.0) + 1.0
    bins = np.arange(0, limit + 0.75, P.BUCKET_WIDTH)
    cols = min(4, len(shown))
    n_rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 2.4 * n_rows), squeeze=False, sharex=True)
    for ax, r in zip(axes.flat, shown):
        ax.hist(np.minimum(r["epsilon"], limit + 0.25), bins=bins, color="C1" if r["masked"] else "C0")
        ax.axvline(top, color="0.4", ls="--", lw=0.8)
        ax.set_title(f"{r['label']} (score {r['score']:.3f})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(f"per-example ε (last bin: ≥ {limit:g}, cap 50)", fontsize=7)
    fig.suptitle(title + " (dashed: ε from which an example earns no points)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render(data):
    """privacy.md from the contents of privacy.json: one forget set's table, or the summary over forget sets and
    then each seed's table; the notes last."""
    def head(meta, level):
        return [f"{level} {meta['title']}", ""] + [f"- {a}: {b}" for a, b in meta["settings"].items()] + [""]

    meta = data["meta"]
    text = notes(meta["settings"]["K"], meta["null_forgetting_score"], meta["largest_abs_statistic"])
    if "per_seed" not in data:
        return "\n".join(head(meta, "#") + [table(data["rows"]), "", text, ""])
    lines = head(meta, "#") + [summary_md(data["summary"]), ""]
    for one in data["per_seed"]:
        lines += head(one["meta"], "##") + [table(one["rows"]), ""]
    return "\n".join(lines + [text, ""])


def check_seeds(seeds, k):
    """No two forget sets share a train seed: their models would start from the same initialization and batch
    order, and the seeds' numbers would not be independent samples."""
    owner = {}
    for s in seeds:
        if s in owner.values():
            raise UserError(f"--privacy {k}: --seeds lists seed {s} twice")
        for t in train_seeds(s, k) + retrain_seeds(s, k):
            if t in owner:
                raise UserError(f"--privacy {k}: seeds {owner[t]} and {s} would share the train seed {t} (seed s "
                                f"trains with s + {SEED_STEP} j and retrains with s + {SEED_STEP} j + "
                                f"{RETRAIN_OFFSET}, j < K); give seeds less than {RETRAIN_OFFSET} apart, e.g. 1,2,3")
            owner[t] = s


def _meta(title, settings, k, null, largest):
    return {"title": title, "settings": settings, "null_forgetting_score": null, "buckets": P.buckets(k),
            "delta": P.DELTA, "epsilon_cap": P.EPSILON_CAP, "largest_abs_statistic": largest}


def _done(counts):
    return f"{counts['made']} models made, {counts['reused']} reused, {counts['failed']} failed"


def run_seed(cfg, k, seed, device, null, quiet=False, jobs=1, several=False):
    """One forget set: its models made or reused and every row scored; its privacy.json content in "data"."""
    start = time.perf_counter()
    plan = Plan(cfg, k, seed)
    stats, runner = execute(plan, device, quiet, jobs)
    rows = evaluate_rows(plan, stats, runner.failures)
    minutes = (time.perf_counter() - start) / 60
    model_minutes = sum((s or {}).get("seconds", 0) for s in stats.values()) / 60
    largest = max(abs(c) for s in stats.values() if s for c in s["confidence"])
    settings = {"preset": cfg["preset"], "dataset / model": f"{cfg['dataset']} / {cfg['arch']}",
                "seed (split and forget set)": seed, "K": k, "train seeds": ", ".join(map(str, plan.seeds)),
                "retrained models' train seeds": ", ".join(str(key[3]) for key in plan.retrained),
                "forget set": len(runner.splits.forget), "saliency mask ratio": cfg["mask_ratio"],
                "device": str(device) + (f", {jobs} worker processes" if jobs > 1 else ""),
                "time": f"this invocation {minutes:.1f} min ({_done(runner.counts)}); unlearning and statistics of "
                        f"the models made so far {model_minutes:.1f} min"}
    title = f"Per-example privacy: {cfg['preset']}{f', seed {seed}' if several else ''}, K = {k}"
    data = {"meta": _meta(title, settings, k, null, largest),
            "forget_indices": [int(i) for i in runner.splits.forget], "rows": rows}
    return {"seed": seed, "plan": plan, "rows": rows, "counts": runner.counts, "minutes": minutes, "data": data}


def run_privacy(cfg, k, plots=True, quiet=False, jobs=1):
    """Every seed of cfg["seeds"] (one forget set each); with several, the summary across them."""
    if not isinstance(k, int) or k < 2:
        raise UserError(f"--privacy {k}: the scores need K >= 2 unlearned and retrained models per method "
                        f"(16 or more for meaningful numbers)")
    check_seeds(cfg["seeds"], k)
    device = utils.resolve_device(cfg["device"] or "auto")
    bench_runs.preflight(cfg)
    start = time.perf_counter()
    null = null_score(k)
    several = len(cfg["seeds"]) > 1
    results = [run_seed(cfg, k, s, device, null, quiet, jobs, several) for s in cfg["seeds"]]
    minutes = (time.perf_counter() - start) / 60
    counts = {c: sum(r["counts"][c] for r in results) for c in results[0]["counts"]}
    if several:
        first = results[0]["data"]["meta"]["settings"]
        settings = {"preset": cfg["preset"], "dataset / model": f"{cfg['dataset']} / {cfg['arch']}",
                    "seeds": ", ".join(map(str, cfg["seeds"])), "K": k, "forget set": first["forget set"],
                    "saliency mask ratio": cfg["mask_ratio"], "device": first["device"],
                    "time": f"this invocation {minutes:.1f} min ({_done(counts)})"}
        largest = max(r["data"]["meta"]["largest_abs_statistic"] for r in results)
        data = {"meta": _meta(f"Per-example privacy over {len(results)} forget sets: {cfg['preset']}, K = {k}",
                              settings, k, null, largest),
                "summary": summary([(r["seed"], r["rows"]) for r in results]),
                "per_seed": [r["data"] for r in results]}
    else:
        data = results[0]["data"]
    utils.ensure_dir(cfg["save_dir"])
    with open(os.path.join(cfg["save_dir"], "privacy.md"), "w") as f:
        f.write(render(data))
    utils.write_json(data, os.path.join(cfg["save_dir"], "privacy.json"))
    written = [os.path.join(cfg["save_dir"], n) for n in ("privacy.md", "privacy.json")]
    if plots:
        for r in results:
            name = f"privacy_epsilon_seed_{r['seed']}.png" if several else "privacy_epsilon.png"
            png = plot(os.path.join(cfg["save_dir"], name), r["rows"], r["data"]["meta"]["title"], k)
            written += [png] if png else []
    if not quiet:
        shown = summary_md(data["summary"]) if several else table(data["rows"])
        print("\n" + shown + "\n\n" + notes(k, null, data["meta"]["largest_abs_statistic"]))
        print("\nwrote " + ", ".join(written))
    print(f"privacy: {minutes:.1f} min ({_done(counts)})")
    return {"per_seed": results, "summary": data.get("summary"), "counts": counts, "minutes": minutes,
            "null_forgetting_score": null}
