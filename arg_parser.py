"""The one argument parser shared by every entry script (reference flag names and defaults).

Each script asks for the groups of flags it uses; a flag from another group is an unknown-flag error.
"""
import argparse
import math
import sys

GROUPS = ("data", "train", "prune", "unlearn", "attack")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits with status 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _number(kind, low=None, high=None, low_open=False, high_open=False):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a valid {kind.__name__}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            lo = "-inf" if low is None else f"{'(' if low_open else '['}{low}"
            hi = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"{text} is outside {lo}, {hi}")
        return value

    parse.__name__ = kind.__name__
    return parse


nonneg_int = _number(int, 0)
pos_int = _number(int, 1)
nonneg_float = _number(float, 0.0)
pos_float = _number(float, 0.0, low_open=True)
fraction = _number(float, 0.0, 1.0, low_open=True, high_open=True)  # (0, 1)
ratio = _number(float, 0.0, 1.0, low_open=True)  # (0, 1]


def milestones(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of epochs") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}' holds a negative epoch")
    return values


def ratios(text):
    try:
        return [ratio(v) for v in text.split(",") if v.strip()]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"mask ratio {err}") from None


def _data(p):
    from dataset import DATASETS
    from models import MODELS
    p.add_argument("--data", default="./data", help="folder holding (or receiving) the datasets")
    p.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS))
    p.add_argument("--arch", default="resnet18", choices=sorted(MODELS))
    p.add_argument("--input_size", type=pos_int, default=None, help="resize images to this size")
    p.add_argument("--train_subset", type=pos_int, default=None,
                   help="use only the first N training images (before the validation split)")
    p.add_argument("--data_dir", default="./tiny-imagenet-200",
                   help="TinyImagenet image folder (imagenet: train/ and val/ under --data)")
    p.add_argument("--num_workers", "--workers", type=nonneg_int, default=4,
                   help="processes reading streamed images (--stream, imagenet); tensor data ignores it")
    p.add_argument("--stream", action="store_true",
                   help="read image-folder datasets (TinyImagenet) from their files batch by batch instead of "
                        "holding them as tensors; imagenet always streams")
    p.add_argument("--num_classes", type=pos_int, default=None, help="checked against the dataset")
    p.add_argument("--imagenet_arch", action="store_true", help="ImageNet stem (7x7 conv + max-pool)")
    p.add_argument("--seed", type=int, default=2, help="seed for the validation split and forget set")
    p.add_argument("--train_seed", type=int, default=1, help="seed for initialization and batch order")
    p.add_argument("--gpu", type=nonneg_int, default=None, help="CUDA device index")
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--save_dir", default="./results", help="folder for checkpoints and results")
    p.add_argument("--resume", action="store_true", help="continue the run found in --save_dir")
    p.add_argument("--checkpoint", default=None, help="checkpoint to resume from (default: in save_dir)")
    p.add_argument("--model_path", default=None, help="trained model to start from")
    p.add_argument("--mask", default=None,
                   help="mask file {param_name: 0/1 tensor}, or a pruned model checkpoint (Unlearn-Sparse's "
                        "meaning: that model is unlearned and its zero weights stay zero)")
    p.add_argument("--mask_path", default=None, help="saliency mask file (SalUn's flag)")
    p.add_argument("--allow_dataset_change", action="store_true",
                   help="accept a checkpoint trained on another dataset (same classes and input shape)")
    p.add_argument("--batch_size", type=pos_int, default=256)
    p.add_argument("--print_freq", type=pos_int, default=50)
    p.add_argument("--no-aug", dest="no_aug", action="store_true", help="no training augmentation")
    p.add_argument("--num_indexes_to_replace", type=pos_int, default=None, help="forget set size")
    p.add_argument("--class_to_replace", type=int, default=-1, help="forget from this class (-1: any)")
    p.add_argument("--indexes_to_replace", default=None, help="JSON list of training indices to forget")


def _train(p):
    p.add_argument("--lr", type=pos_float, default=0.1)
    p.add_argument("--momentum", type=nonneg_float, default=0.9)
    p.add_argument("--weight_decay", type=nonneg_float, default=5e-4)
    p.add_argument("--epochs", type=pos_int, default=182)
    p.add_argument("--warmup", type=nonneg_int, default=0, help="linear warm-up epochs")
    p.add_argument("--decreasing_lr", type=milestones, default="91,136", help="epochs where lr drops 10x")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for training steps (GPU)")
    p.add_argument("--deterministic", action="store_true", help="ask torch for deterministic algorithms")


def _prune(p):
    p.add_argument("--prune", default="omp", choices=["omp", "imp", "saliency"])
    p.add_argument("--pruning_times", type=pos_int, default=1)
    p.add_argument("--rate", type=fraction, default=0.2, help="fraction of weights pruned per round")
    p.add_argument("--prune_type", default="rewind_lt", choices=["lt", "pt", "rewind_lt"])
    p.add_argument("--random_prune", action="store_true")
    p.add_argument("--rewind_epoch", type=nonneg_int, default=0)
    p.add_argument("--rewind_pth", default=None, help="weights to rewind to")


def _unlearn(p):
    from unlearn import METHODS
    p.add_argument("--unlearn", default="retrain", choices=sorted(METHODS))
    p.add_argument("--unlearn_lr", type=pos_float, default=0.01)
    p.add_argument("--unlearn_epochs", type=pos_int, default=10)
    p.add_argument("--alpha", type=nonneg_float, default=0.2, help="FF/IU noise or l1 strength")
    p.add_argument("--mask_ratio", type=ratio, default=None, help="compute a saliency mask at this ratio")
    p.add_argument("--no-l1-epochs", dest="no_l1_epochs", type=nonneg_int, default=0,
                   help="final epochs of FT_prune without the l1 penalty")
    p.add_argument("--grad_chunk", type=nonneg_int, default=0,
                   help="examples per batched per-example-gradient pass (FF, IU); 0: sized to 1 GiB of records")
    p.add_argument("--fisher_samples", type=nonneg_int, default=0,
                   help="retain examples estimating FF's Fisher (0: all of them)")
    p.add_argument("--iu_samples", type=pos_int, default=500,
                   help="retain examples forming IU's Hessian (time grows with their square; see README)")
    p.add_argument("--iu_memory", type=pos_float, default=4.0,
                   help="GiB allowed for the layer records of IU's Hessian examples")
    p.add_argument("--iu_damping", type=pos_float, default=1.0, help="damping added to IU's Fisher")
    p.add_argument("--rl_order", default="mixed", choices=["mixed", "reference"],
                   help="RL's batches: 'mixed' shuffles relabelled forget examples (labels from the other classes) "
                        "into the retain set; 'reference' as the reference code: labels from all classes, all forget "
                        "batches then all retain batches (cifar100, TinyImagenet: one shuffled stream)")
    p.add_argument("--neggrad_beta", type=_number(float, 0.0, 1.0), default=0.9999,
                   help="NegGrad_plus: loss = beta * CE(retain) - (1 - beta) * CE(forget)")
    p.add_argument("--scrub_max_epochs", type=nonneg_int, default=2,
                   help="SCRUB: the first epochs that begin with max-steps on the forget set")
    p.add_argument("--scrub_alpha", type=nonneg_float, default=0.001,
                   help="SCRUB: weight of KL(teacher || student) in the retain (min) steps")
    p.add_argument("--scrub_gamma", type=nonneg_float, default=0.99,
                   help="SCRUB: weight of the cross-entropy in the retain (min) steps")
    p.add_argument("--scrub_kd_T", type=pos_float, default=4.0, help="SCRUB: distillation temperature")
    p.add_argument("--last_k", type=pos_int, default=1,
                   help="CF_k, EU_k: how many of the last Conv2d/Linear layers (with the BatchNorms after the "
                        "first of them) are trained")
    p.add_argument("--ssd_alpha", type=pos_float, default=10.0,
                   help="SSD: dampen weights whose forget-set importance exceeds alpha x the training set's")
    p.add_argument("--ssd_lambda", type=nonneg_float, default=1.0,
                   help="SSD: a chosen weight is multiplied by min(lambda x I_train / I_forget, 1)")
    p.add_argument("--bs_bound", type=pos_float, default=0.1,
                   help="BS: size of the one FGSM step on [0, 1] images (L-inf) whose class relabels each forget "
                        "example (the class of largest logit other than the true one)")
    p.add_argument("--salun_soft_ratio", type=ratio, default=0.5,
                   help="SalUn_soft: the share of weight changes its first soft-thresholding step resets to 0 "
                        "(falling linearly to none by the last step)")
    p.add_argument("--fast_eval", action="store_true",
                   help="evaluate only what the benchmark's tables show (accuracies and MIA-Efficacy's confidence "
                        "attack); by default the reference's full evaluation")
    p.add_argument("--run_name", default=None, help="run folder name (default: method and mask)")


def _attack(p):
    p.add_argument("--attack", default="backdoor", choices=["backdoor"])
    p.add_argument("--trigger_size", type=pos_int, default=4)


_ADDERS = {"data": _data, "train": _train, "prune": _prune, "unlearn": _unlearn, "attack": _attack}


def build_parser(description, groups):
    parser = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name in groups:
        _ADDERS[name](parser)
    return parser
