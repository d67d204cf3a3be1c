"""Vectorized per-example gradients (FF, IU) equal the straightforward per-example loops."""
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dataset
import trainer
from unlearn import METHODS, persample
from unlearn.influence import woodbury_weights
from utils import UserError


def tiny_model():
    """Every expansion path: a convolution with many positions (direct), BatchNorm followed by an in-place
    ReLU, a convolution with bias and few positions and a Linear layer (both through the Gram identity)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          nn.AvgPool2d(2), nn.Conv2d(4, 32, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(128, 10))
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


@pytest.fixture(params=["tiny", "resnet20s"])
def model(request):
    if request.param == "tiny":
        return tiny_model()
    meta = {"arch": "resnet20s", "dataset": "digits", "num_classes": 10, "in_channels": 1, "image_size": 8,
            "mean": [0.5], "std": [0.25], "imagenet_arch": False}
    m = trainer.init_model(meta, 0, torch.device("cpu"))
    m.train()(torch.rand(32, 1, 8, 8))
    return m


@pytest.fixture(params=[True, False], ids=["kept", "remade"])
def small_blocks(request, monkeypatch):
    """Blocks of a few examples, so that every blocked loop runs more than once; gradient blocks kept or remade."""
    monkeypatch.setattr(persample, "BLOCK_FLOATS", 500)
    monkeypatch.setattr(persample, "KEEP_FLOATS", 4000 if request.param else 0)
    monkeypatch.setattr(persample, "CACHE_FLOATS", 500)
    monkeypatch.setattr(persample, "GHOST_ROWS", 6)


def flat(d, model):
    return torch.cat([d[n].flatten() for n, _ in model.named_parameters()])


# Blocked per-example gradients against one backward pass per example: the same sums in another order, so they are
# compared in float64 (in float32 resnet20s's sums differ by 1e-3 relative on ATen's portable kernels).
def test_empirical_fisher_matches_loop(digits, model, small_blocks):
    x, y = digits
    model, x = model.double(), x.double()
    expected = (loop_grads(model, x, y) ** 2).sum(0)
    got = flat(persample.sq_grad_sums(model, x, y, chunk=7), model)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_records_match_gradient_matrix(digits, model, small_blocks):
    x, y = digits
    model, x, y = model.double(), x[:15].double(), y[:15]
    G = loop_grads(model, x, y)
    v = torch.randn(G.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = torch.randn(15, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    records = persample.Records(model, x, y, chunk=4)
    K, Gv = records.gram_and_dot(v)
    assert K.dtype == torch.float64 and K.shape == (15, 15)
    assert torch.allclose(K, G @ G.T, rtol=1e-9, atol=1e-12)
    assert torch.allclose(Gv, G @ v, rtol=1e-9, atol=1e-12)
    expected = G.T @ w
    assert (records.weighted_sum(w) - expected).abs().max() < 1e-9 * expected.abs().max()


def test_unsupported_layer_is_one_clear_error(digits):
    x, y = digits
    model = nn.Sequential(nn.Conv2d(1, 4, 3, groups=1), nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(),
                          nn.LazyLinear(10))
    model(x[:1])
    with pytest.raises(UserError, match="layer '1' is Conv2d"):
        persample.sq_grad_sums(model, x, y)


def test_woodbury_weights_give_dense_solve():
    g = torch.Generator().manual_seed(0)
    G, v = torch.randn(12, 30, generator=g).double(), torch.randn(30, generator=g).double()
    for damping in (1.0, 0.01):
        dense = torch.linalg.solve(damping * torch.eye(30, dtype=torch.float64) + G.T @ G / 12, v)
        w = woodbury_weights(G @ G.T, G @ v, damping)
        assert torch.allclose((v - G.T @ w) / damping, dense, atol=1e-8)


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
