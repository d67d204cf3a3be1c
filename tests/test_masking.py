"""The mask contract: masked-out weights are bit-identical through any optimizer step; saliency masks."""
import types

import pytest
import torch

import dataset
import trainer
from unlearn import METHODS
from unlearn.mask import UserError, check_mask, combine, top_ratio

STEP_METHODS = ["FT", "GA", "RL", "FT_prune", "retrain"]
PERTURB_METHODS = ["fisher", "fisher_new", "wfisher"]


@pytest.fixture(scope="module")
def setup():
    raw = dataset.load_dataset("digits")
    splits = dataset.make_splits(raw, seed=2, num_indexes_to_replace=40)
    args = types.SimpleNamespace(arch="resnet20s", dataset="digits", imagenet_arch=False)
    meta = trainer.model_meta(args, raw)
    return splits, meta


def random_mask(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()}


def method_args(**kw):
    base = dict(unlearn_lr=0.05, unlearn_epochs=1, momentum=0.9, weight_decay=5e-4, decreasing_lr=[],
                warmup=0, batch_size=32, no_aug=False, resume=False, train_seed=1, alpha=1e-4, no_l1_epochs=0,
                grad_chunk=0, fisher_samples=64, amp=False, iu_samples=64, iu_memory=1.0, iu_damping=1.0)
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
    # at least 20 optimizer steps: GA sees only the 40 forget examples, so more epochs and smaller batches
    args = method_args(unlearn_epochs=7 if name == "GA" else 1, batch_size=16 if name == "GA" else 48)
    out = METHODS[name](model, splits, args, torch.device("cpu"), mask)
    moved = 0
    for n, p in out.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], before[n][~mask[n]]), n
        moved += int((p.detach()[mask[n]] != before[n][mask[n]]).sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in mask.values())


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
        k = round(r * total)
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
