"""Train the original model (the papers' INIT): <save_dir>/checkpoint.pt and eval_result.json."""
import os

import dataset
import distributed
import trainer
import utils
from arg_parser import build_parser
from evaluation import accuracy, predict_probs
from unlearn.loop import epoch_batches


def parse(argv=None):
    return build_parser(__doc__, ["data", "train"]).parse_args(argv)


def train_model(args, splits, device, run_dir, name="train", ckpt_name="checkpoint.pt", extra=None, mask=None,
                resume_from=None):
    """Initialize with --train_seed and train on the `name` split (under a mask, if given)."""
    raw = splits.raw
    meta = trainer.model_meta(args, raw)
    model = trainer.init_model(meta, args.train_seed, device)
    make_batches, steps = epoch_batches(splits, name, args)
    sgd = trainer.MaskedSGD(model, args.lr, args.momentum, args.weight_decay, mask)
    sched = trainer.lr_schedule(sgd.optimizer, steps, args.decreasing_lr, args.warmup)
    trainer.fit(model, sgd, sched, args.epochs, make_batches, steps,
                run_dir=run_dir, ckpt_name=ckpt_name, resume=args.resume, extra={"meta": meta, **(extra or {})},
                val=splits.xy("val"), amp=args.amp, resume_from=resume_from, save_every=args.save_every_steps)
    return model, meta


@utils.cli
def main(argv=None):
    args = parse(argv)
    device = utils.start(args)
    splits = dataset.splits_from_args(args, device)
    utils.ensure_dir(args.save_dir)
    ckpt = args.checkpoint or os.path.join(args.save_dir, "checkpoint.pt")
    if args.checkpoint and not os.path.exists(ckpt):
        raise utils.UserError(f"--checkpoint '{ckpt}' does not exist")
    if args.resume and os.path.exists(ckpt):
        utils.load_torch(ckpt, "checkpoint to resume")  # a corrupt or unsafe file fails before anything runs
    with utils.RunLock(args.save_dir):
        model, _ = train_model(args, splits, device, args.save_dir, extra={"args": vars(args)}, resume_from=ckpt)
        acc = {k: accuracy(predict_probs(model, *splits.xy(k)[:1], device), splits.xy(k)[1].cpu())
               for k in ("train", "val", "test")}  # under torchrun every rank evaluates its share, rank 0 writes
        if not distributed.is_main():
            return None
        utils.write_json({"accuracy": acc, "args": vars(args), "git": utils.git_sha()},
                         os.path.join(args.save_dir, "eval_result.json"))
    print(f"accuracy: {acc}")

