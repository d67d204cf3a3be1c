"""Further baselines: NegGrad+ and SCRUB (Kurmanji et al., NeurIPS 2023), CF-k and EU-k (Goel et al., 2022),
SSD (Foster et al., AAAI 2024).

- `NegGrad_plus`: every step one retain batch (--batch_size) and one forget batch (--forget_batch_size; the
  forget batches reshuffled each time they run out); loss = beta * CE(retain) - (1 - beta) * CE(forget),
  beta = --neggrad_beta. Plain SGD (no momentum, no weight decay) unless --momentum / --weight_decay are given,
  as its authors train it.
- `SCRUB`: the student is the model passed in, the teacher a frozen copy of it (eval mode). Each epoch:
  in the first --scrub_max_epochs epochs a pass over the forget batches (--forget_batch_size) maximizing
  KL(teacher || student), then a pass over the retain batches (--batch_size) minimizing gamma * CE + alpha *
  KL(teacher || student). The KL is taken at temperature T (--scrub_kd_T) and multiplied by T^2, mean over the
  batch. One optimizer (its momentum included) serves both kinds of step, as in the reference code.
- `CF_k` / `EU_k`: train on the retain set only the last k layers; a layer is a Conv2d or Linear module, counted
  from the end of `model.named_modules()` order, and the region also holds every other parameterised module
  registered after the first of them (the BatchNorms between them). The rest of the model is masked out, so
  its weights stay bit-identical. EU_k first sets the region's Conv2d and Linear parameters to a fresh
  --train_seed initialization (a pruned model's pruned weights are 0 in it; BatchNorms keep their values and
  train), only where the mask allows: re-initialization is a move. Both train with plain SGD (no momentum, no
  weight decay) unless --momentum / --weight_decay are given, as Goel et al. train them.
- `SSD`: importances I_f, I_d as the authors' code estimates them (eval mode, no augmentation): the mean over
  consecutive batches of SSD_BATCH examples (the last one may be smaller) of the squared gradient of the
  batch-mean cross-entropy; I_f over the forget set, I_d over the training set in the authors' order, the
  retain set followed by the forget set. Every weight with I_f > alpha * I_d (alpha = --ssd_alpha) is
  multiplied by min(lambda * I_d / I_f, 1) (lambda = --ssd_lambda); only where the mask allows. A batch's
  squared mean gradient is not the mean of its examples' squared gradients (the diagonal empirical Fisher):
  it shrinks with the batch size where gradients disagree, so alpha and lambda are tied to this estimate.
  Under torchrun each rank computes the batches of its share (whole batches), and the sums are added over the
  ranks.
"""
import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import distributed
from argtypes import nonneg_float, nonneg_int, pos_float, pos_int, probability
from unlearn import flag, loop, register
from masks import combine
from utils import UserError

PLAIN_SGD = (0.0, 0.0)  # momentum, weight decay
FORGET_BATCH_SIZE = flag("--forget_batch_size", type=pos_int, default=None,
                         help="NegGrad_plus, SCRUB: examples per forget-set batch (default: --batch_size)")
LAST_K = flag("--last_k", type=pos_int, default=1,
              help="CF_k, EU_k: how many of the last Conv2d/Linear layers (with the BatchNorms after the first of "
                   "them) are trained")


@register(display="NegGrad+", sgd=PLAIN_SGD, flags=[
    FORGET_BATCH_SIZE,
    flag("--neggrad_beta", type=probability, default=0.9999,
         help="NegGrad_plus: loss = beta * CE(retain) - (1 - beta) * CE(forget)")])
def NegGrad_plus(model, splits, args, device, mask, run_dir=None):
    """beta * CE(retain batch) - (1 - beta) * CE(forget batch), one of each per step; an epoch is a retain pass."""
    retain, steps = loop.epoch_batches(splits, "retain", args)
    forget, _ = loop.epoch_batches(splits, "forget", args, args.forget_batch_size)
    beta = args.neggrad_beta

    def forget_stream(epoch):
        while True:
            yield from forget(epoch)

    def make_batches(epoch):
        for (xr, yr), (xf, yf) in zip(retain(epoch), forget_stream(epoch)):
            yield (xr, xf), (yr, yf)

    def loss_fn(m, x, y):
        return beta * F.cross_entropy(m(x[0]), y[0]) - (1 - beta) * F.cross_entropy(m(x[1]), y[1])

    return loop.run(model, args, mask, make_batches, steps, loss_fn=loss_fn, run_dir=run_dir, desc="NegGrad_plus")


def distill_kl(student_logits, teacher_logits, temperature):
    """KL(teacher || student) of the softmaxes at `temperature`, times temperature^2, mean over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * t * t


@register(flags=[
    FORGET_BATCH_SIZE,
    flag("--scrub_max_epochs", type=nonneg_int, default=2,
         help="SCRUB: the first epochs that begin with max-steps on the forget set"),
    flag("--scrub_alpha", type=nonneg_float, default=0.001,
         help="SCRUB: weight of KL(teacher || student) in the retain (min) steps"),
    flag("--scrub_gamma", type=nonneg_float, default=0.99,
         help="SCRUB: weight of the cross-entropy in the retain (min) steps"),
    flag("--scrub_kd_T", type=pos_float, default=4.0, help="SCRUB: distillation temperature")])
def SCRUB(model, splits, args, device, mask, run_dir=None):
    """Max-steps on forget (first --scrub_max_epochs epochs), then min-steps on retain, every epoch."""
    epochs, max_epochs = args.unlearn_epochs, min(args.scrub_max_epochs, args.unlearn_epochs)
    if 0 < max_epochs < epochs and (args.warmup > max_epochs or
                                    any(max_epochs < m < epochs for m in args.decreasing_lr)):
        raise UserError("SCRUB's epochs after --scrub_max_epochs are shorter, so --warmup and --decreasing_lr "
                        "must end within the first --scrub_max_epochs epochs")
    teacher = copy.deepcopy(model).eval()
    forget, forget_steps = loop.epoch_batches(splits, "forget", args, args.forget_batch_size)
    retain, retain_steps = loop.epoch_batches(splits, "retain", args)

    def make_batches(epoch):
        if epoch < max_epochs:
            yield from (((x, True), y) for x, y in forget(epoch))
        yield from (((x, False), y) for x, y in retain(epoch))

    def loss_fn(m, batch, y):
        x, maximize = batch
        out = m(x)
        with torch.no_grad():
            target = teacher(x)
        kl = distill_kl(out, target, args.scrub_kd_T)
        if maximize:
            return -kl
        return args.scrub_gamma * F.cross_entropy(out, y) + args.scrub_alpha * kl

    steps = retain_steps + (forget_steps if max_epochs else 0)
    return loop.run(model, args, mask, make_batches, steps, loss_fn=loss_fn, run_dir=run_dir, desc="SCRUB")


def last_layers(model, k):
    """Parameter names of the last k Conv2d/Linear modules in `named_modules()` order and of every parameterised
    module registered after the first of them."""
    owners = [(name, m) for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]
    weighted = [i for i, (_, m) in enumerate(owners) if isinstance(m, (nn.Conv2d, nn.Linear))]
    if k > len(weighted):
        raise UserError(f"--last_k {k} is more than the {len(weighted)} convolution and linear layers of --arch "
                        f"{model.meta['arch']}")
    return {(name + "." if name else "") + p for name, m in owners[weighted[-k]:]
            for p, _ in m.named_parameters(recurse=False)}


def _last_k(model, splits, args, mask, run_dir, names, desc):
    """Train on retain with every parameter outside `names` masked out."""
    frozen = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n not in names}
    return loop.run(model, args, combine(frozen, mask), *loop.epoch_batches(splits, "retain", args),
                    run_dir=run_dir, desc=desc)


@register(display="CF-k", sgd=PLAIN_SGD, flags=[LAST_K])
def CF_k(model, splits, args, device, mask, run_dir=None):
    """Fine-tune only the last --last_k layers on the retain set."""
    return _last_k(model, splits, args, mask, run_dir, last_layers(model, args.last_k), "CF_k")


@register(display="EU-k", sgd=PLAIN_SGD, flags=[LAST_K])
def EU_k(model, splits, args, device, mask, run_dir=None):
    """Re-initialize the Conv2d and Linear layers among the last --last_k layers with --train_seed (where the
    mask allows), then train the whole region on the retain set."""
    names = last_layers(model, args.last_k)
    weighted = {(name + "." if name else "") + p for name, m in model.named_modules()
                if isinstance(m, (nn.Conv2d, nn.Linear)) for p, _ in m.named_parameters(recurse=False)}
    fresh = dict(loop.reinitialized(model, args, device).named_parameters())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in names and n in weighted:
                p.copy_(torch.where(mask[n], fresh[n], p) if mask and n in mask else fresh[n])
    return _last_k(model, splits, args, mask, run_dir, names, "EU_k")


SSD_BATCH = 128  # the authors' batch size for both importances


def batch_importance(model, x, y, batch_size=SSD_BATCH):
    """{name: mean over consecutive batches of the squared gradient of the batch-mean cross-entropy}. Under
    torchrun every rank must call it: each takes its contiguous share of whole batches, and the sums over
    batches are added over the ranks."""
    model.eval()
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    lo, hi = distributed.share(len(x), batch_size)
    for s in range(lo, hi, batch_size):
        loss = F.cross_entropy(model(x[s:s + batch_size]), y[s:s + batch_size])
        for t, g in zip(total.values(), torch.autograd.grad(loss, list(params.values()))):
            t += g.square()
    batches = (len(x) + batch_size - 1) // batch_size
    return {n: t / batches for n, t in distributed.all_sum(total).items()}


@register(one_shot=True, flags=[
    flag("--ssd_alpha", type=pos_float, default=10.0,
         help="SSD: dampen weights whose forget-set importance exceeds alpha x the training set's"),
    flag("--ssd_lambda", type=nonneg_float, default=1.0,
         help="SSD: a chosen weight is multiplied by min(lambda x I_train / I_forget, 1)")])
def SSD(model, splits, args, device, mask, run_dir=None):
    """Selective synaptic dampening: w *= min(lambda I_d / I_f, 1) wherever I_f > alpha I_d and the mask allows."""
    forget = batch_importance(model, *splits.xy("forget"))
    full = batch_importance(model, *dataclasses.replace(splits, train=np.concatenate(
        [splits.retain, splits.forget])).xy("train"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            chosen = forget[n] > args.ssd_alpha * full[n]
            if mask and n in mask:
                chosen &= mask[n]
            p.copy_(torch.where(chosen, p * (args.ssd_lambda * full[n] / forget[n]).clamp(max=1), p))
    return model
