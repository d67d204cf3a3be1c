"""Influence unlearning (IU, `wfisher`): one Newton step w += alpha * H^-1 v, only where the mask is 1.

H = damping * I + (1/n) sum_i g_i g_i^T is the damped empirical Fisher over n retain examples' gradients
g_i, and v = n_f / (n_f + n_r) * (mean forget gradient - mean retain gradient), the direction of the
reference code. H^-1 v is computed exactly with the Woodbury identity,
    H^-1 v = (v - G^T w) / damping,   w = (n * damping * I + K)^-1 G v,   K = G G^T,   G = [g_1; ...; g_n] (n x P).
`persample.Records` gives K, G v and G^T w without forming G, so memory is O(n^2) plus the recorded layer
inputs and output gradients of the n examples (capped by --iu_memory). Time: batched passes over the n
examples, n^2 / 2 pairs costing min(in * out, L^2 (in + out)) per layer (see persample) and an n x n solve.
The reference's rank-one recursion (WoodFisher) updates its running vector with the wrong factor, so it
does not equal this inverse; ours is checked against a dense solve in the tests.
Under torchrun each rank sums the gradients of its share of the forget set and of the retain examples outside
H, and the sums are added over the ranks; every rank builds H from the same n examples and takes the same step.
"""

import torch

import dataset
import distributed
from argtypes import pos_float, pos_int
from masks import gradient_sums
from unlearn import flag, persample, register


def grad_sum(model, x, y, batch_size):
    """Flattened gradient of the summed cross-entropy over (x, y), model in eval mode (shared out under torchrun)."""
    return torch.cat([t.flatten() for t in gradient_sums(model, x, y, batch_size).values()])


def woodbury_weights(K, Gv, damping):
    """w = (n * damping * I + K)^-1 G v, so that (damping I + G^T G / n)^-1 v = (v - G^T w) / damping."""
    K = K.double().clone()
    K.diagonal().add_(len(K) * damping)
    return torch.linalg.solve(K, Gv.double())


def samples_for(model, args, x):
    """How many retain examples form H: --iu_samples, capped so that their records fit --iu_memory GiB."""
    cap = int(args.iu_memory * 2**30 // (4 * persample.record_floats(model, persample.layers(model), x)))
    return max(1, min(args.iu_samples, len(x), cap))


@register(display="IU", one_shot=True, flags=[
    persample.GRAD_CHUNK,
    flag("--iu_samples", type=pos_int, default=500,
         help="IU: retain examples forming the Hessian (time grows with their square; see docs/performance.md)"),
    flag("--iu_memory", type=pos_float, default=4.0,
         help="IU: GiB allowed for the layer records of the Hessian examples"),
    flag("--iu_damping", type=pos_float, default=1.0, help="IU: damping added to the Fisher")])
def wfisher(model, splits, args, device, mask, run_dir=None):
    xf, yf = splits.xy("forget")
    xr, yr = splits.xy("retain")
    nf, nr = len(xf), len(xr)
    n = samples_for(model, args, xr)
    if n < min(args.iu_samples, nr) and distributed.is_main():
        print(f"wfisher: Hessian from {n} retain examples (--iu_memory {args.iu_memory} GiB holds no more)")
    records = persample.Records(model, xr[:n], yr[:n], args.grad_chunk)
    ones = torch.ones(n, dtype=next(model.parameters()).dtype, device=xr.device)
    retain_sum = records.weighted_sum(ones) + grad_sum(model, dataset.rows(xr, n, nr), yr[n:], args.batch_size)
    v = nf / (nf + nr) * (grad_sum(model, xf, yf, args.batch_size) / nf - retain_sum / nr)
    w = woodbury_weights(*records.gram_and_dot(v), args.iu_damping).to(v.dtype)
    step = args.alpha * (v - records.weighted_sum(w)) / args.iu_damping
    with torch.no_grad():
        offset = 0
        for name, p in model.named_parameters():
            delta = step[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
            if mask and name in mask:
                delta = delta * mask[name].to(p.dtype)
            p.add_(delta)
    return model
