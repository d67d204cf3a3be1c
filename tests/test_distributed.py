"""Training on 2 processes (gloo, CPU) equals training on one with the same global batch; a killed torchrun
run resumes; the saliency scores and one-shot methods shared out over 2 processes equal one process."""
import contextlib
import io
import itertools
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
from unlearn import METHODS, register
from unlearn.apply import apply
from evaluation import evaluate, predict_probs
from masks import gradient_sums, top_ratio
from conftest import DIGITS_ARGS, REPO, cli_env, run_script
from tests.test_persample import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

N_TRAIN, BATCH = 301, 64  # 5 batches an epoch, the last of 45: shards of 23 and 22 on 2 ranks
META = {"arch": "resnet20s", "dataset": "digits", "num_classes": 10, "in_channels": 1, "image_size": 8,
        "mean": [0.3], "std": [0.4], "imagenet_arch": False}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_fit(masked, lr=0.01, epochs=1, **fit_kw):
    """resnet20s in float64 on the first N_TRAIN digits with crop+flip augmentation, lr dropping 10x after
    epoch 1 (`fit_kw` go to trainer.fit); returns (state_dict, mask)."""
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
    trainer.fit(model, sgd, sched, epochs, lambda e: dataset.batches(x, raw.y_train, BATCH, True, "crop_flip"), steps,
                **fit_kw)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, mask


class Stop(Exception):
    """Raised out of the loss: the run stops there as if its job had been preempted."""


def stopping_loss(steps):
    count = itertools.count(1)

    def loss(model, x, y):
        if next(count) > steps:
            raise Stop
        return trainer.cross_entropy(model, x, y)

    return loss


def resumed_fit(run_dir):
    """The masked case (2 epochs of 5 steps) with a checkpoint every 2 steps, stopped after step 8 and resumed
    from its last checkpoint, inside epoch 2 after its step 2."""
    try:  # (not pytest.raises: its traceback would keep the stopped run's DDP, and its hooks, alive)
        tiny_fit(**CASES["masked"], run_dir=run_dir, save_every=2, loss_fn=stopping_loss(8))
        raise AssertionError("the run did not stop")
    except Stop:
        pass
    distributed.barrier()
    assert utils.load_torch(os.path.join(run_dir, "checkpoint.pt"))["step"] == 2
    return tiny_fit(**CASES["masked"], run_dir=run_dir, save_every=2, resume=True)[0]


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


def slurm_port():
    """A free port in distributed.SLURM_PORTS: a Slurm job's master port is found from its job id."""
    low, high = distributed.SLURM_PORTS
    for port in range(low + os.getpid() % 1000, high, 997):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def rank_scores(rank):
    g = torch.Generator().manual_seed(rank)
    return {"a": torch.rand(7, 5, generator=g), "b": torch.rand(11, generator=g)}


def shared_state(rank):
    """A saliency mask from scores that differ on each rank (as a non-deterministic GPU backward may make them),
    and the error when two ranks train with different masks."""
    out = {"mask": top_ratio(rank_scores(rank), 0.4)}
    try:
        distributed.check_same([torch.ones(3), torch.full((2,), float(rank))], "masks")
    except utils.UserError as err:
        out["error"] = str(err)
    return out


def sharded_eval(tree):
    """The papers' evaluation of a float64 resnet20s on digits, and the class probabilities of streamed images in
    batches of 4 (under torchrun: each rank its share of the rows, streamed ones through one DataLoader)."""
    raw = dataset.load_dataset("digits")
    raw.x_train, raw.x_test = raw.x_train.double(), raw.x_test.double()
    model = trainer.init_model(META, 1, "cpu").double()
    result = evaluate(model, dataset.make_splits(raw, 2, num_indexes_to_replace=60), torch.device("cpu"))
    del result["eval_seconds"]
    streamed = dataset.load_dataset("imagenet", root=tree, input_size=12, num_workers=1)
    meta = dict(META, dataset="imagenet", num_classes=3, in_channels=3, image_size=12, mean=[0.5] * 3, std=[0.3] * 3)
    return result, predict_probs(trainer.init_model(meta, 1, "cpu"), streamed.x_train, torch.device("cpu"), 4)


def _worker(rank, world, port, out, tree):
    """One rank, started as srun starts a task in a job of `world` tasks: Slurm's variables only."""
    os.environ.update(SLURM_STEP_ID="0", SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NTASKS=str(world),
                      SLURM_STEP_NODELIST="127.0.0.[1-4]", SLURM_JOB_ID=str(port - distributed.SLURM_PORTS[0]))
    torch.set_num_threads(1)
    distributed.setup(torch.device("cpu"))
    try:
        assert (distributed.rank(), distributed.world_size(), os.environ["MASTER_ADDR"]) == (rank, world, "127.0.0.1")
        results = {"shared": shared_state(rank), "eval": sharded_eval(tree)}
        results.update({name: tiny_fit(**kw)[0] for name, kw in CASES.items()})
        results["resumed"] = resumed_fit(os.path.join(out, "resumed"))
        results["streamed"], results["tensors"] = streamed_fit(tree), streamed_fit(tree, stream=False)
        results["streamed_bs"], results["tensors_bs"] = streamed_bs(tree), streamed_bs(tree, stream=False)
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        distributed.cleanup()


def max_diff(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_processes_equal_one(tmp_path):
    """Two ranks started through Slurm's variables (as srun starts the tasks of a job) train as one process."""
    tree = str(write_tree(tmp_path / "tree"))
    mp.spawn(_worker, args=(2, slurm_port(), str(tmp_path), tree), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # evaluation shared out over the ranks: every rank gets the one-process numbers (accuracies and attack scores
    # equal; float64 outputs of rows in other batches differ in the last bits, not in their float32 rounding)
    result, probs = sharded_eval(tree)
    for r in (0, 1):
        assert ranks[r]["eval"][0] == result, r
        assert torch.allclose(ranks[r]["eval"][1], probs, rtol=0, atol=1e-6), r
    # one mask on every rank: rank 0's; ranks that hold different masks stop with one line
    own = top_ratio(rank_scores(0), 0.4)
    assert all(torch.equal(ranks[r]["shared"]["mask"][k], own[k]) for r in (0, 1) for k in own)
    assert not all(torch.equal(top_ratio(rank_scores(1), 0.4)[k], own[k]) for k in own)
    for r in (0, 1):
        assert "the ranks hold different masks (rank 1's checksum" in ranks[r]["shared"]["error"]
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
    # resumed inside an epoch, bit-identical to the uninterrupted run: on 2 ranks, and in one process
    for r in (0, 1):
        assert all(torch.equal(ranks[r]["resumed"][k], ranks[r]["masked"][k]) for k in ranks[r]["masked"]), r
    single, resumed = tiny_fit(**CASES["masked"])[0], resumed_fit(str(tmp_path / "one"))
    assert all(torch.equal(resumed[k], single[k]) for k in single)
    # streamed, each rank reads only its slice of each batch, and trains exactly as on the tensors' slices
    # (the last batch of 3 splits 2 + 1; both runs have the same shapes on the same rank, so the same kernels)
    for r in (0, 1):
        for kind in ("", "_bs"):  # plain training; BS, which labels each rank's slice itself
            streamed, held = ranks[r]["streamed" + kind], ranks[r]["tensors" + kind]
            assert all(torch.equal(streamed[k], held[k]) for k in held), (r, kind)


# ---------------------------------------------------------------- one-shot work shared out

# Each method's flags: strong enough to move the weights visibly. Of 400 generated examples the forget set has 71
# (saliency batches of 16: the ranks' 36 + 35 examples cut batch 3; for SSD one batch of 128, on rank 0), the
# retain set 289.
ONE_SHOT = {"fisher": dict(alpha=1e-8, fisher_samples=101), "fisher_new": dict(alpha=1e-9),
            "wfisher": dict(alpha=1.0, iu_samples=40), "SSD": dict(ssd_alpha=1.0)}
ONE_SHOT_TOLERANCE = 1e-10


def one_shot_args(name, **values):
    """main_forget's arguments for a one-shot method under a saliency mask at 0.5: its flags' defaults, then
    `values` (built here: main_forget.parse would import torchvision in every process, seconds on busy cores)."""
    defaults = {flag.lstrip("-"): options.get("default") for flag, options in METHODS[name].flags}
    return types.SimpleNamespace(unlearn=name, mask_ratio=0.5, batch_size=16, resume=False, train_seed=1,
                                 **{**defaults, **values})


def float64_tiny():
    model = tiny_model().double()
    model.prune_mask = None
    return model


def one_shot_work():
    """A float64 model with every kind of layer the statistics expand, on 400 random 8x8 images of 10 classes: the
    forget set's saliency gradient sums, then each one-shot method run as main_forget runs it under a saliency
    mask at 0.5 (its weights, its mask and the number of examples the model saw on this rank)."""
    g = torch.Generator().manual_seed(0)
    raw = dataset.RawData(torch.rand(400, 1, 8, 8, generator=g, dtype=torch.float64),
                          torch.randint(0, 10, (400,), generator=g), torch.rand(1, 1, 8, 8, dtype=torch.float64),
                          torch.zeros(1, dtype=torch.long), 10)
    splits = dataset.make_splits(raw, 2, num_indexes_to_replace=71)
    out = {"gradient": gradient_sums(float64_tiny(), *splits.xy("forget"), 16, batch_mean=True)}
    for name, values in ONE_SHOT.items():
        model, rows = float64_tiny(), []
        model.register_forward_pre_hook(lambda m, inputs, rows=rows: rows.append(len(inputs[0])))
        done = apply(one_shot_args(name, **values), model, splits, torch.device("cpu"))
        out[name] = {k: v.detach().clone() for k, v in done.model.state_dict().items()}
        out[name + " mask"], out[name + " rows"] = done.saliency, sum(rows)
    return out, splits


def failing_one_shot(splits, error, after_sum):
    """Apply a one-shot method that raises `error` on rank 0 alone, before or after its statistic's all_sum."""
    @register(one_shot=True)
    def toy_fails(model, splits, args, device, mask, run_dir=None):
        if distributed.rank() == 0 and not after_sum:
            raise error
        distributed.all_sum({"n": torch.ones(1)})
        if distributed.rank() == 0:
            raise error
        return model

    try:
        return apply(one_shot_args("toy_fails"), float64_tiny(), splits, torch.device("cpu"))
    finally:
        del METHODS["toy_fails"]


def _one_shot_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    distributed.setup(torch.device("cpu"))
    try:
        results, splits = one_shot_work()
        try:  # rank 0's bug: its traceback there, one line on the other ranks
            failing_one_shot(splits, RuntimeError("toy bug"), after_sum=False)
        except (RuntimeError, utils.UserError) as err:
            results["bug"] = f"{type(err).__name__}: {err}"
        stderr = io.StringIO()  # rank 0's UserError, after the others finished: the command line's one line
        with contextlib.redirect_stderr(stderr):
            try:
                utils.cli(lambda argv: failing_one_shot(splits, utils.UserError("toy: strength 7 is out of range"),
                                                        after_sum=True))()
            except SystemExit as exit_:
                results["exit"] = exit_.code
        results["stderr"] = stderr.getvalue()
        torch.save(results, os.path.join(out, f"one_shot{rank}.pt"))
    finally:
        distributed.cleanup()


def spawn_two(fn, *args, timeout=180):
    """fn(rank, *args) on 2 processes; a hang fails the test instead of stalling the suite."""
    ctx = mp.spawn(fn, args=(2, *args), nprocs=2, join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail(f"{fn.__name__} did not finish in {timeout} s")


def test_one_shot_work_shared_out_equals_one_process(tmp_path):
    """The saliency gradient, masks and one-shot methods' weights from 2 ranks, each computing its share of the
    statistics, equal one process's; a one-shot method failing on rank 0 stops every rank with one line."""
    spawn_two(_one_shot_worker, free_port(), str(tmp_path))
    ranks = [torch.load(tmp_path / f"one_shot{r}.pt", weights_only=True) for r in (0, 1)]
    single, _ = one_shot_work()
    diffs = {"gradient": max_diff(single["gradient"], ranks[0]["gradient"])}
    for name in ONE_SHOT:
        init = float64_tiny().state_dict()
        assert not all(torch.equal(single[name][k], init[k]) for k in init), name  # the method moved weights
        for r in (0, 1):
            mask = ranks[r][name + " mask"]
            assert all(torch.equal(mask[k], single[name + " mask"][k]) for k in mask), (name, r)
            assert all(torch.equal(ranks[r][name][k], ranks[0][name][k]) for k in init), (name, r)
            assert ranks[r][name + " rows"] < single[name + " rows"] * 0.8, (name, r)  # the work was shared out
        diffs[name] = max_diff(single[name], ranks[0][name])
    print("max |1 process - 2 processes|:", {k: f"{v:.2g}" for k, v in diffs.items()},
          {name: [single[name + " rows"]] + [r[name + " rows"] for r in ranks] for name in ONE_SHOT})
    assert diffs.pop("gradient") < 1e-12 and all(d < ONE_SHOT_TOLERANCE for d in diffs.values()), diffs
    assert ranks[0]["bug"] == "RuntimeError: toy bug"
    assert ranks[1]["bug"] == "UserError: RuntimeError on rank 0: toy bug"
    assert [r["exit"] for r in ranks] == [2, 2]
    assert ranks[0]["stderr"] == "error: toy: strength 7 is out of range\n"
    assert ranks[1]["stderr"] == "rank 1: error: toy: strength 7 is out of range\n"


# ---------------------------------------------------------------- torchrun: kill and resume

def torchrun(script, args, nodes=1, node_rank=0, port=None):
    """2 ranks: `nodes` = 1, both on this node; `nodes` = 2, this call is node `node_rank` (one rank) of a run whose
    other node is started by another call with the same `port`, as torchrun on two hosts."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node_rank", str(node_rank),
           "--nproc_per_node", str(2 // nodes), "--master_addr", "127.0.0.1", "--master_port", str(port or free_port()),
           os.path.join(REPO, script), *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


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
    """Killed and resumed on one node of 2 ranks, it ends as the uninterrupted run on 2 nodes of one rank each."""
    common = [*DIGITS_ARGS, "--train_subset", "700", "--batch_size", "100", "--epochs", "3", "--decreasing_lr", "2"]
    port = free_port()  # the uninterrupted run on 2 simulated nodes of one rank each
    full = [torchrun("main_baseline.py", [*common, "--save_dir", tmp_path / "full"], 2, node, port) for node in (0, 1)]
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
    for proc in full:
        finish(proc)
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


def test_slurm_variables_give_torchruns():
    assert [distributed.first_host(s) for s in ("gpu[07-09,12],cpu1", "r[1-2]-n[3-4]", "a1,b2", "node")] == \
        ["gpu07", "r1-n3", "a1", "node"]
    task = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "8",
            "SLURM_NTASKS": "8", "SLURM_JOB_ID": "123", "SLURM_JOB_NODELIST": "n[3-6]"}
    env = dict(task)
    distributed._from_slurm(env)
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")} == \
        {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n3", "MASTER_PORT": "20123"}
    for other in ({"SLURM_STEP_ID": None}, {"SLURM_STEP_NUM_TASKS": "1"}, {"TORCHELASTIC_RUN_ID": "x"}):
        # the batch script itself (no srun step), a one-task step, torchrun inside the job: nothing set
        env = {k: v for k, v in {**task, **other}.items() if v is not None}
        distributed._from_slurm(env)
        assert "RANK" not in env, other
