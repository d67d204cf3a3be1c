"""Gradient-based methods: raw, retrain, FT, GA, RL (RL + saliency mask = SalUn), SalUn_soft, FT_prune (l1-sparse),
GA_l1."""
import torch
import torch.nn.functional as F

import dataset
from argtypes import nonneg_int, ratio
from unlearn import flag, loop, register

RL_ORDER = flag("--rl_order", default="mixed", choices=["mixed", "reference"],
                help="RL, SalUn_soft: 'mixed' shuffles relabelled forget examples (labels from the other classes) "
                     "into the retain set; 'reference' as the reference code: labels from all classes, all forget "
                     "batches then all retain batches (cifar100, TinyImagenet: one shuffled stream)")


@register(display="Original", one_shot=True, maskable=False)
def raw(model, splits, args, device, mask, run_dir=None):
    """No change: the original model."""
    return model


@register(display="Retrain", maskable=False)
def retrain(model, splits, args, device, mask, run_dir=None):
    """Re-initialize with --train_seed and train on the retain set only (the gold standard); a pruned model's
    pruned weights are zero from the first step."""
    model = loop.reinitialized(model, args, device)
    return loop.run(model, args, mask, *loop.epoch_batches(splits, "retain", args), run_dir=run_dir,
                    desc="retrain")


@register
def FT(model, splits, args, device, mask, run_dir=None):
    """Fine-tune on the retain set."""
    return loop.run(model, args, mask, *loop.epoch_batches(splits, "retain", args), run_dir=run_dir,
                    desc="FT")


def ascent(m, x, y):
    """GA's loss: the negated cross-entropy."""
    return -F.cross_entropy(m(x), y)


def l1_norm(m):
    """||w||_1 over all parameters (the reference's l1_regularization)."""
    return sum(p.abs().sum() for p in m.parameters())


@register
def GA(model, splits, args, device, mask, run_dir=None):
    """Gradient ascent on the forget set."""
    return loop.run(model, args, mask, *loop.epoch_batches(splits, "forget", args), run_dir=run_dir,
                    loss_fn=ascent, desc="GA")


@register
def GA_l1(model, splits, args, device, mask, run_dir=None):
    """The reference's GA_l1: gradient ascent on the forget set with an l1 penalty of constant weight, loss =
    -CE + --alpha * ||w||_1 (no decay and no --no-l1-epochs, unlike FT_prune's)."""
    return loop.run(model, args, mask, *loop.epoch_batches(splits, "forget", args), run_dir=run_dir,
                    loss_fn=lambda m, x, y: ascent(m, x, y) + args.alpha * l1_norm(m), desc="GA_l1")


def _wrong_labels(y, num_classes):
    """A uniformly random label from the other classes, for each entry of y."""
    return (y + torch.randint(1, num_classes, y.shape).to(y.device)) % num_classes


def _any_labels(y, num_classes):
    """A uniformly random label from all classes (the true one included), for each entry of y."""
    return torch.randint(0, num_classes, y.shape).to(y.device)


def _rl_batches(splits, args):
    """RL's (make_batches, steps_per_epoch); see `RL`."""
    xf, yf = splits.xy("forget")
    xr, yr = splits.xy("retain")
    k, bs, aug = splits.raw.num_classes, args.batch_size, loop.augmentation(splits, args)
    reference = args.rl_order == "reference"
    if reference and args.dataset not in ("cifar100", "TinyImagenet"):
        def make_batches(epoch):
            yield from dataset.batches(xf, _any_labels(yf, k), bs, True, aug)
            yield from dataset.batches(xr, yr, bs, True, aug)

        return make_batches, dataset.num_batches(len(xf), bs) + dataset.num_batches(len(xr), bs)
    relabel = _any_labels if reference else _wrong_labels
    x = torch.cat([xf, xr])

    def make_batches(epoch):
        return dataset.batches(x, torch.cat([relabel(yf, k), yr]), bs, True, aug)

    return make_batches, dataset.num_batches(len(x), bs)


@register(flags=[RL_ORDER])
def RL(model, splits, args, device, mask, run_dir=None):
    """Random labels: the forget examples, relabelled at random (fresh each epoch), trained on with the retain set.

    --rl_order mixed: labels from the other classes, one shuffled stream of forget and retain examples.
    --rl_order reference (the reference code): labels from all classes; on cifar100 and TinyImagenet one
    shuffled stream, on every other dataset all forget batches first, then all retain batches.
    """
    return loop.run(model, args, mask, *_rl_batches(splits, args), run_dir=run_dir, desc="RL")


@register(display="SalUn-soft", flags=[RL_ORDER, flag(
    "--salun_soft_ratio", type=ratio, default=0.5,
    help="SalUn_soft: the share of weight changes its first soft-thresholding step resets to 0 (falling linearly to "
         "none by the last step)")])
def SalUn_soft(model, splits, args, device, mask, run_dir=None):
    """SalUn-soft (SalUn's soft-thresholding variant; the reference's RL_proximal): RL, and after every step a
    proximal step of an l1 penalty on the change since the start of the epoch, d = w - w_e: every d is
    soft-thresholded, d <- sign(d) max(|d| - tau, 0), tau = the k-th smallest |d| over the N weights the mask
    allows (all weights without a mask), k = int(r (T - t - 1) / T * N) at step t of T (r = --salun_soft_ratio):
    a share r of the allowed changes is reset to 0 at first, none by the end. Masked-out weights never change.
    """
    make_batches, steps = _rl_batches(splits, args)
    named = list(model.named_parameters())
    free = [mask[n] if mask and n in mask else None for n, _ in named]
    total = args.unlearn_epochs * steps
    count = sum(p.numel() if f is None else int(f.sum()) for (_, p), f in zip(named, free))
    state = {}

    def batches(epoch):
        state["start"], state["step"] = [p.detach().clone() for _, p in named], epoch * steps
        return make_batches(epoch)

    def proximal():
        k = int(args.salun_soft_ratio * (total - state["step"] - 1) / total * count)
        state["step"] += 1
        if k < 1:
            return
        with torch.no_grad():
            diffs = [p - w for (_, p), w in zip(named, state["start"])]
            allowed = torch.cat([(d if f is None else d[f]).flatten() for d, f in zip(diffs, free)])
            tau = torch.kthvalue(allowed.abs(), k).values
            for (_, p), w, d in zip(named, state["start"], diffs):
                p.copy_(torch.where(d > tau, p - tau, torch.where(d < -tau, p + tau, w)))

    return loop.run(model, args, mask, batches, steps, run_dir=run_dir, desc="SalUn_soft", after_step=proximal)


def l1_weight(alpha, epoch, epochs, no_l1_epochs):
    """The reference's l1 schedule: alpha * (1 - epoch / (epochs - no_l1_epochs)) over the first
    epochs - no_l1_epochs epochs, then 0; constant alpha when no_l1_epochs equals epochs."""
    l1_epochs = epochs - no_l1_epochs
    if l1_epochs == 0:
        return alpha
    return alpha * (1 - epoch / l1_epochs) if epoch < l1_epochs else 0.0


@register(display="l1-sparse", flags=[flag("--no-l1-epochs", dest="no_l1_epochs", type=nonneg_int, default=0,
                                                help="FT_prune: final epochs without the l1 penalty")])
def FT_prune(model, splits, args, device, mask, run_dir=None):
    """l1-sparse (the reference's FT_prune, which runs its FT_l1; `--unlearn FT_l1` runs this): fine-tune on retain
    with alpha_t * ||w||_1 over all parameters, alpha_t from `l1_weight`."""
    make_batches, steps = loop.epoch_batches(splits, "retain", args)
    state = {"alpha": 0.0}

    def batches_with_alpha(epoch):
        state["alpha"] = l1_weight(args.alpha, epoch, args.unlearn_epochs, args.no_l1_epochs)
        return make_batches(epoch)

    def loss_fn(m, x, y):
        loss = F.cross_entropy(m(x), y)
        if state["alpha"]:
            loss = loss + state["alpha"] * l1_norm(m)
        return loss

    return loop.run(model, args, mask, batches_with_alpha, steps, loss_fn=loss_fn, run_dir=run_dir,
                    desc="FT_prune")
