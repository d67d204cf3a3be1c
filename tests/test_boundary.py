"""BS and BE (Boundary Unlearning, CVPR 2023) and SalUn-soft (RL with a proximal soft-threshold): their
definitions, the mask contract for each, and main_forget.py end to end."""
import copy
import types

import pytest
import torch
import torch.nn.functional as F

import dataset
from commands import forget as main_forget
import trainer
from conftest import DIGITS_ARGS
from unlearn import METHODS, loop
from utils import UserError

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread_module")


def method_args(**kw):
    base = dict(unlearn_lr=0.05, unlearn_epochs=1, momentum=0.9, weight_decay=5e-4, decreasing_lr=[], warmup=0,
                batch_size=16, no_aug=True, resume=False, train_seed=1, amp=False, rl_order="mixed",
                dataset="digits", bs_bound=0.1, salun_soft_ratio=0.5)
    base.update(kw)
    return types.SimpleNamespace(**base)


def random_mask(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()}


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def trained(digits_run):
    args = types.SimpleNamespace(arch="resnet20s", dataset="digits", allow_dataset_change=False)
    return trainer.load_model(digits_run.checkpoint, args, dataset.load_dataset("digits"), "cpu")[0].eval()


def capture_run(monkeypatch):
    """Replace the shared loop: record what a method gives it."""
    seen = {}
    monkeypatch.setattr(loop, "run", lambda model, args, mask, make, steps, loss_fn=trainer.cross_entropy, **kw:
                        seen.update(model=model, mask=mask, make=make, steps=steps, loss_fn=loss_fn))
    return seen


# ------------------------------------------------------------------------------------------------ BS


def nearest_other_class(model, x, y, bound):
    """One example at a time: the FGSM image x + bound * sign(grad), clipped to [0, 1] and rounded to 1/255, and
    the classes of the model's logits there in decreasing order; the first one that is not y."""
    labels, crossed = [], []
    for xi, yi in zip(x, y):
        xi = xi[None].clone().requires_grad_(True)
        model.zero_grad()
        F.cross_entropy(model(xi), yi[None]).backward()
        adv = torch.round(torch.clamp(xi.detach() + bound * xi.grad.sign(), 0.0, 1.0) * 255) / 255
        with torch.no_grad():
            ranked = model(adv)[0].argsort(descending=True).tolist()
        crossed.append(ranked[0] != int(yi))
        labels.append(next(c for c in ranked if c != int(yi)))
    return torch.tensor(labels), torch.tensor(crossed)


def test_bs_labels_are_the_nearest_other_class_of_the_original_model(setup, digits_run, monkeypatch):
    """In float64: the method labels a batch at a time, this test one example at a time, so the sign of an input
    gradient near 0 and the order of two logits near a tie come out alike only where rounding is far below them.
    Over ten models (4 seeds, 1 and 2 threads, other kernels) the smallest input gradient was 4e-6 of the largest
    and the closest runner-up logit 7e-5 (relative) away: a few hundred times float32 rounding, 1e10 float64's."""
    xf, yf = setup[0].xy("forget")
    xf = xf.double()
    model = trained(digits_run).double()
    original = copy.deepcopy(model)
    seen = capture_run(monkeypatch)
    METHODS["BS"](model, types.SimpleNamespace(xy=lambda name: (xf, yf)), method_args(batch_size=16), CPU, None)
    assert seen["loss_fn"] is trainer.cross_entropy and seen["model"] is model
    with torch.no_grad():  # the labels come from a copy of the model as it was passed in, not from the one trained
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    batches = list(seen["make"](0))
    assert len(batches) == seen["steps"] == dataset.num_batches(len(xf), 16)
    x = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    order = (x.flatten(1)[:, None] == xf.flatten(1)[None]).all(-1).float().argmax(1)
    assert sorted(order.tolist()) == list(range(len(xf)))  # the clean forget images, each once
    y = yf[order]
    expected, crossed = nearest_other_class(original.eval(), x, y, 0.1)
    assert (labels != y).all()
    assert torch.equal(labels, expected)
    assert crossed.any() and not crossed.all()  # both: the step crosses a boundary (16 to 26 of 40) or not
    other, _ = nearest_other_class(original.eval(), x, y, 0.5)
    assert not torch.equal(other, expected)  # the step size matters (7 to 19 of the 40 labels on the ten models)


def test_bs_moves_the_forget_predictions_towards_the_new_labels(setup, digits_run):
    splits, _ = setup
    model = trained(digits_run)
    xf, yf = splits.xy("forget")
    with torch.no_grad():
        before = (model(xf).argmax(1) == yf).float().mean()
    out = METHODS["BS"](model, splits, method_args(unlearn_epochs=3, unlearn_lr=0.05, weight_decay=0.0), CPU, None)
    with torch.no_grad():
        after = (out.eval()(xf).argmax(1) == yf).float().mean()
    assert after < before - 0.3


# ------------------------------------------------------------------------------------------------ BE


def test_be_trains_a_shadow_class_then_removes_it(setup, monkeypatch):
    splits, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    mask, before = random_mask(model), weights(model)
    xf, _ = splits.xy("forget")
    real_run, seen = loop.run, {}

    def shadow_probability(m):
        m.eval()
        with torch.no_grad():
            return float(F.softmax(m(xf), 1)[:, 10].mean())

    def recording_run(m, args, wide_mask, make, steps, **kw):
        seen["outputs"], seen["mask"] = m.linear.out_features, wide_mask
        x, y = next(iter(make(0)))
        with torch.no_grad():
            assert float(kw["loss_fn"](m, x, y)) == pytest.approx(float(F.cross_entropy(m(x), torch.full_like(y, 10))))
        seen["shadow_before"], seen["row_before"] = shadow_probability(m), m.linear.weight[10].detach().clone()
        out = real_run(m, args, wide_mask, make, steps, **kw)
        seen["shadow_after"], seen["row_after"] = shadow_probability(m), m.linear.weight[10].detach().clone()
        return out

    monkeypatch.setattr(loop, "run", recording_run)
    out = METHODS["BE"](model, splits, method_args(unlearn_epochs=5, unlearn_lr=0.05), CPU, mask)
    assert seen["outputs"] == 11 and out.linear.out_features == 10
    assert seen["shadow_after"] > seen["shadow_before"] + 0.2 and not torch.equal(seen["row_before"], seen["row_after"])
    for name in ("linear.weight", "linear.bias"):  # the shadow row is free, the kept rows follow the mask
        assert torch.equal(seen["mask"][name][:10], mask[name]) and seen["mask"][name][10].all()
    assert {k: v.shape for k, v in out.state_dict().items()} == shapes
    moved = 0
    for n, p in out.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], before[n][~mask[n]]), n
        moved += int((p.detach()[mask[n]] != before[n][mask[n]]).sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in mask.values())
    assert (out.linear.weight.detach()[mask["linear.weight"]] != before["linear.weight"][mask["linear.weight"]]).any()


def test_be_refuses_a_model_without_an_output_layer():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 7))
    splits = types.SimpleNamespace(raw=types.SimpleNamespace(num_classes=10))
    with pytest.raises(UserError, match="output layer"):
        METHODS["BE"](model, splits, method_args(), CPU, None)


# ------------------------------------------------------------------------------------------------ SalUn-soft


def fixed_batches(splits):
    """Deterministic RL-like batches: all forget examples with shifted labels, then 64 retain examples, one batch."""
    xf, yf = splits.xy("forget")
    xr, yr = splits.xy("retain")
    x, y = torch.cat([xf, xr[:64]]), torch.cat([(yf + 1) % 10, yr[:64]])
    return (lambda epoch: iter([(x, y)])), 1, x, y


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_salun_soft_is_rl_with_a_proximal_soft_threshold(setup, monkeypatch, masked):
    """Three epochs of one step each, momentum 0, weight decay 0. Each step, from the method's weights before it,
    against a transcription of the update: w <- w - lr g (masked), then d = w - w_epoch_start is soft-thresholded
    at the k-th smallest |d| over the allowed weights, k = int(r (T-t-1)/T N), N the number of allowed weights.
    (Step by step: the threshold's rank makes whole runs sensitive to rounding.)"""
    import unlearn.methods as methods
    splits, meta = setup
    make, steps, x, y = fixed_batches(splits)
    monkeypatch.setattr(methods, "_rl_batches", lambda splits, args: (make, steps))
    snaps, run = [], loop.run

    def recording_run(model, args, mask, make_batches, steps, after_step=None, **kw):
        def after():
            after_step()
            snaps.append([p.detach().clone() for p in model.parameters()])
        return run(model, args, mask, make_batches, steps, after_step=after, **kw)

    monkeypatch.setattr(loop, "run", recording_run)
    args = method_args(unlearn_epochs=3, momentum=0.0, weight_decay=0.0, unlearn_lr=0.2, salun_soft_ratio=0.6)
    start = trainer.init_model(meta, 0, "cpu")
    mask = random_mask(start, seed=5) if masked else None
    METHODS["SalUn_soft"](copy.deepcopy(start), splits, args, CPU, mask)
    ref = copy.deepcopy(start).train()
    named = list(ref.named_parameters())
    allow = [mask[n] if masked else torch.ones_like(p, dtype=torch.bool) for n, p in named]
    n, total, reset = sum(int(a.sum()) for a in allow), 3, []
    for t in range(total):
        w0 = [p.detach().clone() for _, p in named]
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        with torch.no_grad():
            for (_, p), a in zip(named, allow):
                p -= 0.2 * p.grad * a
            k = int(0.6 * (total - t - 1) / total * n)
            if k:
                d = torch.cat([(p - w)[a] for (_, p), w, a in zip(named, w0, allow)])
                tau = d.abs().sort().values[k - 1]
                for (_, p), w in zip(named, w0):
                    dp = p - w
                    p.copy_(w + dp.sign() * (dp.abs() - tau).clamp(min=0))
            for (_, p), got in zip(named, snaps[t]):
                torch.testing.assert_close(got, p.detach(), rtol=1e-5, atol=1e-6)
                p.copy_(got)  # the next step starts from the method's weights
            reset.append(sum(int((p == w)[a].sum()) for (_, p), w, a in zip(named, w0, allow)))
    assert reset[0] >= int(0.6 * 2 / 3 * n) and reset[-1] < reset[0]  # the share reset to 0 falls to none
    monkeypatch.setattr(loop, "run", run)
    rl = METHODS["RL"](copy.deepcopy(start), splits, args, CPU, mask)
    assert any(not torch.allclose(a, b) for a, b in zip(rl.parameters(), snaps[-1]))


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "mask0.5"])
@pytest.mark.parametrize("method", ["BS", "BE", "SalUn_soft"])
def test_main_forget_runs(digits_run, tmp_path, method, masked):
    extra = ["--mask_ratio", "0.5"] if masked else []
    result = main_forget.main([*DIGITS_ARGS, "--model_path", str(digits_run.checkpoint), "--save_dir", str(tmp_path),
                               "--num_indexes_to_replace", "60", "--unlearn", method, "--unlearn_epochs", "2",
                               "--batch_size", "32", "--fast_eval", *extra])
    run = tmp_path / (f"{method}_saliency_0.5" if masked else method)
    assert (run / "eval_result.json").exists() and result["run"]["unlearn"] == method
    assert 0 <= result["summary"]["UA"] <= 100 and 0 <= result["summary"]["TA"] <= 100
    original = torch.load(digits_run.checkpoint, weights_only=True)["state_dict"]
    unlearned = torch.load(run / "checkpoint.pt", weights_only=True)["state_dict"]
    assert {k: v.shape for k, v in unlearned.items()} == {k: v.shape for k, v in original.items()}
    assert not torch.equal(unlearned["linear.weight"], original["linear.weight"])
    if masked:
        mask = torch.load(run / "mask.pt", weights_only=True)
        for n, m in mask.items():
            assert torch.equal(unlearned[n][~m], original[n][~m]), n
