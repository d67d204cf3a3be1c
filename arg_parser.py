"""The one argument parser shared by every entry script (reference flag names and defaults).

Each script asks for the groups of flags it uses; a flag from another group is an unknown-flag error.
"""
import argparse
import sys

from argtypes import fraction, milestones, nonneg_float, nonneg_int, pos_float, pos_int, ratio

GROUPS = ("data", "train", "prune", "unlearn", "attack")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits with status 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        """Parse, then fill --momentum / --weight_decay left out: the unlearning method's own SGD settings
        (`unlearn.register`), else the reference's 0.9 / 5e-4."""
        out = super().parse_args(args, namespace)
        if hasattr(out, "momentum"):
            from unlearn import METHODS, REFERENCE_SGD
            method = METHODS.get(getattr(out, "unlearn", None))
            momentum, weight_decay = getattr(method, "sgd", REFERENCE_SGD)
            out.momentum = momentum if out.momentum is None else out.momentum
            out.weight_decay = weight_decay if out.weight_decay is None else out.weight_decay
        return out


def _data(p):
    from dataset import DATASETS
    from models import MODELS
    data = p.add_argument_group("data")
    data.add_argument("--data", default="./data",
                      help="folder holding (or receiving) the datasets; imagefolder and imagenet: the folder holding "
                           "train/ and test/ (or val/)")
    data.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS),
                      help="imagefolder: your own images as <data>/train/<class>/* and <data>/test/<class>/*")
    data.add_argument("--input_size", type=pos_int, default=None, help="resize images to this size")
    data.add_argument("--train_subset", type=pos_int, default=None,
                      help="use only the first N training images (before the validation split)")
    data.add_argument("--data_dir", default="./tiny-imagenet-200", help="TinyImagenet image folder")
    data.add_argument("--num_workers", "--workers", type=nonneg_int, default=4,
                      help="processes reading streamed images (--stream, imagenet); tensor data ignores it")
    data.add_argument("--stream", action="store_true",
                      help="read image-folder datasets (TinyImagenet, imagefolder) from their files batch by batch "
                           "instead of holding them as tensors; imagenet always streams")
    data.add_argument("--num_classes", type=pos_int, default=None, help="checked against the dataset")
    data.add_argument("--batch_size", type=pos_int, default=256, help="examples per step and per evaluation batch")
    data.add_argument("--no-aug", dest="no_aug", action="store_true", help="no training augmentation")
    forget = p.add_argument_group("forget set", "validation split and forget set are drawn from --seed; indices "
                                                "count the dataset's training images in their original order")
    forget.add_argument("--seed", type=int, default=2, help="seed for the validation split and forget set")
    forget.add_argument("--num_indexes_to_replace", type=pos_int, default=None,
                        help="forget set size (default: all of --class_to_replace; all training images with -1)")
    forget.add_argument("--class_to_replace", type=int, default=-1, help="forget from this class (-1: any)")
    forget.add_argument("--indexes_to_replace", default=None,
                        help="JSON file: a list of training indices to forget (replaces the two flags above)")
    model = p.add_argument_group("model and files")
    model.add_argument("--arch", default="resnet18", choices=sorted(MODELS), help="architecture (models/)")
    model.add_argument("--imagenet_arch", action="store_true", help="ImageNet stem (7x7 conv + max-pool)")
    model.add_argument("--model_path", default=None,
                       help="trained model to start from: our checkpoint, the reference's, or a state_dict of --arch "
                            "(default: <save_dir>/checkpoint.pt)")
    model.add_argument("--mask", default=None,
                       help="mask file {param_name: 0/1 tensor}, or a pruned model checkpoint (Unlearn-Sparse's "
                            "meaning: that model is unlearned and its zero weights stay zero)")
    model.add_argument("--mask_path", default=None, help="saliency mask file (SalUn's flag)")
    model.add_argument("--allow_dataset_change", action="store_true",
                       help="accept a checkpoint trained on another dataset (same classes and input shape)")
    model.add_argument("--save_dir", default="./results", help="folder for checkpoints and results")
    model.add_argument("--resume", action="store_true", help="continue the run found in --save_dir")
    model.add_argument("--checkpoint", default=None, help="checkpoint to resume from (default: in save_dir)")
    model.add_argument("--save_every_steps", type=nonneg_int, default=0, metavar="N",
                       help="checkpoint also after every N-th step of an epoch, where --resume continues exactly as "
                            "if never stopped (default 0: at the end of every epoch only)")
    run = p.add_argument_group("device and run")
    run.add_argument("--train_seed", type=int, default=1, help="seed for initialization and batch order")
    run.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N")
    run.add_argument("--gpu", type=nonneg_int, default=None, help="CUDA device index")
    run.add_argument("--print_freq", type=pos_int, default=50,
                     help="accepted for the reference's commands and ignored: progress is a bar and one line per epoch")


def _train(p):
    g = p.add_argument_group("training", "SGD and its schedule; unlearning takes --unlearn_lr and --unlearn_epochs "
                                         "instead of --lr and --epochs")
    g.add_argument("--lr", type=pos_float, default=0.1,
                   help="learning rate (also of GA_prune and GA_prune_bi, which read it as the reference does)")
    g.add_argument("--momentum", type=nonneg_float, default=None, help="SGD momentum " + _sgd_default(0))
    g.add_argument("--weight_decay", type=nonneg_float, default=None, help="weight decay " + _sgd_default(1))
    g.add_argument("--epochs", type=pos_int, default=182,
                   help="training epochs (also of GA_prune and GA_prune_bi, which read it as the reference does)")
    g.add_argument("--warmup", type=nonneg_int, default=0, help="linear warm-up epochs")
    g.add_argument("--decreasing_lr", type=milestones, default="91,136", help="epochs where lr drops 10x")
    g.add_argument("--amp", action="store_true", help="bfloat16 autocast for training steps (GPU)")
    g.add_argument("--deterministic", action="store_true", help="ask torch for deterministic algorithms")


def _sgd_default(i):
    """'(default: 0.9; unlearning: ...)' for momentum (i = 0) or weight decay (1), from the methods' registry."""
    from unlearn import METHODS, REFERENCE_SGD
    own = {}
    for name, method in METHODS.items():
        if method.sgd[i] != REFERENCE_SGD[i]:
            own.setdefault(method.sgd[i], []).append(name)
    return (f"(default: {REFERENCE_SGD[i]:g}; unlearning: the method's authors' value, "
            + "; ".join(f"{value:g} for {', '.join(names)}" for value, names in own.items()) + ")")


def _prune(p):
    g = p.add_argument_group("pruning")
    g.add_argument("--prune", default="omp", choices=["omp", "imp", "saliency"],
                   help="omp: one-shot magnitude pruning; imp: iterative; saliency: SalUn masks")
    _prune_amount(g, "pruning rounds, each one trained", "fraction of weights pruned per round")
    g.add_argument("--prune_type", default="rewind_lt", choices=["lt", "pt", "rewind_lt"],
                   help="what each round rewinds to: lt the initialization, rewind_lt the weights after "
                        "--rewind_epoch (or --rewind_pth), pt the dense model")
    g.add_argument("--rewind_epoch", type=nonneg_int, default=0,
                   help="rewind_lt: the dense training epoch whose weights a round rewinds to (0: initialization)")
    g.add_argument("--rewind_pth", default=None, help="weights to rewind to")


def _prune_amount(g, times_help, rate_help):
    """The pruning flags that main_imp.py and the unlearning methods that prune share."""
    g.add_argument("--pruning_times", type=pos_int, default=1, help=times_help)
    g.add_argument("--rate", type=fraction, default=0.2, help=rate_help)
    g.add_argument("--random_prune", action="store_true", help="prune at random instead of by magnitude")


def _unlearn(p):
    from unlearn import ALIASES, METHODS, canonical, method_flags
    g = p.add_argument_group("unlearning")
    g.add_argument("--unlearn", default="retrain", type=canonical, choices=sorted(METHODS) + sorted(ALIASES),
                   help="the method (README: Methods); the reference's other names run ours and are recorded as "
                        "ours: " + ", ".join(f"{a} runs {m}" for a, m in ALIASES.items()))
    g.add_argument("--unlearn_lr", type=pos_float, default=0.01, help="learning rate of a training method")
    g.add_argument("--unlearn_epochs", type=pos_int, default=10, help="epochs of a training method")
    g.add_argument("--alpha", type=nonneg_float, default=0.2, help="FF/IU noise; l1 strength of FT_prune and GA_l1")
    g.add_argument("--mask_ratio", type=ratio, default=None, help="compute a saliency mask at this ratio")
    g.add_argument("--fast_eval", action="store_true",
                   help="evaluate only what the benchmark's tables show (accuracies and MIA-Efficacy's confidence "
                        "attack); by default the reference's full evaluation")
    g.add_argument("--run_name", default=None, help="run folder name (default: method and mask)")
    m = p.add_argument_group("method options", "flags read by one method or a few (named first), declared with "
                                               "the methods (unlearn/)")
    for name, options in method_flags().items():
        m.add_argument(name, **options)


def _attack(p):
    g = p.add_argument_group("backdoor attack")
    g.add_argument("--attack", default="backdoor", choices=["backdoor"],
                   help="accepted for the reference's commands; the trigger patch is the only attack, so it changes "
                        "nothing")
    g.add_argument("--trigger_size", type=pos_int, default=4, help="side in pixels of the square trigger")


_ADDERS = {"data": _data, "train": _train, "prune": _prune, "unlearn": _unlearn, "attack": _attack}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default, unless the help already says what the default means."""

    def _get_help_string(self, action):
        if "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(description, groups):
    """A parser with the flags of `groups` (names of GROUPS), one help section per kind of flag."""
    parser = Parser(description=description, formatter_class=HelpFormatter, usage="%(prog)s [-h] [options]")
    for name in groups:
        _ADDERS[name](parser)
    if "unlearn" in groups and "prune" not in groups:
        _prune_amount(parser.add_argument_group("pruning during unlearning", "FT_prune_bi, GA_prune, GA_prune_bi"),
                      "GA_prune: states, each GA for --epochs and then a pruning, rewound in between",
                      "fraction of the remaining conv weights a pruning removes (FT_prune_bi: in all, over its "
                      "prunings)")
    return parser
