"""Vectorized per-example gradients (FF, IU) equal the straightforward per-example loops."""
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dataset
from unlearn import METHODS, persample
from unlearn.influence import flat_grads, woodbury_ihvp


def tiny_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 10))
    model.train()(torch.rand(32, 1, 8, 8))  # non-trivial BatchNorm running statistics
    model.meta = {"num_classes": 10}
    return model


def loop_grads(model, x, y, label=None):
    """Per-example gradients, one backward pass at a time (the reference's way)."""
    model.eval()
    rows = []
    for i in range(len(x)):
        target = y[i:i + 1] if label is None else torch.tensor([label])
        loss = F.cross_entropy(model(x[i:i + 1]), target)
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))]))
    return torch.stack(rows)


@pytest.fixture(scope="module")
def digits():
    raw = dataset.load_dataset("digits")
    return raw.x_train[:40], raw.y_train[:40]


def test_ce_grads_match_loop(digits):
    model = tiny_model()
    x, y = digits
    assert torch.allclose(flat_grads(model, x, y, chunk=7), loop_grads(model, x, y), atol=1e-6)


def test_expected_sq_grads_match_class_loop(digits):
    model = tiny_model()
    x, _ = digits
    probs = F.softmax(model.eval()(x), 1).detach()
    expected = sum(probs[:, c:c + 1] * loop_grads(model, x, None, label=c) ** 2 for c in range(10)).sum(0)
    got = torch.zeros_like(expected)
    for part in persample.expected_sq_grads(model, x, chunk=9):
        got += torch.cat([v.flatten() for v in part.values()])
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-8)


def test_woodbury_equals_dense_solve():
    g = torch.Generator().manual_seed(0)
    G, v = torch.randn(12, 30, generator=g), torch.randn(30, generator=g)
    for damping in (1.0, 0.01):
        dense = torch.linalg.solve(damping * torch.eye(30, dtype=torch.float64) + G.double().T @ G.double() / 12,
                                   v.double())
        assert torch.allclose(woodbury_ihvp(G, v, damping), dense, atol=1e-8)


def test_wfisher_step_equals_dense_newton_step(digits):
    x, y = digits
    splits = types.SimpleNamespace(xy=lambda name: (x[:10], y[:10]) if name == "forget" else (x[10:], y[10:]))
    args = types.SimpleNamespace(alpha=0.5, batch_size=8, grad_chunk=0, iu_samples=20, iu_memory=1.0,
                                 iu_damping=0.1)
    model = tiny_model()
    w0 = torch.cat([p.detach().flatten() for p in model.parameters()])
    gf, gr, G = loop_grads(model, x[:10], y[:10]), loop_grads(model, x[10:], y[10:]), loop_grads(model, x[10:30],
                                                                                                  y[10:30])
    v = 10 / 40 * (gf.mean(0) - gr.mean(0))
    H = 0.1 * torch.eye(len(w0)) + G.T @ G / 20
    expected = w0 + 0.5 * torch.linalg.solve(H.double(), v.double()).float()
    METHODS["wfisher"](model, splits, args, torch.device("cpu"), None)
    got = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert not torch.allclose(got, w0)
    assert torch.allclose(got, expected, atol=1e-5)
