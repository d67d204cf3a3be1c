"""Boundary unlearning (Chen et al., "Boundary Unlearning", CVPR 2023): boundary shrinking (BS) and boundary
expanding (BE). Both train on the forget set only, with labels that push its examples across a decision boundary.

- `BS`: every forget batch is relabelled by the original model (a frozen copy, eval mode): one FGSM step of size
  --bs_bound on the [0, 1] image, x' = round(255 * clip(x + bound * sign(grad_x CE(f(x), y)), 0, 1)) / 255, and the
  new label is the class of largest logit f(x') among the classes other than y (the "nearest" other class). When
  the step crosses the boundary this is f's prediction at x', as in the authors' code; when it does not, it is the
  runner-up class at x' (their code keeps the true label for such an example). The model is then trained with
  cross-entropy on the clean batch and these labels. The label is found for the batch as trained on (augmented
  unless --no-aug), so each epoch relabels afresh, as the public code does.
- `BE`: the output layer (the last Linear with one output per class) gets an extra "shadow" class row (PyTorch's
  default Linear initialization); the model is trained with cross-entropy to put every forget example in the
  shadow class; then the shadow row is dropped, so the returned model has the input's architecture and
  state_dict keys and shapes. The mask covers the original parameters: the shadow row moves freely, the kept rows
  only where the mask allows (masked-out ones stay bit-identical).
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

import distributed
from argtypes import pos_float
from unlearn import flag, loop, register
from utils import UserError


def adversarial_labels(original, x, y, bound):
    """The class of largest logit other than y of `original` at the one-step FGSM image (see the module doc)."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(original(x), y, reduction="sum"), x)
    x_adv = torch.round((x.detach() + bound * grad.sign()).clamp(0, 1) * 255) / 255
    with torch.no_grad():
        logits = original(x_adv).float()
    logits[torch.arange(len(y), device=y.device), y] = -torch.inf
    return logits.argmax(1)


@register(flags=[flag("--bs_bound", type=pos_float, default=0.1,
                      help="BS: size of the one FGSM step on [0, 1] images (L-inf) whose class relabels each forget "
                           "example (the class of largest logit other than the true one)")])
def BS(model, splits, args, device, mask, run_dir=None):
    """Boundary shrinking: train on the forget examples relabelled to the class one FGSM step reaches."""
    original = copy.deepcopy(model).eval().requires_grad_(False)
    forget, steps = loop.epoch_batches(splits, "forget", args)

    def make_batches(epoch):
        for x, y in forget(epoch):
            if isinstance(x, distributed.Shard):  # streamed under torchrun: this rank's slice, labelled here
                yield x, distributed.Shard(adversarial_labels(original, x.tensor, y.tensor, args.bs_bound), y.n)
            else:
                yield x, adversarial_labels(original, x, y, args.bs_bound)

    return loop.run(model, args, mask, make_batches, steps, run_dir=run_dir, desc="BS")


def output_layer(model, num_classes):
    """(parent module, attribute name, parameter-name prefix) of the last nn.Linear with `num_classes` outputs."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = name
    if found is None:
        raise UserError(f"BE needs an output layer (nn.Linear with {num_classes} outputs); --arch "
                        f"{getattr(model, 'meta', {}).get('arch', type(model).__name__)} has none")
    parent_name, _, attr = found.rpartition(".")
    parent = model.get_submodule(parent_name)
    return parent, attr, found + "."


@register
def BE(model, splits, args, device, mask, run_dir=None):
    """Boundary expanding: a temporary shadow class takes in the forget examples, then is removed."""
    k = splits.raw.num_classes
    parent, attr, prefix = output_layer(model, k)
    layer = getattr(parent, attr)
    w = layer.weight
    wide = nn.Linear(layer.in_features, k + 1, bias=layer.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        wide.weight[:k] = w
        if layer.bias is not None:
            wide.bias[:k] = layer.bias
    wide_mask = None
    if mask:
        wide_mask = dict(mask)
        for p in ("weight", "bias"):
            m = mask.get(prefix + p)
            if m is not None:  # the shadow row is free
                wide_mask[prefix + p] = torch.cat([m, torch.ones_like(m[:1])])
    setattr(parent, attr, wide)
    try:
        loop.run(model, args, wide_mask, *loop.epoch_batches(splits, "forget", args), run_dir=run_dir, desc="BE",
                 loss_fn=lambda m, x, y: F.cross_entropy(m(x), torch.full_like(y, k)))
    finally:
        with torch.no_grad():
            layer.weight.copy_(wide.weight[:k])
            if layer.bias is not None:
                layer.bias.copy_(wide.bias[:k])
        setattr(parent, attr, layer)
    return model
