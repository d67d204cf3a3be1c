"""Running one registered method on a loaded model, as main_forget.py, main_backdoor.py and the benchmark do."""
import contextlib
import os
from dataclasses import dataclass

import torch

import distributed
import trainer
import utils
from masks import combine, saliency_scores, top_ratio
from unlearn import METHODS


def run_name(args):
    """The run folder's name: --run_name, else the method and its mask."""
    if args.run_name:
        return args.run_name
    mask = args.mask_path or args.mask
    if mask:
        return f"{args.unlearn}_{os.path.splitext(os.path.basename(mask))[0]}"
    if args.mask_ratio:
        return f"{args.unlearn}_saliency_{args.mask_ratio:g}"
    return args.unlearn


@dataclass
class Unlearned:
    model: torch.nn.Module
    state: dict  # the checkpoint to write: state_dict, meta, args, RTE_minutes (and prune_mask)
    mask: dict  # the mask the method ran under (None: every weight moved), pruning mask included
    saliency: dict  # the saliency mask computed at --mask_ratio, or None
    mask_minutes: float  # time the saliency mask took, or None
    resumed: bool  # the state is a finished run's checkpoint read back under --resume


def apply(args, model, splits, device, mask=None, run_dir=None, saliency=None):
    """Run --unlearn on `model` under the saliency mask at --mask_ratio (computed here unless `saliency` is
    given), else under `mask`, either ANDed with the model's pruning mask. Under --resume a finished run's
    checkpoint in run_dir is read back instead. Under torchrun every rank runs the method: a one-shot method's
    statistics are shared out over the ranks, a failure on any rank ends every rank with one line, and rank 0's
    weights go to every rank; every rank gets the result (the ranks evaluate together, the caller writes on rank
    0)."""
    prune_mask, mask_minutes = model.prune_mask, None
    if args.mask_ratio and saliency is None:
        with utils.Timer() as t:
            saliency = top_ratio(saliency_scores(model, *splits.xy("forget"), args.batch_size), args.mask_ratio)
        mask_minutes = t.minutes
    mask = combine(saliency or mask, prune_mask)
    final = run_dir and os.path.join(run_dir, "checkpoint.pt")
    resumed = bool(args.resume and final and os.path.exists(final))  # cut off between checkpoint and results
    if resumed:
        state = utils.load_torch(final, "finished run's checkpoint")
        if not isinstance(state, dict) or not {"state_dict", "RTE_minutes"} <= set(state):
            raise utils.UserError(f"'{final}' is not a finished run's checkpoint; delete it or rerun without "
                                  f"--resume")
        trainer.load_weights(model, state["state_dict"], f"'{final}'")
    else:
        utils.seed_everything(args.train_seed)
        meta = model.meta
        one_shot = METHODS[args.unlearn].one_shot
        with utils.Timer() as t:
            with distributed.together() if one_shot else contextlib.nullcontext():
                model = METHODS[args.unlearn](model, splits, args, device, mask, run_dir=run_dir)
            if one_shot:  # the same weights on every rank, whatever a GPU's rounding
                distributed.from_main(model.state_dict())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        trainer.check_weights(model, args.unlearn)
        state = {"state_dict": model.state_dict(), "meta": meta, "args": vars(args), "RTE_minutes": t.minutes}
        if prune_mask is not None:
            state["prune_mask"] = {k: v.cpu() for k, v in prune_mask.items()}
    return Unlearned(model, state, mask, saliency, mask_minutes, resumed)
