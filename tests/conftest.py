"""Shared fixtures: the repository on sys.path, a tiny trained digits run, file hashing, CLI runs."""
import hashlib
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# A short, CPU-only training command shared by the tests (about 1 s per epoch on two cores).
DIGITS_ARGS = ["--dataset", "digits", "--arch", "resnet20s", "--batch_size", "128", "--device", "cpu"]


def cli_env():
    """Environment for a child process: the repository importable, no real network, no GPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[key] = "http://127.0.0.1:9"  # the discard port: any download fails at once
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"  # see one_thread
    return env


def run_script(script, args, timeout=300):
    """Run `python <script> args` in the repository; returns the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=timeout)


class Evil:
    """Unpickling this creates `path`: a stand-in for any code a malicious file could run when loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def hash_tree(folder):
    """{relative path: sha256} of every file under `folder` (empty when it does not exist)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Run torch on one CPU thread: on busy shared cores, two spinning threads are many times slower, and
    in-process runs then match child processes (started with OMP_NUM_THREADS=1) bit for bit."""
    yield from _single_thread()


@pytest.fixture(scope="module")
def one_thread_module():
    """one_thread for a whole test module (use with pytestmark = pytest.mark.usefixtures(...))."""
    yield from _single_thread()


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A resnet20s trained 3 epochs on digits by the real command line (made once per session)."""
    folder = tmp_path_factory.mktemp("digits_run")
    proc = run_script("main_baseline.py", [*DIGITS_ARGS, "--epochs", "3", "--save_dir", folder])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return SimpleNamespace(dir=folder, proc=proc, checkpoint=folder / "checkpoint.pt",
                           eval_result=folder / "eval_result.json", log=folder / "log.jsonl")


@pytest.fixture(scope="module")
def setup():
    """(splits, meta): digits with 40 examples forgotten at random (seed 2) and resnet20s's model metadata."""
    import dataset
    import trainer
    raw = dataset.load_dataset("digits")
    splits = dataset.make_splits(raw, seed=2, num_indexes_to_replace=40)
    meta = trainer.model_meta(SimpleNamespace(arch="resnet20s", dataset="digits", imagenet_arch=False), raw)
    return splits, meta
