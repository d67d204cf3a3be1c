"""Masks: {param_name: bool tensor}. Loading and checking them, and SalUn's saliency masks.

Saliency (the reference's generate_mask): s = |sum over forget batches of grad CE(model(x), y)| (eval mode,
no step); a mask at ratio r keeps the int(total * r) entries with the largest s, ranked globally over every
parameter of the model, ties broken by position (earlier parameter, then earlier entry, wins), so the same
scores always give the same mask. Under torchrun each rank computes the gradient of its share of the forget set,
the shares' gradients are summed over the ranks, and every rank gets rank 0's mask. (`gradient_sums` also
gives FF and IU their gradient sums.)
"""
import torch
import torch.nn.functional as F

import distributed
import utils
from utils import UserError


def check_mask(mask, model, source):
    """Every name must be a parameter of the model with the same shape; values must be 0/1."""
    if isinstance(mask, dict) and "state_dict" in mask:
        raise UserError(f"'{source}' looks like a model, not a mask; pass it with --model_path")
    if not isinstance(mask, dict) or not mask or not all(isinstance(v, torch.Tensor) for v in mask.values()):
        raise UserError(f"mask '{source}' is not a mask: expected a dict of parameter name -> 0/1 tensor")
    params = dict(model.named_parameters())
    remake = "; use a mask made for this model (main_imp.py --prune saliency)"
    out = {}
    for name, m in mask.items():
        if not isinstance(name, str):
            raise UserError(f"mask '{source}' is not a mask: key {name!r} is not a parameter name")
        if name not in params:
            if name.endswith(("running_mean", "running_var", "num_batches_tracked")) or name.startswith("normalize"):
                raise UserError(f"'{source}' looks like a model, not a mask; pass it with --model_path")
            raise UserError(f"mask '{source}' names '{name}', which --arch {model.meta['arch']} does not have"
                            + remake)
        if m.shape != params[name].shape:
            raise UserError(f"mask '{source}': '{name}' has shape {tuple(m.shape)}, the model's is "
                            f"{tuple(params[name].shape)}" + remake)
        if m.dtype != torch.bool:
            if m.is_floating_point() and not torch.isfinite(m).all():
                raise UserError(f"mask '{source}': '{name}' holds NaN or infinite values")
            if not ((m == 0) | (m == 1)).all():
                raise UserError(f"mask '{source}': '{name}' holds values other than 0 and 1")
        out[name] = m.bool()
    return out


def load_mask(path, model, device):
    return {k: v.to(device) for k, v in check_mask(utils.load_torch(path, "mask"), model, path).items()}


def combine(a, b):
    """Logical AND of two masks (a name missing from one mask is free there)."""
    if not a or not b:
        return a or b
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] & v if k in out else v
    return out


def gradient_sums(model, x, y, batch_size, batch_mean=False):
    """{name: gradient of the cross-entropy summed over (x, y)} in passes of `batch_size` examples, eval mode;
    with batch_mean, of the sum over consecutive batches of `batch_size` of each batch's mean. Under torchrun
    every rank must call it: each sums over its contiguous share of the examples (a batch cut between two
    ranks: each part's summed loss divided by the whole batch's size), and the sums are added over the ranks."""
    model.eval()
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    s, hi = distributed.share(len(x))
    while s < hi:
        start = s // batch_size * batch_size
        e = min(start + batch_size, hi)
        loss = F.cross_entropy(model(x[s:e]), y[s:e], reduction="sum")
        if batch_mean:  # bit-identical to the batch's mean when the batch is whole
            loss = loss / min(batch_size, len(x) - start)
        for t, g in zip(total.values(), torch.autograd.grad(loss, list(params.values()))):
            t += g
        s = e
    return distributed.all_sum(total)


def saliency_scores(model, x, y, batch_size):
    """|sum over batches of the gradient of the batch-mean cross-entropy| per parameter (shared out under torchrun,
    see gradient_sums)."""
    return {n: t.abs() for n, t in gradient_sums(model, x, y, batch_size, batch_mean=True).items()}


def top_ratio(scores, ratio):
    """Keep int(total * ratio) entries with the largest scores; deterministic tie-breaking by position. Under
    torchrun every rank calls it and gets rank 0's mask."""
    if not 0 < ratio <= 1:
        raise UserError(f"mask ratio {ratio} is outside (0, 1]")
    flat = torch.cat([s.flatten() for s in scores.values()]).float()
    k = int(flat.numel() * ratio)
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
    out, offset = {}, 0
    for name, s in scores.items():
        out[name] = keep[offset:offset + s.numel()].view_as(s)
        offset += s.numel()
    return distributed.from_main(out)


def density(mask):
    """Fraction of the masked entries that are kept."""
    total = sum(m.numel() for m in mask.values())
    return sum(int(m.sum()) for m in mask.values()) / max(total, 1)


def is_model_file(path):
    """A checkpoint of a whole model ({'state_dict': ...}, or a state_dict with buffers), not a mask."""
    state = utils.load_torch(path, "mask or model")
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return isinstance(state, dict) and ("state_dict" in state or any(
        isinstance(k, str) and (k.endswith(buffers) or k.startswith("normalize")) for k in state))


def zeros_mask(model):
    """The pruning mask of a model given as --mask: its zero weights in convolution and linear layers."""
    return {n: p != 0 for n, p in model.named_parameters() if p.dim() > 1 and (p == 0).any()}
