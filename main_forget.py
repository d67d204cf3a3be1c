"""Unlearn the forget set from a trained model with one method (optionally masked), then evaluate.

Writes <save_dir>/<run_name>/{checkpoint.pt, eval_result.json, forget_indices.json, args.json, log.jsonl}.
"""
import os

import torch

import dataset
import trainer
import utils
from arg_parser import build_parser
from evaluation import evaluate
from unlearn import METHODS
from unlearn.mask import combine, density, load_mask, saliency_scores, top_ratio


def parse(argv=None):
    return build_parser(__doc__, ["data", "train", "unlearn"]).parse_args(argv)


def run_name(args):
    if args.run_name:
        return args.run_name
    if args.mask:
        return f"{args.unlearn}_{os.path.splitext(os.path.basename(args.mask))[0]}"
    if args.mask_ratio:
        return f"{args.unlearn}_saliency_{args.mask_ratio:g}"
    return args.unlearn


def prepare(args, device):
    """Everything that can fail on user input, checked before anything is written."""
    if args.mask and args.mask_ratio:
        raise utils.UserError("give either --mask or --mask_ratio, not both")
    splits = dataset.splits_from_args(args, device)
    model_path = args.model_path or os.path.join(args.save_dir, "checkpoint.pt")
    if not os.path.exists(model_path):
        raise utils.UserError(f"model '{model_path}' does not exist; train it with main_baseline.py or "
                              f"name it with --model_path")
    model, meta = trainer.load_model(model_path, args, splits.raw, device)
    state = utils.load_torch(model_path, "model")
    mask = load_mask(args.mask, model, device) if args.mask else None
    prune_mask = state.get("prune_mask")
    if prune_mask is not None:
        from unlearn.mask import check_mask
        prune_mask = {k: v.to(device) for k, v in check_mask(prune_mask, model, model_path).items()}
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
    mask_minutes = saliency = None
    if args.mask_ratio:
        with utils.Timer() as t:
            saliency = top_ratio(saliency_scores(model, *splits.xy("forget"), args.batch_size), args.mask_ratio)
        mask_minutes = t.minutes
    mask = combine(saliency or mask, prune_mask)
    final = os.path.join(run_dir, "checkpoint.pt")
    if args.resume and os.path.exists(final):  # cut off between the checkpoint and the results
        state = utils.load_torch(final, "finished run's checkpoint")
        if not isinstance(state, dict) or not {"state_dict", "RTE_minutes"} <= set(state):
            raise utils.UserError(f"'{final}' is not a finished run's checkpoint; delete it or rerun without "
                                  f"--resume")
        trainer.load_weights(model, state["state_dict"], f"'{final}'")
        rte = state["RTE_minutes"]
    else:
        utils.seed_everything(args.train_seed)
        meta = model.meta
        with utils.Timer() as t:
            model = METHODS[args.unlearn](model, splits, args, device, mask, run_dir=run_dir)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        rte = t.minutes
        trainer.check_weights(model, args.unlearn)
        state = {"state_dict": model.state_dict(), "meta": meta, "args": vars(args), "RTE_minutes": rte}
        if prune_mask is not None:
            state["prune_mask"] = {k: v.cpu() for k, v in prune_mask.items()}
    result = evaluate(model, splits, device, rte)
    result["run"] = {"unlearn": args.unlearn, "mask": args.mask or (f"saliency {args.mask_ratio:g}" if
                                                                     args.mask_ratio else None),
                     "mask_density": density(mask) if mask else 1.0, "mask_minutes": mask_minutes,
                     "sparsity": 1 - density(prune_mask) if prune_mask else 0.0, "seed": args.seed,
                     "train_seed": args.train_seed, "dataset": args.dataset, "arch": model.meta["arch"],
                     "num_forget": len(splits.forget), "class_to_replace": args.class_to_replace,
                     "git": utils.git_sha()}
    if saliency is not None:
        utils.save_torch({k: v.cpu() for k, v in saliency.items()}, os.path.join(run_dir, "mask.pt"))
    utils.save_torch(state, final)
    utils.write_json(vars(args), os.path.join(run_dir, "args.json"))
    utils.write_json([int(i) for i in splits.forget], os.path.join(run_dir, "forget_indices.json"))
    utils.write_json(result, os.path.join(run_dir, "eval_result.json"))
    s = result["summary"]
    print(f"{args.unlearn}: UA {s['UA']:.2f}  RA {s['RA']:.2f}  TA {s['TA']:.2f}  "
          f"MIA {s['MIA_efficacy']:.2f}  RTE {rte:.3f} min  -> {run_dir}")
    return result


if __name__ == "__main__":
    main()
