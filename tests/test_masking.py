"""The mask contract: masked-out weights are bit-identical through any optimizer step; saliency masks;
retraining a pruned model; RL's batches and FT_prune's l1 schedule."""
import types

import pytest
import torch

import dataset
import trainer
from unlearn import METHODS, loop
from masks import UserError, check_mask, combine, top_ratio
from unlearn.methods import l1_weight

PERTURB_METHODS = sorted(n for n, m in METHODS.items() if m.one_shot and n != "raw")  # one-shot weight updates
STEP_METHODS = sorted(n for n, m in METHODS.items() if not m.one_shot)  # every registered training method
LAYER_METHODS = {"CF_k", "EU_k"}  # move only the last layer's weights
SOFT_METHODS = {"SalUn_soft"}  # its soft-thresholding resets many allowed changes to 0
FORGET_ONLY_METHODS = {"GA", "BS", "BE"}  # train on the 40 forget examples only


def random_mask(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()}


def method_args(**kw):
    base = dict(unlearn_lr=0.05, unlearn_epochs=1, momentum=0.9, weight_decay=5e-4, decreasing_lr=[],
                warmup=0, batch_size=32, no_aug=False, resume=False, train_seed=1, alpha=1e-4, no_l1_epochs=0,
                grad_chunk=0, fisher_samples=64, amp=False, iu_samples=64, iu_memory=1.0, iu_damping=1.0,
                rl_order="mixed", dataset="digits", neggrad_beta=0.9, scrub_max_epochs=1, scrub_alpha=0.001,
                scrub_gamma=0.99, scrub_kd_T=4.0, last_k=1, ssd_alpha=1.0, ssd_lambda=1.0, bs_bound=0.1,
                salun_soft_ratio=0.5, forget_batch_size=None, lr=0.05, epochs=1, rate=0.2, random_prune=False,
                pruning_times=1)
    base.update(kw)
    return types.SimpleNamespace(**base)


def test_plain_gradient_masking_moves_masked_weights():
    """The reference's bug: masking gradients alone lets weight decay and momentum move masked weights."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(10))
    mask = torch.arange(10) < 5
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = w.detach().clone()
    for _ in range(20):
        opt.zero_grad()
        (w ** 2).sum().backward()
        w.grad.mul_(mask)
        opt.step()
    assert not torch.equal(w.detach()[~mask], before[~mask])


def test_masked_sgd_keeps_masked_weights_bit_identical():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    mask = {"0.weight": torch.rand(8, 6) < 0.5, "2.bias": torch.tensor([True, False, True])}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sgd = trainer.MaskedSGD(model, lr=0.1, momentum=0.9, weight_decay=5e-4, mask=mask)
    for _ in range(25):
        sgd.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(16, 6)), torch.randint(0, 3, (16,))).backward()
        sgd.step()
    for n, p in model.named_parameters():
        m = mask.get(n, torch.ones_like(p, dtype=torch.bool))
        assert torch.equal(p.detach()[~m], before[n][~m]), n
        assert (p.detach()[m] != before[n][m]).all(), n  # every allowed weight moved


@pytest.mark.parametrize("name", STEP_METHODS)
def test_methods_keep_masked_weights(setup, name):
    splits, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    mask = random_mask(model)
    if name == "retrain":  # retrain starts from a fresh --train_seed initialization
        before = {n: p.detach().clone() for n, p in trainer.init_model(meta, 1, "cpu").named_parameters()}
    else:
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # at least 20 optimizer steps: GA, BS and BE see only the 40 forget examples, so more epochs and smaller batches
    forget_only = name in FORGET_ONLY_METHODS
    args = method_args(unlearn_epochs=7 if forget_only else 1, batch_size=16 if forget_only else 48,
                       unlearn_lr=5e-4 if name == "SCRUB" else 0.05)
    out = METHODS[name](model, splits, args, torch.device("cpu"), mask)
    moved = 0
    for n, p in out.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], before[n][~mask[n]]), n
        moved += int((p.detach()[mask[n]] != before[n][mask[n]]).sum())
    allowed = sum(int(m.sum()) for m in mask.values())
    assert moved > (0 if name in LAYER_METHODS | SOFT_METHODS else 0.5 * allowed)


@pytest.mark.parametrize("name", PERTURB_METHODS)
def test_perturbation_methods_change_only_masked_in_weights(setup, name):
    splits, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    mask = random_mask(model, seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = METHODS[name](model, splits, method_args(alpha=1e-6 if name == "fisher" else 1e-4),
                        torch.device("cpu"), mask)
    changed = 0
    for n, p in out.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], before[n][~mask[n]]), n
        changed += int((p.detach()[mask[n]] != before[n][mask[n]]).sum())
    assert changed > 0


def test_top_ratio_keeps_exact_count_of_largest():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(7, 5, generator=g), "b": torch.rand(13, generator=g)}
    total = 48
    flat = torch.cat([scores["a"].flatten(), scores["b"]])
    for r in (0.1, 0.25, 0.5, 0.9):
        mask = top_ratio(scores, r)
        kept = torch.cat([mask["a"].flatten(), mask["b"]])
        k = int(total * r)  # the reference's count
        assert int(kept.sum()) == k
        assert flat[kept].min() >= flat[~kept].max()
    assert all(m.all() for m in top_ratio(scores, 1.0).values())


def test_top_ratio_ties_are_deterministic_by_position():
    scores = {"a": torch.ones(4), "b": torch.ones(4)}
    mask = top_ratio(scores, 0.5)
    assert mask["a"].all() and not mask["b"].any()
    assert all(torch.equal(mask[k], top_ratio(scores, 0.5)[k]) for k in mask)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_top_ratio_rejects_ratio_outside(bad):
    with pytest.raises(UserError, match="outside"):
        top_ratio({"a": torch.ones(3)}, bad)


def test_check_mask_errors_name_shape_values(setup):
    _, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    name, p = next(iter(model.named_parameters()))
    with pytest.raises(UserError, match="does not have"):
        check_mask({"nope.weight": torch.ones(3, dtype=torch.bool)}, model, "m.pt")
    with pytest.raises(UserError, match="shape"):
        check_mask({name: torch.ones(3, dtype=torch.bool)}, model, "m.pt")
    with pytest.raises(UserError, match="other than 0 and 1"):
        check_mask({name: torch.full(p.shape, 2.0)}, model, "m.pt")
    ok = check_mask({name: torch.ones(p.shape)}, model, "m.pt")
    assert ok[name].dtype == torch.bool


def test_combine_is_logical_and():
    a = {"w": torch.tensor([True, True, False]), "x": torch.tensor([True])}
    b = {"w": torch.tensor([True, False, False]), "y": torch.tensor([False])}
    c = combine(a, b)
    assert c["w"].tolist() == [True, False, False] and c["x"].tolist() == [True] and c["y"].tolist() == [False]
    assert combine(None, b) is b


def test_retrain_zeroes_only_the_pruned_weights(setup):
    """A pruned model retrains sparse: pruned weights are 0 from the first step; a weight that only the
    other (saliency) mask freezes keeps its fresh initial value."""
    splits, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    g = torch.Generator().manual_seed(2)
    model.prune_mask = {n: torch.rand(p.shape, generator=g) < 0.3 for n, p in model.named_parameters()
                        if p.dim() == 4}
    saliency = random_mask(model)
    fresh = {n: p.detach().clone() for n, p in trainer.init_model(meta, 1, "cpu").named_parameters()}
    out = METHODS["retrain"](model, splits, method_args(batch_size=48), torch.device("cpu"),
                             combine(saliency, model.prune_mask))
    assert out.prune_mask is model.prune_mask
    for n, p in out.named_parameters():
        pruned = ~model.prune_mask.get(n, torch.ones_like(p, dtype=torch.bool))
        frozen = ~saliency[n] & ~pruned
        assert (p.detach()[pruned] == 0).all() and torch.equal(p.detach()[frozen], fresh[n][frozen]), n


def rl_batches(splits, monkeypatch, order, dataset_name="digits", epochs=4):
    """RL's batches for several epochs, and its steps per epoch (loop.run replaced: no training)."""
    seen = {}
    monkeypatch.setattr(loop, "run", lambda model, args, mask, make, steps, **kw: seen.update(make=make, steps=steps))
    METHODS["RL"](None, splits, method_args(batch_size=16, no_aug=True, rl_order=order, dataset=dataset_name),
                  torch.device("cpu"), None)
    torch.manual_seed(0)
    return [list(seen["make"](e)) for e in range(epochs)], seen["steps"]


def forget_rows(x, xf):
    """For each row of x: whether it is a forget example, and which."""
    eq = (x.flatten(1)[:, None] == xf.flatten(1)[None]).all(-1)
    return eq.any(1), eq.float().argmax(1)


@pytest.mark.parametrize("order,dataset_name", [("mixed", "digits"), ("reference", "digits"),
                                                ("reference", "cifar100")])
def test_rl_order_and_labels(setup, monkeypatch, order, dataset_name):
    """mixed: one shuffled stream, forget labels never the true one. reference: labels from all classes (the
    true one too); forget batches first, then retain batches, except on cifar100/TinyImagenet (one stream)."""
    splits, _ = setup
    (xf, yf), (xr, _) = splits.xy("forget"), splits.xy("retain")
    assert not forget_rows(xr, xf)[0].any()  # forget examples are recognizable by their image
    epochs, steps = rl_batches(splits, monkeypatch, order, dataset_name)
    first = dataset.num_batches(len(xf), 16)
    forget_first = order == "reference" and dataset_name == "digits"
    mixed_steps = dataset.num_batches(len(xf) + len(xr), 16)
    assert steps == (first + dataset.num_batches(len(xr), 16) if forget_first else mixed_steps)
    true_labels, classes = 0, set()
    for batches in epochs:
        assert len(batches) == steps
        where = [forget_rows(x, xf) for x, _ in batches]
        assert sum(int(f.sum()) for f, _ in where) == len(xf)
        first_are_forget = all(f.all() for f, _ in where[:first])
        assert first_are_forget == forget_first
        if forget_first:
            assert not any(f.any() for f, _ in where[first:])
        for (f, i), (_, y) in zip(where, batches):
            true_labels += int((y[f] == yf[i[f]]).sum())
            classes |= set(y[f].tolist())
    assert (true_labels > 0) == (order == "reference")
    assert classes == set(range(10))


def test_l1_schedule_is_the_reference_one():
    assert [l1_weight(0.2, e, 4, 0) for e in range(4)] == pytest.approx([0.2, 0.15, 0.1, 0.05])
    assert [l1_weight(0.2, e, 4, 2) for e in range(4)] == pytest.approx([0.2, 0.1, 0, 0])
    assert [l1_weight(0.2, e, 3, 3) for e in range(3)] == [0.2] * 3  # no l1-free epochs left: constant
    assert l1_weight(0.2, 0, 3, 5) == 0


def test_ft_prune_adds_the_scheduled_l1_penalty(setup, monkeypatch):
    splits, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    seen = {}
    monkeypatch.setattr(loop, "run", lambda model, args, mask, make, steps, loss_fn, **kw: seen.update(
        make=make, loss_fn=loss_fn))
    METHODS["FT_prune"](model, splits, method_args(unlearn_epochs=2, no_l1_epochs=2, alpha=0.1),
                        torch.device("cpu"), None)
    x, y = next(iter(seen["make"](1)))
    model.eval()
    with torch.no_grad():
        l1 = float(sum(p.abs().sum() for p in model.parameters()))
        extra = float(seen["loss_fn"](model, x, y) - torch.nn.functional.cross_entropy(model(x), y))
    assert extra == pytest.approx(0.1 * l1, rel=1e-4)
