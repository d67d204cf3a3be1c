"""Fisher forgetting (FF): Gaussian noise shaped by the inverse diagonal Fisher of the retain set.

Noise is added only where the mask is 1. The Fisher diagonals come from `persample` (batched passes),
not from one backward pass per example and class as in the reference code.
"""
import torch

from unlearn import persample, register


def _classifier(model, p):
    return p.dim() >= 1 and p.shape[0] == model.meta["num_classes"]


def _retain(splits, args):
    """The first --fisher_samples retain examples (all when 0)."""
    x, y = splits.xy("retain")
    n = args.fisher_samples or len(x)
    return x[:n], y[:n]


def _perturb(model, noise_std, mask):
    """w += noise_std * N(0, 1), only where the mask allows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = noise_std[name] * torch.randn_like(p)
            if mask and name in mask:
                noise = noise * mask[name].to(p.dtype)
            p.add_(noise)
    return model


@register
def fisher_new(model, splits, args, device, mask, run_dir=None):
    """FF with the empirical Fisher F = mean_i g_i^2 (g_i: the gradient of log p(y_i | x_i)):
    std = min(sqrt(alpha / F), 1e-3), ten times larger on the classifier layer."""
    x, y = _retain(splits, args)
    fisher = persample.sq_grad_sums(model, x, y, args.grad_chunk)
    std = {}
    for name, p in model.named_parameters():
        s = torch.sqrt(args.alpha / (fisher[name] / len(x))).clamp(max=1e-3)
        std[name] = s * 10 if _classifier(model, p) else s
    return _perturb(model, std, mask)


@register
def fisher(model, splits, args, device, mask, run_dir=None):
    """FF of Golatkar et al. with the true diagonal Fisher F = mean_x E_{y~p(y|x)} g_y^2 over retain:
    var = alpha / (F + 1e-8) clamped at 1e3 (1e2 on the classifier), averaged over each weight row's inputs,
    ten times larger on the classifier and on 1-d parameters (BatchNorm, biases)."""
    x, _ = _retain(splits, args)
    fisher = persample.sq_grad_sums(model, x, None, args.grad_chunk)
    std = {}
    for name, p in model.named_parameters():
        var = (1.0 / (fisher[name] / len(x) + 1e-8)).clamp(max=1e2 if _classifier(model, p) else 1e3)
        var = args.alpha * var
        if p.dim() > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(p)
        if _classifier(model, p) or p.dim() == 1:
            var = var * 10
        std[name] = var.sqrt()
    return _perturb(model, std, mask)
