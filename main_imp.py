"""Prune a model (OMP one-shot, IMP iterative, with weight rewinding) or compute saliency masks (SalUn).

--prune omp|imp: state 0 is the dense model, trained here from the --train_seed initialization (or given
by --model_path). Each round (OMP: one; IMP: --pruning_times) prunes --rate of the conv weights that remain,
globally by magnitude (--random_prune: at random) in the weights the previous state ended with, rewinds
(--prune_type lt: to the --train_seed initialization; rewind_lt: to the weights after --rewind_epoch of the
dense training (0: initialization), or --rewind_pth; pt: to the dense model of state 0), zeroes the pruned
weights and retrains for the full --epochs with them held at exactly zero, the learning-rate schedule
starting at epoch --rewind_epoch (the reference's learning-rate rewinding, whatever the prune type).
Unlike the reference, --pruning_times counts pruning rounds, not states: IMP with 3 leaves (1 - rate)^3.
Writes <save_dir>/state_<i>/{checkpoint.pt, eval_result.json, log.jsonl}, <save_dir>/mask_state_<i>.pt
(usable as --mask), <save_dir>/rewind_weights.pt (rewind_lt) and <save_dir>/eval_result.json (every
state). The last state's checkpoint.pt is the sparse model to pass as --model_path to main_forget.py.

--prune saliency: one gradient pass over the forget set of --model_path writes <save_dir>/with_<ratio>.pt
for each of --mask_ratios, plus forget_indices.json and masks.json.
"""
import os

import torch

import dataset
import distributed
import pruner
import trainer
import utils
from arg_parser import build_parser
from argtypes import ratios
from evaluation import accuracy, predict_probs
from unlearn.mask import saliency_scores, top_ratio
from utils import UserError

DEFAULT_RATIOS = ",".join(f"{r / 10:g}" for r in range(1, 11))
REWIND_FILE = "rewind_weights.pt"


def parse(argv=None):
    parser = build_parser(__doc__, ["data", "train", "prune"])
    parser.add_argument("--mask_ratios", type=ratios, default=DEFAULT_RATIOS,
                        help="saliency: comma-separated fractions of weights each mask keeps")
    return parser.parse_args(argv)


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
                desc=f"state {extra.get('state', 0)} epoch", amp=args.amp)
    return model


def accuracies(model, splits, device, names=("train", "val", "test")):
    return {k: accuracy(predict_probs(model, splits.xy(k)[0], device), splits.xy(k)[1].cpu()) for k in names}


class Pruning:
    """OMP/IMP with rewinding on `splits`, writing into save_dir; used by main_imp and main_backdoor."""

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
        if epoch == self.args.rewind_epoch:
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
        # under torchrun rank 0 evaluates and writes; the other ranks only need the paths
        acc = accuracies(model, self.splits, self.device) if distributed.is_main() else None
        record = {"state": i, "sparsity": pruner.sparsity(mask), "measured_sparsity": pruner.measured_sparsity(model),
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
            acc = accuracies(model, self.splits, self.device) if distributed.is_main() else None
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
                mask = pruner.global_prune(model, args.rate, args.random_prune, mask)
            model.load_state_dict(rewind)
            pruner.apply_mask(model, mask)
            model.prune_mask = mask
            utils.save_torch({k: v.cpu() for k, v in mask.items()}, mask_path(self.save_dir, i))
            extra = {"meta": self.meta, "prune_mask": {k: v.cpu() for k, v in mask.items()}, "state": i,
                     "sparsity": pruner.sparsity(mask), "args": vars(args)}
            train_state(args, self.splits, self.device, model, mask, utils.ensure_dir(state_dir(self.save_dir, i)),
                        extra, start_epoch=args.rewind_epoch)
            records.append(self._finish(i, model, mask))
        return model, mask, records


def rounds_of(args):
    if args.prune == "omp" and args.pruning_times > 1:
        print("note: OMP prunes once at --rate; --pruning_times applies to --prune imp")
    return 1 if args.prune == "omp" else args.pruning_times


def saliency(args, device):
    if not args.model_path:
        raise UserError("--prune saliency needs --model_path (the trained model whose forget-set gradient "
                        "ranks the weights)")
    if not distributed.is_main():  # no training: under torchrun rank 0 does it alone
        return None
    splits = dataset.splits_from_args(args, device)
    model, _ = trainer.load_model(args.model_path, args, splits.raw, device)
    utils.ensure_dir(args.save_dir)
    with utils.RunLock(args.save_dir):
        with utils.Timer() as t:
            scores = saliency_scores(model, *splits.xy("forget"), args.batch_size)
        masks = {}
        for r in args.mask_ratios:
            mask = {k: v.cpu() for k, v in top_ratio(scores, r).items()}
            name = f"with_{r}.pt"
            utils.save_torch(mask, os.path.join(args.save_dir, name))
            masks[name] = pruner.density(mask)
        utils.write_json([int(i) for i in splits.forget], os.path.join(args.save_dir, "forget_indices.json"))
        utils.write_json({"masks": masks, "mask_minutes": t.minutes, "model_path": args.model_path,
                          "num_forget": len(splits.forget), "args": vars(args), "git": utils.git_sha()},
                         os.path.join(args.save_dir, "masks.json"))
    print(f"saliency masks from {len(splits.forget)} forget examples: {masks} -> {args.save_dir}")
    return masks


@utils.cli
def main(argv=None):
    args = parse(argv)
    device = utils.start(args)
    if args.prune == "saliency":
        return saliency(args, device)
    splits = dataset.splits_from_args(args, device)
    pruning = Pruning(args, splits, device, args.save_dir, rounds_of(args))
    utils.ensure_dir(args.save_dir)
    with utils.RunLock(args.save_dir):
        model, mask, records = pruning.run()
        final = records[-1]["checkpoint"]
        utils.write_json({"states": records, "final_model": final, "args": vars(args), "git": utils.git_sha()},
                         os.path.join(args.save_dir, "eval_result.json"))
    if distributed.is_main():
        print(f"final model (sparsity {pruner.sparsity(mask):.4f}): {final}")
    return records


if __name__ == "__main__":
    main()
