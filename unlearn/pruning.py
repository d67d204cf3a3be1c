"""Pruning during unlearning: the reference code's FT_prune_bi, GA_prune and GA_prune_bi ("_bi": pruning between
the unlearning epochs; Unlearn-Sparse has FT_prune_bi, SalUn's code adds the two GA ones).

A pruning is the reference's `pruning_model` (`--random_prune`: `pruning_model_random`): global magnitude (or
random) pruning of a fraction of the conv weights not yet pruned, here by `pruner.global_prune`. A pruned weight is
0 and is set back to 0 after every optimizer step (the reference keeps it at 0 by torch's pruning
reparametrization). Under a mask only the conv weights it allows are pruned, so masked-out weights stay
bit-identical (the reference ranks all conv weights).

- `FT_prune_bi`: FT on the retain set (--unlearn_lr, --unlearn_epochs E); before every epoch t with E - t even it
  prunes 1 - (1 - --rate)^(1 / ceil(E / 2)) of the remaining conv weights. That makes floor(E / 2) prunings: an
  even E ends at sparsity --rate, an odd E one pruning short of it, and E = 1 prunes nothing, as in the reference.
- `GA_prune_bi`: GA on the forget set for --epochs epochs at --lr (the training flags: the reference reads these,
  not --unlearn_epochs and --unlearn_lr), pruning --rate of the remaining conv weights after every epoch, so
  1 - (1 - rate)^epochs in all.
- `GA_prune`: --pruning_times states; each is GA on the forget set for --epochs at --lr with a fresh optimizer and
  schedule, then a pruning of --rate of the remaining conv weights. Before every later state the weights and
  BatchNorm statistics rewind to those the run started from, the pruned weights staying 0 (the reference's
  rewind_lt from epoch 0, the one setting its code runs with); the last pruning is not trained after. State 0
  trains in the run folder, state s > 0 in its `state_<s>/` (each with its checkpoint for --resume).
"""
import copy
import math
import os

import torch

import pruner
import utils
from unlearn import loop, register
from unlearn.methods import ascent


class PrunedWeights:
    """The pruning of one run. `prune(rate)` prunes `rate` of the conv weights that the mask allows and that are
    not 0; `track()` takes the allowed conv weights at 0 as the pruned ones (so a resumed run finds them in its
    checkpoint's weights); `hold()`, after every optimizer step, sets those back to 0."""

    def __init__(self, model, mask, random):
        params = dict(model.named_parameters())
        self.model, self.random, self.pruned = model, random, {}
        self.params = {n: params[n] for n, _ in pruner.conv_weights(model)}
        self.allowed = {n: mask[n] if mask and n in mask else torch.ones_like(p, dtype=torch.bool)
                        for n, p in self.params.items()}

    def prune(self, rate):
        before = {n: p.detach().clone() for n, p in self.params.items()}
        pruner.global_prune(self.model, rate, self.random, {n: a & (before[n] != 0) for n, a in self.allowed.items()})
        with torch.no_grad():  # global_prune zeroes every weight outside the mask it is given: restore them
            for n, p in self.params.items():
                p.copy_(torch.where(self.allowed[n], p, before[n]))

    def track(self):
        self.pruned = {n: self.allowed[n] & (p.detach() == 0) for n, p in self.params.items()}

    def hold(self):
        with torch.no_grad():
            for n, pruned in self.pruned.items():
                self.params[n].masked_fill_(pruned, 0)


@register
def FT_prune_bi(model, splits, args, device, mask, run_dir=None):
    """FT on the retain set, pruning before every epoch t with --unlearn_epochs - t even (see the module doc)."""
    epochs = args.unlearn_epochs
    rate = 1 - (1 - args.rate) ** (1 / math.ceil(epochs / 2))
    pruning = PrunedWeights(model, mask, args.random_prune)
    retain, steps = loop.epoch_batches(splits, "retain", args)

    def make_batches(epoch):
        if (epochs - epoch) % 2 == 0:
            pruning.prune(rate)
        if epoch >= epochs % 2:  # from the first pruning on
            pruning.track()
        return retain(epoch)

    return loop.run(model, args, mask, make_batches, steps, run_dir=run_dir, desc="FT_prune_bi",
                    after_step=pruning.hold)


@register
def GA_prune_bi(model, splits, args, device, mask, run_dir=None):
    """GA on the forget set for --epochs at --lr, pruning --rate of the remaining conv weights after every epoch."""
    pruning = PrunedWeights(model, mask, args.random_prune)
    forget, steps = loop.epoch_batches(splits, "forget", args)

    def make_batches(epoch):
        if epoch:  # the pruning after the previous epoch
            pruning.prune(args.rate)
            pruning.track()
        return forget(epoch)

    loop.run(model, args, mask, make_batches, steps, loss_fn=ascent, run_dir=run_dir, lr=args.lr, epochs=args.epochs,
             desc="GA_prune_bi", after_step=pruning.hold)
    pruning.prune(args.rate)
    return model


@register
def GA_prune(model, splits, args, device, mask, run_dir=None):
    """--pruning_times states of GA on the forget set (--epochs at --lr) and a pruning, rewinding in between."""
    start = copy.deepcopy(model.state_dict())
    pruning = PrunedWeights(model, mask, args.random_prune)
    forget, steps = loop.epoch_batches(splits, "forget", args)
    for state in range(args.pruning_times):
        folder = run_dir
        if state:  # rewind; the pruned weights stay 0
            pruning.track()
            model.load_state_dict(start)
            pruning.hold()
            folder = run_dir and utils.ensure_dir(os.path.join(run_dir, f"state_{state}"))
        loop.run(model, args, mask, forget, steps, loss_fn=ascent, run_dir=folder, lr=args.lr, epochs=args.epochs,
                 desc=f"GA_prune state {state}", after_step=pruning.hold)
        pruning.prune(args.rate)
    return model
