"""Training on 2 processes (gloo, CPU) equals training on one with the same global batch; a killed torchrun
run resumes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import dataset
import distributed
from commands import baseline as main_baseline
import trainer
import utils
from unlearn import METHODS
from conftest import DIGITS_ARGS, REPO, cli_env, run_script

pytestmark = pytest.mark.usefixtures("one_thread")

N_TRAIN, BATCH = 301, 64  # 5 batches an epoch, the last of 45: shards of 23 and 22 on 2 ranks
META = {"arch": "resnet20s", "dataset": "digits", "num_classes": 10, "in_channels": 1, "image_size": 8,
        "mean": [0.3], "std": [0.4], "imagenet_arch": False}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_fit(masked, lr=0.01, epochs=1):
    """resnet20s in float64 on the first N_TRAIN digits with crop+flip augmentation, lr dropping 10x after
    epoch 1; returns (state_dict, mask)."""
    raw = dataset.load_dataset("digits", train_subset=N_TRAIN)
    x = raw.x_train.double()
    model = trainer.init_model(META, 1, "cpu").double()
    mask = None
    if masked:
        g = torch.Generator().manual_seed(0)
        mask = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters() if p.dim() > 1}
    sgd = trainer.MaskedSGD(model, lr, 0.9, 5e-4, mask)
    steps = dataset.num_batches(N_TRAIN, BATCH)
    sched = trainer.lr_schedule(sgd.optimizer, steps, [1])
    trainer.fit(model, sgd, sched, epochs, lambda e: dataset.batches(x, raw.y_train, BATCH, True, "crop_flip"), steps)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, mask


# Agreement across process counts is checked in float64. In float32 this training is chaotic: a rounding
# difference (two processes sum the gradient in another order) flips ReLU decisions. Initial weights moved by
# 1 ulp end up to 7e-5 apart after the 5 steps of the plain case (the figure one process and two differed by on
# another CPU), by 16 ulp up to 0.05, while an error such as a doubled learning rate moves them by 0.5: no
# float32 tolerance both holds on every CPU and catches errors. In float64, initial weights moved by
# 16 ulp end 1.3e-13 apart, by 4096 ulp 3e-11 (both cases); one process and two differ by 2e-14 to 4e-14.
CASES = {"plain": dict(masked=False), "masked": dict(masked=True, lr=0.05, epochs=2)}
TOLERANCE = 1e-10


def streamed_fit(tree, stream=True):
    """resnet20s trained 2 epochs on an image tree (batches 8, 8, 8, 3), streamed by one worker process (or
    held as tensors)."""
    raw = dataset.load_dataset("imagenet", root=tree, input_size=12, num_workers=1) if stream else \
        dataset.load_dataset("TinyImagenet", data_dir=tree)
    meta = dict(META, dataset="imagenet", num_classes=3, in_channels=3, image_size=12, mean=[0.5] * 3, std=[0.3] * 3)
    model = trainer.init_model(meta, 1, "cpu")
    sgd = trainer.MaskedSGD(model, 0.01, 0.9, 5e-4)
    sched = trainer.lr_schedule(sgd.optimizer, 4, [])
    x, y = dataset.make_splits(raw, 2).xy("train")
    trainer.fit(model, sgd, sched, 2, lambda e: dataset.batches(x, y, 8, True, "crop_flip"), 4)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def streamed_bs(tree, stream=True):
    """BS (its labels found by an FGSM step on each rank's slice of a forget batch) for 1 epoch, batches of 4."""
    raw = dataset.load_dataset("imagenet", root=tree, input_size=12, num_workers=1) if stream else \
        dataset.load_dataset("TinyImagenet", data_dir=tree)
    meta = dict(META, dataset="imagenet", num_classes=3, in_channels=3, image_size=12, mean=[0.5] * 3, std=[0.3] * 3)
    model = trainer.init_model(meta, 1, "cpu")
    args = types.SimpleNamespace(unlearn_lr=0.05, unlearn_epochs=1, momentum=0.9, weight_decay=5e-4, decreasing_lr=[],
                                 warmup=0, batch_size=4, no_aug=False, resume=False, amp=False, bs_bound=0.1)
    METHODS["BS"](model, dataset.make_splits(raw, 2, num_indexes_to_replace=7), args, torch.device("cpu"), None)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank, world, port, out, tree):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.setup(torch.device("cpu"))
    try:
        results = {name: tiny_fit(**kw)[0] for name, kw in CASES.items()}
        results["streamed"], results["tensors"] = streamed_fit(tree), streamed_fit(tree, stream=False)
        results["streamed_bs"], results["tensors_bs"] = streamed_bs(tree), streamed_bs(tree, stream=False)
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        distributed.cleanup()


def max_diff(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_processes_equal_one(tmp_path):
    tree = str(write_tree(tmp_path / "tree"))
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), tree), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    diffs = {}
    for name, kw in CASES.items():
        single, mask = tiny_fit(**kw)
        two = ranks[0][name]
        for k in two:  # every rank holds exactly the same weights and statistics
            assert torch.equal(two[k], ranks[1][name][k]), (name, k)
        diffs[name] = max_diff(single, two)
        print(f"{name}: max |w_1proc - w_2proc| = {diffs[name]:.3g}")
        if mask:  # masked-out weights did not move on either side
            init = trainer.init_model(META, 1, "cpu").double().state_dict()
            for n, m in mask.items():
                assert torch.equal(two[n][~m], init[n][~m]), n
                assert not torch.equal(two[n], init[n]), n
    assert all(d < TOLERANCE for d in diffs.values()), diffs
    # streamed, each rank reads only its slice of each batch, and trains exactly as on the tensors' slices
    # (the last batch of 3 splits 2 + 1; both runs have the same shapes on the same rank, so the same kernels)
    for r in (0, 1):
        for kind in ("", "_bs"):  # plain training; BS, which labels each rank's slice itself
            streamed, held = ranks[r]["streamed" + kind], ranks[r]["tensors" + kind]
            assert all(torch.equal(streamed[k], held[k]) for k in held), (r, kind)


# ---------------------------------------------------------------- torchrun: kill and resume

def torchrun(script, args, **kwargs):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), os.path.join(REPO, script), *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def descendants(pid):
    """Process ids under `pid` (torchrun starts its workers in sessions of their own)."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (ValueError, OSError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def kill_all(proc):
    """SIGKILL torchrun's workers and torchrun itself, as a lost machine would stop them."""
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_killed_torchrun_run_resumes_to_the_uninterrupted_weights(tmp_path):
    common = [*DIGITS_ARGS, "--train_subset", "700", "--batch_size", "100", "--epochs", "3", "--decreasing_lr", "2"]
    full = torchrun("main_baseline.py", [*common, "--save_dir", tmp_path / "full"])
    killed_dir = tmp_path / "killed"
    killed = torchrun("main_baseline.py", [*common, "--save_dir", killed_dir])
    log = killed_dir / "log.jsonl"
    deadline = time.monotonic() + 180
    try:
        while not (log.exists() and log.read_text().count("\n") >= 1):
            assert killed.poll() is None, killed.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "training did not reach epoch 1"
            time.sleep(0.02)
        kill_all(killed)
    finally:
        kill_all(killed)
        killed.communicate()
    stopped_at = utils.load_torch(str(killed_dir / "checkpoint.pt"))["epoch"]
    assert 1 <= stopped_at < 3, "the run was not interrupted before its end"
    out = finish(torchrun("main_baseline.py", [*common, "--save_dir", killed_dir, "--resume"]))
    assert f"resuming from {killed_dir / 'checkpoint.pt'} after epoch {stopped_at}" in out
    assert out.count("accuracy:") == 1  # rank 0 alone evaluates and prints
    finish(full)
    a = utils.load_torch(str(killed_dir / "checkpoint.pt"))
    b = utils.load_torch(str(tmp_path / "full" / "checkpoint.pt"))
    assert a["epoch"] == b["epoch"] == 3
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"resumed weights differ from the uninterrupted 2-process run: {differ[:5]}"
    assert [r["epoch"] for r in map(json.loads, log.read_text().splitlines())] == [1, 2, 3]
    result = json.loads((killed_dir / "eval_result.json").read_text())
    assert set(result["accuracy"]) == {"train", "val", "test"}
    assert not (killed_dir / ".lock").exists()


# ---------------------------------------------------------------- streamed image folders

def write_tree(root, classes=3, train=10, val=4, size=12):
    """An ImageNet-layout tree of random RGB images: root/{train,val}/<class>/<i>.png (PNG: lossless)."""
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_streamed_folder_gives_the_tensor_path_splits_and_batches(tmp_path):
    tree = write_tree(tmp_path / "tree")
    tensors = dataset.load_dataset("TinyImagenet", data_dir=str(tree))
    streamed = dataset.load_dataset("imagenet", root=str(tree), input_size=12)
    assert isinstance(streamed.x_train, dataset.ImageFiles) and streamed.num_classes == 3
    assert torch.equal(streamed.y_train, tensors.y_train) and torch.equal(streamed.y_test, tensors.y_test)
    assert torch.equal(streamed.x_train[:], tensors.x_train)  # a 12x12 image is read as it is
    for kw in (dict(num_indexes_to_replace=7), dict(class_to_replace=1, num_indexes_to_replace=4),
               dict(class_to_replace=2)):
        a, b = dataset.make_splits(tensors, 5, **kw), dataset.make_splits(streamed, 5, **kw)
        assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train", "val", "forget", "retain"))
        assert a.forget_class == b.forget_class
        for name in ("forget", "retain", "test"):
            (xa, ya), (xb, yb) = a.xy(name), b.xy(name)
            assert torch.equal(xa, xb[:]) and torch.equal(ya, yb), name
    x, y = dataset.make_splits(streamed, 5, num_indexes_to_replace=7).xy("retain")
    xt, yt = dataset.make_splits(tensors, 5, num_indexes_to_replace=7).xy("retain")
    for workers in (0, 1):
        x = x.configure(workers=workers)
        torch.manual_seed(3)
        got = list(dataset.batches(x, y, 8, True, "crop_flip")) + [torch.rand(1)]
        torch.manual_seed(3)
        want = list(dataset.batches(xt, yt, 8, True, "crop_flip")) + [torch.rand(1)]
        assert len(got) == len(want) == 4 and torch.equal(got[-1], want[-1])  # the global RNG moved alike
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got[:-1], want[:-1]))


def test_imagenet_training_and_bad_folder(tmp_path):
    tree = write_tree(tmp_path / "tree", size=20)
    out = tmp_path / "run"
    main_baseline.main(["--dataset", "imagenet", "--data", str(tree), "--arch", "resnet20s", "--input_size", "16",
                        "--batch_size", "8", "--epochs", "1", "--num_workers", "1", "--device", "cpu",
                        "--save_dir", str(out)])
    result = json.loads((out / "eval_result.json").read_text())
    assert set(result["accuracy"]) == {"train", "val", "test"}
    assert utils.load_torch(str(out / "checkpoint.pt"))["meta"]["image_size"] == 16
    proc = run_script("main_baseline.py", ["--dataset", "imagenet", "--data", tmp_path / "nothing", "--epochs", "1",
                                           "--device", "cpu", "--save_dir", tmp_path / "bad"])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "train" in proc.stderr, proc.stderr
