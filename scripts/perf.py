"""Performance figures, measured side by side on this machine: `python scripts/perf.py [--device cuda]`.

1. IU and FF time as multiples of one FT epoch (digits, resnet18 by default), batched (unlearn/persample.py) vs a
   straightforward per-example loop of the same math (kept here as the baseline);
2. masked vs unmasked training-step time;
3. images/s of the tensor data path (batched augmentation on the device) vs torchvision per-image transforms
   through a DataLoader, on CIFAR-shaped data;
4. resnet18 training throughput at 32x32 in GFLOP/s, as a share of this machine's float32 matmul rate;
5. time of the SVC attack as the number of examples grows;
6. every other registered method's cost in FT-epochs (digits, resnet18 by default): one epoch of a training
   method at its flags' defaults, the whole update of a one-shot method.
"""
import argparse
import contextlib
import io
import os
import statistics
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataset  # noqa: E402
import trainer  # noqa: E402
from evaluation import forget_efficacy  # noqa: E402
from unlearn import METHODS, persample  # noqa: E402
from unlearn.influence import grad_sum, samples_for, woodbury_weights  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeat=1):
    """(seconds of the fastest of `repeat` runs, the least disturbed by other load; the last result)."""
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return min(times), out


def method_args(**kw):
    base = dict(unlearn_lr=0.01, unlearn_epochs=1, momentum=0.9, weight_decay=5e-4, decreasing_lr=[], warmup=0,
                batch_size=256, no_aug=False, resume=False, train_seed=1, alpha=1e-6, no_l1_epochs=0, grad_chunk=0,
                fisher_samples=0, amp=False, iu_samples=500, iu_memory=4.0, iu_damping=1.0)
    base.update(kw)
    return types.SimpleNamespace(**base)


def loop_grad_rows(model, x, y):
    """Per-example gradients, one backward pass each (the published implementations' way)."""
    model.eval()
    params = list(model.parameters())
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        yield torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def loop_wfisher(model, splits, args, n):
    """IU's Newton step with G (n x P) built one example at a time: the step and the seconds taken by the mean
    gradients v, by the rows of G (growing with n) and by the Gram matrix and solve (growing with n^2)."""
    xf, yf = splits.xy("forget")
    xr, yr = splits.xy("retain")
    t = [time.perf_counter()]
    v = len(xf) / (len(xf) + len(xr)) * (grad_sum(model, xf, yf, args.batch_size) / len(xf)
                                         - grad_sum(model, xr, yr, args.batch_size) / len(xr))
    t.append(time.perf_counter())
    G = torch.stack(list(loop_grad_rows(model, xr[:n], yr[:n])))
    t.append(time.perf_counter())
    w = woodbury_weights(G @ G.T, G @ v, args.iu_damping).float()
    step = args.alpha * (v - G.T @ w) / args.iu_damping
    t.append(time.perf_counter())
    return step, np.diff(t)


def loop_fisher(model, x, y):
    """sum_i g_i^2, one backward pass per example (the reference `fisher`'s way)."""
    total = 0
    for row in loop_grad_rows(model, x, y):
        total = total + row.square()
    return total


def loop_fisher_new(model, x, batch=32):
    """The reference `fisher_new` estimator: per batch of 32, one backward pass per class of the batch-mean
    cross-entropy with every target set to that class."""
    model.eval()
    params = list(model.parameters())
    total, batches = 0, 0
    for s in range(0, len(x), batch):
        out = model(x[s:s + batch])
        prob = F.softmax(out, 1).detach()
        for c in range(out.shape[1]):
            loss = F.cross_entropy(out, torch.full((len(out),), c, device=x.device))
            g = flat(torch.autograd.grad(loss, params, retain_graph=True))
            total = total + prob[:, c].mean() * g.square()
        batches += 1
    return total / batches


def flat(tensors):
    return torch.cat([t.flatten() for t in tensors])


def rel_diff(a, b):
    return float((a - b).abs().max() / b.abs().max())


def gram_sizes(model, x, y):
    """(MB recorded per example, multiply-adds per pair of examples in IU's Gram matrix, parameters)."""
    mods = persample.layers(model)
    rec = persample.Pass(model, mods, x[:1])
    outs = rec.backward(y[:1])
    pair = 0
    for _, m in mods:
        pair += sum(q.numel() for q in m.parameters(recurse=False))
        if not isinstance(m, persample.BATCHNORM) and m in outs:
            L, cout = persample._cols(m, outs[m]).shape[1:]
            cin = persample._rows(m, rec.inputs[m]).shape[2]
            pair += min(cin * cout, L * L * (cin + cout)) - m.weight.numel()
    return 4 * rec.floats() / 2**20, pair, sum(q.numel() for q in model.parameters())


def section_methods(args, device):
    raw = dataset.load_dataset("digits")
    splits = dataset.make_splits(raw, seed=2, num_indexes_to_replace=135).to(device)
    meta = trainer.model_meta(types.SimpleNamespace(arch=args.arch, dataset="digits", imagenet_arch=False), raw)
    fresh = lambda: trainer.init_model(meta, 0, device)  # noqa: E731
    n_retain = len(splits.retain)
    ft, _ = timed(lambda: METHODS["FT"](fresh(), splits, method_args(), device, None), device, repeat=3)
    print(f"\n[1] {args.arch} on digits, {n_retain} retain / {len(splits.forget)} forget examples; "
          f"one FT epoch = {ft:.2f} s")
    xr, yr = splits.xy("retain")
    mb, pair, params = gram_sizes(fresh(), xr, yr)
    meta32 = {**meta, "dataset": "cifar10", "in_channels": 3, "image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    mb32 = gram_sizes(trainer.init_model(meta32, 0, device), torch.rand(1, 3, 32, 32, device=device), yr)[0]
    print(f"IU records {mb:.2f} MB per example ({mb32:.2f} MB at 32x32); its Gram matrix costs {pair:,} "
          f"multiply-adds per pair of examples ({params:,} parameters)")
    m = fresh()
    w0 = flat(m.parameters()).detach()
    rows = []
    ma = method_args(alpha=1.0)  # a unit Newton step, large enough to compare in float32
    k = min(args.loop_examples, n_retain)
    n_iu = samples_for(m, ma, xr)
    loop_step, (t_v, t_rows, t_gram) = loop_wfisher(m, splits, ma, k)
    mk = method_args(alpha=1.0, iu_samples=k)
    ours_k, moved = timed(lambda: METHODS["wfisher"](fresh(), splits, mk, device, None), device)
    diff = rel_diff(flat(moved.parameters()).detach() - w0, loop_step)
    rows.append((f"IU (wfisher), Hessian from {k} examples", ours_k, t_v + t_rows + t_gram, False, diff))
    for n in sorted({n_iu, min(1000, n_retain)}):
        mn = method_args(alpha=1.0, iu_samples=n)
        ours_n, _ = timed(lambda: METHODS["wfisher"](fresh(), splits, mn, device, None), device, repeat=2)  # noqa: B023
        scaled = t_v + t_rows * n / k + t_gram * (n / k) ** 2
        label = " (default)" if n == n_iu else ""
        rows.append((f"IU (wfisher), Hessian from {n}{label}", ours_n, scaled, n != k, None))
    ours, _ = timed(lambda: METHODS["fisher"](fresh(), splits, ma, device, None), device, repeat=2)
    loop, expected = timed(lambda: loop_fisher(m, xr[:k], yr[:k]), device)
    diff = rel_diff(flat(persample.sq_grad_sums(m, xr[:k], yr[:k]).values()), expected)
    rows.append(("FF fisher (empirical Fisher)", ours, loop * n_retain / k, k < n_retain, diff))
    ours, _ = timed(lambda: METHODS["fisher_new"](fresh(), splits, ma, device, None), device, repeat=2)
    loop, expected = timed(lambda: loop_fisher_new(m, xr), device)
    diff = rel_diff(flat(persample.group_sq_grads(m, xr, 32).values()), expected)
    rows.append(("FF fisher_new (Golatkar et al., the papers' FF)", ours, loop, False, diff))
    print(f"{'method':44s} {'ours':>10s} {'FT-epochs':>10s} {'loop':>10s} {'FT-epochs':>10s} {'speed-up':>9s} "
          f"{'max rel. diff':>14s}")
    for name, fast, slow, est, diff in rows:
        mark = "*" if est else " "
        same = "" if diff is None else f"{diff:14.1e}"
        print(f"{name:44s} {fast:8.2f} s {fast / ft:10.1f} {slow:8.2f} s{mark} {slow / ft:10.1f} "
              f"{slow / fast:8.1f}x {same}")
    print(f"  * loop estimated from {k} examples: per-example time x n, and for IU's "
          f"Gram matrix and solve x (n / {k})^2; max rel. diff: largest |ours - loop| over largest |loop|; "
          f"times: fastest of 2 runs (FT: of 3)")


def section_masked_step(args, device):
    meta = {"arch": args.step_arch, "dataset": "cifar", "num_classes": 10, "in_channels": 3, "image_size": 32,
            "mean": [0.5] * 3, "std": [0.25] * 3, "imagenet_arch": False}
    model = trainer.init_model(meta, 0, device)
    x = torch.rand(args.step_batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.step_batch,), device=device)
    mask = {n: torch.rand(p.shape, device=device) < 0.5 for n, p in model.named_parameters()}
    opts = {"unmasked": trainer.MaskedSGD(model, 0.01, 0.9, 5e-4), "masked": trainer.MaskedSGD(model, 0.01, 0.9, 5e-4,
                                                                                                 mask)}

    def step(sgd):
        loss = F.cross_entropy(model(x), y)
        sgd.zero_grad()
        loss.backward()
        sgd.step()

    times = {k: [] for k in opts}
    for _ in range(2):
        for sgd in opts.values():
            step(sgd)
    for _ in range(args.step_reps):
        for k, sgd in opts.items():
            times[k].append(timed(lambda: step(sgd), device)[0])  # noqa: B023
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n[2] training step, {args.step_arch} batch {args.step_batch} at 32x32: "
          f"unmasked {med['unmasked'] * 1e3:.1f} ms, masked {med['masked'] * 1e3:.1f} ms, "
          f"ratio {med['masked'] / med['unmasked']:.3f} "
          f"(median of {args.step_reps} alternating steps)")


def section_data_path(args, device):
    import torchvision.transforms as T
    from PIL import Image
    n = args.data_images
    images = np.random.RandomState(0).randint(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.random.RandomState(1).randint(0, 10, n)

    class PerImage(torch.utils.data.Dataset):
        transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])

        def __len__(self):
            return n

        def __getitem__(self, i):
            return self.transform(Image.fromarray(images[i])), int(labels[i])

    loader = torch.utils.data.DataLoader(PerImage(), batch_size=256, shuffle=True, num_workers=args.workers)

    def per_image():
        for xb, yb in loader:
            xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)
    y = torch.from_numpy(labels).to(device)

    def tensor_path():
        for xb, _ in dataset.batches(x, y, 256, shuffle=True, aug="crop_flip"):
            sync(xb.device)

    t_img, _ = timed(per_image, device)
    t_tensor, _ = timed(tensor_path, device, repeat=3)
    print(f"\n[3] data path, {n} CIFAR-shaped images with crop+flip: per-image DataLoader ({args.workers} workers) "
          f"{n / t_img:,.0f} img/s, tensor path {n / t_tensor:,.0f} img/s, ratio {t_img / t_tensor:.1f}x")


def section_throughput(args, device):
    from torch.utils.flop_counter import FlopCounterMode
    meta = {"arch": "resnet18", "dataset": "cifar", "num_classes": 10, "in_channels": 3, "image_size": 32,
            "mean": [0.5] * 3, "std": [0.25] * 3, "imagenet_arch": False}
    model = trainer.init_model(meta, 0, device)
    sgd = trainer.MaskedSGD(model, 0.01, 0.9, 5e-4)
    b = args.throughput_batch
    x = torch.rand(b, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (b,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = F.cross_entropy(model(x), y)
        sgd.zero_grad()
        loss.backward()
        sgd.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    t, _ = timed(step, device, repeat=args.throughput_reps)
    size = 4096 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device)
    tm, _ = timed(lambda: a @ a, device, repeat=5)
    mm = 2 * size ** 3 / tm / 1e9
    got = flops / t / 1e9
    print(f"\n[4] resnet18 training at 32x32, batch {b}{' bf16' if args.amp else ''}: {flops / b / 1e9:.2f} GFLOP per "
          f"image, {b / t:,.0f} img/s, {got:,.1f} GFLOP/s = {100 * got / mm:.0f}% of float32 matmul "
          f"({mm:,.1f} GFLOP/s at {size}x{size})")


def section_svc():
    from sklearn.svm import SVC  # noqa: F401  (imported before timing)
    print("\n[5] SVC membership-inference attack (5 features, shadow n members + n non-members, n forget):")
    rng = np.random.RandomState(0)
    for n in (250, 500, 1000, 2000, 4000):
        def part(conf, n=n):
            p = rng.dirichlet(np.ones(10), n) * (1 - conf)[:, None]
            y = rng.randint(0, 10, n)
            p[np.arange(n), y] += conf
            return torch.tensor(p, dtype=torch.float32), torch.tensor(y)
        sets = [part(rng.uniform(0.6, 1.0, n)), part(rng.uniform(0.2, 1.0, n)), part(rng.uniform(0.3, 1.0, n))]
        t = time.perf_counter()
        forget_efficacy(*sets)
        print(f"  n={n:5d}: {time.perf_counter() - t:6.2f} s")


def section_all_methods(args, device):
    from commands import forget
    raw = dataset.load_dataset("digits")
    splits = dataset.make_splits(raw, seed=2, num_indexes_to_replace=135).to(device)
    meta = trainer.model_meta(types.SimpleNamespace(arch=args.arch, dataset="digits", imagenet_arch=False), raw)
    margs = forget.parse(["--dataset", "digits", "--arch", args.arch, "--unlearn_epochs", "1", "--batch_size",
                          "256", "--decreasing_lr", "100"])
    margs.unlearn_lr = margs.lr = 1e-3
    margs.epochs = 1  # GA_prune and GA_prune_bi read --lr and --epochs

    def run(name):
        def call():
            with contextlib.redirect_stdout(io.StringIO()):  # the epoch lines
                return METHODS[name](trainer.init_model(meta, 0, device), splits, margs, device, None)
        return call

    ft, _ = timed(run("FT"), device, repeat=3)
    print(f"\n[6] {args.arch} on digits, {len(splits.retain)} retain / {len(splits.forget)} forget examples; one FT "
          f"epoch = {ft:.2f} s (fastest of 3); each method: fastest of 2, flags at their defaults")
    print(f"{'method':14s} {'seconds':>8s} {'FT-epochs':>10s}  measured")
    done = {"raw", "retrain", "FT", "fisher", "fisher_new", "wfisher"}  # retrain is an original training run
    for name in sorted(set(METHODS) - done, key=str.lower):
        seconds, _ = timed(run(name), device, repeat=2)
        what = "the whole update" if name == "SSD" else "one epoch"
        print(f"{name:14s} {seconds:8.2f} {seconds / ft:10.1f}  {what}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--arch", default="resnet18", help="model for section 1")
    p.add_argument("--loop_examples", type=int, default=96, help="examples the per-example loops are timed on")
    p.add_argument("--step_arch", default="resnet18")
    p.add_argument("--step_batch", type=int, default=64)
    p.add_argument("--step_reps", type=int, default=10)
    p.add_argument("--data_images", type=int, default=4096)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--throughput_batch", type=int, default=64)
    p.add_argument("--throughput_reps", type=int, default=3)
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast in section 4")
    p.add_argument("--sections", default="1,2,3,4,5,6")
    args = p.parse_args()
    from utils import resolve_device
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    todo = set(args.sections.split(","))
    for key, fn in (("1", section_methods), ("2", section_masked_step), ("3", section_data_path),
                    ("4", section_throughput)):
        if key in todo:
            fn(args, device)
    if "5" in todo:
        section_svc()
    if "6" in todo:
        section_all_methods(args, device)


if __name__ == "__main__":
    main()
