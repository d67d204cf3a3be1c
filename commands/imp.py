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

import dataset
import distributed
import pruner
import trainer
import utils
from arg_parser import build_parser
from argtypes import ratios
from masks import density, saliency_scores, top_ratio
from utils import UserError

DEFAULT_RATIOS = ",".join(f"{r / 10:g}" for r in range(1, 11))


def parse(argv=None):
    parser = build_parser(__doc__, ["data", "train", "prune"])
    parser.add_argument("--mask_ratios", type=ratios, default=DEFAULT_RATIOS,
                        help="saliency: comma-separated fractions of weights each mask keeps")
    return parser.parse_args(argv)


def rounds_of(args):
    if args.prune == "omp" and args.pruning_times > 1:
        print("note: OMP prunes once at --rate; --pruning_times applies to --prune imp")
    return 1 if args.prune == "omp" else args.pruning_times


def saliency(args, device):
    if not args.model_path:
        raise UserError("--prune saliency needs --model_path (the trained model whose forget-set gradient "
                        "ranks the weights)")
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
            masks[name] = density(mask)
        utils.write_json([int(i) for i in splits.forget], os.path.join(args.save_dir, "forget_indices.json"))
        utils.write_json({"masks": masks, "mask_minutes": t.minutes, "model_path": args.model_path,
                          "num_forget": len(splits.forget), "args": vars(args), "git": utils.git_sha()},
                         os.path.join(args.save_dir, "masks.json"))
    if distributed.is_main():
        print(f"saliency masks from {len(splits.forget)} forget examples: {masks} -> {args.save_dir}")
    return masks


@utils.cli
def main(argv=None):
    args = parse(argv)
    device = utils.start(args)
    if args.prune == "saliency":
        return saliency(args, device)
    splits = dataset.splits_from_args(args, device)
    pruning = pruner.Pruning(args, splits, device, args.save_dir, rounds_of(args))
    utils.ensure_dir(args.save_dir)
    with utils.RunLock(args.save_dir):
        model, mask, records = pruning.run()
        final = records[-1]["checkpoint"]
        utils.write_json({"states": records, "final_model": final, "args": vars(args), "git": utils.git_sha()},
                         os.path.join(args.save_dir, "eval_result.json"))
    if distributed.is_main():
        print(f"final model (sparsity {pruner.sparsity(mask):.4f}): {final}")
    return records

