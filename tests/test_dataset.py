"""Data: the reference's split and forget-set selection, loaders in each dataset's on-disk format, augmentation."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

import dataset
from dataset import RawData, augment, load_dataset, make_splits, read_indices, select_forget, split_train_val
from utils import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the reference algorithm, written independently

def reference_split(labels, seed):
    """Validation: 10% of each class, classes in order, from one RandomState(seed); train: the rest."""
    labels = np.array(labels)
    rng = np.random.RandomState(seed)
    valid_idx = []
    for i in range(max(labels) + 1):
        class_idx = np.where(labels == i)[0]
        valid_idx.append(rng.choice(class_idx, int(0.1 * len(class_idx)), replace=False))
    valid_idx = np.hstack(valid_idx)
    train_idx = list(set(range(len(labels))) - set(valid_idx))
    return train_idx, valid_idx


def reference_forget(labels, seed, class_to_replace, num):
    """Original indices forgotten: RandomState(seed - 1) over positions in the training list."""
    train_idx, _ = reference_split(labels, seed)
    train_labels = np.array(labels)[train_idx]
    if class_to_replace == -1:
        candidates = np.flatnonzero(np.ones_like(train_labels))
    else:
        candidates = np.flatnonzero(train_labels == class_to_replace)
    if num is not None:
        candidates = np.random.RandomState(seed - 1).choice(candidates, num, replace=False)
    return np.array(train_idx)[candidates]


def fake_raw(labels, num_classes=10, test_labels=None):
    """RawData with the given training labels and 1x1 images (only labels matter for splits)."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    test_labels = torch.arange(50) % num_classes if test_labels is None else test_labels
    return RawData(torch.zeros(len(labels), 1, 1, 1), labels, torch.rand(len(test_labels), 1, 1, 1),
                   test_labels, num_classes)


@pytest.fixture(scope="module")
def cifar_labels():
    """50,000 CIFAR-shaped labels (5,000 per class), shuffled with a fixed seed."""
    return np.random.RandomState(123).permutation(np.repeat(np.arange(10), 5000))


@pytest.fixture(scope="module")
def digits_labels():
    return load_dataset("digits").y_train.numpy()


@pytest.fixture(params=["cifar", "digits"])
def labels(request, cifar_labels, digits_labels):
    return cifar_labels if request.param == "cifar" else digits_labels


# ---------------------------------------------------------------- split and forget set

@pytest.mark.parametrize("seed", [1, 2, 7])
def test_split_equals_reference(labels, seed):
    train, val = split_train_val(labels, seed)
    ref_train, ref_val = reference_split(labels, seed)
    assert np.array_equal(val, ref_val)
    assert np.array_equal(train, np.array(ref_train))


@pytest.mark.parametrize("seed,class_to_replace,num", [(2, -1, 100), (1, 3, 45), (7, 0, None), (2, 9, 1)])
def test_forget_set_equals_reference(labels, seed, class_to_replace, num):
    splits = make_splits(fake_raw(labels), seed, class_to_replace, num)
    ref_train, ref_val = reference_split(labels, seed)
    assert np.array_equal(splits.train, np.array(ref_train))
    assert np.array_equal(splits.val, ref_val)
    assert np.array_equal(splits.forget, reference_forget(labels, seed, class_to_replace, num))


def test_split_sizes_classes_and_disjointness(cifar_labels):
    splits = make_splits(fake_raw(cifar_labels), 2, class_to_replace=4, num_indexes_to_replace=450)
    train, val, forget, retain = splits.train, splits.val, splits.forget, splits.retain
    assert len(val) == 5000 and len(train) == 45000 and len(forget) == 450 and len(retain) == 44550
    assert np.all(np.bincount(cifar_labels[val], minlength=10) == 500)
    assert np.all(np.diff(train) > 0)  # ascending, no repeats
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.union1d(train, val), np.arange(50000))
    assert len(np.unique(forget)) == 450 and np.all(np.isin(forget, train))
    assert not np.any(np.isin(forget, val)) and not np.any(np.isin(retain, forget))
    assert np.array_equal(np.union1d(retain, forget), train)
    assert np.all(cifar_labels[forget] == 4)
    _, y_forget = splits.xy("forget")
    assert torch.all(y_forget == 4) and len(y_forget) == 450
    assert splits.forget_class == -1  # a part of a class: the test set stays whole
    assert len(splits.xy("test")[1]) == 50 and len(splits.xy("test_forgotten_class")[1]) == 0


def test_random_forget_set_spans_classes(cifar_labels):
    splits = make_splits(fake_raw(cifar_labels), 2, -1, 2000)
    assert len(splits.forget) == 2000 and len(np.unique(cifar_labels[splits.forget])) == 10


def test_selection_is_deterministic_and_seeded(cifar_labels):
    raw = fake_raw(cifar_labels)
    a, b, c = (make_splits(raw, s, -1, 300) for s in (5, 5, 6))
    assert np.array_equal(a.val, b.val) and np.array_equal(a.train, b.train)
    assert np.array_equal(a.forget, b.forget)
    assert not np.array_equal(a.val, c.val) and not np.array_equal(a.forget, c.forget)
    # the forget draw has its own RandomState: drawing a forget set leaves global numpy state alone
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    make_splits(raw, 5, -1, 300)
    assert np.random.rand() == expected


def test_seed_zero_is_valid(digits_labels):
    splits = make_splits(fake_raw(digits_labels), 0, -1, 10)
    assert len(splits.forget) == 10 and np.all(np.isin(splits.forget, splits.train))


def test_select_forget_positions(cifar_labels):
    train, _ = split_train_val(cifar_labels, 2)
    pos = select_forget(cifar_labels[train], 7, 30, 2)
    assert np.array_equal(pos, np.random.RandomState(1).choice(np.flatnonzero(cifar_labels[train] == 7), 30,
                                                               replace=False))
    assert len(select_forget(cifar_labels[train], 7, None, 2)) == 4500


@pytest.mark.parametrize("class_to_replace,num", [(3, 4501), (-1, 45001)])
def test_too_many_to_forget_is_user_error(cifar_labels, class_to_replace, num):
    with pytest.raises(UserError, match="larger than"):
        make_splits(fake_raw(cifar_labels), 2, class_to_replace, num)


@pytest.mark.parametrize("class_to_replace", [10, -2, 100])
def test_class_outside_the_classes_is_user_error(digits_labels, class_to_replace):
    with pytest.raises(UserError, match="outside the classes"):
        make_splits(fake_raw(digits_labels), 2, class_to_replace, None)


@pytest.mark.parametrize("num", [None, 4500])
def test_whole_class_forgetting_splits_the_test_set(cifar_labels, num):
    test_labels = torch.arange(100) % 10
    splits = make_splits(fake_raw(cifar_labels, test_labels=test_labels), 2, 3, num)
    assert splits.forget_class == 3
    assert len(splits.forget) == 4500 and np.all(cifar_labels[splits.forget] == 3)
    assert len(splits.retain) == 45000 - 4500 and not np.any(cifar_labels[splits.retain] == 3)
    x, y = splits.xy("test")
    assert len(y) == 90 and not torch.any(y == 3) and len(x) == 90
    x, y = splits.xy("test_forgotten_class")
    assert len(y) == 10 and torch.all(y == 3) and len(x) == 10


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_indexes_to_replace_forgets_exactly_those(cifar_labels, tmp_path):
    raw = fake_raw(cifar_labels)
    train, _ = split_train_val(cifar_labels, 2)
    chosen = [int(i) for i in train[[500, 3, 40000, 17]]]
    splits = make_splits(raw, 2, indexes_to_replace=write_json(tmp_path / "idx.json", chosen))
    assert splits.forget.tolist() == chosen and splits.forget_class == -1
    assert np.array_equal(splits.retain, np.setdiff1d(train, chosen))
    assert torch.equal(splits.xy("forget")[1], raw.y_train[chosen])


@pytest.mark.parametrize("bad,message", [
    ("duplicate", "twice"), ("too_big", "outside the training set"), ("negative", "outside the training set"),
    ("val", "validation"), ("empty", "non-empty"), ("not_ints", "integers"), ("not_json", "not valid JSON"),
    ("absent", "does not exist"),
])
def test_indexes_to_replace_rejects_bad_files(cifar_labels, tmp_path, bad, message):
    train, val = split_train_val(cifar_labels, 2)
    content = {"duplicate": [int(train[0]), int(train[1]), int(train[0])], "too_big": [int(train[0]), 50000],
               "negative": [-1], "val": [int(train[0]), int(val[3])], "empty": [], "not_ints": [1.5, 2],
               "not_json": None, "absent": None}[bad]
    path = tmp_path / "idx.json"
    if bad == "not_json":
        path.write_text("[1, 2")
    elif bad != "absent":
        write_json(path, content)
    with pytest.raises(UserError, match=message):
        read_indices(str(path), train, val)
    with pytest.raises(UserError, match=message):
        make_splits(fake_raw(cifar_labels), 2, indexes_to_replace=str(path))


# ---------------------------------------------------------------- loaders

def test_digits_loads():
    raw = load_dataset("digits")
    assert raw.x_train.shape == (1347, 1, 8, 8) and raw.x_test.shape == (450, 1, 8, 8)
    assert raw.x_train.min() >= 0 and raw.x_train.max() <= 1 and raw.num_classes == 10
    assert set(raw.y_train.tolist()) == set(range(10))


@pytest.mark.skipif(not os.path.isdir(dataset.DEBIAN_FASHION_MNIST),
                    reason=f"{dataset.DEBIAN_FASHION_MNIST} absent (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("torchvision (and the network) must not be used when the Debian files exist")

    monkeypatch.setattr(dataset, "_torchvision", no_download)
    raw = load_dataset("fashionmnist", root=str(tmp_path / "empty"))
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    assert raw.x_train.dtype == torch.float32 and raw.num_classes == 10
    assert raw.x_train.min() == 0 and raw.x_train.max() == 1 and raw.x_test.max() <= 1
    assert torch.equal(torch.bincount(raw.y_train), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(raw.y_test), torch.full((10,), 1000))
    assert raw.x_train.std() > 0.1  # real images, not blank


def _pickle(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.fixture
def offline_torchvision(monkeypatch):
    """Integrity checks pass for the files a test writes; any download attempt fails the test."""
    import torchvision.datasets.cifar as cifar_mod
    import torchvision.datasets.svhn as svhn_mod

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(cifar_mod, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(cifar_mod, "download_and_extract_archive", no_network)
    monkeypatch.setattr(svhn_mod.SVHN, "_check_integrity", lambda self: True)
    monkeypatch.setattr(svhn_mod.SVHN, "download", lambda self: None)
    monkeypatch.setattr(svhn_mod, "download_url", no_network)


@pytest.mark.parametrize("name,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loads_from_its_files(tmp_path, offline_torchvision, name, num_classes):
    rng = np.random.RandomState(0)
    sizes = {"train": [7, 5, 6, 4, 3], "test": [9]} if name == "cifar10" else {"train": [25], "test": [9]}
    data = {k: [rng.randint(0, 256, (n, 3072), dtype=np.uint8) for n in v] for k, v in sizes.items()}
    labels = {k: [rng.randint(0, num_classes, n).tolist() for n in v] for k, v in sizes.items()}
    if name == "cifar10":
        folder = tmp_path / "cifar-10-batches-py"
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        for split, names in files.items():
            for fname, d, lab in zip(names, data[split], labels[split]):
                _pickle(folder / fname, {"batch_label": fname, "data": d, "labels": lab})
        _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        folder = tmp_path / "cifar-100-python"
        for split in ("train", "test"):
            _pickle(folder / split, {"data": data[split][0], "fine_labels": labels[split][0],
                                     "coarse_labels": [lab // 5 for lab in labels[split][0]]})
        _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    raw = load_dataset(name, root=str(tmp_path))
    assert raw.num_classes == num_classes and raw.augment == "crop_flip"
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        expected = np.concatenate(data[split]).reshape(-1, 3, 32, 32)
        assert x.shape == expected.shape and x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1
        assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(expected))  # CHW, order kept
        assert y.dtype == torch.long and y.tolist() == sum(labels[split], [])


def test_svhn_loads_from_its_files(tmp_path, offline_torchvision):
    import scipy.io
    rng = np.random.RandomState(1)
    mats = {}
    for split, n in (("train", 12), ("test", 8)):
        x = rng.randint(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.randint(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10
        scipy.io.savemat(str(tmp_path / f"{split}_32x32.mat"), {"X": x, "y": y})
        mats[split] = (x, y)
    raw = load_dataset("svhn", root=str(tmp_path))
    assert raw.num_classes == 10 and raw.augment == "crop"
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        xm, ym = mats[split]
        n = xm.shape[3]
        assert x.shape == (n, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
        # image n, channel c, row h, column w is X[h, w, c, n]
        assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(xm.transpose(3, 2, 0, 1).copy()))
        expected = ym[:, 0].astype(np.int64) % 10  # label 10 means digit 0
        assert y.tolist() == expected.tolist() and y[0] == 0 and int(y.max()) <= 9


def test_missing_dataset_offline_names_what_to_place(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar_mod
    monkeypatch.setattr(cifar_mod.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    root = str(tmp_path / "data")
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", root=root)
    msg = str(err.value)
    assert "cifar10" in msg and root in msg and "cifar-10-python.tar.gz" in msg and "\n" not in msg


def test_unknown_dataset_lists_choices():
    with pytest.raises(UserError) as err:
        load_dataset("mnist2")
    assert all(name in str(err.value) for name in dataset.DATASETS)


# ---------------------------------------------------------------- augmentation

def _distinct_images(n=64, c=3, h=8, w=8):
    """Images whose every pixel is a distinct positive value (zero padding is then recognizable)."""
    return (torch.arange(n * c * h * w, dtype=torch.float32) + 1).reshape(n, c, h, w) / (n * c * h * w)


def test_augment_none_is_identity():
    x = torch.rand(5, 3, 8, 8)
    assert torch.equal(augment(x, "none"), x)


def test_crop_is_a_shifted_window_of_the_padded_image():
    torch.manual_seed(0)
    x, pad = _distinct_images(), 4
    out = augment(x, "crop", pad=pad)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    shifts = []
    for n in range(len(x)):
        found = [(i, j) for i in range(2 * pad + 1) for j in range(2 * pad + 1)
                 if torch.equal(out[n], padded[n, :, i:i + 8, j:j + 8])]
        assert len(found) == 1, f"image {n} is not a window of its padded copy"
        shifts.append(found[0])
    assert len(set(shifts)) > 10  # the offsets vary from image to image
    assert any(s != (pad, pad) for s in shifts)


def test_crop_flip_flips_some_and_keeps_others():
    torch.manual_seed(0)
    x = _distinct_images()
    out = augment(x, "crop_flip", pad=0)  # no padding: the crop is the image itself
    flipped = [torch.equal(out[n], x[n].flip(-1)) for n in range(len(x))]
    kept = [torch.equal(out[n], x[n]) for n in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is exactly one of the two
    assert 10 < sum(flipped) < 54
    out = augment(x, "crop_flip", pad=4)
    assert out.shape == x.shape


def test_batches_cover_every_example_once():
    torch.manual_seed(0)
    x, y = torch.arange(10.0).reshape(10, 1, 1, 1), torch.arange(10)
    got = list(dataset.batches(x, y, 4, shuffle=True))
    assert [len(b[1]) for b in got] == [4, 4, 2]
    ys = torch.cat([b[1] for b in got])
    assert sorted(ys.tolist()) == list(range(10)) and ys.tolist() != list(range(10))
    assert torch.equal(torch.cat([b[0] for b in got]).flatten(), ys.float())


def test_train_subset_keeps_the_first_images():
    full, sub = load_dataset("digits"), load_dataset("digits", train_subset=100)
    assert torch.equal(sub.x_train, full.x_train[:100]) and torch.equal(sub.y_train, full.y_train[:100])
    assert torch.equal(sub.x_test, full.x_test)
    with pytest.raises(UserError, match="larger than digits"):
        load_dataset("digits", train_subset=5000)
