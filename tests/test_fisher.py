"""FF's two variants against an independent transcription of the reference code's formulas."""
import copy
import types

import pytest
import torch
import torch.nn.functional as F

import trainer
from tests.test_persample import tiny_model
from unlearn import METHODS


def reference_fisher(model, x, y, alpha):
    """Empirical Fisher, one backward pass per example: w += min(sqrt(alpha / F), 1e-3) N(0, 1), x10 on the
    classifier (here: the parameters whose first dimension is the class count)."""
    model.eval()
    params = list(model.parameters())
    fisher = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        logp = torch.log_softmax(model(x[i:i + 1]), -1)[0, y[i]]
        for f, g in zip(fisher, torch.autograd.grad(logp, params)):
            f += (g + 1e-8) ** 2
    with torch.no_grad():
        for p, f in zip(params, fisher):
            noise = torch.sqrt(alpha / (f / len(x))).clamp(max=1e-3) * torch.empty_like(p).normal_(0, 1)
            p.add_(noise * 10 if p.shape[0] == 10 else noise)


def reference_fisher_new(model, x, alpha, forget_class):
    """Golatkar et al.'s estimator in batches of 32 and the reference's mean and variance rules."""
    model.eval()
    params = list(model.parameters())
    acc = [torch.zeros_like(p) for p in params]
    batches = 0
    for s in range(0, len(x), 32):
        out = model(x[s:s + 32])
        prob = F.softmax(out, -1).detach()
        for c in range(out.shape[1]):
            loss = F.cross_entropy(out, torch.full((len(out),), c))
            for a, g in zip(acc, torch.autograd.grad(loss, params, retain_graph=True)):
                a += prob[:, c].mean() * g ** 2
        batches += 1
    with torch.no_grad():
        for p, a in zip(params, acc):
            var = (1.0 / (a / batches + 1e-8)).clamp(max=1e3)
            if p.shape[0] == 10:
                var = var.clamp(max=1e2)
            var = alpha * var
            if p.ndim > 1:
                var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
            mu = p.clone()
            if p.shape[0] == 10 and forget_class >= 0:
                mu[forget_class] = 0
                var[forget_class] = 1e-4
            if p.shape[0] == 10 or p.ndim == 1:
                var *= 10
            p.copy_(mu + var.sqrt() * torch.empty_like(p).normal_())


def splits_of(x, y, forget_class=-1):
    return types.SimpleNamespace(xy=lambda name: (x, y), forget_class=forget_class)


def args_of(alpha, chunk):
    return types.SimpleNamespace(alpha=alpha, fisher_samples=0, grad_chunk=chunk)


@pytest.fixture(scope="module")
def data():
    import dataset
    raw = dataset.load_dataset("digits")
    return raw.x_train[:75], raw.y_train[:75]  # two full batches of 32 and one of 11


def max_diff(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def resnet20s():
    """Convolutions with many positions, whose batch sums take the grouped-convolution kernel."""
    meta = {"arch": "resnet20s", "dataset": "digits", "num_classes": 10, "in_channels": 1, "image_size": 8,
            "mean": [0.5], "std": [0.25], "imagenet_arch": False}
    model = trainer.init_model(meta, 0, torch.device("cpu"))
    model.train()(torch.rand(32, 1, 8, 8))
    return model


@pytest.mark.parametrize("make", [tiny_model, resnet20s])
@pytest.mark.parametrize("chunk", [0, 40])
def test_fisher_new_matches_reference(data, chunk, make):
    x, y = data
    for forget_class in (-1, 3):
        model = make()
        ref = copy.deepcopy(model)
        torch.manual_seed(7)
        reference_fisher_new(ref, x, 1e-6, forget_class)
        torch.manual_seed(7)
        METHODS["fisher_new"](model, splits_of(x, y, forget_class), args_of(1e-6, chunk), None, None)
        assert max_diff(model, ref) < 1e-6
        assert max_diff(model, make()) > 1e-3  # the noise is not negligible


def test_fisher_matches_reference(data):
    x, y = data
    x, y = x[:20], y[:20]
    model = tiny_model()
    ref = copy.deepcopy(model)
    torch.manual_seed(3)
    reference_fisher(ref, x, y, 1e-10)
    torch.manual_seed(3)
    METHODS["fisher"](model, splits_of(x, y), args_of(1e-10, 0), None, None)
    assert max_diff(model, ref) < 1e-6
    assert max_diff(model, tiny_model()) > 1e-4
