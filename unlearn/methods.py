"""Gradient-based methods: raw, retrain, FT, GA, RL (RL + saliency mask = SalUn), FT_prune (l1-sparse)."""
import torch
import torch.nn.functional as F

import dataset
import trainer
from unlearn import loop, register


@register
def raw(model, splits, args, device, mask, run_dir=None):
    """No change: the original model."""
    return model


@register
def retrain(model, splits, args, device, mask, run_dir=None):
    """Re-initialize with --train_seed and train on the retain set only (the gold standard)."""
    model = trainer.init_model(model.meta, args.train_seed, device)
    return loop.run(model, args, mask, *loop.epoch_batches(splits, "retain", args), run_dir=run_dir,
                    desc="retrain")


@register
def FT(model, splits, args, device, mask, run_dir=None):
    """Fine-tune on the retain set."""
    return loop.run(model, args, mask, *loop.epoch_batches(splits, "retain", args), run_dir=run_dir,
                    desc="FT")


@register
def GA(model, splits, args, device, mask, run_dir=None):
    """Gradient ascent on the forget set."""
    return loop.run(model, args, mask, *loop.epoch_batches(splits, "forget", args), run_dir=run_dir,
                    loss_fn=lambda m, x, y: -F.cross_entropy(m(x), y), desc="GA")


def _wrong_labels(y, num_classes):
    """A uniformly random label from the other classes, for each entry of y."""
    return (y + torch.randint(1, num_classes, y.shape).to(y.device)) % num_classes


@register
def RL(model, splits, args, device, mask, run_dir=None):
    """Random labels: forget examples relabelled at random (fresh each epoch), mixed with the retain set."""
    xf, yf = splits.xy("forget")
    xr, yr = splits.xy("retain")
    x = torch.cat([xf, xr])
    aug = loop.augmentation(splits, args)

    def make_batches(epoch):
        y = torch.cat([_wrong_labels(yf, splits.raw.num_classes), yr])
        return dataset.batches(x, y, args.batch_size, True, aug)

    return loop.run(model, args, mask, make_batches, dataset.num_batches(len(x), args.batch_size),
                    run_dir=run_dir, desc="RL")


@register
def FT_prune(model, splits, args, device, mask, run_dir=None):
    """l1-sparse: fine-tune on retain with alpha_t * ||w||_1, alpha_t decaying linearly from --alpha to 0
    over the epochs before the final --no-l1-epochs."""
    make_batches, steps = loop.epoch_batches(splits, "retain", args)
    l1_epochs = args.unlearn_epochs - args.no_l1_epochs
    state = {"epoch": 0}

    def batches_with_epoch(epoch):
        state["epoch"] = epoch
        return make_batches(epoch)

    def loss_fn(m, x, y):
        e = state["epoch"]
        alpha = args.alpha * (1 - e / l1_epochs) if e < l1_epochs else 0.0
        loss = F.cross_entropy(m(x), y)
        if alpha:
            loss = loss + alpha * sum(p.abs().sum() for p in m.parameters())
        return loss

    return loop.run(model, args, mask, batches_with_epoch, steps, loss_fn=loss_fn, run_dir=run_dir,
                    desc="FT_prune")
