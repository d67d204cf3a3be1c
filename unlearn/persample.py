"""Per-example gradients with torch.func (functional_call + grad/jacrev + vmap), in memory-sized chunks.

The model is put in eval mode, so BatchNorm uses its running statistics and every example's gradient
is independent of the others in its chunk.
"""
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jacrev, vmap

CHUNK_FLOATS = 2**28  # 1 GiB of float32 per chunk when --grad_chunk is 0 (auto)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def auto_chunk(model, per_example=1, chunk=0):
    """Examples per vmap chunk: --grad_chunk if set, else what fits CHUNK_FLOATS."""
    return chunk or max(1, CHUNK_FLOATS // (num_params(model) * per_example))


def _state(model):
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    return params, buffers


def ce_grads(model, x, y, chunk=0):
    """Yield {name: (c, *shape)} per-example gradients of the cross-entropy, c examples at a time."""
    params, buffers = _state(model)

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    fn = vmap(grad(loss), in_dims=(None, 0, 0))
    step = auto_chunk(model, 1, chunk)
    for s in range(0, len(x), step):
        yield fn(params, x[s:s + step], y[s:s + step])


def expected_sq_grads(model, x, chunk=0):
    """Yield {name: (shape)} sums over a chunk of E_{y~p(y|x)} [grad CE(x, y)]^2 (the true diagonal Fisher).

    One forward and one vectorized Jacobian of the logits per chunk stands in for C backward passes:
    grad CE(x, y) = u - J_y with J_y the gradient of logit y and u = sum_y p_y J_y.
    """
    params, buffers = _state(model)

    def logits(p, xi):
        return functional_call(model, (p, buffers), (xi[None],))[0]

    jac = vmap(jacrev(logits), in_dims=(None, 0))
    with torch.no_grad():
        num_classes = logits(params, x[0]).shape[0]
    step = auto_chunk(model, num_classes, chunk)
    for s in range(0, len(x), step):
        xb = x[s:s + step]
        with torch.no_grad():
            probs = F.softmax(functional_call(model, (params, buffers), (xb,)), dim=1)
        out = {}
        for name, j in jac(params, xb).items():  # j: (c, C, *shape); sum_y p_y (u - J_y)^2 = E[J^2] - u^2
            flat = j.flatten(2)
            u = torch.bmm(probs[:, None, :], flat)[:, 0]
            second = probs.reshape(1, -1) @ flat.square_().reshape(-1, flat.shape[-1])
            out[name] = (second[0] - u.square_().sum(0)).clamp_min_(0).view(j.shape[2:])
        yield out
