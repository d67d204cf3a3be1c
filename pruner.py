"""Pruning masks with `torch.nn.utils.prune`: global magnitude (or random) pruning of every conv weight.

A mask is {param_name: bool tensor} over the conv weights (the 4-d weights), True = kept. `global_prune`
removes `rate` of the weights that the previous mask still keeps (IMP: each round prunes a fraction of
what remains), reads the new masks out and calls `prune.remove`, so the model holds plain tensors again
(state_dict keys unchanged) with the pruned weights at exactly zero.
"""
import torch
from torch.nn.utils import prune


def conv_weights(model):
    """[(param_name, module)] for every module whose `weight` is a 4-d parameter (the conv layers)."""
    out = []
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.nn.Parameter) and w.dim() == 4:
            out.append((f"{name}.weight" if name else "weight", module))
    return out


def global_prune(model, rate, random=False, mask=None):
    """Prune `rate` of the conv weights still kept by `mask` (all of them when None), globally by |w|.

    With `random=True` the pruned weights are drawn at random (torch's global RNG). Returns the new mask;
    the model's pruned conv weights are set to zero.
    """
    targets = conv_weights(model)
    if not targets:
        raise ValueError("the model has no conv weights to prune")
    mask = mask or {}
    orders = [list(module._parameters) for _, module in targets]
    # torch's pruning flattens with view(-1): work on contiguous weights, restore channels_last after
    formats = []
    for _, module in targets:
        w = module.weight
        last = w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        formats.append(torch.channels_last if last else None)
        if last:
            w.data = w.data.contiguous()
    for name, module in targets:
        if name in mask:  # earlier rounds: global_unstructured then only ranks the remaining weights
            prune.custom_from_mask(module, "weight", mask[name].to(module.weight.device))
    method = prune.RandomUnstructured if random else prune.L1Unstructured
    prune.global_unstructured([(m, "weight") for _, m in targets], pruning_method=method, amount=rate)
    new = {}
    for (name, module), order, fmt in zip(targets, orders, formats):
        new[name] = module.weight_mask.detach().bool().contiguous()
        prune.remove(module, "weight")  # weight = weight_orig * mask, a plain parameter again
        if fmt is not None:
            module.weight.data = module.weight.data.contiguous(memory_format=fmt)
        for key in order:  # remove() re-adds `weight` last; keep the original order (optimizer states)
            module._parameters[key] = module._parameters.pop(key)
    return new


def apply_mask(model, mask):
    """Zero the weights a mask prunes (in place)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in mask.items():
            params[name].mul_(m.to(device=params[name].device, dtype=params[name].dtype))
    return model


def density(mask):
    """Fraction of the masked entries that are kept."""
    total = sum(m.numel() for m in mask.values())
    return sum(int(m.sum()) for m in mask.values()) / max(total, 1)


def sparsity(mask):
    """Fraction of the masked entries that are pruned (0 for an empty or missing mask)."""
    return 1.0 - density(mask) if mask else 0.0


def measured_sparsity(model):
    """Fraction of all conv weights of the model that are exactly zero."""
    ws = [m.weight.detach() for _, m in conv_weights(model)]
    return sum(int((w == 0).sum()) for w in ws) / max(sum(w.numel() for w in ws), 1)
