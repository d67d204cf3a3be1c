"""Benchmark presets: one registry; every method's hyperparameters are spelled out per preset.

A preset holds the data and model (`dataset`, `arch`, `data` flags for every run), the forget set
(`scenario` "random": `num_forget` examples drawn per seed; "class": all training examples of
`forget_class`), the training of the original model (`train`), one flag dict per method (`methods`,
passed to main_forget.py; `retrain` also trains from scratch, so it mirrors `train`), the saliency
`mask_ratio`, the number of `seeds`, and the validation-split `search` grids (they chose the values of
the small presets; `python benchmark.py --search` derives its Optuna spaces from them: docs/search.md), and
optionally the `slurm` resources of one run (suite/launch.py).
"""

from unlearn import METHODS

# Row order of the tables; a method not listed here follows these, by name. A method's other facts (its name in
# the tables, whether it is one-shot, whether it runs under a mask, its flags) are in its registry entry (unlearn/).
METHOD_ORDER = ("raw", "retrain", "FT", "GA", "RL", "fisher_new", "fisher", "wfisher", "FT_prune", "NegGrad_plus",
                "SCRUB", "CF_k", "EU_k", "SSD", "BE", "BS", "SalUn_soft")
REFERENCE = "retrain"
SEARCH_SEEDS = (0, 99)  # the search's own splits and forget sets, none of the benchmark's seeds (1, 2, 3)

# SalUn (ICLR 2024) Table 1: ResNet-18 on CIFAR-10, random forgetting of 10% of the training set.
# Columns in the order of our table: UA, MIA-Efficacy, RA, TA, Avg. Gap, RTE (minutes).
PUBLISHED_TITLE = "SalUn Table 1 (UA / MIA / RA / TA / Gap / RTE)"
PUBLISHED = {
    ("retrain", False): (5.24, 12.88, 100.00, 94.26, 0.00, 43.29),
    ("FT", False): (0.63, 2.70, 99.88, 94.06, 3.78, 2.37),
    ("RL", False): (7.61, 37.36, 99.67, 92.83, 7.15, 2.64),
    ("GA", False): (0.69, 1.70, 99.50, 94.01, 4.12, 0.13),
    ("wfisher", False): (1.07, 2.67, 99.20, 93.20, 4.06, 3.22),
    ("FT_prune", False): (4.19, 9.84, 97.74, 91.59, 2.26, 2.36),
    ("RL", True): (2.85, 14.39, 99.62, 93.93, 1.15, 2.66),  # SalUn = RL + saliency mask
    # Avg. Gap computed from the four metrics and the retrain row; RTE not filled in here (None).
    ("BE", False): (0.59, 7.47, 99.42, 93.85, 2.76, None),
    ("BS", False): (1.78, 8.96, 98.29, 92.69, 2.67, None),
    ("SalUn_soft", False): (4.19, 19.49, 99.74, 93.44, 2.19, None),
}

# Flags whose command-line spelling is not "--" + key.
FLAG_SPELLING = {"no_l1_epochs": "--no-l1-epochs", "no_aug": "--no-aug"}

# The papers' CIFAR-10 settings (SalUn, ICLR 2024; "Model Sparsity Can Simplify Machine Unlearning",
# NeurIPS 2023): ResNet-18, batch 256, SGD momentum 0.9, weight decay 5e-4; original model 182 epochs at
# lr 0.1 with 10x drops at epochs 91 and 136; retrain 160 epochs at 0.1; FT 10 epochs at 0.01; GA 5 epochs
# at 1e-4; RL 10 epochs at 0.013; l1-sparse 10 epochs at 0.01 with gamma = 5e-4 decaying linearly.
# FF's and IU's strengths are not stated in the papers (searched there over a range); IU's alpha = 10 is
# the value public reproduction scripts use for this setting; FF's alpha = 1e-7 caps its noise at
# sqrt(1e3 x 1e-7) = 0.01 per weight (x sqrt(10) on the classifier and 1-d tensors); not searched.
_CIFAR10 = {
    "dataset": "cifar10", "arch": "resnet18", "num_forget": 4500, "forget_class": 0, "seeds": 3,
    "mask_ratio": 0.5, "data": {"batch_size": 256},
    "train": {"epochs": 182, "lr": 0.1, "decreasing_lr": "91,136"},
    "slurm": {"gpus": 1, "cpus": 8, "time": 360, "mem": 32},  # per run; not measured on a cluster
    "methods": {
        "raw": {},
        "retrain": {"unlearn_epochs": 160, "unlearn_lr": 0.1},
        "FT": {"unlearn_epochs": 10, "unlearn_lr": 0.01},
        "GA": {"unlearn_epochs": 5, "unlearn_lr": 1e-4},
        "RL": {"unlearn_epochs": 10, "unlearn_lr": 0.013, "rl_order": "reference"},
        "fisher_new": {"alpha": 1e-7},
        "wfisher": {"alpha": 10, "iu_samples": 1000, "iu_memory": 10},
        "FT_prune": {"unlearn_epochs": 10, "unlearn_lr": 0.01, "alpha": 5e-4},
        # Boundary Unlearning's code (CVPR 2023): 10 epochs over the forget set, SGD lr 1e-5 (momentum 0.9), FGSM
        # bound 0.1; SalUn reruns BE and BS on this setting without stating other values.
        "BE": {"unlearn_epochs": 10, "unlearn_lr": 1e-5},
        "BS": {"unlearn_epochs": 10, "unlearn_lr": 1e-5, "bs_bound": 0.1},
        # SalUn-soft: SalUn's RL settings (10 epochs at 0.013) with a soft-threshold share of 0.5 (SalUn's mask ratio).
        "SalUn_soft": {"unlearn_epochs": 10, "unlearn_lr": 0.013, "salun_soft_ratio": 0.5},
        # Not from the SalUn tables. NegGrad+: FT's settings, beta at its default, plain SGD as its authors train
        # (unlearn.register). SCRUB: its authors' large-scale CIFAR setting (3 epochs at lr 5e-4, max-steps in the
        # first 2, forget batches of 512, retain batches of 256, no augmentation, momentum 0.9, weight decay 5e-4).
        # CF-k / EU-k: the last 3 layers, FT's and retrain's settings, plain SGD as Goel et al. train. SSD: its
        # paper's ResNet-18 values (alpha 10, lambda 1) with its importance estimate.
        "NegGrad_plus": {"unlearn_epochs": 10, "unlearn_lr": 0.01},
        "SCRUB": {"unlearn_epochs": 3, "unlearn_lr": 5e-4, "forget_batch_size": 512, "no_aug": True},
        "CF_k": {"unlearn_epochs": 10, "unlearn_lr": 0.01, "last_k": 3},
        "EU_k": {"unlearn_epochs": 160, "unlearn_lr": 0.1, "last_k": 3},
        "SSD": {"ssd_alpha": 10, "ssd_lambda": 1},
    },
    "published": True,  # retraining dominates the time: days on 2 CPU cores, hours per seed on one GPU
}

PRESETS = {
    # Real 8x8 handwritten digits shipped with scikit-learn (no download). 1,347 training images; the seed's
    # validation split keeps 1,217, of which 121 (10%) are forgotten. Method values: chosen by the --search
    # grids below (seeds 0 and 99; the table and the reasoning are in docs/presets.md). 93 runs: 2.1 minutes
    # measured on 2 idle CPU cores from a clean clone.
    "digits": {
        "about": "scikit-learn digits, resnet20s, forget 10% at random; about 2 minutes on 2 idle CPU cores",
        "dataset": "digits", "arch": "resnet20s", "scenario": "random", "num_forget": 121, "forget_class": 0,
        "seeds": 3, "mask_ratio": 0.5, "data": {"batch_size": 256},
        "train": {"epochs": 12, "lr": 0.1, "decreasing_lr": "6,9"},
        "slurm": {"gpus": 0, "cpus": 2, "time": 15, "mem": 4},  # per run (benchmark.py --launcher slurm)
        "methods": {
            "raw": {},
            "retrain": {"unlearn_epochs": 12, "unlearn_lr": 0.1},
            "FT": {"unlearn_epochs": 5, "unlearn_lr": 0.3},
            "GA": {"unlearn_epochs": 5, "unlearn_lr": 0.1},
            "RL": {"unlearn_epochs": 5, "unlearn_lr": 0.003},
            "fisher_new": {"alpha": 1e-6},
            "wfisher": {"alpha": 10, "iu_samples": 300},
            "FT_prune": {"unlearn_epochs": 10, "unlearn_lr": 0.1, "alpha": 2e-3},
            # NegGrad+, CF-k, EU-k: their authors' plain SGD (no momentum, no weight decay), values searched with it
            # (docs/results/search_digits_plain_sgd.md; CF-k acts at no value that keeps validation accuracy).
            "NegGrad_plus": {"unlearn_epochs": 5, "unlearn_lr": 0.3, "neggrad_beta": 0.9},
            "SCRUB": {"unlearn_epochs": 5, "unlearn_lr": 0.03},
            "CF_k": {"unlearn_epochs": 5, "unlearn_lr": 1.0, "last_k": 3},
            "EU_k": {"unlearn_epochs": 12, "unlearn_lr": 0.3, "last_k": 13},
            "SSD": {"ssd_alpha": 5, "ssd_lambda": 1},
            "BE": {"unlearn_epochs": 5, "unlearn_lr": 0.004},
            "BS": {"unlearn_epochs": 5, "unlearn_lr": 0.002},
            "SalUn_soft": {"unlearn_epochs": 5, "unlearn_lr": 0.003},
        },
        "search": {
            "FT": {"unlearn_lr": [0.1, 0.3, 0.5, 0.6, 0.7], "unlearn_epochs": [5, 10]},
            "GA": {"unlearn_lr": [0.01, 0.03, 0.1, 0.2, 0.3]},
            "RL": {"unlearn_lr": [0.001, 0.003, 0.01, 0.03]},
            "fisher_new": {"alpha": [1e-8, 1e-7, 1e-6, 1e-5, 1e-4]},
            "wfisher": {"alpha": [3, 10, 15, 20, 30]},
            "FT_prune": {"alpha": [1e-3, 2e-3, 3.5e-3, 5e-3], "unlearn_lr": [0.05, 0.1], "unlearn_epochs": [5, 10]},
            "NegGrad_plus": {"unlearn_lr": [0.3, 1, 3], "neggrad_beta": [0.9, 0.95, 0.99, 0.999]},
            "SCRUB": {"unlearn_lr": [0.003, 0.01, 0.03, 0.1]},
            "CF_k": {"unlearn_lr": [1, 3, 10], "last_k": [3, 7]},
            "EU_k": {"unlearn_lr": [0.1, 0.3, 1], "last_k": [1, 3, 7, 13]},
            "SSD": {"ssd_alpha": [3, 4, 5, 6, 7, 10], "ssd_lambda": [0.1, 1]},
            "BE": {"unlearn_lr": [0.001, 0.002, 0.004, 0.01]},
            "BS": {"unlearn_lr": [0.001, 0.002, 0.004, 0.01]},
            "SalUn_soft": {"unlearn_lr": [0.001, 0.003, 0.01, 0.03]},
        },
        "published": False,
    },
    # Fashion-MNIST from Debian's dataset-fashion-mnist package, in the papers' regime: the original model fits
    # its training set (train accuracy 99.3%, test 85.8% on seed 0), so retraining measurably forgets. To keep a
    # seed near 12 minutes on 2 CPU cores: the first 5,000 training images (4,500 after the validation split,
    # 450 forgotten), 14x14, no augmentation, resnet20s, 20 epochs. Method values: chosen by the --search
    # grids below (seeds 0 and 99; docs/results/search_fashionmnist.md), starting from the papers' CIFAR-10
    # values with half the epochs.
    "fashionmnist": {
        "about": "Fashion-MNIST (Debian package), first 5,000 training images, resnet20s at 14x14, forget 10% "
                 "at random; ~12 min per seed on 2 CPU cores",
        "dataset": "fashionmnist", "arch": "resnet20s", "scenario": "random", "num_forget": 450,
        "forget_class": 0, "seeds": 3, "mask_ratio": 0.5,
        "data": {"batch_size": 128, "input_size": 14, "train_subset": 5000, "no_aug": True},
        "train": {"epochs": 20, "lr": 0.1, "decreasing_lr": "10,15"},
        "slurm": {"gpus": 0, "cpus": 4, "time": 30, "mem": 8},  # per run (benchmark.py --launcher slurm)
        "methods": {
            "raw": {},
            "retrain": {"unlearn_epochs": 20, "unlearn_lr": 0.1},
            "FT": {"unlearn_epochs": 5, "unlearn_lr": 0.1},
            "GA": {"unlearn_epochs": 5, "unlearn_lr": 2e-3},
            "RL": {"unlearn_epochs": 5, "unlearn_lr": 0.003},
            "fisher_new": {"alpha": 1e-7},
            "wfisher": {"alpha": 10, "iu_samples": 300},
            "FT_prune": {"unlearn_epochs": 5, "unlearn_lr": 0.01, "alpha": 5e-4},
            "NegGrad_plus": {"unlearn_epochs": 5, "unlearn_lr": 0.397, "neggrad_beta": 0.97},
            "SCRUB": {"unlearn_epochs": 5, "unlearn_lr": 0.03},
            "CF_k": {"unlearn_epochs": 5, "unlearn_lr": 2.37, "last_k": 7},
            "EU_k": {"unlearn_epochs": 20, "unlearn_lr": 0.441, "last_k": 13},
            "SSD": {"ssd_alpha": 4.41, "ssd_lambda": 1},  # searched: docs/results/search_fashionmnist_ssd.md
            "BE": {"unlearn_epochs": 5, "unlearn_lr": 1e-5},
            "BS": {"unlearn_epochs": 5, "unlearn_lr": 3e-4},
            "SalUn_soft": {"unlearn_epochs": 5, "unlearn_lr": 0.003},
        },
        "search": {
            "FT": {"unlearn_lr": [0.03, 0.1, 0.2, 0.4]},
            "GA": {"unlearn_lr": [5e-4, 2e-3, 5e-3, 1e-2]},
            "RL": {"unlearn_lr": [0.001, 0.003, 0.006, 0.013]},
            "fisher_new": {"alpha": [1e-7, 1e-6, 1e-5, 1e-4]},
            "wfisher": {"alpha": [1, 3, 5, 10]},
            "FT_prune": {"alpha": [5e-4, 1e-3, 2e-3], "unlearn_lr": [0.01, 0.05]},
            "NegGrad_plus": {"unlearn_lr": [0.1, 0.3, 1], "neggrad_beta": [0.9, 0.95, 0.99, 0.999]},
            "SCRUB": {"unlearn_lr": [0.003, 0.01, 0.03]},
            "CF_k": {"unlearn_lr": [1, 3, 10], "last_k": [3, 7]},
            "EU_k": {"unlearn_lr": [0.3, 1], "last_k": [7, 13]},
            "SSD": {"ssd_alpha": [3, 5, 7, 10]},
            "BE": {"unlearn_lr": [1e-5, 1e-4, 3e-4, 0.001, 0.01]},
            "BS": {"unlearn_lr": [1e-5, 1e-4, 3e-4, 0.001, 0.01]},
            "SalUn_soft": {"unlearn_lr": [0.003, 0.006, 0.013]},
        },
        "published": False,
    },
    "cifar10": {**_CIFAR10, "scenario": "random",
                "about": "the papers' CIFAR-10 setting: ResNet-18, forget 4,500 training images at random"},
    "cifar10-class": {**_CIFAR10, "scenario": "class",
                      "about": "the papers' class-wise CIFAR-10 setting: ResNet-18, forget all of class 0"},
}


def flags(options):
    """{"unlearn_lr": 0.01, "no_aug": True} -> ["--unlearn_lr", "0.01", "--no-aug"]."""
    out = []
    for key, value in options.items():
        flag = FLAG_SPELLING.get(key, "--" + key)
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            out += [flag, format(value, "g") if isinstance(value, float) else str(value)]
    return out


def display(method):
    """A method's name in the tables (its registry entry's; a name no longer registered stands for itself)."""
    return METHODS[method].display if method in METHODS else method


def label(method, masked, sparsity=0.0):
    """Row name in the tables: 'FT', 'FT + mask', 'RL + mask (SalUn)', 'FT (95% sparse)'."""
    name = display(method)
    if sparsity:
        name += f" ({100 * sparsity:g}% sparse)"
    if not masked:
        return name
    return f"{name} + mask (SalUn)" if method == "RL" else f"{name} + mask"


def order_key(method, masked):
    rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return rank, method, bool(masked)
