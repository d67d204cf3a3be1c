"""Tests for suite/launch.py: `--launcher local --jobs 2` and `--launcher slurm` (through submitit's local executor,
and through a stand-in `sbatch` for the job scripts and their dependencies) give the numbers of the in-process
benchmark, reuse finished runs and submit nothing twice."""
import json
import os
import shutil
import signal
import stat
import sys
import time
import types

import pytest

import benchmark
from suite import launch
from test_distributed import descendants

pytestmark = pytest.mark.usefixtures("one_thread_module")

TINY = ["--seeds", "1,", "--methods", "FT,GA", "--epochs", "1", "--unlearn_epochs", "1", "--device", "cpu",
        "--no-plots"]
RUN_FOLDERS = ["original", "retrain", "FT", "FT_saliency_0.5", "GA", "GA_saliency_0.5"]


def tables_without_times(path):
    """The table lines of a results.md with the RTE column (a time, never equal between two runs) taken out."""
    out, drop = [], None
    with open(path) as f:
        for line in f:
            if not line.startswith("|"):
                drop = None
                continue
            cells = line.strip().strip("|").split("|")
            if drop is None and "RTE (min)" in line:
                drop = [c.strip() for c in cells].index("RTE (min)")
            out.append([c.strip() for i, c in enumerate(cells) if i != drop])
    return out


def summaries(save, names=RUN_FOLDERS[1:]):
    """{run folder: (UA, RA, TA, MIA, accuracies)} of the tiny benchmark's unlearning runs."""
    out = {}
    for name in names:
        result = json.loads((save / "seed_1" / name / "eval_result.json").read_text())
        s = result["summary"]
        out[name] = (s["UA"], s["RA"], s["TA"], s["MIA_efficacy"], result["accuracy"])
    return out


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    save = tmp_path_factory.mktemp("inprocess")
    out = benchmark.main.__wrapped__(TINY + ["--save_dir", str(save)])
    assert out["counts"] == {"ran": 6, "reused": 0, "failed": 0}
    return save, out


def test_local_launcher_matches_inprocess(sequential, tmp_path, capsys, monkeypatch):
    """--launcher local --jobs 2 (every run made anew, in child processes) against the in-process runs, on FT
    only to keep the test short: the in-process FT table is made from a copy of the in-process runs (reused)."""
    seq, _ = sequential
    ft = [*TINY[:2], "--methods", "FT", *TINY[4:]]
    shutil.copytree(seq, tmp_path / "inprocess")
    first = benchmark.main.__wrapped__(ft + ["--save_dir", str(tmp_path / "inprocess")])
    assert first["counts"] == {"ran": 0, "reused": 4, "failed": 0}
    capsys.readouterr()
    monkeypatch.setattr(launch, "_cores", lambda: 2)  # 1 thread per run, as the in-process runs here
    save = tmp_path / "local"
    out = benchmark.main.__wrapped__(ft + ["--save_dir", str(save), "--launcher", "local", "--jobs", "2"])
    assert out["counts"] == {"ran": 4, "reused": 0, "failed": 0}
    assert "4 runs to make, 2 at once (1 torch threads each)" in capsys.readouterr().out
    # the same numbers, records in the same order, the same tables (times aside)
    assert summaries(save, RUN_FOLDERS[1:4]) == summaries(seq, RUN_FOLDERS[1:4])
    assert [(r["method"], r["masked"], r["summary"]["UA"], r["accuracy"]) for r in out["records"]] == \
        [(r["method"], r["masked"], r["summary"]["UA"], r["accuracy"]) for r in first["records"]]
    table = tables_without_times(save / "results.md")
    assert table == tables_without_times(tmp_path / "inprocess" / "results.md") and len(table) == 2 + 3 + 2 + 1
    assert [row[0] for row in table[2:5]] == ["Retrain", "FT", "FT + mask"]
    for name in RUN_FOLDERS[:4]:  # each run's output in the log file the in-process benchmark writes
        log = (save / "logs" / f"seed_1_{name}.log").read_text()
        assert log.startswith("$ python -u main_") and "git:" in log
    times = json.loads((save / "logs" / "times.json").read_text())
    assert sorted(times) == sorted(os.path.join("seed_1", n) for n in RUN_FOLDERS[:4])
    again = benchmark.main.__wrapped__(ft + ["--save_dir", str(save), "--launcher", "local", "--jobs", "2"])
    assert again["counts"] == {"ran": 0, "reused": 4, "failed": 0}  # finished runs are not made again
    assert again["run_minutes"] == pytest.approx(out["run_minutes"])


def test_local_launcher_records_a_failed_run(tmp_path):
    """A run that fails in its child process: failed.json holds the script's one-line error, its method runs
    are failed without starting (as in-process)."""
    save = tmp_path / "broken"
    original = save / "seed_1" / "original"
    original.mkdir(parents=True)
    (original / "checkpoint.pt").write_text("not a checkpoint")  # --resume refuses it with one line
    out = benchmark.main.__wrapped__(["--seeds", "1,", "--methods", "FT", "--epochs", "1", "--device", "cpu",
                                      "--no-plots", "--save_dir", str(save), "--launcher", "local"])
    assert out["counts"] == {"ran": 0, "reused": 0, "failed": 4}
    error = json.loads((original / "failed.json").read_text())["error"]
    assert error.startswith("refusing to load checkpoint to resume") and "\n" not in error
    assert {f["error"].split(":")[0] for f in out["failures"]} == {"its original model failed"}
    assert [(f["method"], f["masked"]) for f in out["failures"]] == [("retrain", False), ("FT", False), ("FT", True)]


def test_slurm_launcher_through_submitits_local_executor(sequential, tmp_path, monkeypatch, capsys):
    """The --launcher slurm code path with submitit's local executor: the jobs run the runs, --collect gives the
    in-process table, and a finished run (here the original model, retrain and FT, copied to keep the test
    short) is never submitted."""
    pytest.importorskip("submitit")
    seq, _ = sequential
    save = tmp_path / "slurm"
    for name in RUN_FOLDERS[:4]:  # finished: reused, not submitted
        shutil.copytree(seq / "seed_1" / name, save / "seed_1" / name)
    monkeypatch.setattr(launch, "SUBMITIT_CLUSTER", "local")
    out = benchmark.main.__wrapped__(TINY + ["--save_dir", str(save), "--launcher", "slurm"])
    assert sorted(out["jobs"]) == [os.path.join("seed_1", "GA"), os.path.join("seed_1", "GA_saliency_0.5")]
    assert out["counts"] == {"reused": 4, "queued": 0}
    printed = capsys.readouterr().out
    assert "submitted 2 jobs (0 GPU, 2 CPU cores per task, 15 min, 4 GB per node each); 4 runs finished before" \
        in printed
    assert f"python benchmark.py --collect {save} --save_dir {save}" in printed
    for job in out["jobs"].values():
        assert "done" in job.result()  # waits; raises with the job's traceback when it failed
    assert summaries(save) == summaries(seq)
    benchmark.main.__wrapped__(["--collect", str(save), "--save_dir", str(save), "--no-plots"])
    assert tables_without_times(save / "results.md") == tables_without_times(seq / "results.md")
    assert (save / "logs" / "seed_1_GA_saliency_0.5.log").read_text().startswith("$ python -u main_forget.py")
    again = benchmark.main.__wrapped__(TINY + ["--save_dir", str(save), "--launcher", "slurm"])
    assert again["jobs"] == {} and again["counts"] == {"reused": 6, "queued": 0}


FAKE_SBATCH = """#!/bin/sh
n=$(cat "{dir}/count" 2>/dev/null || echo 100)
n=$((n + 1))
echo $n > "{dir}/count"
cp "$1" "{dir}/$n.sh"
echo "Submitted batch job $n"
"""
FAKE_SACCT = """#!/bin/sh
echo "JobID|State|NodeList"
echo "101|PENDING|"
echo "102|RUNNING|node1"
echo "103_[0-2]|PENDING|"
echo "104_[0-2]|FAILED|"
"""


def _script(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_job_scripts_and_dependencies(tmp_path, monkeypatch, capsys):
    """Real submitit Slurm submissions to a stand-in sbatch: per seed the original model's job, then its method
    runs as one array after it, each run 2 nodes x 4 GPUs as 8 tasks; a second submission skips what is still
    queued."""
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "sbatch", FAKE_SBATCH.format(dir=tmp_path))
    _script(bin_dir / "srun", "#!/bin/sh\nexit 1\n")  # never called: submitit looks for it
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    save = tmp_path / "bench"
    argv = ["--seeds", "2", "--methods", "FT", "--save_dir", str(save), "--launcher", "slurm", "--slurm_partition",
            "gpu", "--slurm_gpus", "4", "--slurm_nodes", "2", "--slurm_time", "30", "--slurm_mem", "8",
            "--slurm_option", "account=abc", "--slurm_requeues", "5", "--slurm_array_parallelism", "2"]
    out = benchmark.main.__wrapped__(argv)
    ids = {key: job.job_id for key, job in out["jobs"].items()}
    assert ids == {"seed_1/original": "101", "seed_2/original": "102", "seed_1/retrain": "103_0",
                   "seed_1/FT": "103_1", "seed_1/FT_saliency_0.5": "103_2", "seed_2/retrain": "104_0",
                   "seed_2/FT": "104_1", "seed_2/FT_saliency_0.5": "104_2"}
    assert json.loads((save / "logs" / "slurm_jobs.json").read_text()) == ids
    printed = capsys.readouterr().out
    assert "seed 2  FT + mask              job 104_2" in printed and "--collect" in printed
    scripts = {n: (tmp_path / f"{n}.sh").read_text().splitlines() for n in range(101, 105)}
    for n, lines in scripts.items():
        for flag in ("--partition=gpu", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--time=30",
                     "--mem=8GB", "--account=abc", "--kill-on-invalid-dep=yes", "--cpus-per-task=2"):
            assert f"#SBATCH {flag}" in lines, (n, flag)
        assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in lines)  # every task
        assert any(line.startswith("export PYTHONPATH=") and launch.REPO in line for line in lines)
        dependency = [line for line in lines if line.startswith("#SBATCH --dependency")]
        array = [line for line in lines if line.startswith("#SBATCH --array")]
        assert (dependency, array) == (([], []) if n < 103 else ([f"#SBATCH --dependency=afterok:{n - 2}"],
                                                                 ["#SBATCH --array=0-2%2"]))
    import submitit
    pickled = save / "logs" / "submitit" / "101_submitted.pkl"
    assert submitit.helpers.DelayedSubmission.load(pickled)._timeout_countdown == 5  # requeues after a time limit
    # again while seed 1's jobs are queued or running and seed 2's array failed: only seed 2's runs go again,
    # after seed 2's original model's job, which still runs
    _script(bin_dir / "sacct", FAKE_SACCT)
    again = benchmark.main.__wrapped__(argv)
    assert {k: j.job_id for k, j in again["jobs"].items()} == {
        "seed_2/retrain": "105_0", "seed_2/FT": "105_1", "seed_2/FT_saliency_0.5": "105_2"}
    assert again["counts"] == {"reused": 0, "queued": 5}
    assert "#SBATCH --dependency=afterok:102" in (tmp_path / "105.sh").read_text()
    assert "5 still queued (101, 102, 103_0, 103_1, 103_2)" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--jobs", "2"], "--jobs goes with --launcher local"),
    (["--slurm_gpus", "1"], "--slurm_gpus goes with --launcher slurm"),
    (["--launcher", "slurm", "--search"], "--search asks for its trials as it goes"),
    (["--launcher", "local", "--print-commands"], "run nothing; give them without --launcher"),
    (["--launcher", "slurm", "--device", "cuda", "--slurm_gpus", "0"], "the jobs get none; give --slurm_gpus 1"),
    (["--launcher", "slurm", "--device", "tpu"], "unknown device 'tpu'"),
    (["--launcher", "slurm", "--slurm_option", "account"], "'account' is not KEY=VALUE"),
    (["--launcher", "slurm"], "needs Slurm's sbatch and srun on the PATH"),  # none here
])
def test_bad_launcher_flags(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        benchmark.main(argv + ["--save_dir", str(tmp_path / "b")])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "b").exists()


def test_slurm_without_submitit_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    with pytest.raises(SystemExit) as err:
        benchmark.main(["--seeds", "1,", "--launcher", "slurm", "--save_dir", str(tmp_path / "b")])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --launcher slurm needs the submitit package: pip install submitit"


def test_requeued_job_resumes_inside_its_epoch(tmp_path):
    """A Slurm job (submitit's local executor) told to checkpoint, as at its time limit, is queued again and its
    run resumes from the checkpoint written inside the epoch."""
    pytest.importorskip("submitit")
    import utils
    from suite.runs import Run
    folder = tmp_path / "seed_1" / "original"
    argv = ["--dataset", "digits", "--arch", "resnet20s", "--train_subset", "300", "--batch_size", "8",
            "--epochs", "1", "--save_every_steps", "3", "--device", "cpu", "--save_dir", str(folder), "--resume"]
    run = Run(1, "original", False, "main_baseline.py", argv, str(folder))
    res = launch.resources({}, types.SimpleNamespace(slurm_gpus=0, slurm_cpus=1))
    job = launch.submit([run], str(tmp_path), res, cluster="local")[0][os.path.join("seed_1", "original")]
    checkpoint, deadline = folder / "checkpoint.pt", time.monotonic() + 120
    while not (checkpoint.exists() and utils.load_torch(str(checkpoint)).get("step")):
        assert time.monotonic() < deadline and job.state != "FINISHED", "no checkpoint inside the epoch"
        time.sleep(0.05)
    for pid in descendants(job._process.pid):  # the signal Slurm sends the job's tasks before its time limit
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"submitit.core._submit" in f.read():
                os.kill(pid, signal.SIGUSR2)
    assert "done" in job.result()
    log = (tmp_path / "logs" / "seed_1_original.log").read_text()
    assert log.count("$ python -u main_baseline.py") == 2 and ", step " in log.split("resuming from")[1]
    assert utils.load_torch(str(checkpoint))["epoch"] == 1 and (folder / "eval_result.json").exists()


def test_a_stop_signal_during_a_write_waits_for_the_whole_file(tmp_path):
    """Slurm's warning before a time limit makes submitit's handler exit the job; landing inside a checkpoint's
    write, it used to leave no file. Now the file is written whole, then the handler runs."""
    import utils
    path = tmp_path / "checkpoint.pt"

    def write(f):
        f.write(b"a" * 4096)
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.01)  # the handler would run here, at the next bytecode
        f.write(b"b" * 4096)

    def handler(*_):
        sys.exit(-1)

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        with pytest.raises(SystemExit):
            utils._atomic_write(str(path), write)
        assert signal.getsignal(signal.SIGUSR2) is handler  # the job's own handler is back
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert path.read_bytes() == b"a" * 4096 + b"b" * 4096
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left
