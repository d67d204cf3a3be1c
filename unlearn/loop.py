"""The shared unlearning loop: masked SGD, schedule, progress, exact resume; methods bring loss and batches."""
import dataset
import pruner
import trainer


def run(model, args, mask, make_batches, steps_per_epoch, loss_fn=trainer.cross_entropy, run_dir=None,
        lr=None, epochs=None, desc="unlearn", after_step=None):
    """Train `model` for --unlearn_epochs at --unlearn_lr with --momentum, --weight_decay, --decreasing_lr
    (only the milestones that fall inside the run) and --warmup; only weights the mask allows move.
    `after_step()` runs after every optimizer step."""
    lr = args.unlearn_lr if lr is None else lr
    epochs = args.unlearn_epochs if epochs is None else epochs
    sgd = trainer.MaskedSGD(model, lr, args.momentum, args.weight_decay, mask, after_step)
    milestones = [m for m in args.decreasing_lr if m < epochs]
    sched = trainer.lr_schedule(sgd.optimizer, steps_per_epoch, milestones, args.warmup)
    return trainer.fit(model, sgd, sched, epochs, make_batches, steps_per_epoch, loss_fn=loss_fn,
                       run_dir=run_dir, ckpt_name="train_state.pt", resume=args.resume, desc=desc,
                       amp=args.amp, save_every=getattr(args, "save_every_steps", 0))


def augmentation(splits, args):
    return "none" if args.no_aug else splits.raw.augment


def epoch_batches(splits, name, args, batch_size=None):
    """(make_batches, steps_per_epoch) over one split in batches of `batch_size` (default --batch_size),
    shuffled, augmented unless --no-aug."""
    x, y = splits.xy(name)
    aug = augmentation(splits, args)
    size = batch_size or args.batch_size
    return lambda epoch: dataset.batches(x, y, size, True, aug), dataset.num_batches(len(x), size)


def reinitialized(model, args, device):
    """A fresh --train_seed initialization of `model`'s architecture, pruned as `model` is: its pruning mask's
    zeros are zero in the new weights (other masks only freeze weights, at their new values)."""
    fresh = trainer.init_model(model.meta, args.train_seed, device)
    fresh.prune_mask = model.prune_mask
    return pruner.apply_mask(fresh, model.prune_mask) if model.prune_mask else fresh
