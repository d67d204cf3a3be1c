"""Training shared by every script: the masked SGD step, the lr schedule, the epoch loop with
atomic per-epoch checkpoints and exact resume, and validation.

Masking (the contract of DESIGN.md): weight decay is folded into the gradient and the sum is multiplied
by the mask before SGD's momentum sees it, so a masked-out coordinate gets a zero update every step and
its momentum buffer stays zero: it is bit-identical after any number of steps (plain gradient masking
with torch's weight decay or momentum would still move it).
"""
import math
import os
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

import distributed
import utils
from evaluation import accuracy, predict_probs
from utils import UserError


class MaskedSGD:
    """SGD with momentum and weight decay whose step leaves every masked-out weight untouched.

    `mask`: {param_name: bool tensor}; parameters not named move freely. `after_step`: called after every step.
    """

    def __init__(self, model, lr, momentum=0.9, weight_decay=5e-4, mask=None, after_step=None):
        self.after_step = after_step
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named]
        self.weight_decay = weight_decay
        mask = mask or {}
        self.masks = [mask[n].to(device=p.device, dtype=p.dtype) if n in mask else None for n, p in self.named]
        self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=momentum, weight_decay=0.0)

    def step(self):
        live = [(p.detach(), p.grad, m) for p, m in zip(self.params, self.masks) if p.grad is not None]
        if self.weight_decay:
            torch._foreach_add_([g for _, g, _ in live], [p for p, _, _ in live], alpha=self.weight_decay)
        masked = [(g, m) for _, g, m in live if m is not None]
        if masked:
            torch._foreach_mul_([g for g, _ in masked], [m for _, m in masked])
        self.optimizer.step()
        if self.after_step:
            self.after_step()

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)


def lr_schedule(optimizer, steps_per_epoch, milestones=(), warmup_epochs=0):
    """Per-step LambdaLR: linear warm-up over `warmup_epochs`, then 10x drops at the milestone epochs."""
    milestones = sorted(milestones)
    warm = warmup_epochs * steps_per_epoch

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        epoch = step // steps_per_epoch
        return 0.1 ** sum(epoch >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cross_entropy(model, x, y):
    return F.cross_entropy(model(x), y)


def check_finite(loss, epoch, step):
    value = loss.item()
    if not math.isfinite(value):
        raise UserError(f"loss became {value} at epoch {epoch + 1}, step {step + 1}; the run diverged, "
                        f"lower the learning rate")
    return value


def check_weights(model, method):
    """A method that ends with a NaN or infinite weight diverged: stop before anything is evaluated or written."""
    bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise UserError(f"{method} diverged: weight '{bad}' became NaN or infinite; lower --unlearn_lr or --alpha")


def train_epoch(model, sgd, scheduler, batch_iter, loss_fn, epoch, total, desc, amp=False, losses=None,
                after_step=None):
    """One pass over `batch_iter` ((x, y) pairs); returns the mean loss. amp: bfloat16 autocast. `losses`: those
    of the epoch's steps made before (a run resumed inside the epoch); `after_step(steps done, losses)`.

    Under torchrun each (x, y) is the global batch: this rank trains on its slice of it (see distributed.py)
    and the reported loss is the global batch's.
    """
    model.train()
    device_type = next(model.parameters()).device.type
    multi = distributed.active()
    losses = list(losses or [])
    bar = tqdm(batch_iter, total=total, initial=len(losses), desc=f"{desc} {epoch + 1}", leave=False,
               dynamic_ncols=True, disable=None if distributed.is_main() else True)
    for step, (x, y) in enumerate(bar, len(losses)):
        if multi:
            x, y, local, n = distributed.shard(x, y)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model, x, y)
        sgd.zero_grad()
        (distributed.weighted(loss, local, n) if multi else loss).backward()
        sgd.step()
        scheduler.step()
        losses.append(check_finite(distributed.global_loss(loss, local, n) if multi else loss, epoch, step))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if after_step is not None:
            after_step(step + 1, losses)
    return sum(losses) / max(len(losses), 1)


def fit(model, sgd, scheduler, epochs, make_batches, steps_per_epoch, loss_fn=cross_entropy, run_dir=None,
        ckpt_name="checkpoint.pt", resume=False, extra=None, val=None, desc="epoch", amp=False, resume_from=None,
        save_every=0):
    """The epoch loop. `make_batches(epoch)` yields the epoch's (x, y) batches.

    With run_dir: a checkpoint (model, optimizer, scheduler, epoch, RNG states, `extra`) is written
    atomically after every epoch, with the epoch records that run_dir/log.jsonl (one JSON line per epoch)
    is rewritten from; `resume=True` continues from that checkpoint (or from `resume_from`) so the result
    equals an uninterrupted run. `save_every` = N > 0: also after every N-th step of an epoch, with the RNG
    state at the epoch's start and the epoch's losses so far; a run resumed there draws the epoch's batches
    again from that state, skips the ones it trained on (reading them: streamed images are decoded again)
    and goes on with the RNG state of the checkpoint, as if never stopped.

    Under torchrun (see distributed.py) the model trains wrapped in DistributedDataParallel with synchronized
    BatchNorm, each rank on its slice of every batch; the ranks validate together, rank 0 alone writes and
    prints, and every rank returns the same weights.
    """
    start, history, inside = 0, [], None
    path = os.path.join(run_dir, ckpt_name) if run_dir else None
    source = resume_from or path
    if resume and source and os.path.exists(source):
        path_in = source
        state = utils.load_torch(path_in, "checkpoint to resume")
        if not isinstance(state, dict) or "optimizer" not in state or "epoch" not in state:
            raise UserError(f"checkpoint '{path_in}' holds no training state to resume from; give the checkpoint "
                            f"of an interrupted run, or rerun without --resume")
        try:
            model.load_state_dict(state["state_dict"])
            sgd.optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            inside = (state["step"], list(state["losses"]), state["rng"]) if state.get("step") else None
            utils.set_rng_state(state["epoch_rng"] if inside else state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            lines = [s.strip() for s in str(err).splitlines() if s.strip()] or [type(err).__name__]
            raise UserError(f"cannot resume from '{path_in}': it was written for another model or settings "
                            f"({lines[min(1, len(lines) - 1)][:200]}); rerun without --resume or choose "
                            f"another --save_dir") from None
        start, history = state["epoch"], list(state.get("history", []))
        if distributed.is_main():
            print(f"resuming from {path_in} after epoch {start}" + (f", step {inside[0]}" if inside else ""))
    main = distributed.is_main()
    distributed.check_same(sgd.masks, "masks")  # DDP makes the weights rank 0's; a mask must agree already
    net, undo = distributed.wrap(model) if distributed.active() else (model, None)

    def save(epoch, **progress):
        state = {"state_dict": model.state_dict(), "optimizer": sgd.optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch, "rng": utils.rng_state(), "history": history,
                 **progress, **(extra or {})}
        utils.save_torch(state, path)

    def after_step(done, losses):  # inside the epoch: a checkpoint after every save_every-th step
        if done % save_every == 0 and done < steps_per_epoch:
            save(epoch, step=done, epoch_rng=epoch_rng, losses=losses)

    try:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            epoch_rng = utils.rng_state()  # a run resumed inside this epoch starts it again from here
            batches, losses = iter(make_batches(epoch)), []
            if inside is not None:
                done, losses, rng = inside
                for _ in range(done):
                    next(batches)
                utils.set_rng_state(rng)
                inside = None
            loss = train_epoch(net, sgd, scheduler, batches, loss_fn, epoch, steps_per_epoch, desc, amp, losses,
                               after_step if save_every and run_dir and main else None)
            record = {"epoch": epoch + 1, "loss": round(loss, 5), "lr": sgd.optimizer.param_groups[0]["lr"],
                      "seconds": round(time.perf_counter() - t0, 3)}
            if val is not None:  # every rank: they share the work out
                record["val_acc"] = round(accuracy(predict_probs(model, val[0], val[0].device), val[1].cpu()), 3)
            history.append(record)
            if run_dir and main:
                save(epoch + 1)
                utils.write_lines(history, os.path.join(run_dir, "log.jsonl"))
            if main:
                print(" ".join(f"{k}={v}" for k, v in record.items()), flush=True)
    finally:
        if undo is not None:
            del net
            undo()
    distributed.barrier()  # the last checkpoint is on disk before any rank reads it
    return model


def model_meta(args, raw):
    """What it takes to rebuild the model; stored in every checkpoint."""
    mean, std = raw.stats()
    return {"arch": args.arch, "dataset": args.dataset, "num_classes": raw.num_classes,
            "in_channels": raw.shape[0], "image_size": raw.shape[-1], "mean": mean, "std": std,
            "imagenet_arch": bool(args.imagenet_arch)}


def build(meta):
    """The model described by `meta` (see model_meta). It keeps `meta` as an attribute, and `prune_mask`: the
    pruning mask ({param_name: bool tensor}) of a pruned model, whose zeros stay zero, or None."""
    import models
    model = models.build_model(meta["arch"], num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                               image_size=meta["image_size"], mean=meta["mean"], std=meta["std"],
                               imagenet_arch=meta["imagenet_arch"])
    model.meta = meta
    model.prune_mask = None
    return model


def init_model(meta, train_seed, device):
    """A freshly initialized model; the same --train_seed gives the same weights."""
    utils.seed_everything(train_seed)
    return to_device(build(meta), device)


def to_device(model, device):
    """Move to the device; convolutional models use channels_last on CUDA."""
    device = torch.device(device)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def load_model(path, args, raw, device):
    """A trained model from our checkpoint or the reference's ({'state_dict': ...}), checked against the data;
    a pruned model's checkpoint gives it its `prune_mask`."""
    state = utils.load_torch(path, "model")
    if not isinstance(state, dict):
        raise UserError(f"model '{path}' is not a checkpoint (expected a dict with a state_dict)")
    sd = state.get("state_dict", state)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()) or not sd:
        raise UserError(f"model '{path}' holds no state_dict of tensors")
    if all(v.dtype == torch.bool for v in sd.values()):
        raise UserError(f"'{path}' is a mask, not a model; pass it with --mask")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    meta = state.get("meta") or model_meta(args, raw)
    if not isinstance(meta, dict) or not META_KEYS <= set(meta):
        raise UserError(f"model '{path}' has a damaged 'meta' entry (it needs {', '.join(sorted(META_KEYS))}); "
                        f"recreate the checkpoint with main_baseline.py")
    _check_meta(meta, path, args, raw)
    if meta["num_classes"] != raw.num_classes or meta["in_channels"] != raw.shape[0]:
        raise UserError(f"model '{path}' was made for {meta['num_classes']} classes and {meta['in_channels']} "
                        f"channels; {args.dataset} has {raw.num_classes} and {raw.shape[0]}")
    model = build(meta)
    load_weights(model, sd, f"model '{path}'")
    if state.get("prune_mask") is not None:
        from masks import check_mask
        model.prune_mask = {k: v.to(device) for k, v in check_mask(state["prune_mask"], model, path).items()}
    return to_device(model, device), meta


def _check_meta(meta, path, args, raw):
    """A checkpoint made for another architecture, input size or dataset is refused in one line."""
    if meta["arch"] != args.arch:
        raise UserError(f"model '{path}' is a {meta['arch']}, not --arch {args.arch}; pass --arch {meta['arch']}")
    if meta["image_size"] != raw.shape[-1]:
        raise UserError(f"model '{path}' was trained on {meta['image_size']}x{meta['image_size']} inputs, these are "
                        f"{raw.shape[-1]}x{raw.shape[-1]}; pass --input_size {meta['image_size']}")
    trained_on = meta.get("dataset", args.dataset)
    if trained_on != args.dataset and not args.allow_dataset_change:
        raise UserError(f"model '{path}' was trained on {trained_on}, not --dataset {args.dataset}; pass "
                        f"--dataset {trained_on} (or --allow_dataset_change to use it on purpose)")


META_KEYS = {"arch", "num_classes", "in_channels", "image_size", "mean", "std", "imagenet_arch"}


def load_weights(model, sd, source):
    """load_state_dict with every mismatch (a missing, extra or wrongly shaped tensor) as a one-line UserError."""
    arch = model.meta["arch"]
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as err:
        lines = [s.strip() for s in str(err).splitlines() if s.strip().startswith("size mismatch")]
        detail = lines[0].split(": copying")[0].removeprefix("size mismatch for ") if lines else "a tensor"
        raise UserError(f"{source} does not fit --arch {arch}: {detail} has another shape (it was made for "
                        f"another architecture or input size)") from None
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which {arch} does not"
        raise UserError(f"{source} does not fit --arch {arch}: it {what}")
    return model
