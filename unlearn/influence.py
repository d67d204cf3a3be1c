"""Influence unlearning (IU, `wfisher`): one Newton step w += alpha * H^-1 v, only where the mask is 1.

H = damping * I + (1/n) sum_i g_i g_i^T is the damped empirical Fisher over n retain examples' gradients
g_i, and v = n_f / (n_f + n_r) * (mean forget gradient - mean retain gradient), the direction of the
reference code. H^-1 v is computed exactly with the Woodbury identity,
    H^-1 v = (v - G^T (n * damping * I + G G^T)^-1 G v) / damping,      G = [g_1; ...; g_n]  (n x P),
which costs O(n P) memory for G, O(n^2 P) for the Gram matrix and O(n^3) for the solve. The reference's
rank-one recursion (WoodFisher) updates its running vector with the wrong factor, so it does not equal
this inverse; ours is checked against a dense solve in the tests.
"""
import torch
import torch.nn.functional as F

from unlearn import persample, register


def flat_grads(model, x, y, chunk=0):
    """(n, P) matrix of per-example gradients, parameters flattened in named_parameters() order."""
    rows = [torch.cat([g.flatten(1) for g in part.values()], 1) for part in persample.ce_grads(model, x, y, chunk)]
    return torch.cat(rows)


def mean_grad(model, x, y, batch_size):
    """Flattened gradient of the mean cross-entropy over (x, y), model in eval mode."""
    model.eval()
    params = [p for p in model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    for s in range(0, len(x), batch_size):
        loss = F.cross_entropy(model(x[s:s + batch_size]), y[s:s + batch_size], reduction="sum")
        for t, g in zip(total, torch.autograd.grad(loss, params)):
            t += g
    return torch.cat([t.flatten() for t in total]) / len(x)


def woodbury_ihvp(G, v, damping):
    """(damping I + G^T G / n)^-1 v, in float64."""
    G, v = G.double(), v.double()
    n = G.shape[0]
    K = G @ G.T
    K.diagonal().add_(n * damping)
    w = torch.linalg.solve(K, G @ v)
    return (v - G.T @ w) / damping


def samples_for(model, args, n_retain):
    """How many retain examples form H: --iu_samples, capped so that G fits --iu_memory GiB."""
    cap = int(args.iu_memory * 2**30 // (4 * persample.num_params(model)))
    return max(1, min(args.iu_samples, n_retain, cap))


@register
def wfisher(model, splits, args, device, mask, run_dir=None):
    xf, yf = splits.xy("forget")
    xr, yr = splits.xy("retain")
    nf, nr = len(xf), len(xr)
    v = nf / (nf + nr) * (mean_grad(model, xf, yf, args.batch_size) - mean_grad(model, xr, yr, args.batch_size))
    n = samples_for(model, args, nr)
    if n < min(args.iu_samples, nr):
        print(f"wfisher: Hessian from {n} retain examples (--iu_memory {args.iu_memory} GiB holds no more)")
    G = flat_grads(model, xr[:n], yr[:n], args.grad_chunk)
    step = (args.alpha * woodbury_ihvp(G, v, args.iu_damping)).float()
    with torch.no_grad():
        offset = 0
        for name, p in model.named_parameters():
            delta = step[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
            if mask and name in mask:
                delta = delta * mask[name].to(p.dtype)
            p.add_(delta)
    return model
