"""Datasets as tensors, the reference's train/val split and forget-set selection, and batch iteration.

Every dataset loads into a `RawData` of float tensors in [0, 1] (NCHW). `make_splits` applies the
reference algorithm: validation = 10% of each class drawn by `RandomState(seed)`; forget set drawn by
`RandomState(seed - 1)` from the training positions. Indices saved and reported are always indices into
the dataset's original training set.
"""
import gzip
import inspect
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
        if isinstance(self.x_train, ImageFiles):
            return self.x_train.stats()
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


def _folders(name, root, what, splits=("train", "val")):
    """torchvision ImageFolder listings of root/<split> for each of `splits` (paths and labels, nothing decoded)."""
    import torchvision
    out = []
    for split in splits:
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise UserError(f"dataset {name}: folder '{folder}' is missing; place {what}")
        try:
            out.append(torchvision.datasets.ImageFolder(folder))
        except (FileNotFoundError, RuntimeError) as err:
            raise UserError(f"dataset {name}: {err}") from None
    return out


@register_dataset
def TinyImagenet(root, data_dir, stream=False):
    """Image folders <data_dir>/train/<class>/... and <data_dir>/val/<class>/... (64x64 RGB); streamed from
    the files with --stream."""
    from tqdm import tqdm
    sets = _folders("TinyImagenet", data_dir, "tiny-imagenet-200 with train/<class>/ and val/<class>/ image "
                                              "folders at --data_dir")
    if stream:
        xs = [ImageFiles([p for p, _ in ds.samples], 64) for ds in sets]
        return RawData(xs[0], torch.tensor(sets[0].targets), xs[1], torch.tensor(sets[1].targets), 200, "crop_flip")
    out = []
    for split, ds in zip(("train", "val"), sets):
        images = [np.asarray(ds.loader(p).convert("RGB")) for p, _ in tqdm(ds.samples, desc=f"tiny {split}")]
        out += [_u8(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)]
    return RawData(out[0], out[1], out[2], out[3], 200, "crop_flip")


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@register_dataset
def imagenet(root, data_dir, stream=True):
    """ImageNet as the reference lays it out: <data>/train/<class>/*.JPEG and <data>/val/<class>/*, always
    streamed from the files; each image's shorter side resized to --input_size (default 224), then the
    central square. The classes are the train folders' names in sorted order."""
    sets = _folders("imagenet", root, "ImageNet as train/<class>/*.JPEG and val/<class>/* under --data")
    if sets[0].classes != sets[1].classes:
        raise UserError(f"dataset imagenet: '{root}/val' does not hold the same class folders as '{root}/train'")
    xs = [ImageFiles([p for p, _ in ds.samples], 224, stats=(IMAGENET_MEAN, IMAGENET_STD)) for ds in sets]
    return RawData(xs[0], torch.tensor(sets[0].targets), xs[1], torch.tensor(sets[1].targets), len(sets[0].classes),
                   "crop_flip")


@register_dataset
def imagefolder(root, data_dir, stream=False):
    """Your own images: <data>/train/<class>/* and <data>/test/<class>/* (or val/ when there is no test/), in
    any format PIL reads, any number of classes (the train folders' names in sorted order; test/ must hold the
    same folders). Each image is converted to RGB, its shorter side resized to the first training image's
    shorter side, then the central square kept (then resized to --input_size, when given). Held as tensors, or
    streamed with --stream (then read at --input_size directly)."""
    has = {s: os.path.isdir(os.path.join(root, s)) for s in ("test", "val")}
    held_out = "val" if has["val"] and not has["test"] else "test"
    sets = _folders("imagefolder", root, "your images as train/<class>/* and test/<class>/* under --data",
                    ("train", held_out))
    if sets[0].classes != sets[1].classes:
        raise UserError(f"dataset imagefolder: '{os.path.join(root, held_out)}' does not hold the same class "
                        f"folders as '{os.path.join(root, 'train')}'")
    with _open_image(sets[0].samples[0][0]) as first:
        size = min(first.size)
    xs = [ImageFiles([p for p, _ in ds.samples], size) for ds in sets]
    if not stream:
        xs = [x[:] for x in xs]
    return RawData(xs[0], torch.tensor(sets[0].targets), xs[1], torch.tensor(sets[1].targets), len(sets[0].classes),
                   "crop_flip")


STREAMED = {"imagenet"}  # datasets that never fit as tensors


def load_dataset(name, root="./data", data_dir="./tiny-imagenet-200", input_size=None, train_subset=None,
                 stream=False, num_workers=0):
    """The dataset as tensors, resized to input_size; train_subset keeps the first that many training images.

    `stream` (always for imagenet): images stay in their files (`ImageFiles`), read in `num_workers` processes
    when a batch needs them, at input_size."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    stream = stream or name in STREAMED
    folders = sorted(n for n, load in DATASETS.items() if "stream" in inspect.signature(load).parameters)
    if stream and name not in folders:
        raise UserError(f"dataset {name} cannot be streamed from files (--stream): it is held as tensors; "
                        f"streaming is for image folders ({', '.join(folders)})")
    raw = DATASETS[name](root, data_dir, stream=True) if stream else DATASETS[name](root, data_dir)
    if train_subset:
        if train_subset > len(raw.y_train):
            raise UserError(f"--train_subset {train_subset} is larger than {name}'s {len(raw.y_train)} training images")
        first = raw.x_train.subset(range(train_subset)) if isinstance(raw.x_train, ImageFiles) else \
            raw.x_train[:train_subset]
        raw.x_train, raw.y_train = first, raw.y_train[:train_subset]
    if isinstance(raw.x_train, ImageFiles):
        raw.x_train, raw.x_test = (x.configure(size=input_size, workers=num_workers) for x in (raw.x_train,
                                                                                                 raw.x_test))
        return raw
    if input_size and input_size != raw.shape[-1]:
        resize = lambda x: F.interpolate(x, size=(input_size, input_size), mode="bilinear",  # noqa: E731
                                         align_corners=False)
        raw.x_train, raw.x_test = resize(raw.x_train), resize(raw.x_test)
    return raw


# ---------------------------------------------------------------- images streamed from files

def _open_image(path):
    """PIL's image at `path`, decoded; a file PIL cannot read is a UserError naming it."""
    from PIL import Image
    try:
        img = Image.open(path)
        img.load()
        return img
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read image '{path}': {err}") from None


class _Decode(torch.utils.data.Dataset):
    """Image i of `paths` as a float CHW tensor in [0, 1]: RGB, shorter side resized to `size`, central square."""

    def __init__(self, paths, size):
        self.paths, self.size = paths, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image
        with _open_image(self.paths[i]) as img:
            img = img.convert("RGB")
            w, h = img.size
            if min(w, h) != self.size:
                scale = self.size / min(w, h)
                img = img.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))),
                                 Image.BILINEAR)
                w, h = img.size
            if (w, h) != (self.size, self.size):
                left, top = (w - self.size) // 2, (h - self.size) // 2
                img = img.crop((left, top, left + self.size, top + self.size))
            return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)


class ImageFiles:
    """Images kept in their files and read when indexed: it answers len(), .shape (N, 3, size, size), .device
    and indexing (a slice or indices: the images as a float NCHW tensor in [0, 1] on .device) like the tensors
    of the tensor path, so evaluation and the methods that go through the data in slices take it as it is.
    `subset(indices)` is a view; `stream(index_lists)` yields batches read ahead by a DataLoader with
    `workers` processes. torch.cat of ImageFiles is their concatenation."""

    def __init__(self, paths, size, device="cpu", workers=0, stats=None):
        self.paths, self.size, self.device, self.workers, self._stats = list(paths), size, torch.device(device), \
            workers, stats

    def _copy(self, **changes):
        out = ImageFiles(self.paths, self.size, self.device, self.workers, self._stats)
        out.__dict__.update(changes)
        return out

    def configure(self, size=None, workers=None):
        return self._copy(size=size or self.size, workers=self.workers if workers is None else workers)

    def __len__(self):
        return len(self.paths)

    @property
    def shape(self):
        return (len(self.paths), 3, self.size, self.size)

    def to(self, device, **_):
        return self._copy(device=torch.device(device))

    def subset(self, indices):
        return self._copy(paths=[self.paths[i] for i in torch.as_tensor(indices, dtype=torch.long).tolist()])

    def _indices(self, key):
        if isinstance(key, slice):
            return list(range(len(self.paths)))[key]
        key = torch.as_tensor(key)
        if key.dtype == torch.bool:
            key = key.nonzero()[:, 0]
        return key.reshape(-1).tolist()

    def __getitem__(self, key):
        if isinstance(key, int):
            return self[[key]][0]
        idx = self._indices(key)
        if not idx:
            return torch.empty(0, *self.shape[1:], device=self.device)
        return next(iter(self.stream([idx])))

    def stream(self, index_lists):
        """The images of each list of indices, as one batch on the device, read ahead by the DataLoader."""
        index_lists = [list(i) for i in index_lists]
        loader = torch.utils.data.DataLoader(
            _Decode(self.paths, self.size), batch_sampler=[i for i in index_lists if i], num_workers=self.workers,
            generator=torch.Generator(),  # the global RNG stays as the tensor path leaves it
            pin_memory=self.device.type == "cuda")
        read = iter(loader)
        for idx in index_lists:
            try:
                batch = next(read) if idx else torch.empty(0, *self.shape[1:])
            except UserError as err:  # from a worker process it carries the worker's traceback: keep the last line
                raise UserError(str(err).strip().splitlines()[-1].split("UserError: ", 1)[-1]) from None
            yield batch.to(self.device, non_blocking=True)

    def stats(self, limit=1000):
        """Given per-channel mean and std, or those of up to `limit` evenly spaced images."""
        if self._stats is not None:
            return [float(v) for v in self._stats[0]], [float(v) for v in self._stats[1]]
        idx = torch.linspace(0, len(self) - 1, min(limit, len(self))).round().long().unique()
        x = self[idx].transpose(0, 1).reshape(3, -1)
        return x.mean(1).tolist(), x.std(1).clamp_min(1e-6).tolist()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.cat and all(isinstance(t, ImageFiles) for t in args[0]):
            first = args[0][0]
            return first._copy(paths=[p for t in args[0] for p in t.paths])
        return NotImplemented


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
            if isinstance(raw.x_test, ImageFiles):
                return raw.x_test.subset(keep.cpu().nonzero()[:, 0]), raw.y_test[keep.to(raw.y_test.device)]
            return raw.x_test[keep.to(raw.x_test.device)], raw.y_test[keep.to(raw.y_test.device)]
        if isinstance(raw.x_train, ImageFiles):
            idx = torch.as_tensor(getattr(self, name), dtype=torch.long)
            return raw.x_train.subset(idx), raw.y_train[idx.to(raw.y_train.device)]
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
    raw = load_dataset(args.dataset, args.data, args.data_dir, args.input_size, args.train_subset,
                       getattr(args, "stream", False), getattr(args, "num_workers", 0))
    if args.num_classes is not None and args.num_classes != raw.num_classes:
        raise UserError(f"--num_classes {args.num_classes} does not match {args.dataset} ({raw.num_classes})")
    splits = make_splits(raw, args.seed, args.class_to_replace, args.num_indexes_to_replace,
                         args.indexes_to_replace)
    return splits.to(device)


# ---------------------------------------------------------------- batches and augmentation on the device

def augment_draws(n, kind, pad=4):
    """The random numbers augmenting n images (torch's global RNG): crop offsets, and flips for crop_flip."""
    if kind == "none":
        return None
    i = torch.randint(0, 2 * pad + 1, (n,))
    j = torch.randint(0, 2 * pad + 1, (n,))
    flip = torch.rand(n) < 0.5 if kind == "crop_flip" else None
    return i, j, flip


def augment(x, kind, pad=4, draws=None):
    """Random crop with zero padding and (for crop_flip) horizontal flip, batched on x's device. `draws`:
    the augment_draws to use (by default drawn now for x)."""
    if kind == "none":
        return x
    n, c, h, w = x.shape
    i, j, flip = augment_draws(n, kind, pad) if draws is None else draws
    padded = F.pad(x, (pad, pad, pad, pad))
    dev = x.device
    i, j = i.to(dev), j.to(dev)
    rows = (i[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (j[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                 rows, cols]
    if flip is not None:
        out = torch.where(flip.to(dev)[:, None, None, None], out.flip(3), out)
    return out


def batches(x, y, batch_size, shuffle=False, aug="none"):
    """Yield (x, y) batches of tensors already on the device; the order comes from torch's global RNG.

    Streamed images (ImageFiles) are read by a DataLoader with the same order and augmentation; under
    torchrun each rank reads only its slice of every batch (see stream_batches)."""
    if isinstance(x, ImageFiles):
        yield from stream_batches(x, y, batch_size, shuffle, aug)
        return
    n = len(x)
    order = torch.randperm(n).to(x.device) if shuffle else torch.arange(n, device=x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield augment(x[idx], aug), y[idx]


def stream_batches(x, y, batch_size, shuffle=False, aug="none"):
    """batches() over ImageFiles: the same shuffle and augmentation draws as the tensor path, so one process
    gets the very same batches. Under torchrun a rank reads only its contiguous slice of each global batch
    (a sampler that shards every batch, where torch's DistributedSampler would interleave and pad, changing
    which examples share a step), augments it with its part of the global batch's draws and yields it as
    distributed.Shard pairs, which trainer.fit does not cut again."""
    import distributed
    n = len(x)
    order = torch.randperm(n) if shuffle else torch.arange(n)
    spans = [order[s:s + batch_size] for s in range(0, n, batch_size)]
    world, rank = distributed.world_size(), distributed.rank()
    parts = [span.tensor_split(world)[rank] for span in spans]
    for span, part, images in zip(spans, parts, x.stream([p.tolist() for p in parts])):
        draws = augment_draws(len(span), aug)
        if draws is not None and world > 1:
            draws = tuple(d.tensor_split(world)[rank] if d is not None else None for d in draws)
        xb, yb = augment(images, aug, draws=draws), y[part.to(y.device)]
        yield (distributed.Shard(xb, len(span)), distributed.Shard(yb, len(span))) if world > 1 else (xb, yb)


def in_order(x, batch_size):
    """The rows of x in order, in batches of `batch_size`, without labels or augmentation: slices of a tensor, or
    streamed images read by one DataLoader with all its workers."""
    starts = range(0, len(x), batch_size)
    if isinstance(x, ImageFiles):
        return x.stream([range(s, min(s + batch_size, len(x))) for s in starts])
    return (x[s:s + batch_size] for s in starts)


def rows(x, lo, hi):
    """Rows lo:hi of x: a tensor's slice, or streamed images as a view (nothing is read yet)."""
    return x.subset(range(lo, hi)) if isinstance(x, ImageFiles) else x[lo:hi]


def num_batches(n, batch_size):
    return (n + batch_size - 1) // batch_size
