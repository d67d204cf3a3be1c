"""NegGrad+, SCRUB, CF-k and EU-k: their definitions, and the mask contract for each of them and for SSD
(whose definition tests/test_ssd.py checks)."""
import copy
import types

import pytest
import torch
import torch.nn.functional as F

import dataset
import pruner
import trainer
from unlearn import METHODS, loop
from unlearn.baselines import distill_kl, last_layers
from masks import combine
from utils import UserError

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread_module")


def method_args(**kw):
    base = dict(unlearn_lr=0.05, unlearn_epochs=1, momentum=0.9, weight_decay=5e-4, decreasing_lr=[], warmup=0,
                batch_size=48, no_aug=False, resume=False, train_seed=1, amp=False, grad_chunk=0,
                neggrad_beta=0.9999, scrub_max_epochs=2, scrub_alpha=0.001, scrub_gamma=0.99, scrub_kd_T=4.0,
                last_k=1, ssd_alpha=10.0, ssd_lambda=1.0, forget_batch_size=None)
    base.update(kw)
    return types.SimpleNamespace(**base)


def random_mask(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()}


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def capture_run(monkeypatch):
    """Replace the shared loop: record the batches and loss a method gives it."""
    seen = {}
    monkeypatch.setattr(loop, "run", lambda model, args, mask, make, steps, loss_fn, **kw: seen.update(
        make=make, steps=steps, loss_fn=loss_fn))
    return seen


def test_neggrad_plus_with_beta_one_is_ft(setup):
    """beta = 1: the forget term weighs 0, so the same seed and batches give FT's weights bit for bit."""
    splits, meta = setup
    args = method_args(neggrad_beta=1.0, no_aug=True)
    out = {}
    for name in ("FT", "NegGrad_plus"):
        torch.manual_seed(5)
        out[name] = weights(METHODS[name](trainer.init_model(meta, 0, "cpu"), splits, args, CPU, None))
    before = weights(trainer.init_model(meta, 0, "cpu"))
    assert all(torch.equal(out["FT"][n], out["NegGrad_plus"][n]) for n in before)
    assert not torch.equal(out["FT"]["linear.weight"], before["linear.weight"])
    torch.manual_seed(5)
    other = METHODS["NegGrad_plus"](trainer.init_model(meta, 0, "cpu"), splits, method_args(neggrad_beta=0.5,
                                    no_aug=True), CPU, None)
    assert not torch.equal(weights(other)["linear.weight"], out["FT"]["linear.weight"])


def test_neggrad_plus_pairs_each_retain_batch_with_a_forget_batch(setup, monkeypatch):
    splits, meta = setup
    seen = capture_run(monkeypatch)
    METHODS["NegGrad_plus"](None, splits, method_args(neggrad_beta=0.25, batch_size=16, forget_batch_size=8), CPU,
                            None)
    (xr, yr), (xf, yf) = splits.xy("retain"), splits.xy("forget")
    batches = list(seen["make"](0))
    assert len(batches) == seen["steps"] == dataset.num_batches(len(xr), 16)
    assert {len(x[0]) for x, _ in batches[:-1]} == {16} and {len(x[1]) for x, _ in batches} <= {8, len(xf) % 8}
    per_pass = dataset.num_batches(len(xf), 8)  # the forget set, reshuffled each time it runs out
    passes = [torch.cat([y[1] for _, y in batches[i:i + per_pass]]) for i in range(0, len(batches), per_pass)]
    assert all(sorted(p.tolist()) == sorted(yf.tolist()) for p in passes[:-1]) and len(passes) > 2
    assert not torch.equal(passes[0], passes[1])
    assert sorted(torch.cat([y[0] for _, y in batches]).tolist()) == sorted(yr.tolist())
    model = trainer.init_model(meta, 0, "cpu").eval()
    x, y = batches[0]
    with torch.no_grad():
        expected = 0.25 * F.cross_entropy(model(x[0]), y[0]) - 0.75 * F.cross_entropy(model(x[1]), y[1])
        assert float(seen["loss_fn"](model, x, y)) == pytest.approx(float(expected), rel=1e-6)


def forget_kl(model, teacher, x):
    model.eval()
    with torch.no_grad():
        return float(distill_kl(model(x), teacher(x), 4.0))


def trained(digits_run):
    args = types.SimpleNamespace(arch="resnet20s", dataset="digits", allow_dataset_change=False)
    return trainer.load_model(digits_run.checkpoint, args, dataset.load_dataset("digits"), "cpu")[0].eval()


def test_scrub_max_steps_raise_the_forget_kl(setup, digits_run, monkeypatch):
    """Each max-step moves the student further from the teacher on the forget set. The max-steps here see the
    whole forget set in one batch, unaugmented and in eval mode (so that only the weights change): each is a
    gradient ascent step on exactly the KL measured, which a small step raises. (The KL's gradient is 0 where
    student and teacher agree; in training, batch statistics and the min-steps make them differ, here a small
    perturbation does.) On ten models (4 seeds, 1 and 2 threads, other kernels) each step raised it by 6% or
    more, far above rounding; the 5 steps by 1.4x to 25x, too wide a range to bound the total."""
    splits, _ = setup
    original = trained(digits_run)
    seen = capture_run(monkeypatch)
    xf, _ = splits.xy("forget")
    METHODS["SCRUB"](original, splits, method_args(scrub_max_epochs=1, batch_size=len(xf), no_aug=True), CPU, None)
    (x, maximize), y = next(seen["make"](0))
    assert maximize and len(x) == len(xf)
    student = copy.deepcopy(original)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p), alpha=0.01)
    sgd = torch.optim.SGD(student.parameters(), lr=5e-4)  # the SCRUB code's learning rate
    kls = [forget_kl(student, original, xf)]
    for _ in range(5):
        sgd.zero_grad()
        seen["loss_fn"](student, (x, maximize), y).backward()
        sgd.step()
        kls.append(forget_kl(student, original, xf))
    assert all(b > a for a, b in zip(kls, kls[1:])), kls


def max_diff(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("max_epochs", [0, 1])
def test_scrub_equals_a_transcription(setup, digits_run, max_epochs):
    """The whole method, 2 epochs, against a transcription: a pass over the forget batches maximizing the KL in
    the first max_epochs epochs, then every epoch a pass over the retain batches minimizing gamma CE + alpha KL;
    one SGD (momentum, weight decay) for both; the student in train mode; the teacher a copy of the model passed
    in, in eval mode and never changed. In float64, where rounding cannot flip a ReLU: initial weights moved by
    16 ulp move the result by 1.4e-14 at most (on four of the ten models of the test above), while the runs
    with and without max-steps differ by 0.06 or more; so a 1e-9 tolerance holds on any CPU."""
    splits, _ = setup
    (xf, yf), (xr, yr) = splits.xy("forget"), splits.xy("retain")
    data = {"forget": (xf.double(), yf), "retain": (xr[:96].double(), yr[:96])}
    start = trained(digits_run).double()
    args = method_args(scrub_max_epochs=max_epochs, unlearn_epochs=2, batch_size=16, unlearn_lr=0.01, no_aug=True,
                       scrub_alpha=0.5, scrub_gamma=0.5)
    torch.manual_seed(3)
    out = METHODS["SCRUB"](copy.deepcopy(start), types.SimpleNamespace(xy=data.get), args, CPU, None).state_dict()
    teacher, student = copy.deepcopy(start).eval(), copy.deepcopy(start).train()
    sgd = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    torch.manual_seed(3)
    for epoch in range(2):
        for name in ["forget"] * (epoch < max_epochs) + ["retain"]:
            x, y = data[name]
            for i in torch.randperm(len(x)).split(16):
                logits = student(x[i])
                with torch.no_grad():
                    log_t = F.log_softmax(teacher(x[i]) / 4, 1)
                kl = (log_t.exp() * (log_t - F.log_softmax(logits / 4, 1))).sum(1).mean() * 16
                loss = -kl if name == "forget" else 0.5 * F.cross_entropy(logits, y[i]) + 0.5 * kl
                sgd.zero_grad()
                loss.backward()
                sgd.step()
    assert max_diff(out, student.state_dict()) < 1e-9
    assert max_diff(out, start.state_dict()) > 0.01


def test_scrub_losses(setup, monkeypatch):
    splits, meta = setup
    seen = capture_run(monkeypatch)
    teacher = trainer.init_model(meta, 0, "cpu")
    METHODS["SCRUB"](teacher, splits, method_args(scrub_max_epochs=1, scrub_alpha=0.3, scrub_gamma=0.6,
                                                  batch_size=16, forget_batch_size=32), CPU, None)
    retain_steps, forget_steps = dataset.num_batches(len(splits.retain), 16), dataset.num_batches(40, 32)
    assert seen["steps"] == retain_steps + forget_steps
    first, second = list(seen["make"](0)), list(seen["make"](1))
    assert [b[0][1] for b in first] == [True] * forget_steps + [False] * retain_steps
    assert [len(b[0][0]) for b in first[:forget_steps]] == [32, 8] and len(first[forget_steps][0][0]) == 16
    assert [b[0][1] for b in second] == [False] * retain_steps
    student = trainer.init_model(meta, 7, "cpu").eval()
    teacher.eval()
    for (x, maximize), y in (first[0], first[-1]):
        with torch.no_grad():
            kl = distill_kl(student(x), teacher(x), 4.0)
            expected = -kl if maximize else 0.6 * F.cross_entropy(student(x), y) + 0.3 * kl
            assert float(seen["loss_fn"](student, (x, maximize), y)) == pytest.approx(float(expected), rel=1e-5)
            p_t, p_s = F.softmax(teacher(x) / 4, 1), F.softmax(student(x) / 4, 1)
            assert float(kl) == pytest.approx(float((p_t * (p_t / p_s).log()).sum(1).mean() * 16), rel=1e-4)


def test_scrub_refuses_a_schedule_past_the_max_epochs(setup):
    splits, meta = setup
    for bad in (dict(warmup=2), dict(decreasing_lr=[2])):
        with pytest.raises(UserError, match="scrub_max_epochs"):
            METHODS["SCRUB"](trainer.init_model(meta, 0, "cpu"), splits,
                             method_args(scrub_max_epochs=1, unlearn_epochs=3, **bad), CPU, None)


def test_last_layers_are_the_last_weight_layers_and_their_batchnorms(setup):
    _, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    assert last_layers(model, 1) == {"linear.weight", "linear.bias"}
    assert last_layers(model, 2) == {"linear.weight", "linear.bias", "layer3.2.conv2.weight", "layer3.2.bn2.weight",
                                     "layer3.2.bn2.bias"}
    assert len(last_layers(model, 22)) == len(list(model.parameters()))
    with pytest.raises(UserError, match="more than the 22 convolution and linear layers"):
        last_layers(model, 23)


@pytest.mark.parametrize("name", ["CF_k", "EU_k"])
def test_last_k_methods_move_only_the_last_layers(setup, name):
    splits, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    before, mask = weights(model), random_mask(model)
    out = METHODS[name](model, splits, method_args(last_k=3), CPU, mask)
    region = last_layers(model, 3)
    assert len(region) == 8  # linear, layer3.2.conv2 + bn2, layer3.2.conv1 + bn1
    for n, p in out.named_parameters():
        keep = ~mask[n] if n in region else torch.ones_like(mask[n])
        assert torch.equal(p.detach()[keep], before[n][keep]), n
        if n in region:
            assert (p.detach()[mask[n]] != before[n][mask[n]]).float().mean() > 0.9, n


def test_eu_k_reinitializes_where_the_mask_allows(setup, monkeypatch):
    splits, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    before, mask, fresh = weights(model), random_mask(model), weights(trainer.init_model(meta, 1, "cpu"))
    seen = {}
    monkeypatch.setattr(loop, "run", lambda model, args, mask, *a, **kw: seen.update(model=model, mask=mask))
    METHODS["EU_k"](model, splits, method_args(last_k=2), CPU, mask)
    region = last_layers(model, 2)
    layers = {n: m for n, m in model.named_modules()}
    reinitialized = {n for n in region if isinstance(layers[n.rsplit(".", 1)[0]], (torch.nn.Conv2d, torch.nn.Linear))}
    assert reinitialized and region - reinitialized  # the region holds a BatchNorm, which keeps its values
    for n, p in seen["model"].named_parameters():
        expected = torch.where(mask[n], fresh[n], before[n]) if n in reinitialized else before[n]
        assert torch.equal(p.detach(), expected), n
        assert torch.equal(seen["mask"][n], mask[n] if n in region else torch.zeros_like(mask[n])), n


def test_eu_k_keeps_a_pruned_model_sparse(setup):
    splits, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    g = torch.Generator().manual_seed(2)
    model.prune_mask = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()
                        if p.dim() > 1}
    pruner.apply_mask(model, model.prune_mask)
    out = METHODS["EU_k"](model, splits, method_args(last_k=2), CPU, combine(random_mask(model), model.prune_mask))
    for n, keep in model.prune_mask.items():
        assert (out.state_dict()[n][~keep] == 0).all(), n
    assert (out.linear.weight[model.prune_mask["linear.weight"]] != 0).all()


@pytest.mark.parametrize("name", ["NegGrad_plus", "SCRUB", "CF_k", "EU_k", "SSD"])
def test_masked_out_weights_stay_bit_identical(setup, name):
    splits, meta = setup
    model = trainer.init_model(meta, 0, "cpu")
    mask, before = random_mask(model), weights(model)
    out = METHODS[name](model, splits, method_args(neggrad_beta=0.9, ssd_alpha=1.0, batch_size=16), CPU, mask)
    moved = 0
    for n, p in out.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], before[n][~mask[n]]), n
        moved += int((p.detach()[mask[n]] != before[n][mask[n]]).sum())
    assert moved > 0


@pytest.mark.parametrize("method, expected", [("NegGrad_plus", (0.0, 0.0)), ("CF_k", (0.0, 0.0)),
                                              ("EU_k", (0.0, 0.0)), ("SCRUB", (0.9, 5e-4)), ("FT", (0.9, 5e-4))])
def test_each_method_gets_its_authors_sgd_unless_told(method, expected):
    from commands import baseline as main_baseline
    from commands import forget as main_forget
    args = main_forget.parse(["--unlearn", method])
    assert (args.momentum, args.weight_decay) == expected
    told = main_forget.parse(["--unlearn", method, "--momentum", "0.5", "--weight_decay", "0"])
    assert (told.momentum, told.weight_decay) == (0.5, 0.0)
    trained = main_baseline.parse([])
    assert (trained.momentum, trained.weight_decay) == (0.9, 5e-4)
