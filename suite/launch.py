"""Launchers of the benchmark's runs besides the in-process `execute` (suite/runs.py).

`--launcher local --jobs J`: J runs at once on this machine, each as `python -u <script> <argv>` with its output
in the same log file as in-process; one GPU per run in turn where there are several, else cores // J torch
threads per run. The original models go first; a run starts when the model it starts from is done.

`--launcher slurm`: every missing run is a Slurm job submitted through submitit, with one task per GPU on each of
its nodes; the tasks of a run train it together (distributed.py reads Slurm's variables). Each seed's original
model is one job; that seed's method runs are one job array that starts after it (`--dependency=afterok`) and is
cancelled when it fails (`--kill-on-invalid-dep=yes`). Every run loads its seed's original model (retrain
re-initializes, but main_forget reads the architecture, the data and any pruning mask from it), so retrain
waits too. Finished runs are reused as in-process and queued ones are not submitted again; `--collect` makes
the tables when the jobs are done.
"""
import argparse
import concurrent.futures as futures
import os
import shlex
import shutil
import subprocess
import sys
import time

import utils
from arg_parser import nonneg_int, pos_float, pos_int
from suite.runs import Tally, _attempt, log_path, mark_failed, finished_result, reusable, store_time
from utils import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHERS = ("inprocess", "local", "slurm")
# Resources of one run's job; a preset's "slurm" dict overrides these, the --slurm_* flags override both.
# gpus and mem are per node, cpus per task (one task per GPU); requeues: how often a job that reaches its time
# limit is queued again; array_parallelism: how many runs of one array run at once.
SLURM_DEFAULTS = {"partition": None, "gpus": 1, "nodes": 1, "cpus": 4, "time": 60, "mem": 16, "requeues": 3,
                  "array_parallelism": 256}
SUBMITIT_CLUSTER = "slurm"  # the submitit executor behind --launcher slurm ("local" runs the same code here)
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
               "REQUEUE_HOLD", "REQUEUE_FED"}


def add_flags(p):
    """The launcher flags of benchmark.py."""
    g = p.add_argument_group("launchers (suite/launch.py)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="inprocess",
                   help="inprocess: one run after the other in this process (default); local: --jobs runs at once "
                        "on this machine; slurm: submit every run as a Slurm job (submitit) and exit")
    g.add_argument("--jobs", type=pos_int, default=None,
                   help="runs at once with --launcher local (default: one per GPU where there are several, else 2)")
    g.add_argument("--slurm_partition", default=None, help="Slurm partition (default: the cluster's)")
    g.add_argument("--slurm_gpus", type=nonneg_int, default=None,
                   help="GPUs per node of a run, one task (process) each (default: the preset's)")
    g.add_argument("--slurm_nodes", type=pos_int, default=None, help="nodes per run (default: 1)")
    g.add_argument("--slurm_cpus", type=pos_int, default=None,
                   help="CPU cores per task (default: the preset's)")
    g.add_argument("--slurm_time", type=pos_int, default=None, help="minutes per run (default: the preset's)")
    g.add_argument("--slurm_mem", type=pos_float, default=None,
                   help="memory per node of a run in GB (default: the preset's)")
    g.add_argument("--slurm_requeues", type=nonneg_int, default=None,
                   help="times a job that reaches its time limit is queued again to resume (default: 3)")
    g.add_argument("--slurm_array_parallelism", type=pos_int, default=None,
                   help="runs of one seed's job array that run at once (default: 256)")
    g.add_argument("--slurm_option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=abc or qos=high (repeatable)")


def _option(text):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE")
    return key.strip().lstrip("-"), value


def check_flags(args):
    """Flags of one launcher given with another one: one line."""
    slurm = [f for f in SLURM_DEFAULTS if getattr(args, f"slurm_{f}") is not None]
    slurm += ["option"] if args.slurm_option else []
    if args.launcher != "local" and args.jobs is not None:
        raise UserError("--jobs goes with --launcher local")
    if args.launcher != "slurm" and slurm:
        raise UserError(f"--slurm_{slurm[0]} goes with --launcher slurm")
    if args.launcher != "inprocess" and (args.collect or args.print_commands):
        raise UserError("--collect and --print-commands run nothing; give them without --launcher")
    if args.launcher == "slurm" and args.search:
        raise UserError("--search asks for its trials as it goes: use --launcher local or inprocess; on Slurm, "
                        "submit the --search command itself as several jobs (they share the studies)")


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs the submitit package: pip install submitit") from None
    return submitit


# ---------------------------------------------------------------- local: J runs at once on this machine

def _gpus(device):
    """The physical ids of the GPUs the runs take in turn ([] when they run on the CPU or on a named GPU)."""
    import torch
    if device not in (None, "auto", "cuda") or not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids[:torch.cuda.device_count()] or [str(i) for i in range(torch.cuda.device_count())]


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _error_line(log, offset, returncode):
    """What the run's log says went wrong: the script's one-line error, else the exception's last line."""
    with open(log, errors="replace") as f:
        f.seek(offset)
        lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    if lines and ":" in lines[-1] and lines[-1].split(":")[0].isidentifier():
        return lines[-1]
    return f"exit status {returncode}"


def _subprocess_attempt(run, log, env):
    """Run one script as a child process with its output appended to `log`: like runs._attempt, in a child."""
    with open(log, "a") as f:
        f.write(f"$ {run.command}\n")
        f.flush()
        offset = f.tell()
        proc = subprocess.run([sys.executable, "-u", os.path.join(REPO, run.script), *run.argv], stdout=f,
                              stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
    if proc.returncode in (130, -2):  # interrupted (Ctrl-C reaches the children too): no failure record
        raise KeyboardInterrupt
    if proc.returncode != 0:
        error = _error_line(log, offset, proc.returncode)
        mark_failed(run, error)
        return None, f"{error} (log: {log})"
    return finished_result(run), None


def run_local(runs, root, jobs=None, device=None, quiet=False):
    """Like runs.execute (the same records, failure records, counts and times, the same order), with up to
    `jobs` runs at once in child processes; a run starts when the model it starts from (run.after) is done."""
    gpus = _gpus(device)
    jobs = jobs or (len(gpus) if len(gpus) > 1 else 2)
    threads = str(max(1, _cores() // jobs))
    tally = Tally(root)
    order = {id(run): i for i, run in enumerate(runs)}
    say = (lambda line: print(line, flush=True)) if not quiet else (lambda line: None)
    pending = []
    for run in runs:  # reuse and argument checks before anything starts, as in-process would do on its way
        result = reusable(run)
        if result is not None:
            say(tally.add(run, result))
        else:
            pending.append(run)
    free = list(range(jobs))
    running = {}
    if pending and not quiet:
        print(f"{len(pending)} runs to make, {jobs} at once ({threads} torch threads each"
              f"{', GPUs ' + ','.join(gpus) if gpus else ''}); logs in {os.path.join(root, 'logs')}", flush=True)
    with futures.ThreadPoolExecutor(jobs) as pool:
        while pending or running:
            training = {r.folder for r in pending + [r for r, _, _ in running.values()] if r.method == "original"}
            for run in list(pending):
                if not free:
                    break
                if run.after in training:
                    continue
                pending.remove(run)
                error = tally.blocked(run)
                if error is not None:
                    print(tally.add(run, error=error), flush=True)
                    continue
                slot = free.pop(0)
                env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
                if gpus:
                    env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
                job = pool.submit(_subprocess_attempt, run, log_path(run, root), env)
                running[job] = (run, slot, time.perf_counter())
            if not running:
                continue
            done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for job in sorted(done, key=lambda j: order[id(running[j][0])]):
                run, slot, start = running.pop(job)
                free.append(slot)
                result, error = job.result()
                line = tally.add(run, result, error, round(time.perf_counter() - start, 2))
                if not quiet or error is not None:
                    print(line, flush=True)
    by_folder = {r.folder: i for i, r in enumerate(runs)}  # records and failures in plan order, as in-process
    tally.records.sort(key=lambda r: by_folder[r["folder"]])
    by_key = {(r.method, r.masked, r.seed, r.sparsity): i for i, r in enumerate(runs)}
    tally.failures.sort(key=lambda f: by_key[(f["method"], f["masked"], f["seed"], f["sparsity"])])
    return tally.records, tally.failures, tally.counts, tally.minutes(runs)


# ---------------------------------------------------------------- slurm: every run a job, through submitit

class RunJob:
    """One run inside a submitted job: run it in-process (log, failure record and time as execute() keeps them)
    unless it is already finished; a failed run fails the job, so that the runs after it are cancelled.
    In a job of several tasks every task runs this and they train the run together; the output of task r > 0
    goes to the log file's `.rank<r>` companion. On a time limit or preemption submitit calls `checkpoint`: the
    job is queued again and the run resumes from its last checkpoint (every run is started with --resume)."""

    def __call__(self, run, root, cwd):
        os.chdir(cwd)
        if "OMP_NUM_THREADS" not in os.environ:  # the job's cores, not the node's
            import torch
            torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK") or _cores()))
        if reusable(run, check_lock=False) is not None:  # the scripts take the run folder's lock themselves
            return f"seed {run.seed} {run.label}: finished before, reused"
        task = _submitit().JobEnvironment().global_rank
        start = time.perf_counter()
        result, error = _attempt(run, log_path(run, root) + (f".rank{task}" if task else ""))
        if error is not None:
            raise RuntimeError(f"seed {run.seed} {run.label} failed: {error}")
        if not task:
            store_time(root, os.path.relpath(run.folder, root), round(time.perf_counter() - start, 2))
        return f"seed {run.seed} {run.label}: done"

    def checkpoint(self, *args, **kwargs):
        submitit = _submitit()
        return submitit.helpers.DelayedSubmission(RunJob(), *args, **kwargs)


def resources(cfg, args):
    """The Slurm resources of one run: the flags over the preset's "slurm" dict over SLURM_DEFAULTS."""
    res = {**SLURM_DEFAULTS, **cfg.get("slurm", {})}
    for key in SLURM_DEFAULTS:
        if getattr(args, f"slurm_{key}", None) is not None:
            res[key] = getattr(args, f"slurm_{key}")
    res["options"] = dict(getattr(args, "slurm_option", []))
    return res


def _executor(folder, res, cluster):
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=res["requeues"],
                                     local_max_num_timeout=res["requeues"])
    path = shlex.quote(REPO)
    setup = [f"export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}"]  # the job unpickles suite.launch.RunJob
    params = {"timeout_min": res["time"], "mem_gb": res["mem"], "cpus_per_task": res["cpus"],
              "tasks_per_node": max(1, res["gpus"]), "nodes": res["nodes"], "slurm_setup": setup,
              "local_setup": setup, "slurm_array_parallelism": res["array_parallelism"]}
    if res["gpus"]:
        params["gpus_per_node"] = res["gpus"]
    if res["partition"]:
        params["slurm_partition"] = res["partition"]
    executor.update_parameters(**params)
    return executor


def _jobs_file(root):
    return os.path.join(root, "logs", "slurm_jobs.json")


def _queued(root, folder, cluster):
    """{run folder key: job id} of the runs submitted before whose jobs are still queued or running."""
    path = _jobs_file(root)
    if cluster != "slurm" or not os.path.exists(path):
        return {}
    submitit = _submitit()
    known = utils.read_json(path, "submitted jobs")
    jobs = {key: submitit.SlurmJob(folder=folder, job_id=str(job_id)) for key, job_id in known.items()}
    return {key: job.job_id for key, job in jobs.items() if job.state in LIVE_STATES}


def submit(runs, root, res, name="benchmark", cluster=None):
    """Submit every run that is neither finished nor queued: per seed, the original model's job, then the method
    runs as one job array after it. Returns ({run folder key: new job}, counts of reused and queued runs,
    {run folder key: job id} of the queued ones).

    Slurm holds the dependencies; submitit's local executor (tests) has none, so there a seed's method runs are
    submitted once its original model's job has ended, and not at all when it failed."""
    cluster = cluster or SUBMITIT_CLUSTER
    folder = os.path.join(os.path.abspath(root), "logs", "submitit")
    queued = _queued(root, folder, cluster)
    todo, reused, waiting = [], 0, {}
    for run in runs:
        key = os.path.relpath(run.folder, root)
        if reusable(run, check_lock=False) is not None:  # a lock's pid may be on a compute node
            reused += 1
        elif key in queued:
            waiting[key] = queued[key]
        else:
            todo.append(run)
    jobs, counts = {}, {"reused": reused, "queued": len(waiting)}
    if not todo:
        return jobs, counts, waiting
    executor = _executor(folder, res, cluster)
    options = {"kill-on-invalid-dep": "yes", **res["options"]}
    cwd = os.getcwd()
    key = lambda run: os.path.relpath(run.folder, root)  # noqa: E731
    first = {}
    for run in todo:
        if run.method == "original":
            executor.update_parameters(name=f"{name}-seed{run.seed}-original", slurm_additional_parameters=options)
            first[run.seed] = jobs[key(run)] = executor.submit(RunJob(), run, root, cwd)
    for seed in dict.fromkeys(r.seed for r in todo if r.method != "original"):
        methods = [r for r in todo if r.seed == seed and r.method != "original"]
        original = next((r for r in runs if r.seed == seed and r.method == "original"), None)
        after = first[seed].job_id if seed in first else waiting.get(key(original)) if original else None
        extra = dict(options)
        if after is not None and cluster == "slurm":
            extra["dependency"] = f"afterok:{after}"
        elif seed in first:  # no dependencies outside Slurm: wait for the original model's job here
            first[seed].wait()
            if not os.path.exists(os.path.join(original.folder, "eval_result.json")):
                print(f"seed {seed}: the original model failed (log: {log_path(original, root)}); its method runs "
                      f"were not submitted", flush=True)
                continue
        executor.update_parameters(name=f"{name}-seed{seed}-methods", slurm_additional_parameters=extra)
        with executor.batch():
            for run in methods:
                jobs[key(run)] = executor.submit(RunJob(), run, root, cwd)
    ids = {**(utils.read_json(_jobs_file(root), "submitted jobs") if os.path.exists(_jobs_file(root)) else {}),
           **{k: job.job_id for k, job in jobs.items()}}
    utils.write_json(ids, _jobs_file(root))
    return jobs, counts, waiting


def slurm_benchmark(cfg, args, cluster=None):
    """benchmark.py --launcher slurm: check what can be checked here (the device's name, the dataset, every
    seed's forget set), then submit the runs that are missing."""
    import torch

    from suite.runs import plan, preflight
    _submitit()
    res = resources(cfg, args)
    device = cfg["device"] or "auto"
    try:
        kind = "auto" if device == "auto" else torch.device(device).type
    except RuntimeError:
        raise UserError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if kind == "cuda" and not res["gpus"]:
        raise UserError(f"--device {device} asks for a GPU but the jobs get none; give --slurm_gpus 1")
    if (cluster or SUBMITIT_CLUSTER) == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise UserError("--launcher slurm needs Slurm's sbatch and srun on the PATH: run it on the cluster's login "
                        "node, or use --launcher local")
    preflight(cfg)  # here, where the dataset can be downloaded; the jobs read it from --data
    return slurm(cfg, plan(cfg, cfg["save_dir"]), res, cluster)


def slurm(cfg, runs, res, cluster=None):
    """--launcher slurm: submit, then print the job ids and the command that makes the tables."""
    root = cfg["save_dir"]
    jobs, counts, queued = submit(runs, root, res, name=f"unlearn-{cfg['preset']}", cluster=cluster)
    by_key = {os.path.relpath(r.folder, root): r for r in runs}
    for key, job in jobs.items():
        run = by_key[key]
        print(f"seed {run.seed}  {run.label:<22} job {job.job_id}")
    where = f"partition {res['partition']}, " if res["partition"] else ""
    nodes = f"{res['nodes']} nodes x " if res["nodes"] > 1 else ""
    print(f"submitted {len(jobs)} jobs ({where}{nodes}{res['gpus']} GPU, {res['cpus']} CPU cores per task, "
          f"{res['time']} min, {res['mem']:g} GB per node each); {counts['reused']} runs finished before, "
          f"{counts['queued']} still queued"
          + (f" ({', '.join(sorted(set(queued.values())))})" if counts["queued"] else ""))
    print(f"job output: {os.path.join(root, 'logs')}; when the jobs are done:\n"
          f"  python benchmark.py --collect {shlex.quote(root)} --save_dir {shlex.quote(root)}")
    return {"jobs": jobs, "counts": counts, "queued": queued}
