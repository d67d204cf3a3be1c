"""Pruning masks with `torch.nn.utils.prune`: global magnitude (or random) pruning of every conv weight.

A mask is {param_name: bool tensor} over the conv weights (the 4-d weights), True = kept. `global_prune`
removes `rate` of the weights that the previous mask still keeps (IMP: each round prunes a fraction of
what remains), reads the new masks out and calls `prune.remove`, so the model holds plain tensors again
(state_dict keys unchanged) with the pruned weights at exactly zero.

`Pruning` runs OMP/IMP with rewinding (main_imp.py, main_backdoor.py --prune): train, prune, rewind, retrain.
"""
import os

import torch
from torch.nn.utils import prune

import dataset
import distributed
import trainer
import utils
from evaluation import accuracy, predict_probs
from masks import density
from utils import UserError


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


def sparsity(mask):
    """Fraction of the masked entries that are pruned (0 for an empty or missing mask)."""
    return 1.0 - density(mask) if mask else 0.0


def measured_sparsity(model):
    """Fraction of all conv weights of the model that are exactly zero."""
    ws = [m.weight.detach() for _, m in conv_weights(model)]
    return sum(int((w == 0).sum()) for w in ws) / max(sum(w.numel() for w in ws), 1)


REWIND_FILE = "rewind_weights.pt"


def state_dir(save_dir, i):
    return os.path.join(save_dir, f"state_{i}")


def mask_path(save_dir, i):
    return os.path.join(save_dir, f"mask_state_{i}.pt")


def _finished(save_dir, i):
    return os.path.exists(os.path.join(state_dir(save_dir, i), "eval_result.json"))


def _state_dict_of(path, what):
    state = utils.load_torch(path, what)
    sd = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{what} '{path}' holds no state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_into(model, sd, source):
    return trainer.load_weights(model, sd, f"'{source}'")


def train_state(args, splits, device, model, mask, run_dir, extra, start_epoch=0, on_epoch=None):
    """Train on the 'train' split for --epochs, the lr schedule starting at `start_epoch`, pruned weights fixed.

    `on_epoch(epoch, model)` runs before each epoch's first step; fit writes run_dir/checkpoint.pt every
    epoch and continues it under --resume.
    """
    x, y = splits.xy("train")
    steps = dataset.num_batches(len(x), args.batch_size)
    sgd = trainer.MaskedSGD(model, args.lr, args.momentum, args.weight_decay, mask)
    sched = trainer.lr_schedule(sgd.optimizer, steps, args.decreasing_lr, args.warmup)
    if start_epoch:
        factor, offset = sched.lr_lambdas[0], start_epoch * steps
        sched = torch.optim.lr_scheduler.LambdaLR(sgd.optimizer, lambda step: factor(step + offset))
    aug = "none" if args.no_aug else splits.raw.augment

    def make_batches(epoch):
        if on_epoch is not None:
            on_epoch(epoch, model)
        return dataset.batches(x, y, args.batch_size, True, aug)

    trainer.fit(model, sgd, sched, args.epochs, make_batches, steps, run_dir=run_dir,
                ckpt_name="checkpoint.pt", resume=args.resume, extra=extra, val=splits.xy("val"),
                desc=f"state {extra.get('state', 0)} epoch", amp=args.amp, save_every=args.save_every_steps)
    return model


def accuracies(model, splits, device, names=("train", "val", "test")):
    return {k: accuracy(predict_probs(model, splits.xy(k)[0], device), splits.xy(k)[1].cpu()) for k in names}


class Pruning:
    """OMP/IMP with rewinding on `splits`, writing into save_dir (main_imp.py, main_backdoor.py --prune)."""

    def __init__(self, args, splits, device, save_dir, rounds):
        self.args, self.splits, self.device, self.save_dir, self.rounds = args, splits, device, save_dir, rounds
        self.pretrained = None
        self.rewind_sd = None
        self.meta = trainer.model_meta(args, splits.raw)
        self.check()

    def check(self):
        """Everything user input can break, before anything is written."""
        args = self.args
        if args.model_path:
            self.pretrained, self.meta = trainer.load_model(args.model_path, args, self.splits.raw, self.device)
            state = utils.load_torch(args.model_path, "model")
            if isinstance(state, dict) and state.get("prune_mask") is not None:
                raise UserError(f"model '{args.model_path}' is already pruned; give the dense model "
                                f"(or resume the run that pruned it with --resume)")
        if not self.rounds:
            return
        if args.prune_type == "rewind_lt":
            if args.rewind_epoch >= args.epochs:
                raise UserError(f"--rewind_epoch {args.rewind_epoch} must be below --epochs {args.epochs}")
            if args.rewind_pth:
                self.rewind_sd = _state_dict_of(args.rewind_pth, "rewind weights")
                _load_into(trainer.build(self.meta), self.rewind_sd, args.rewind_pth)
            elif args.model_path and args.rewind_epoch:
                raise UserError(f"--rewind_epoch {args.rewind_epoch} with --model_path needs --rewind_pth "
                                f"(the weights after that epoch), or train the dense model here")
        if args.resume:
            for i in range(self.rounds + 1):
                path = os.path.join(state_dir(self.save_dir, i), "checkpoint.pt")
                if os.path.exists(path):
                    utils.load_torch(path, "checkpoint to resume")
            rewind = os.path.join(self.save_dir, REWIND_FILE)
            if os.path.exists(rewind):
                utils.load_torch(rewind, "rewind weights")

    def _load_state(self, i):
        path = os.path.join(state_dir(self.save_dir, i), "checkpoint.pt")
        state = utils.load_torch(path, "checkpoint")
        model = trainer.to_device(_load_into(trainer.build(self.meta), state["state_dict"], path), self.device)
        mask = state.get("prune_mask")
        model.prune_mask = {k: v.to(self.device) for k, v in mask.items()} if mask is not None else None
        return model, model.prune_mask

    def _capture(self, epoch, model):
        if epoch == self.args.rewind_epoch and not (self.args.resume and os.path.exists(  # resumed inside it
                os.path.join(self.save_dir, REWIND_FILE))):
            sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            utils.save_torch({"state_dict": sd, "epoch": epoch, "meta": self.meta},
                             os.path.join(self.save_dir, REWIND_FILE))

    def _rewind_weights(self, dense):
        """The weights every pruned state starts from; `dense`: the checkpoint of state 0."""
        args = self.args
        if args.prune_type == "pt":
            return _state_dict_of(dense, "dense model")
        if args.prune_type == "lt" or (args.model_path and not args.rewind_pth):
            return trainer.init_model(self.meta, args.train_seed, self.device).state_dict()
        if self.rewind_sd is not None:
            return self.rewind_sd
        path = os.path.join(self.save_dir, REWIND_FILE)
        saved = utils.load_torch(path, "rewind weights") if os.path.exists(path) else None
        if saved is None or saved.get("epoch") != args.rewind_epoch:
            raise UserError(f"'{path}' does not hold the weights after epoch {args.rewind_epoch}; "
                            f"rerun without --resume to train the dense model again")
        return saved["state_dict"]

    def _finish(self, i, model, mask):
        acc = accuracies(model, self.splits, self.device)  # under torchrun the ranks share the work out
        record = {"state": i, "sparsity": sparsity(mask), "measured_sparsity": measured_sparsity(model),
                  "accuracy": acc, "checkpoint": os.path.join(state_dir(self.save_dir, i), "checkpoint.pt"),
                  "mask": mask_path(self.save_dir, i) if mask is not None else None}
        utils.write_json(record, os.path.join(state_dir(self.save_dir, i), "eval_result.json"))
        if distributed.is_main():
            print(f"state {i}: sparsity {record['sparsity']:.4f}  accuracy {acc}", flush=True)
        return record

    def run(self):
        """Returns (final model, final prune mask or None, [per-state records])."""
        args, records = self.args, []
        resume = args.resume
        if self.pretrained is not None:
            model, mask = self.pretrained, None
            acc = accuracies(model, self.splits, self.device)
            records.append({"state": 0, "sparsity": 0.0, "accuracy": acc, "checkpoint": args.model_path,
                            "mask": None})
        elif resume and _finished(self.save_dir, 0):
            model, mask = self._load_state(0)
            records.append(utils.read_json(os.path.join(state_dir(self.save_dir, 0), "eval_result.json")))
        else:
            model, mask = trainer.init_model(self.meta, args.train_seed, self.device), None
            capture = self._capture if self.rounds and args.prune_type == "rewind_lt" and not args.rewind_pth \
                else None
            run_dir = utils.ensure_dir(state_dir(self.save_dir, 0))
            train_state(args, self.splits, self.device, model, None, run_dir,
                        {"meta": self.meta, "state": 0, "sparsity": 0.0, "args": vars(args)}, on_epoch=capture)
            records.append(self._finish(0, model, None))
        rewind = None  # loaded when the first state to train needs it
        for i in range(1, self.rounds + 1):
            if resume and _finished(self.save_dir, i):
                model, mask = self._load_state(i)
                records.append(utils.read_json(os.path.join(state_dir(self.save_dir, i), "eval_result.json")))
                continue
            if rewind is None:
                rewind = self._rewind_weights(records[0]["checkpoint"])
            utils.seed_everything(args.train_seed + i)  # (re-initializing for lt reseeds: seed after it)
            ckpt = os.path.join(state_dir(self.save_dir, i), "checkpoint.pt")
            if resume and os.path.exists(ckpt):  # interrupted inside this state: fit reloads the weights
                mask = self._load_state(i)[1]
            else:
                mask = global_prune(model, args.rate, args.random_prune, mask)
            model.load_state_dict(rewind)
            apply_mask(model, mask)
            model.prune_mask = mask
            utils.save_torch({k: v.cpu() for k, v in mask.items()}, mask_path(self.save_dir, i))
            extra = {"meta": self.meta, "prune_mask": {k: v.cpu() for k, v in mask.items()}, "state": i,
                     "sparsity": sparsity(mask), "args": vars(args)}
            train_state(args, self.splits, self.device, model, mask, utils.ensure_dir(state_dir(self.save_dir, i)),
                        extra, start_epoch=args.rewind_epoch)
            records.append(self._finish(i, model, mask))
        return model, mask, records
