"""Trojan cleanse: poison training examples with a trigger patch, train, unlearn them, compare attack success.

--num_indexes_to_replace training examples (drawn as forget sets are, or --indexes_to_replace) get a
--trigger_size square stamped two pixels from the bottom-right corner, where the reference puts it (black,
0.0, on natural images as there; white, 1.0, on digits and fashionmnist, whose background is black) and the
label --class_to_replace, the target (default 0 here; it must be a class). The trojaned model is trained
dense, or pruned with --prune omp|imp at --rate (see main_imp.py), or loaded from --model_path. Then
--unlearn (default FT) runs with forget = the poisoned examples (triggered images, target labels) and
retain = the clean rest, optionally with --mask or a saliency mask at --mask_ratio (pruned weights stay
zero). Clean test accuracy and attack success before and after go to <save_dir>/eval_result.json as
test_acc, attack_acc, attack_acc_nontarget and the same with _unlearn: attack_acc is the reference's
figure, the percent of all triggered test images predicted as the target (target-class images included);
attack_acc_nontarget counts only the images of the other classes. The unlearned model goes to
<save_dir>/<run_name>/checkpoint.pt.
"""
import os
from dataclasses import replace

import torch

import dataset
import distributed
import trainer
import utils
from arg_parser import build_parser
from evaluation import accuracy, predict_probs
from masks import density, is_model_file, load_mask, zeros_mask
from pruner import Pruning
from unlearn.apply import apply, run_name
from utils import UserError

DARK_BACKGROUND = {"digits", "fashionmnist"}  # light strokes on black: a white trigger stands out


def parse(argv=None):
    parser = build_parser(__doc__, ["data", "train", "prune", "unlearn", "attack"])
    parser.set_defaults(prune=None, class_to_replace=0, unlearn="FT")
    helps = {"class_to_replace": "the backdoor's target class",
             "num_indexes_to_replace": "how many training examples to poison",
             "prune": "train the trojaned model sparse by omp or imp (see main_imp.py); dense when absent",
             "trigger_size": "side in pixels of the square trigger"}
    for action in parser._actions:
        action.help = helps.get(action.dest, action.help)
    return parser.parse_args(argv)


def trigger_value(dataset_name):
    return 1.0 if dataset_name in DARK_BACKGROUND else 0.0


def check_trigger(size, shape):
    h, w = shape[-2:]
    if size > min(h, w) - 2:
        raise UserError(f"--trigger_size {size} does not fit in the {h}x{w} images with its 2-pixel margin "
                        f"(at most {min(h, w) - 2})")


def add_trigger(x, size, value):
    """A copy of the NCHW images with a size x size square of `value`, 2 pixels from the bottom-right corner
    (the reference's image[-2 - size:-2, -2 - size:-2])."""
    out = x.clone()
    out[..., -2 - size:-2, -2 - size:-2] = value
    return out


def poison(splits, target, size, value):
    """New Splits over a copy of the data whose forget examples carry the trigger and the target label."""
    raw = splits.raw
    if isinstance(raw.x_train, dataset.ImageFiles):
        raise UserError("main_backdoor stamps the trigger into images held as tensors; it does not run on "
                        "streamed data (--stream, imagenet)")
    idx = torch.as_tensor(splits.forget, dtype=torch.long, device=raw.x_train.device)
    x, y = raw.x_train.clone(), raw.y_train.clone()
    x[idx] = add_trigger(x[idx], size, value)
    y[idx] = target
    return replace(splits, raw=replace(raw, x_train=x, y_train=y), forget_class=-1)


def finite_probs(model, x, device, what):
    """predict_probs, refusing a diverged model (NaN or infinite outputs) rather than scoring it."""
    probs = predict_probs(model, x, device)
    if not probs.isfinite().all():
        raise UserError(f"the model's outputs on the {what} are NaN or infinite: the run diverged; lower --lr, "
                        f"--unlearn_lr or --alpha")
    return probs


def attack_success(model, x, y, target, size, value, device):
    """(all, non-target): percent of all triggered images the model calls the target, as the reference
    counts, and the same over the images whose true class is not the target."""
    probs = finite_probs(model, add_trigger(x, size, value), device, "triggered test images")
    hits = torch.full((len(y),), target, dtype=torch.long)
    other = (y != target).cpu()
    return accuracy(probs, hits), accuracy(probs[other], hits[other])


def backdoor_metrics(model, splits, args, value, device):
    x, y = splits.xy("test")
    xf, yf = splits.xy("forget")
    attack, nontarget = attack_success(model, x, y, args.class_to_replace, args.trigger_size, value, device)
    return {"test_acc": accuracy(finite_probs(model, x, device, "test set"), y.cpu()),
            "attack_acc": attack, "attack_acc_nontarget": nontarget,
            "forget_acc": accuracy(finite_probs(model, xf, device, "poisoned examples"), yf.cpu())}


def prepare(args, device):
    """Data, poisoning and every check user input can fail, before anything is written."""
    if args.prune == "saliency":
        raise UserError("--prune saliency is not a way to train the trojaned model; use --mask_ratio for a "
                        "saliency mask, and --prune omp|imp for a sparse model")
    model_path, mask_file = args.model_path, args.mask_path or args.mask
    if args.mask and is_model_file(args.mask):  # Unlearn-Sparse's --mask: the (pruned) trojaned model
        if args.model_path:
            raise UserError(f"--mask '{args.mask}' is a model; give it either with --mask or with --model_path")
        model_path, mask_file = args.mask, args.mask_path
    elif args.mask and args.mask_path:
        raise UserError("give the mask file either with --mask or with --mask_path, not both")
    if mask_file and args.mask_ratio:
        raise UserError("give either a mask file or --mask_ratio, not both")
    raw = dataset.load_dataset(args.dataset, args.data, args.data_dir, args.input_size, args.train_subset)
    if args.num_classes is not None and args.num_classes != raw.num_classes:
        raise UserError(f"--num_classes {args.num_classes} does not match {args.dataset} ({raw.num_classes})")
    if not 0 <= args.class_to_replace < raw.num_classes:
        raise UserError(f"--class_to_replace {args.class_to_replace} (the backdoor's target class) is outside "
                        f"the classes 0..{raw.num_classes - 1}")
    check_trigger(args.trigger_size, raw.shape)
    if args.num_indexes_to_replace is None and not args.indexes_to_replace:
        raise UserError("give --num_indexes_to_replace (how many training examples to poison) or "
                        "--indexes_to_replace")
    clean = dataset.make_splits(raw, args.seed, -1, args.num_indexes_to_replace, args.indexes_to_replace)
    value = trigger_value(args.dataset)
    splits = poison(clean, args.class_to_replace, args.trigger_size, value).to(device)
    pruning, loaded = None, None
    if model_path and not args.prune:
        model, meta = trainer.load_model(model_path, args, splits.raw, device)
        if model.prune_mask is None and model_path == args.mask:
            model.prune_mask = zeros_mask(model) or None
        loaded = (model, model.prune_mask)
    else:
        rounds = {None: 0, "omp": 1, "imp": args.pruning_times}[args.prune]
        pruning = Pruning(args, splits, device, args.save_dir, rounds)
        meta = pruning.meta
    mask = load_mask(mask_file, trainer.build(meta), device) if mask_file else None
    return splits, value, pruning, loaded, mask


@utils.cli
def main(argv=None):
    args = parse(argv)
    device = utils.start(args)
    splits, value, pruning, loaded, mask = prepare(args, device)
    utils.ensure_dir(args.save_dir)
    with utils.RunLock(args.save_dir):
        if loaded is not None:
            (model, prune_mask), states = loaded, None
        else:
            model, prune_mask, states = pruning.run()
        main_rank = distributed.is_main()  # under torchrun the ranks evaluate together, rank 0 writes
        before = backdoor_metrics(model, splits, args, value, device)
        if main_rank:
            print(f"trojaned: test acc {before['test_acc']:.2f}  attack success {before['attack_acc']:.2f} "
                  f"(other classes {before['attack_acc_nontarget']:.2f})", flush=True)
        run_dir = utils.ensure_dir(os.path.join(args.save_dir, run_name(args)))
        utils.write_json([int(i) for i in splits.forget], os.path.join(run_dir, "forget_indices.json"))
        out = apply(args, model, splits, device, mask, run_dir)
        final = os.path.join(run_dir, "checkpoint.pt")
        model, mask, rte = out.model, out.mask, out.state["RTE_minutes"]
        after = backdoor_metrics(model, splits, args, value, device)  # a diverged model stops here
        if not main_rank:
            return None
        if out.saliency is not None:
            utils.save_torch({k: v.cpu() for k, v in out.saliency.items()}, os.path.join(run_dir, "mask.pt"))
        if not out.resumed:
            utils.save_torch(out.state, final)
        result = {**before, **{f"{k}_unlearn": v for k, v in after.items()},
                  "sparsity": 1 - density(prune_mask) if prune_mask else 0.0,
                  "mask_density": density(mask) if mask else 1.0, "mask_minutes": out.mask_minutes, "RTE_minutes": rte,
                  "unlearn": args.unlearn, "target": args.class_to_replace, "trigger_size": args.trigger_size,
                  "trigger_value": value, "num_poisoned": len(splits.forget), "model": final, "states": states,
                  "args": vars(args), "git": utils.git_sha()}
        utils.write_json(result, os.path.join(run_dir, "eval_result.json"))
        utils.write_json(result, os.path.join(args.save_dir, "eval_result.json"))
    print(f"{args.unlearn}: test acc {before['test_acc']:.2f} -> {after['test_acc']:.2f}  attack success "
          f"{before['attack_acc']:.2f} -> {after['attack_acc']:.2f} (other classes "
          f"{before['attack_acc_nontarget']:.2f} -> {after['attack_acc_nontarget']:.2f}), sparsity "
          f"{result['sparsity']:.2f} -> {args.save_dir}")
    return result

