"""Datasets as tensors, the reference's train/val split and forget-set selection, and batch iteration.

Every dataset loads into a `RawData` of float tensors in [0, 1] (NCHW). `make_splits` applies the
reference algorithm: validation = 10% of each class drawn by `RandomState(seed)`; forget set drawn by
`RandomState(seed - 1)` from the training positions. Indices saved and reported are always indices into
the dataset's original training set.
"""
import gzip
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from utils import UserError, read_json

DATASETS = {}
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def register_dataset(fn):
    DATASETS[fn.__name__] = fn
    return fn


@dataclass
class RawData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: str = "none"  # "none", "crop", "crop_flip"

    @property
    def shape(self):
        return tuple(self.x_train.shape[1:])

    def stats(self):
        """Per-channel mean and std of the training images (for the model's own normalization)."""
        x = self.x_train.transpose(0, 1).reshape(self.shape[0], -1)
        return x.mean(1).tolist(), x.std(1).clamp_min(1e-6).tolist()


def _u8(images):
    """uint8 NHWC / NCHW numpy array -> float NCHW tensor in [0, 1]."""
    t = torch.from_numpy(np.array(images, copy=True))
    return t.float().div_(255)


def _missing(name, root, what, err):
    return UserError(f"dataset {name} is not in '{root}' and could not be downloaded ({type(err).__name__}); "
                     f"place {what} in '{root}' or run once with internet access")


def _torchvision(name, cls, root, what, **kwargs):
    import torchvision
    try:
        return getattr(torchvision.datasets, cls)(root=root, download=True, **kwargs)
    except Exception as err:  # offline downloads fail with URLError, OSError or RuntimeError
        raise _missing(name, root, what, err) from None


@register_dataset
def digits(root, data_dir):
    """scikit-learn's embedded 8x8 digits: train = first 1,347 images, test = last 450 (split by writer)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images).float().div_(16).unsqueeze(1)
    y = torch.from_numpy(d.target).long()
    return RawData(x[:1347], y[:1347], x[1347:], y[1347:], 10)


def _cifar(name, cls, num_classes, root, what):
    sets = [_torchvision(name, cls, root, what, train=t) for t in (True, False)]
    xs = [_u8(s.data).permute(0, 3, 1, 2).contiguous() for s in sets]
    ys = [torch.tensor(s.targets, dtype=torch.long) for s in sets]
    return RawData(xs[0], ys[0], xs[1], ys[1], num_classes, "crop_flip")


@register_dataset
def cifar10(root, data_dir):
    return _cifar("cifar10", "CIFAR10", 10, root, "cifar-10-python.tar.gz")


@register_dataset
def cifar100(root, data_dir):
    return _cifar("cifar100", "CIFAR100", 100, root, "cifar-100-python.tar.gz")


@register_dataset
def svhn(root, data_dir):
    sets = [_torchvision("svhn", "SVHN", root, "train_32x32.mat and test_32x32.mat", split=s)
            for s in ("train", "test")]
    xs = [_u8(s.data) for s in sets]
    ys = [torch.from_numpy(s.labels.astype(np.int64)) for s in sets]
    return RawData(xs[0], ys[0], xs[1], ys[1], 10, "crop")


def _read_idx(path):
    """Read an MNIST-format idx file (optionally gzipped)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@register_dataset
def fashionmnist(root, data_dir):
    """torchvision's FashionMNIST; when absent from --data, Debian's dataset-fashion-mnist files."""
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    local = os.path.join(root, "FashionMNIST", "raw")
    if not all(os.path.exists(os.path.join(local, n)) for n in names) and all(
            os.path.exists(os.path.join(DEBIAN_FASHION_MNIST, n + ".gz")) for n in names):
        arrays = [_read_idx(os.path.join(DEBIAN_FASHION_MNIST, n + ".gz")) for n in names]
        xs = [_u8(arrays[0]).unsqueeze(1), _u8(arrays[2]).unsqueeze(1)]
        ys = [torch.from_numpy(arrays[1].astype(np.int64)), torch.from_numpy(arrays[3].astype(np.int64))]
    else:
        what = "FashionMNIST/raw/*-ubyte (or apt-get install dataset-fashion-mnist)"
        sets = [_torchvision("fashionmnist", "FashionMNIST", root, what, train=t) for t in (True, False)]
        xs = [s.data.float().div(255).unsqueeze(1) for s in sets]
        ys = [s.targets.long() for s in sets]
    return RawData(xs[0], ys[0], xs[1], ys[1], 10, "crop_flip")


@register_dataset
def TinyImagenet(root, data_dir):
    """Image folders <data_dir>/train/<class>/... and <data_dir>/val/<class>/... (64x64 RGB)."""
    import torchvision
    from tqdm import tqdm
    out = []
    for split in ("train", "val"):
        folder = os.path.join(data_dir, split)
        if not os.path.isdir(folder):
            raise UserError(f"dataset TinyImagenet: folder '{folder}' is missing; place tiny-imagenet-200 with "
                            f"train/<class>/ and val/<class>/ image folders at --data_dir")
        ds = torchvision.datasets.ImageFolder(folder)
        images = [np.asarray(ds.loader(p).convert("RGB")) for p, _ in tqdm(ds.samples, desc=f"tiny {split}")]
        out += [_u8(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)]
    return RawData(out[0], out[1], out[2], out[3], 200, "crop_flip")


def load_dataset(name, root="./data", data_dir="./tiny-imagenet-200", input_size=None, train_subset=None):
    """The dataset as tensors, resized to input_size; train_subset keeps the first that many training images."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    raw = DATASETS[name](root, data_dir)
    if train_subset:
        if train_subset > len(raw.y_train):
            raise UserError(f"--train_subset {train_subset} is larger than {name}'s {len(raw.y_train)} training images")
        raw.x_train, raw.y_train = raw.x_train[:train_subset], raw.y_train[:train_subset]
    if input_size and input_size != raw.shape[-1]:
        resize = lambda x: F.interpolate(x, size=(input_size, input_size), mode="bilinear",  # noqa: E731
                                         align_corners=False)
        raw.x_train, raw.x_test = resize(raw.x_train), resize(raw.x_test)
    return raw


# ---------------------------------------------------------------- splits (the reference algorithm)

def split_train_val(labels, seed):
    """10% of each class (in class order, one RandomState(seed)) to validation; the rest, ascending, trains."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed % 2**32)
    val = [rng.choice(np.where(labels == c)[0], int(0.1 * np.sum(labels == c)), replace=False)
           for c in range(labels.max() + 1)]
    val = np.hstack(val).astype(np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def select_forget(train_labels, class_to_replace, num, seed):
    """Positions (into the training list) to forget: RandomState(seed - 1) draws `num` of the candidates.

    Seed 0 is valid: seed - 1 is taken modulo 2**32 (equal to the reference for every seed >= 1).
    """
    train_labels = np.asarray(train_labels)
    if class_to_replace == -1:
        candidates = np.arange(len(train_labels))
    else:
        candidates = np.flatnonzero(train_labels == class_to_replace)
    if num is None:
        return candidates
    if num > len(candidates):
        where = "the training set" if class_to_replace == -1 else f"class {class_to_replace}"
        raise UserError(f"--num_indexes_to_replace {num} is larger than {where} ({len(candidates)} examples)")
    rng = np.random.RandomState((seed - 1) % 2**32)
    return rng.choice(candidates, num, replace=False)


@dataclass
class Splits:
    raw: RawData
    train: np.ndarray  # original indices used for training (ascending)
    val: np.ndarray
    forget: np.ndarray  # original indices, in selection order
    forget_class: int = -1  # a whole class forgotten: test accuracy excludes it
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def retain(self):
        return np.setdiff1d(self.train, self.forget)

    def xy(self, name):
        """(x, y) tensors of 'train', 'retain', 'forget', 'val', 'test' or 'test_forgotten_class'."""
        raw = self.raw
        if name in ("test", "test_forgotten_class"):
            keep = (raw.y_test != self.forget_class) if name == "test" else (raw.y_test == self.forget_class)
            if self.forget_class < 0:
                keep = torch.ones_like(keep) if name == "test" else torch.zeros_like(keep)
            return raw.x_test[keep.to(raw.x_test.device)], raw.y_test[keep.to(raw.y_test.device)]
        idx = torch.as_tensor(getattr(self, name), dtype=torch.long, device=raw.x_train.device)
        return raw.x_train[idx], raw.y_train[idx]

    def to(self, device):
        raw = self.raw
        for k in ("x_train", "y_train", "x_test", "y_test"):
            setattr(raw, k, getattr(raw, k).to(device))
        self.device = torch.device(device)
        return self


def read_indices(path, train, val):
    """A JSON list of original training indices to forget, validated."""
    idx = read_json(path, "index file")
    if not isinstance(idx, list) or not idx or not all(isinstance(i, int) and not isinstance(i, bool)
                                                       for i in idx):
        raise UserError(f"index file '{path}' must hold a non-empty JSON list of integers")
    out_of_range = [i for i in idx if not 0 <= i < 2**62]
    if out_of_range:
        raise UserError(f"index file '{path}': index {out_of_range[0]} is outside the training set")
    arr = np.asarray(idx, dtype=np.int64)
    if len(np.unique(arr)) != len(arr):
        raise UserError(f"index file '{path}' lists some indices twice")
    bad = np.setdiff1d(arr, train)
    if len(bad):
        why = "in the validation split" if np.isin(bad[0], val) else "outside the training set"
        raise UserError(f"index file '{path}': index {bad[0]} is {why}")
    return arr


def make_splits(raw, seed, class_to_replace=-1, num_indexes_to_replace=None, indexes_to_replace=None):
    if not -1 <= class_to_replace < raw.num_classes:
        raise UserError(f"--class_to_replace {class_to_replace} is outside the classes 0..{raw.num_classes - 1} "
                        f"(or -1 for random forgetting)")
    y = raw.y_train.cpu().numpy()
    train, val = split_train_val(y, seed)
    if indexes_to_replace:
        return Splits(raw, train, val, read_indices(indexes_to_replace, train, val))
    positions = select_forget(y[train], class_to_replace, num_indexes_to_replace, seed)
    whole_class = class_to_replace >= 0 and num_indexes_to_replace in (None, len(positions)) and \
        len(positions) == int(np.sum(y[train] == class_to_replace))
    return Splits(raw, train, val, train[positions], class_to_replace if whole_class else -1)


def splits_from_args(args, device):
    raw = load_dataset(args.dataset, args.data, args.data_dir, args.input_size, args.train_subset)
    if args.num_classes is not None and args.num_classes != raw.num_classes:
        raise UserError(f"--num_classes {args.num_classes} does not match {args.dataset} ({raw.num_classes})")
    splits = make_splits(raw, args.seed, args.class_to_replace, args.num_indexes_to_replace,
                         args.indexes_to_replace)
    return splits.to(device)


# ---------------------------------------------------------------- batches and augmentation on the device

def augment(x, kind, pad=4):
    """Random crop with zero padding and (for crop_flip) horizontal flip, batched on x's device."""
    if kind == "none":
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dev = x.device
    i = torch.randint(0, 2 * pad + 1, (n,)).to(dev)
    j = torch.randint(0, 2 * pad + 1, (n,)).to(dev)
    rows = (i[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (j[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                 rows, cols]
    if kind == "crop_flip":
        flip = (torch.rand(n) < 0.5).to(dev)[:, None, None, None]
        out = torch.where(flip, out.flip(3), out)
    return out


def batches(x, y, batch_size, shuffle=False, aug="none"):
    """Yield (x, y) batches of tensors already on the device; the order comes from torch's global RNG."""
    n = len(x)
    order = torch.randperm(n).to(x.device) if shuffle else torch.arange(n, device=x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield augment(x[idx], aug), y[idx]


def num_batches(n, batch_size):
    return (n + batch_size - 1) // batch_size
