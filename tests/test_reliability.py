"""Reliability of every entry script (main_baseline, main_imp, main_forget, main_backdoor, benchmark).

- Bad input: one line on stderr saying what is wrong and what to do, exit status 2, no traceback, and every
  file already in the save_dir byte-identical (one table, run in-process).
- Interruption: a SIGKILLed main_forget or benchmark, restarted with the same command, ends with the same
  numbers as an uninterrupted run; a run folder is locked against a second writer.
- Safe loading: a checkpoint, mask or pickle that would run code is refused and the code never runs.
- Divergence: a NaN/inf loss or weight stops the run with a message, and no result is written for it.
- Determinism: the same command twice gives the same numbers; --deterministic asks torch for it.
"""
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
import torchvision.datasets as tv_datasets

import benchmark
from commands import backdoor as main_backdoor
from commands import baseline as main_baseline
from commands import forget as main_forget
from commands import imp as main_imp
import trainer
import utils
from conftest import DIGITS_ARGS, REPO, Evil, cli_env, hash_tree, run_script
from dataset import load_dataset, split_train_val
from models import build_model
from suite import presets
from utils import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPTS = {"main_baseline": main_baseline, "main_imp": main_imp, "main_forget": main_forget,
           "main_backdoor": main_backdoor, "benchmark": benchmark}
RESULT_FILES = {"eval_result.json", "checkpoint.pt", "results.json", "results.md", "results.csv", "masks.json"}
TIMING_KEYS = {"RTE_minutes", "mask_minutes", "wall_seconds", "seconds", "folder", "eval_seconds"}


class EvilShell(Evil):
    """The same through a shell command."""

    def __reduce__(self):
        return os.system, (f"touch '{self.path}'",)


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "error" in lines[0], lines[0]
    return lines[0]


def without_timings(obj):
    """The numbers of a result with the wall-clock fields (which differ between runs) left out."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


# ---------------------------------------------------------------- inputs: a finished save_dir and bad files

@pytest.fixture(scope="module")
def world(digits_run, tmp_path_factory):
    """A save_dir template holding earlier results (a trained model and a finished main_forget run), and a
    folder of good, bad and malicious input files."""
    root = tmp_path_factory.mktemp("reliability")
    template, inputs = root / "template", root / "inputs"
    shutil.copytree(digits_run.dir, template)
    main_forget.main([*DIGITS_ARGS, "--num_indexes_to_replace", "20", "--unlearn", "raw", "--run_name", "raw",
                      "--save_dir", str(template)])
    inputs.mkdir()
    model_path = inputs / "model.pt"
    shutil.copy(digits_run.checkpoint, model_path)
    state = torch.load(model_path, weights_only=True)
    params = dict(trainer.build(state["meta"]).named_parameters())
    first = next(iter(params))
    gen = torch.Generator().manual_seed(0)
    mask = {n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in params.items() if p.dim() > 1}
    torch.save(mask, inputs / "mask.pt")
    resnet18 = build_model("resnet18", num_classes=10, in_channels=1, image_size=8)
    torch.save({n: torch.ones_like(p, dtype=torch.bool) for n, p in resnet18.named_parameters()},
               inputs / "mask_resnet18.pt")
    torch.save({"state_dict": resnet18.state_dict()}, inputs / "resnet18.pt")  # reference format, no meta
    torch.save({"classifier.weight": torch.ones(10, 64, dtype=torch.bool)}, inputs / "mask_unknown_name.pt")
    torch.save({first: torch.full(params[first].shape, 2.0)}, inputs / "mask_values.pt")
    torch.save({first: torch.full(params[first].shape, float("nan"))}, inputs / "mask_nan.pt")
    torch.save({}, inputs / "mask_empty_dict.pt")
    torch.save({0: torch.ones(3, dtype=torch.bool)}, inputs / "mask_int_key.pt")
    torch.save(torch.ones(3, dtype=torch.bool), inputs / "mask_tensor.pt")
    (inputs / "empty.pt").write_bytes(b"")
    data = model_path.read_bytes()
    (inputs / "truncated.pt").write_bytes(data[: len(data) // 2])
    (inputs / "garbage.pt").write_bytes(bytes(range(256)) * 64)
    torch.save({**state, "meta": {"arch": "resnet20s"}}, inputs / "bad_meta.pt")
    torch.save({**state, "meta": "resnet20s"}, inputs / "str_meta.pt")
    marker = root / "code_ran"
    torch.save({**state, "x": Evil(str(marker))}, inputs / "evil_model.pt")
    torch.save({first: params[first].detach() > 0, "x": Evil(str(marker))}, inputs / "evil_mask.pt")
    (inputs / "evil_plain.pkl").write_bytes(pickle.dumps(Evil(str(marker)), protocol=2))
    torch.save({"state_dict": {"w": EvilShell(str(marker))}}, inputs / "evil_shell.pt")
    for payload in (Evil(str(marker)), EvilShell(str(marker))):  # the payloads are live: unpickling runs them
        pickle.loads(pickle.dumps(payload))
        assert marker.exists(), type(payload).__name__
        marker.unlink()
    train, val = split_train_val(load_dataset("digits").y_train.numpy(), 2)
    indices = {"idx_dict.json": {"forget": [1, 2]}, "idx_duplicates.json": [int(train[0]), int(train[0])],
               "idx_huge.json": [10 ** 30], "idx_negative.json": [-1], "idx_outside.json": [1347],
               "idx_floats.json": [1.5], "idx_bools.json": [True], "idx_empty.json": [],
               "idx_validation.json": [int(val[0])]}
    for name, value in indices.items():
        (inputs / name).write_text(json.dumps(value))
    (inputs / "idx_broken.json").write_text("[1, 2")
    broken = inputs / "collect_broken" / "seed_1" / "FT"
    broken.mkdir(parents=True)
    (broken / "eval_result.json").write_text('{"summary": ')
    listed = inputs / "collect_list" / "seed_1" / "FT"
    listed.mkdir(parents=True)
    (listed / "eval_result.json").write_text("[1, 2]")
    return SimpleNamespace(template=template, inputs=inputs, model=model_path, marker=marker)


def offline(monkeypatch):
    """No network: every download fails at once (proxies on the discard port, URLs on localhost)."""
    for key, value in cli_env().items():
        if "proxy" in key.lower():
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(tv_datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    monkeypatch.setattr(tv_datasets.CIFAR100, "url", "http://127.0.0.1:9/cifar-100-python.tar.gz")
    train = tv_datasets.SVHN.split_list["train"]
    monkeypatch.setitem(tv_datasets.SVHN.split_list, "train", ["http://127.0.0.1:9/train_32x32.mat", *train[1:]])


# ---------------------------------------------------------------- 1. bad input, every script, one table

# Each case: script, flags added to the script's base command ({S}: the save_dir, a copy of the template;
# {I}: the inputs folder; {T}: the test's own folder), the parts the error line must hold, files to place in
# the save_dir first ({relative path: inputs file name or bytes}).
BASE = {
    "main_baseline": [*DIGITS_ARGS, "--epochs", "1", "--save_dir", "{S}"],
    "main_imp": [*DIGITS_ARGS, "--epochs", "1", "--save_dir", "{S}"],
    "main_forget": [*DIGITS_ARGS, "--num_indexes_to_replace", "20", "--unlearn", "raw", "--run_name", "raw",
                    "--unlearn_epochs", "1", "--save_dir", "{S}"],
    "main_backdoor": [*DIGITS_ARGS, "--num_indexes_to_replace", "20", "--epochs", "1", "--unlearn_epochs", "1",
                      "--save_dir", "{S}"],
    "benchmark": ["--seeds", "1,", "--methods", "FT", "--epochs", "1", "--unlearn_epochs", "1", "--device", "cpu",
                  "--no-plots", "--save_dir", "{S}"],
}
UNDER_A_FILE = "{S}/eval_result.json/run"  # a save_dir below a regular file cannot be created
M = "{I}/model.pt"


def case(name, script, argv, *expected, files=None, marks=()):
    return pytest.param(script, argv, expected, files or {}, id=name, marks=marks)


BAD_INPUT = [
    # main_baseline
    case("baseline-lr-nan", "main_baseline", ["--lr", "nan"], "--lr", "'nan' is not a finite number", "--help"),
    case("baseline-epochs-0", "main_baseline", ["--epochs", "0"], "--epochs", "outside [1, inf)"),
    case("baseline-weight-decay-negative", "main_baseline", ["--weight_decay", "-0.01"], "--weight_decay", "outside"),
    case("baseline-momentum-inf", "main_baseline", ["--momentum", "inf"], "--momentum", "not a finite number"),
    case("baseline-unknown-arch", "main_baseline", ["--arch", "resnet1000"], "resnet1000", "invalid choice",
         "resnet20s"),
    case("baseline-unknown-device", "main_baseline", ["--device", "tpu9"], "tpu9", "use auto, cpu"),
    case("baseline-num-classes", "main_baseline", ["--num_classes", "7"], "--num_classes 7", "digits (10)"),
    case("baseline-dataset-offline", "main_baseline", ["--dataset", "cifar10", "--data", "{T}/nodata"],
         "cifar10", "{T}/nodata", "place cifar-10-python.tar.gz"),
    case("baseline-save-dir-under-file", "main_baseline", ["--save_dir", UNDER_A_FILE], UNDER_A_FILE,
         "choose another --save_dir"),
    case("baseline-checkpoint-missing", "main_baseline", ["--checkpoint", "{I}/nothing.pt"], "{I}/nothing.pt",
         "does not exist"),
    case("baseline-resume-truncated", "main_baseline", ["--resume", "--checkpoint", "{I}/truncated.pt"],
         "refusing", "truncated.pt", "corrupted", "recreate it"),
    case("baseline-resume-from-a-mask", "main_baseline", ["--resume", "--checkpoint", "{I}/mask.pt"],
         "mask.pt", "no training state", "without --resume"),
    case("baseline-resume-code", "main_baseline", ["--resume", "--checkpoint", "{I}/evil_model.pt"],
         "evil_model.pt", "could run code"),
    # main_imp
    case("imp-rate-above-1", "main_imp", ["--rate", "1.5"], "--rate", "outside (0.0, 1.0)"),
    case("imp-rate-nan", "main_imp", ["--rate", "nan"], "--rate", "not a finite number"),
    case("imp-pruning-times-0", "main_imp", ["--pruning_times", "0"], "--pruning_times", "outside"),
    case("imp-unknown-prune", "main_imp", ["--prune", "snip"], "snip", "invalid choice", "omp"),
    case("imp-mask-ratio-2", "main_imp", ["--prune", "saliency", "--model_path", M, "--mask_ratios", "0.5,2"],
         "mask ratio 2", "outside"),
    case("imp-saliency-without-model", "main_imp", ["--prune", "saliency"], "needs --model_path"),
    case("imp-mask-as-model", "main_imp", ["--prune", "saliency", "--model_path", "{I}/mask.pt"],
         "mask.pt", "is a mask, not a model", "--mask"),
    case("imp-model-empty-file", "main_imp", ["--model_path", "{I}/empty.pt"], "empty.pt", "corrupted"),
    case("imp-model-code", "main_imp", ["--model_path", "{I}/evil_model.pt"], "evil_model.pt", "could run code"),
    case("imp-rewind-other-arch", "main_imp", ["--model_path", M, "--rewind_pth", "{I}/resnet18.pt"],
         "resnet18.pt", "does not fit --arch resnet20s", "conv1.weight"),
    case("imp-rewind-code", "main_imp", ["--model_path", M, "--rewind_pth", "{I}/evil_shell.pt"], "evil_shell.pt",
         "could run code"),
    case("imp-rewind-epoch-too-late", "main_imp", ["--rewind_epoch", "3", "--epochs", "2"], "--rewind_epoch 3",
         "below --epochs 2"),
    case("imp-save-dir-under-file", "main_imp", ["--save_dir", UNDER_A_FILE], UNDER_A_FILE,
         "choose another --save_dir"),
    case("imp-dataset-offline", "main_imp", ["--dataset", "cifar100", "--data", "{T}/nodata"], "cifar100",
         "cifar-100-python.tar.gz"),
    # main_forget
    case("forget-unlearn-lr-inf", "main_forget", ["--unlearn_lr", "inf"], "--unlearn_lr", "not a finite number"),
    case("forget-alpha-nan", "main_forget", ["--alpha", "nan"], "--alpha", "not a finite number"),
    case("forget-unlearn-epochs-negative", "main_forget", ["--unlearn_epochs", "-2"], "--unlearn_epochs",
         "outside"),
    case("forget-mask-ratio-0", "main_forget", ["--mask_ratio", "0"], "--mask_ratio", "outside (0.0, 1.0]"),
    case("forget-class-10", "main_forget", ["--class_to_replace", "10"], "--class_to_replace 10", "0..9"),
    case("forget-count-too-large", "main_forget", ["--num_indexes_to_replace", "5000"], "5000", "larger"),
    case("forget-unknown-method", "main_forget", ["--unlearn", "retrain_sam"], "retrain_sam", "invalid choice", "RL"),
    case("forget-model-missing", "main_forget", ["--model_path", "{I}/nothing.pt"], "nothing.pt",
         "main_baseline.py"),
    case("forget-model-as-mask", "main_forget", ["--mask_path", M], "model.pt", "looks like a model",
         "--model_path"),
    case("forget-mask-as-model", "main_forget", ["--model_path", "{I}/mask.pt"], "mask.pt",
         "is a mask, not a model"),
    case("forget-mask-other-arch", "main_forget", ["--mask", "{I}/mask_resnet18.pt"], "mask_resnet18.pt",
         "shape", "made for this model"),
    case("forget-mask-unknown-name", "main_forget", ["--mask", "{I}/mask_unknown_name.pt"], "classifier.weight",
         "does not have"),
    case("forget-mask-values", "main_forget", ["--mask", "{I}/mask_values.pt"], "other than 0 and 1"),
    case("forget-mask-nan", "main_forget", ["--mask", "{I}/mask_nan.pt"], "NaN"),
    case("forget-mask-empty-dict", "main_forget", ["--mask", "{I}/mask_empty_dict.pt"], "is not a mask"),
    case("forget-mask-int-key", "main_forget", ["--mask", "{I}/mask_int_key.pt"], "is not a mask"),
    case("forget-mask-a-tensor", "main_forget", ["--mask", "{I}/mask_tensor.pt"], "is not a mask"),
    case("forget-mask-empty-file", "main_forget", ["--mask", "{I}/empty.pt"], "empty.pt", "corrupted"),
    case("forget-mask-garbage", "main_forget", ["--mask", "{I}/garbage.pt"], "garbage.pt", "corrupted"),
    case("forget-mask-code", "main_forget", ["--mask", "{I}/evil_mask.pt"], "evil_mask.pt", "could run code"),
    case("forget-mask-code-plain-pickle", "main_forget", ["--mask", "{I}/evil_plain.pkl"], "evil_plain.pkl",
         "could run code"),
    case("forget-mask-and-ratio", "main_forget", ["--mask", "{I}/mask.pt", "--mask_ratio", "0.5"], "either"),
    case("forget-model-truncated", "main_forget", ["--model_path", "{I}/truncated.pt"], "truncated.pt",
         "corrupted"),
    case("forget-model-code", "main_forget", ["--model_path", "{I}/evil_model.pt"], "evil_model.pt",
         "could run code"),
    case("forget-model-other-arch", "main_forget", ["--model_path", "{I}/resnet18.pt"], "resnet18.pt",
         "does not fit --arch resnet20s"),
    case("forget-model-bad-meta", "main_forget", ["--model_path", "{I}/bad_meta.pt"], "bad_meta.pt", "meta"),
    case("forget-model-meta-not-dict", "main_forget", ["--model_path", "{I}/str_meta.pt"], "str_meta.pt", "meta"),
    case("forget-index-not-a-list", "main_forget", ["--indexes_to_replace", "{I}/idx_dict.json"],
         "idx_dict.json", "JSON list of integers"),
    case("forget-index-empty", "main_forget", ["--indexes_to_replace", "{I}/idx_empty.json"], "non-empty"),
    case("forget-index-floats", "main_forget", ["--indexes_to_replace", "{I}/idx_floats.json"], "integers"),
    case("forget-index-bools", "main_forget", ["--indexes_to_replace", "{I}/idx_bools.json"], "integers"),
    case("forget-index-duplicates", "main_forget", ["--indexes_to_replace", "{I}/idx_duplicates.json"], "twice"),
    case("forget-index-huge", "main_forget", ["--indexes_to_replace", "{I}/idx_huge.json"],
         "outside the training set"),
    case("forget-index-negative", "main_forget", ["--indexes_to_replace", "{I}/idx_negative.json"],
         "index -1 is outside the training set"),
    case("forget-index-past-the-end", "main_forget", ["--indexes_to_replace", "{I}/idx_outside.json"],
         "index 1347 is outside the training set"),
    case("forget-index-in-validation", "main_forget", ["--indexes_to_replace", "{I}/idx_validation.json"],
         "validation split"),
    case("forget-index-broken-json", "main_forget", ["--indexes_to_replace", "{I}/idx_broken.json"],
         "idx_broken.json", "not valid JSON"),
    case("forget-dataset-offline", "main_forget", ["--dataset", "svhn", "--data", "{T}/nodata"], "svhn",
         "train_32x32.mat"),
    case("forget-save-dir-under-file", "main_forget", ["--model_path", M, "--save_dir", UNDER_A_FILE],
         "choose another --save_dir"),
    case("forget-cuda-missing", "main_forget", ["--device", "cuda:0"], "cuda:0", "--device cpu",
         marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
    case("forget-resume-final-not-a-checkpoint", "main_forget", ["--resume", "--run_name", "cut"],
         "cut/checkpoint.pt", "not a finished run's checkpoint", files={"cut/checkpoint.pt": "mask.pt"}),
    case("forget-resume-truncated-state", "main_forget", ["--resume", "--unlearn", "FT", "--run_name", "cut"],
         "cut/train_state.pt", "corrupted", files={"cut/train_state.pt": "truncated.pt"}),
    case("forget-diverged-loss", "main_forget", ["--unlearn", "GA", "--unlearn_lr", "1e12", "--unlearn_epochs",
                                                 "3", "--run_name", "GA"], "at epoch", "step", "lower"),
    case("forget-diverged-weights", "main_forget", ["--unlearn", "fisher_new", "--alpha", "1e30", "--fisher_samples",
                                                    "64", "--run_name", "FF"], "NaN or infinite", "--alpha"),
    # main_backdoor
    case("backdoor-trigger-too-large", "main_backdoor", ["--trigger_size", "8"], "--trigger_size 8",
         "at most 6"),
    case("backdoor-trigger-0", "main_backdoor", ["--trigger_size", "0"], "--trigger_size", "outside"),
    case("backdoor-target-negative", "main_backdoor", ["--class_to_replace", "-1"], "--class_to_replace -1",
         "0..9"),
    case("backdoor-prune-saliency", "main_backdoor", ["--prune", "saliency"], "--mask_ratio"),
    case("backdoor-mask-ratio-nan", "main_backdoor", ["--mask_ratio", "nan"], "--mask_ratio",
         "not a finite number"),
    case("backdoor-unknown-attack", "main_backdoor", ["--attack", "blend"], "blend", "invalid choice"),
    case("backdoor-model-as-mask", "main_backdoor", ["--model_path", M, "--mask_path", M], "looks like a model"),
    case("backdoor-mask-as-model", "main_backdoor", ["--model_path", "{I}/mask.pt"], "is a mask, not a model"),
    case("backdoor-mask-other-arch", "main_backdoor", ["--model_path", M, "--mask", "{I}/mask_resnet18.pt"],
         "shape"),
    case("backdoor-model-bad-meta", "main_backdoor", ["--model_path", "{I}/bad_meta.pt"], "meta"),
    case("backdoor-dataset-offline", "main_backdoor", ["--dataset", "TinyImagenet", "--data_dir", "{T}/nowhere"],
         "TinyImagenet", "{T}/nowhere/train", "--data_dir"),
    case("backdoor-save-dir-under-file", "main_backdoor", ["--model_path", M, "--save_dir", UNDER_A_FILE],
         UNDER_A_FILE, "choose another --save_dir"),
    case("backdoor-diverged-weights", "main_backdoor", ["--model_path", M, "--unlearn", "fisher_new", "--alpha",
                                                        "1e30", "--fisher_samples", "64"], "NaN or infinite"),
    # benchmark
    case("benchmark-epochs-0", "benchmark", ["--epochs", "0"], "--epochs", "outside [1, inf)"),
    case("benchmark-unlearn-epochs-inf", "benchmark", ["--unlearn_epochs", "inf"], "--unlearn_epochs", "'inf'"),
    case("benchmark-mask-ratio-nan", "benchmark", ["--mask_ratio", "nan"], "--mask_ratio", "not a finite number"),
    case("benchmark-seeds-0", "benchmark", ["--seeds", "0"], "--seeds", "seed count"),
    case("benchmark-unknown-method", "benchmark", ["--methods", "FT,RL_proximal"], "RL_proximal", "choose from"),
    case("benchmark-unknown-preset", "benchmark", ["--preset", "imagenet"], "imagenet", "invalid choice"),
    case("benchmark-save-dir-under-file", "benchmark", ["--save_dir", UNDER_A_FILE], "choose another --save_dir"),
    case("benchmark-cuda-missing", "benchmark", ["--device", "cuda"], "'cuda'", "--device cpu",
         marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
    case("benchmark-collect-missing", "benchmark", ["--collect", "{I}/nowhere"], "{I}/nowhere", "not a folder"),
    case("benchmark-collect-broken-json", "benchmark", ["--collect", "{I}/collect_broken"], "eval_result.json",
         "not valid JSON"),
    case("benchmark-dataset-offline", "benchmark", ["--preset", "cifar10", "--data", "{T}/nodata"], "cifar10"),
    case("benchmark-result-not-a-dict", "benchmark", [], "eval_result.json",
         files={"seed_1/original/eval_result.json": b"[1, 2]"}),
    case("benchmark-collect-result-not-a-dict", "benchmark", ["--collect", "{I}/collect_list"], "eval_result.json"),
]


@pytest.mark.parametrize("script,argv,expected,files", BAD_INPUT)
def test_bad_input_one_line_exit_2_nothing_changed(script, argv, expected, files, world, tmp_path, capfd,
                                                   monkeypatch):
    offline(monkeypatch)
    save = tmp_path / "save"
    shutil.copytree(world.template, save)
    for rel, content in files.items():
        (save / rel).parent.mkdir(parents=True, exist_ok=True)
        (save / rel).write_bytes(content if isinstance(content, bytes) else (world.inputs / content).read_bytes())

    def fill(text):
        return text.replace("{S}", str(save)).replace("{I}", str(world.inputs)).replace("{T}", str(tmp_path))

    before = hash_tree(save)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        SCRIPTS[script].main([fill(a) for a in BASE[script] + argv])
    line = one_error_line(capfd.readouterr().err)
    assert exit_info.value.code == 2, line
    missing = [part for part in map(fill, expected) if part not in line]
    assert not missing, f"{missing} not in: {line}"
    after = hash_tree(save)
    changed = [path for path, digest in before.items() if after.get(path) != digest]
    assert not changed, f"a failed run changed or removed {changed}"
    written = [path for path in set(after) - set(before) if os.path.basename(path) in RESULT_FILES
               or os.path.basename(path).startswith((".tmp-", ".lock"))]
    assert not written, f"a failed run wrote {written}"
    assert not world.marker.exists(), "loading a file ran code"


# ---------------------------------------------------------------- 2. interruption and run locks

def start_and_kill(script, argv, log, epochs, tmp_path, while_stopped=None, timeout=240):
    """Start `script` in a real process; once `log` lists `epochs` epochs, stop it (SIGSTOP), call
    `while_stopped(pid)`, then SIGKILL it. Returns the pid."""
    with open(tmp_path / "child_stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, script), *map(str, argv)], cwd=REPO,
                                env=cli_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + timeout
        while len(read_log(log)) < epochs:
            assert proc.poll() is None, (tmp_path / "child_stderr.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, f"{script} did not reach epoch {epochs}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGSTOP)
        if while_stopped is not None:
            while_stopped(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def test_forget_retrain_resumes_after_sigkill(world, tmp_path, capfd):
    common = [*DIGITS_ARGS, "--num_indexes_to_replace", "60", "--unlearn", "retrain", "--unlearn_epochs", "4",
              "--decreasing_lr", "3", "--model_path", str(world.model)]
    killed, run = tmp_path / "killed", tmp_path / "killed" / "retrain"

    def second_writer(pid):
        """While the first run lives, a second run into its folder stops with one line and touches nothing."""
        before = hash_tree(run)
        capfd.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main_forget.main([*common, "--save_dir", str(killed), "--resume"])
        line = one_error_line(capfd.readouterr().err)
        assert exit_info.value.code == 2 and f"another run (pid {pid}) is writing into '{run}'" in line
        assert hash_tree(run) == before

    pid = start_and_kill("main_forget.py", [*common, "--save_dir", killed], run / "log.jsonl", 2, tmp_path,
                         second_writer)
    stopped = utils.load_torch(str(run / "train_state.pt"))["epoch"]
    assert 2 <= stopped < 4, "the run was not interrupted before its end"
    assert not (run / "eval_result.json").exists() and not (run / "checkpoint.pt").exists()
    assert (run / ".lock").read_text().split()[1] == str(pid)  # left behind by the killed run: taken over as stale

    capfd.readouterr()
    resumed = main_forget.main([*common, "--save_dir", str(killed), "--resume"])
    assert f"resuming from {run / 'train_state.pt'} after epoch {stopped}" in capfd.readouterr().out
    assert not (run / ".lock").exists()
    assert [r["epoch"] for r in read_log(run / "log.jsonl")] == [1, 2, 3, 4]
    full = main_forget.main([*common, "--save_dir", str(tmp_path / "full")])

    a = utils.load_torch(str(run / "checkpoint.pt"))["state_dict"]
    b = utils.load_torch(str(tmp_path / "full" / "retrain" / "checkpoint.pt"))["state_dict"]
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"resumed weights differ from the uninterrupted run: {differ[:5]}"
    on_disk = json.loads((run / "eval_result.json").read_text())
    assert on_disk["accuracy"] == resumed["accuracy"] == full["accuracy"]
    assert without_timings(resumed) == without_timings(full)


BENCH_TINY = ["--seeds", "1,", "--methods", "FT", "--epochs", "2", "--unlearn_epochs", "1", "--device", "cpu",
              "--no-plots"]


def test_benchmark_resumes_after_sigkill(tmp_path):
    killed = tmp_path / "killed"
    retrain = killed / "seed_1" / "retrain"
    start_and_kill("benchmark.py", [*BENCH_TINY, "--save_dir", killed], retrain / "log.jsonl", 1, tmp_path)
    assert (killed / "seed_1" / "original" / "eval_result.json").exists(), "killed before the original finished"
    assert not (retrain / "eval_result.json").exists(), "killed after retrain finished"
    assert not (killed / "results.json").exists()

    again = benchmark.main([*BENCH_TINY, "--save_dir", str(killed)])  # the same command again
    assert again["counts"] == {"ran": 3, "reused": 1, "failed": 0}  # retrain (resumed), FT, FT + mask
    assert not [p for p in hash_tree(killed) if os.path.basename(p) == ".lock"]  # the killed run's lock: gone
    full = benchmark.main([*BENCH_TINY, "--save_dir", str(tmp_path / "full")])
    assert full["counts"] == {"ran": 4, "reused": 0, "failed": 0}

    resumed_json = json.loads((killed / "results.json").read_text())
    full_json = json.loads((tmp_path / "full" / "results.json").read_text())
    for key in ("rows", "masking", "runs", "failed"):
        assert without_timings(resumed_json[key]) == without_timings(full_json[key]), key
    assert [r["label"] for r in resumed_json["rows"]] == ["Retrain", "FT", "FT + mask"]


LOCKED = {  # script: (flags added to BASE, the folder holding the lock, relative to the save_dir)
    "main_baseline": ([], "."),
    "main_imp": (["--prune", "saliency", "--model_path", M], "."),
    "main_forget": ([], "raw"),
    "main_backdoor": (["--model_path", M, "--unlearn", "raw"], "."),
}


@pytest.mark.parametrize("script", sorted(LOCKED))
def test_locked_folder_stops_a_second_run(script, world, tmp_path, capfd):
    save = tmp_path / "save"
    shutil.copytree(world.template, save)
    flags, folder = LOCKED[script]
    lock = save / folder / ".lock"
    lock.write_text(str(os.getpid()))  # a live process holds it
    before = hash_tree(save)
    argv = [a.replace("{S}", str(save)).replace("{I}", str(world.inputs)) for a in BASE[script] + flags]
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        SCRIPTS[script].main(argv)
    line = one_error_line(capfd.readouterr().err)
    assert exit_info.value.code == 2
    assert f"another run (pid {os.getpid()}) is writing into" in line and "--save_dir" in line
    assert hash_tree(save) == before


def test_benchmark_stops_on_a_locked_run_folder(tmp_path, capfd):
    lock = tmp_path / "seed_1" / "original" / ".lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(str(os.getpid()))
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main([*BENCH_TINY, "--save_dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "another run" in one_error_line(capfd.readouterr().err)
    assert not (tmp_path / "seed_1" / "original" / "failed.json").exists()


def test_stale_lock_is_taken_over_live_lock_holds(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / ".lock"
    host = socket.gethostname()
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    for content in (str(dead.pid), f"{host} {dead.pid} -", f"elsewhere {os.getpid()} 77",  # killed, requeued job
                    "", "not a pid", "0", "-1", f"{host} x -"):  # and damaged ones
        lock.write_text(content)
        with utils.RunLock(str(tmp_path)):
            assert lock.read_text() == f"{host} {os.getpid()} 77"
        assert not lock.exists()
    lock.write_text(f"elsewhere {dead.pid} 76")  # another job on another host: cannot be checked, respected
    with pytest.raises(UserError, match=rf"another run \(pid {dead.pid} on host elsewhere\)"):
        with utils.RunLock(str(tmp_path)):
            pass
    lock.write_text("1")  # pid 1 lives; seen as another user's process, where kill(pid, 0) is not permitted

    def not_permitted(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", not_permitted)
    with pytest.raises(UserError, match=r"another run \(pid 1\)"):
        with utils.RunLock(str(tmp_path)):
            pass
    assert lock.read_text() == "1"


# ---------------------------------------------------------------- 3. safe loading, in a real process

def test_code_in_a_mask_never_runs_in_a_real_process(world, tmp_path):
    save = tmp_path / "save"
    shutil.copytree(world.template, save)
    before = hash_tree(save)
    proc = run_script("main_forget.py", [*BASE["main_forget"][:-1], save, "--model_path", world.model,
                                         "--mask", world.inputs / "evil_mask.pt"], timeout=180)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "evil_mask.pt" in line and "could run code" in line
    assert not world.marker.exists()
    assert hash_tree(save) == before


# ---------------------------------------------------------------- 4. divergence

def test_diverging_loss_stops_in_a_real_process(world, tmp_path):
    save = tmp_path / "save"
    shutil.copytree(world.template, save)
    before = hash_tree(save)
    proc = run_script("main_forget.py", [*DIGITS_ARGS, "--num_indexes_to_replace", "60", "--batch_size", "16",
                                         "--unlearn", "GA", "--unlearn_lr", "1e12", "--unlearn_epochs", "2",
                                         "--save_dir", save], timeout=180)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert re.search(r"loss became (nan|-?inf) at epoch \d+, step \d+; the run diverged, lower the learning rate",
                     line), line
    assert not (save / "GA" / "eval_result.json").exists() and not (save / "GA" / "checkpoint.pt").exists()
    after = hash_tree(save)
    assert all(after.get(path) == digest for path, digest in before.items())


def test_benchmark_records_a_diverged_run_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(presets.PRESETS["digits"]["methods"], "GA", {"unlearn_epochs": 2, "unlearn_lr": 1e12})
    out = benchmark.main.__wrapped__(["--seeds", "1,", "--methods", "GA", "--epochs", "1", "--device", "cpu",
                                      "--no-plots", "--save_dir", str(tmp_path)])
    assert out["counts"] == {"ran": 2, "reused": 0, "failed": 2}  # original and retrain ran; GA, GA + mask failed
    for name in ("GA", "GA_saliency_0.5"):
        failure = json.loads((tmp_path / "seed_1" / name / "failed.json").read_text())
        # which overflows first, the loss or a weight, depends on the CPU's kernels: either is the divergence
        assert re.search(r"loss became \S+ at epoch \d+, step \d+|GA diverged: weight '[^']+'", failure["error"]), \
            failure
        assert not (tmp_path / "seed_1" / name / "eval_result.json").exists()
    by = {r["label"]: r for r in out["rows"]}
    assert by["Retrain"]["seeds"] == [1] and by["GA"]["failed_seeds"] == [1] and by["GA + mask"]["failed_seeds"] == [1]
    assert "| GA | failed |" in (tmp_path / "results.md").read_text()


# ---------------------------------------------------------------- 5. determinism

def test_same_command_twice_gives_the_same_numbers(world, tmp_path):
    common = [*DIGITS_ARGS, "--num_indexes_to_replace", "60", "--unlearn", "RL", "--unlearn_epochs", "2",
              "--mask_ratio", "0.5", "--model_path", str(world.model), "--save_dir", str(tmp_path)]
    main_forget.main([*common, "--run_name", "first"])
    main_forget.main([*common, "--run_name", "second"])
    first, second = tmp_path / "first", tmp_path / "second"
    results = [json.loads((d / "eval_result.json").read_text()) for d in (first, second)]
    assert without_timings(results[0]) == without_timings(results[1])
    for name in ("checkpoint.pt", "mask.pt"):
        a, b = (utils.load_torch(str(d / name)) for d in (first, second))
        a, b = a.get("state_dict", a), b.get("state_dict", b)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert (first / "forget_indices.json").read_text() == (second / "forget_indices.json").read_text()


@pytest.fixture
def restore_determinism():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None))
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark = saved[2]
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    if saved[3] is not None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[3]


@pytest.mark.parametrize("script", ["main_baseline", "main_imp", "main_forget", "main_backdoor"])
def test_deterministic_flag_asks_torch(script, restore_determinism, tmp_path):
    torch.use_deterministic_algorithms(False)
    argv = [a.replace("{S}", str(tmp_path)) for a in BASE[script]] + ["--class_to_replace", "99"]
    with pytest.raises(SystemExit):  # stops on the bad class, after the flag took effect
        SCRIPTS[script].main(argv)
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(SystemExit):
        SCRIPTS[script].main(argv + ["--deterministic"])
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # an op without a deterministic kernel warns
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and not torch.backends.cudnn.benchmark
