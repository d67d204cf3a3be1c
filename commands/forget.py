"""Unlearn the forget set from a trained model with one method (optionally masked), then evaluate.

Writes <save_dir>/<run_name>/{checkpoint.pt, eval_result.json, forget_indices.json, args.json, log.jsonl}.
"""
import os

import dataset
import distributed
import trainer
import utils
from arg_parser import build_parser
from evaluation import evaluate
from masks import density, is_model_file, load_mask, zeros_mask
from unlearn.apply import apply, run_name


def parse(argv=None):
    return build_parser(__doc__, ["data", "train", "unlearn"]).parse_args(argv)


def inputs(args):
    """(model path, mask file, whether the model's zeros are its pruning mask). --mask names a mask file or,
    as in Unlearn-Sparse, a (pruned) model to unlearn; --mask_path names a mask file, as in SalUn."""
    model_path, mask_file, zeros_are_mask = args.model_path, args.mask_path, False
    if args.mask and is_model_file(args.mask):
        if args.model_path:
            raise utils.UserError(f"--mask '{args.mask}' is a model; give the model to unlearn either with --mask "
                                  f"or with --model_path, not both")
        model_path, zeros_are_mask = args.mask, True
    elif args.mask:
        if args.mask_path:
            raise utils.UserError("give the mask file either with --mask or with --mask_path, not both")
        mask_file = args.mask
    if mask_file and args.mask_ratio:
        raise utils.UserError("give either a mask file or --mask_ratio, not both")
    return model_path or os.path.join(args.save_dir, "checkpoint.pt"), mask_file, zeros_are_mask


def check_splits(splits):
    """Every method and the evaluation need a non-empty forget set and a non-empty retain set."""
    if len(splits.retain) == 0:
        raise utils.UserError("the forget set is the whole training set, so nothing is left to retain; choose "
                              "a forget set with --num_indexes_to_replace, --class_to_replace or --indexes_to_replace")
    if len(splits.forget) == 0:
        raise utils.UserError("the forget set is empty; choose it with --num_indexes_to_replace, "
                              "--class_to_replace or --indexes_to_replace")


def prepare(args, device):
    """Everything that can fail on user input, checked before anything is written."""
    model_path, mask_file, zeros_are_mask = inputs(args)
    splits = dataset.splits_from_args(args, device)
    check_splits(splits)
    if not os.path.exists(model_path):
        raise utils.UserError(f"model '{model_path}' does not exist; train it with main_baseline.py or "
                              f"name it with --model_path")
    model, meta = trainer.load_model(model_path, args, splits.raw, device)
    mask = load_mask(mask_file, model, device) if mask_file else None
    prune_mask = model.prune_mask
    if prune_mask is None and zeros_are_mask:
        prune_mask = model.prune_mask = zeros_mask(model) or None
    return splits, model, mask, prune_mask


@utils.cli
def main(argv=None):
    args = parse(argv)
    device = utils.start(args)
    splits, model, mask, prune_mask = prepare(args, device)
    run_dir = utils.ensure_dir(os.path.join(args.save_dir, run_name(args)))
    result_path = os.path.join(run_dir, "eval_result.json")
    if args.resume and os.path.exists(result_path):
        print(f"{result_path} exists; nothing to do")
        return utils.read_json(result_path)
    with utils.RunLock(run_dir):
        return unlearn_and_evaluate(args, splits, model, mask, prune_mask, run_dir, device)


def unlearn_and_evaluate(args, splits, model, mask, prune_mask, run_dir, device):
    """Run the method, evaluate, then write the run's files (nothing final is written for a failed run)."""
    out = apply(args, model, splits, device, mask, run_dir)
    model, mask, rte = out.model, out.mask, out.state["RTE_minutes"]
    result = evaluate(model, splits, device, rte, full=not args.fast_eval)  # under torchrun: shared out
    if not distributed.is_main():  # rank 0 writes
        return None
    result["run"] = {"unlearn": args.unlearn, "mask": args.mask_path or args.mask or (
                         f"saliency {args.mask_ratio:g}" if args.mask_ratio else None),
                     "mask_density": density(mask) if mask else 1.0, "mask_minutes": out.mask_minutes,
                     "sparsity": 1 - density(prune_mask) if prune_mask else 0.0, "seed": args.seed,
                     "train_seed": args.train_seed, "dataset": args.dataset, "arch": model.meta["arch"],
                     "num_forget": len(splits.forget), "class_to_replace": args.class_to_replace,
                     "git": utils.git_sha()}
    if out.saliency is not None:
        utils.save_torch({k: v.cpu() for k, v in out.saliency.items()}, os.path.join(run_dir, "mask.pt"))
    utils.save_torch(out.state, os.path.join(run_dir, "checkpoint.pt"))
    utils.write_json(vars(args), os.path.join(run_dir, "args.json"))
    utils.write_json([int(i) for i in splits.forget], os.path.join(run_dir, "forget_indices.json"))
    utils.write_json(result, os.path.join(run_dir, "eval_result.json"))
    s = result["summary"]
    print(f"{args.unlearn}: UA {s['UA']:.2f}  RA {s['RA']:.2f}  TA {s['TA']:.2f}  "
          f"MIA {s['MIA_efficacy']:.2f}  RTE {rte:.3f} min  evaluation {result['eval_seconds']:.1f} s  -> {run_dir}")
    return result

