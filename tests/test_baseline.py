"""main_baseline.py end to end: training output, exact resume after SIGKILL, bad input, checkpoint loading."""
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

from commands import baseline as main_baseline
import trainer
import utils
from conftest import DIGITS_ARGS, REPO, Evil, cli_env, hash_tree, run_script
from dataset import RawData, load_dataset
from evaluation import accuracy, predict_probs
from models import MODELS
from utils import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- training

def test_training_writes_checkpoint_results_and_log(digits_run):
    assert "accuracy:" in digits_run.proc.stdout
    result = json.loads(digits_run.eval_result.read_text())
    acc = result["accuracy"]
    assert set(acc) == {"train", "val", "test"}
    assert all(isinstance(v, float) and 0 <= v <= 100 for v in acc.values())
    assert acc["train"] > 30 and acc["test"] > 30  # well above chance (10%) after 3 epochs
    assert result["args"]["epochs"] == 3 and result["args"]["dataset"] == "digits"
    log = read_log(digits_run.log)
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert all(r["loss"] > 0 and "val_acc" in r for r in log)
    state = utils.load_torch(str(digits_run.checkpoint))
    assert state["epoch"] == 3 and state["meta"]["arch"] == "resnet20s" and "optimizer" in state
    assert all(isinstance(v, torch.Tensor) for v in state["state_dict"].values())
    assert not [n for n in os.listdir(digits_run.dir) if n.startswith(".tmp-")]  # no half-written files
    # written through a temp file, yet with the permissions of any other new file (as log.jsonl has)
    mode = os.stat(digits_run.log).st_mode & 0o777
    assert os.stat(digits_run.checkpoint).st_mode & 0o777 == mode
    assert os.stat(digits_run.eval_result).st_mode & 0o777 == mode


def test_checkpoint_reloads_to_the_reported_accuracy(digits_run):
    raw = load_dataset("digits")
    args = SimpleNamespace(arch="resnet20s", dataset="digits", imagenet_arch=False)
    model, meta = trainer.load_model(str(digits_run.checkpoint), args, raw, torch.device("cpu"))
    assert meta["arch"] == "resnet20s"
    assert all(p.device.type == "cpu" for p in model.state_dict().values())
    test_acc = accuracy(predict_probs(model, raw.x_test, torch.device("cpu")), raw.y_test)
    reported = json.loads(digits_run.eval_result.read_text())["accuracy"]["test"]
    assert test_acc == pytest.approx(reported, abs=1e-6)


@pytest.mark.parametrize("arch", ["resnet18", "vgg16_bn"])
def test_other_archs_train_one_epoch(tmp_path, arch):
    main_baseline.main(["--dataset", "digits", "--arch", arch, "--epochs", "1", "--batch_size", "256",
                        "--device", "cpu", "--save_dir", str(tmp_path)])
    assert [r["epoch"] for r in read_log(tmp_path / "log.jsonl")] == [1]
    assert set(json.loads((tmp_path / "eval_result.json").read_text())["accuracy"]) == {"train", "val", "test"}
    assert utils.load_torch(str(tmp_path / "checkpoint.pt"))["meta"]["arch"] == arch


# ---------------------------------------------------------------- resume

def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, capsys):
    common = [*DIGITS_ARGS, "--epochs", "5", "--decreasing_lr", "3"]
    killed = tmp_path / "killed"
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "main_baseline.py"), *common,
                                 "--save_dir", str(killed)], cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                                stderr=err)
        deadline = time.monotonic() + 240
        try:
            while not (os.path.exists(killed / "log.jsonl") and len(read_log(killed / "log.jsonl")) >= 2):
                assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
                assert time.monotonic() < deadline, "training did not reach epoch 2"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stopped_at = utils.load_torch(str(killed / "checkpoint.pt"))["epoch"]
    assert 2 <= stopped_at < 5, "the run was not interrupted before its end"

    main_baseline.main([*common, "--save_dir", str(killed), "--resume"])
    assert f"resuming from {killed / 'checkpoint.pt'} after epoch {stopped_at}" in capsys.readouterr().out
    full = tmp_path / "full"
    main_baseline.main([*common, "--save_dir", str(full)])

    resumed_state = utils.load_torch(str(killed / "checkpoint.pt"))
    full_state = utils.load_torch(str(full / "checkpoint.pt"))
    assert resumed_state["epoch"] == full_state["epoch"] == 5
    a, b = resumed_state["state_dict"], full_state["state_dict"]
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"resumed weights differ from the uninterrupted run: {differ[:5]}"
    assert [r["epoch"] for r in read_log(killed / "log.jsonl")][-(5 - stopped_at):] == list(range(stopped_at + 1, 6))
    assert read_log(killed / "log.jsonl")[-1]["lr"] == pytest.approx(read_log(full / "log.jsonl")[-1]["lr"])


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing overwritten

def test_evil_pickle_is_live(tmp_path):
    """The payload used below really runs code when loaded without weights_only (so its refusal means something)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps({"state_dict": {}, "x": Evil(str(marker))}))
    assert marker.exists()


def _bad_case(case, tmp_path, run_dir):
    """argv (and expected message parts) for one kind of bad input; may prepare files."""
    base = [*DIGITS_ARGS, "--epochs", "1", "--save_dir", str(run_dir)]
    if case == "unknown_dataset":
        return [*base, "--dataset", "mnist2"], ["mnist2", "digits", "cifar10", "fashionmnist"]
    if case == "unknown_arch":
        return [*base, "--arch", "resnet1000"], ["resnet1000", *sorted(MODELS)]
    if case == "dataset_missing_offline":
        data = tmp_path / "nodata"
        return [*base, "--dataset", "cifar10", "--data", str(data)], ["cifar10", str(data), "cifar-10-python.tar.gz"]
    if case == "too_many_to_forget":
        return [*base, "--class_to_replace", "3", "--num_indexes_to_replace", "5000"], ["5000", "class 3"]
    if case == "class_outside":
        return [*base, "--class_to_replace", "10"], ["--class_to_replace 10", "outside"]
    if case == "unwritable_save_dir":
        blocker = tmp_path / "a_file"
        blocker.write_text("not a folder")
        return [*base, "--save_dir", str(blocker / "run")], [str(blocker / "run")]
    if case == "corrupt_checkpoint":
        with open(run_dir / "checkpoint.pt", "r+b") as f:
            f.seek(100)
            f.write(b"\xde\xad\xbe\xef" * 1000)
        return [*base, "--resume"], ["refusing", "checkpoint.pt", "corrupted"]
    if case == "truncated_checkpoint":
        data = (run_dir / "checkpoint.pt").read_bytes()
        (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])
        return [*base, "--resume"], ["refusing", "checkpoint.pt"]
    if case == "resume_with_another_arch":
        return [*base, "--arch", "resnet18", "--resume"], ["cannot resume", "checkpoint.pt", "--save_dir"]
    if case in ("code_in_checkpoint", "code_in_plain_pickle"):
        marker = tmp_path / "pwned"
        if case == "code_in_checkpoint":
            payload = {"state_dict": {}, "epoch": 1, "optimizer": {}, "x": Evil(str(marker))}
            torch.save(payload, run_dir / "checkpoint.pt")
        else:
            (run_dir / "checkpoint.pt").write_bytes(pickle.dumps(Evil(str(marker)), protocol=2))
        return [*base, "--resume"], ["refus", "checkpoint.pt", "could run code"]
    raise AssertionError(case)


BAD_CASES = ["unknown_dataset", "unknown_arch", "dataset_missing_offline", "too_many_to_forget", "class_outside",
             "unwritable_save_dir", "corrupt_checkpoint", "truncated_checkpoint", "code_in_checkpoint",
             "code_in_plain_pickle", "resume_with_another_arch"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_one_line_exit_2_nothing_overwritten(case, tmp_path, digits_run, capfd, monkeypatch):
    import torchvision.datasets.cifar as cifar_mod
    monkeypatch.setattr(cifar_mod.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    for key, value in cli_env().items():
        if "proxy" in key.lower():
            monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    shutil.copytree(digits_run.dir, run_dir)  # an earlier run's results must survive the failed one
    argv, expected = _bad_case(case, tmp_path, run_dir)
    before_run, before_all = hash_tree(run_dir), hash_tree(tmp_path)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main_baseline.main(argv)
    err = capfd.readouterr().err
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0]
    missing = [part for part in expected if part not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"
    assert hash_tree(run_dir) == before_run  # nothing added, removed or changed in the run folder
    after_all = hash_tree(tmp_path)
    assert all(after_all.get(path) == digest for path, digest in before_all.items())
    assert not (tmp_path / "pwned").exists()


def test_bad_input_from_the_command_line(tmp_path):
    """The same in a real process: exit status 2, one line, no traceback, no network needed."""
    proc = run_script("main_baseline.py", [*DIGITS_ARGS, "--dataset", "cifar10", "--data", tmp_path / "d",
                                           "--epochs", "1", "--save_dir", tmp_path / "r"], timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "cifar10" in proc.stderr and str(tmp_path / "d") in proc.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- checkpoints across devices and formats

def _as_saved_on_cuda(tensors, path):
    """Write `tensors` as torch.save would on a CUDA machine (storage location 'cuda:0')."""
    buf = io.BytesIO()
    torch.save(tensors, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
                assert cpu in data
                data = data.replace(cpu, cuda)
            dst.writestr(info, data)


def test_checkpoint_saved_on_cuda_loads_on_cpu(tmp_path):
    tensors = {"state_dict": {"w": torch.randn(3, 4), "b": torch.arange(5)}, "epoch": 2}
    path = tmp_path / "cuda.pt"
    _as_saved_on_cuda(tensors, path)
    if not torch.cuda.is_available():  # the file really is a CUDA checkpoint: a plain load fails here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    loaded = utils.load_torch(str(path))
    assert loaded["epoch"] == 2
    for k, v in tensors["state_dict"].items():
        assert loaded["state_dict"][k].device.type == "cpu" and torch.equal(loaded["state_dict"][k], v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device to save a real GPU checkpoint from")
def test_real_gpu_checkpoint_loads_on_cpu(tmp_path, digits_run):
    state = utils.load_torch(str(digits_run.checkpoint))
    state["state_dict"] = {k: v.to("cuda") for k, v in state["state_dict"].items()}
    utils.save_torch(state, str(tmp_path / "gpu.pt"))
    loaded = utils.load_torch(str(tmp_path / "gpu.pt"))
    assert all(v.device.type == "cpu" for v in loaded["state_dict"].values())
    raw = load_dataset("digits")
    args = SimpleNamespace(arch="resnet20s", dataset="digits", imagenet_arch=False)
    model, _ = trainer.load_model(str(tmp_path / "gpu.pt"), args, raw, torch.device("cpu"))
    assert all(p.device.type == "cpu" for p in model.parameters())


def _reference_resnet18(num_classes=10):
    """The reference's CIFAR ResNet-18: torchvision's, 3x3 stem, no max-pool."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    for m in net.modules():  # non-trivial batch-norm statistics, so a mix-up of keys would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _tiny_cifar_raw():
    g = torch.Generator().manual_seed(0)
    return RawData(torch.rand(20, 3, 32, 32, generator=g), torch.arange(20) % 10,
                   torch.rand(10, 3, 32, 32, generator=g), torch.arange(10), 10, "crop_flip")


@pytest.mark.parametrize("prefix", ["", "module."])
def test_reference_format_checkpoint_loads_into_resnet18(tmp_path, prefix):
    ref = _reference_resnet18()
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    sd = {**ref.state_dict(), "normalize.mean": mean, "normalize.std": std}
    torch.save({"state_dict": {prefix + k: v for k, v in sd.items()}, "epoch": 182, "best_sa": 95.1},
               tmp_path / "ref.pt")
    args = SimpleNamespace(arch="resnet18", dataset="cifar10", imagenet_arch=False)
    model, meta = trainer.load_model(str(tmp_path / "ref.pt"), args, _tiny_cifar_raw(), torch.device("cpu"))
    ours = model.state_dict()
    assert ours.keys() == sd.keys()
    assert all(torch.equal(ours[k], sd[k]) for k in sd)
    model.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = ref((x - mean[None, :, None, None]) / std[None, :, None, None])
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_checkpoint_for_another_arch_is_user_error(tmp_path):
    sd = {"normalize.mean": torch.zeros(3), "normalize.std": torch.ones(3), **_reference_resnet18().state_dict()}
    torch.save({"state_dict": sd}, tmp_path / "ref.pt")
    args = SimpleNamespace(arch="vgg16_bn", dataset="cifar10", imagenet_arch=False)
    with pytest.raises(UserError, match="does not fit --arch vgg16_bn"):
        trainer.load_model(str(tmp_path / "ref.pt"), args, _tiny_cifar_raw(), torch.device("cpu"))
