"""Text corpora for the byte-level transformer, offline: the Python standard library's own source, or yours.

Beyond the paper (issue 20). Tokens are bytes (vocabulary 256), so no tokenizer is needed and any
text, in any encoding, is a corpus.

* `stdlib`: the `.py` files of the running interpreter's standard library
  (`sysconfig.get_paths()["stdlib"]`), which every machine has, without site-packages and the test
  suites (`test`, `tests`, `idle_test` folders), in sorted order. A file's split is a function of
  its path alone (`split_of`: a SHA-256 of the path relative to the library), so the split is the
  same on every machine with the same Python minor version; patch releases and distributions may
  still add, drop or edit a file, which is why `TextCorpus.info` records the version, the folder and
  each split's file count, bytes and SHA-256.
* `NAME`: `DATA_ROOT/NAME/`, a folder of text files (every non-hidden file under it, split by file
  in the same way), or `DATA_ROOT/NAME.txt`, one file split by position: the first 1 - val - test of
  its bytes for training, then validation, then test (nanoGPT's shakespeare_char does the same).

Batches (`WindowSampler`) are (context + 1)-byte windows at random offsets of the training split,
drawn from a generator of their own seeded by the run's seed (nanoGPT's `get_batch`), the split kept
on the device as one uint8 tensor (airbench's loader). Evaluation (`eval_windows`) reads fixed,
non-overlapping windows, so every run of a study is scored on the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import NAME_PATTERN, InputError

__all__ = ["VOCAB", "STDLIB", "SPLITS", "CorpusError", "TextCorpus", "split_of", "stdlib_files", "load_corpus",
           "WindowSampler", "eval_windows"]

VOCAB = 256  # bytes
STDLIB = "stdlib"  # the built-in corpus's name
SPLITS = ("train", "val", "test")
# Folders of the standard library that are not its own source: installed packages and the test suites.
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})
_HOW = "give a corpus as DATA_ROOT/NAME.txt or a folder DATA_ROOT/NAME/ of text files, or use --corpus stdlib"


class CorpusError(InputError):
    """A corpus name, file or folder that cannot be used; the message names it and the problem."""


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """The three splits of a corpus as uint8 byte tensors, and where they came from."""

    name: str
    splits: dict[str, Tensor]  # split -> (N,) uint8
    source: str  # the folder or file read
    split_by: str  # "file" (a folder, the stdlib) or "position" (one .txt file)
    files: dict[str, int]  # files per split
    python: str  # the Python minor version whose stdlib this is ("" for a user corpus)

    def info(self) -> dict[str, Any]:
        """What a run records of its data (metrics.json): enough to tell whether two machines trained
        and tested on the same bytes."""
        return {
            "corpus": self.name, "source": self.source, "split_by": self.split_by, "python": self.python,
            "files": dict(self.files), "bytes": {s: int(t.numel()) for s, t in self.splits.items()},
            "sha256": {s: hashlib.sha256(t.numpy().tobytes()).hexdigest() for s, t in self.splits.items()},
        }

    def check_windows(self, context: int) -> None:
        """Refuse a corpus with a split too short for one window of `context` + 1 bytes, naming it."""
        for split, data in self.splits.items():
            if data.numel() < context + 1:
                raise CorpusError(self.source, f"split {split!r} of corpus {self.name!r} has {data.numel()} bytes, "
                                               f"fewer than one window of context + 1 = {context + 1}",
                                  "give more text, or a shorter --context")


def split_of(path: str, val_fraction: float, test_fraction: float) -> str:
    """The split of a file by its relative path alone: the first 8 bytes of SHA-256(path) read as a
    number u in [0, 1) put it in test if u < test_fraction, in val if u < test + val, else in train.
    Why a hash: it depends on nothing else (not on the other files, the machine or the order of a
    directory listing), and a file added or removed moves no other file between splits."""
    u = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") / 2**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def stdlib_files() -> tuple[Path, list[str]]:
    """The standard library's folder and its `.py` files, as sorted POSIX paths relative to it,
    without installed packages and test suites (`EXCLUDED_DIRS`)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in EXCLUDED_DIRS]  # pruned: site-packages may hold 10^4 files
        files += [(Path(folder) / n).relative_to(root).as_posix() for n in names if n.endswith(".py")]
    return root, sorted(files)


def _folder_files(root: Path) -> list[str]:
    """Every non-hidden regular file under `root`, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _by_file(name: str, root: Path, files: Sequence[str], val_fraction: float, test_fraction: float,
             python: str) -> TextCorpus:
    """A corpus whose files go to the splits by `split_of`, concatenated in sorted order per split."""
    parts: dict[str, list[bytes]] = {s: [] for s in SPLITS}
    for rel in files:
        parts[split_of(rel, val_fraction, test_fraction)].append((root / rel).read_bytes())
    if not any(b for chunks in parts.values() for b in chunks):
        raise CorpusError(root, f"corpus {name!r} is empty (no file with any bytes)", _HOW)
    for split, chunks in parts.items():
        if not chunks:
            raise CorpusError(root, f"no file of the {len(files)} went to split {split!r} (files are split by a "
                                    f"hash of their path, val {val_fraction}, test {test_fraction})",
                              "add files, or give one file DATA_ROOT/NAME.txt, which is split by position")
    return TextCorpus(name, {s: _as_tensor(b"".join(parts[s])) for s in SPLITS}, str(root), "file",
                      {s: len(parts[s]) for s in SPLITS}, python)


def _by_position(name: str, path: Path, val_fraction: float, test_fraction: float) -> TextCorpus:
    """One file split by position: train, then val, then test."""
    data = _as_tensor(path.read_bytes())
    if data.numel() == 0:
        raise CorpusError(path, f"corpus {name!r} is empty", _HOW)
    n = data.numel()
    train_end = round(n * (1 - val_fraction - test_fraction))
    val_end = round(n * (1 - test_fraction))
    splits = {"train": data[:train_end], "val": data[train_end:val_end], "test": data[val_end:]}
    return TextCorpus(name, splits, str(path), "position", dict.fromkeys(SPLITS, 1), "")


def _as_tensor(data: bytes) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def load_corpus(name: str = STDLIB, root: str | Path = "data", val_fraction: float = 0.05,
                test_fraction: float = 0.05) -> TextCorpus:
    """The corpus `name` (module docstring): `stdlib`, or `root/NAME/` or `root/NAME.txt`.

    Errors (`CorpusError`, one line naming the file): a name that is not a-z, 0-9, _; no such file
    or folder; both a file and a folder of that name; an empty corpus; a split without a file.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise CorpusError(f"corpus {name!r}", "not a valid corpus name (lower-case letters, digits and _, "
                                              "starting with a letter)", _HOW)
    for label, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < f < 1.0:
            raise ValueError(f"{label} must be in (0, 1): a run selects on val and reports test; got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1 to leave text to train on, got "
                         f"{val_fraction} + {test_fraction}")
    if name == STDLIB:
        folder, files = stdlib_files()
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        return _by_file(name, folder, files, val_fraction, test_fraction, python)
    folder, text = Path(root) / name, Path(root) / f"{name}.txt"
    if folder.is_dir() and text.is_file():
        raise CorpusError(folder, f"both a folder and {text.name} exist for corpus {name!r}",
                          "keep one of them")
    if folder.is_dir():
        return _by_file(name, folder, _folder_files(folder), val_fraction, test_fraction, "")
    if text.is_file():
        return _by_position(name, text, val_fraction, test_fraction)
    raise CorpusError(text, f"no such file, nor a folder {folder}: unknown corpus {name!r} (built-in: {STDLIB})",
                      _HOW)


class WindowSampler:
    """Training batches: `batch_size` windows of `context` + 1 bytes at uniformly random offsets of
    `data`, kept on `device`; `next_batch()` returns inputs and targets (B, context) as int64, the
    targets the inputs shifted by one byte. The offsets come from a CPU generator of its own, seeded
    by `seed` and saved in `state_dict`, so a resumed run draws the batches an uninterrupted one would."""

    def __init__(self, data: Tensor, context: int, batch_size: int, seed: int,
                 device: torch.device | str = "cpu") -> None:
        if context < 1 or batch_size < 1:
            raise ValueError(f"context and batch_size must be >= 1, got {context} and {batch_size}")
        if data.numel() < context + 1:
            raise ValueError(f"{data.numel()} bytes hold no window of context + 1 = {context + 1} bytes")
        self.data = data.to(device)
        self.context, self.batch_size = context, batch_size
        self.offsets = torch.arange(context + 1, device=device)  # (T+1,)
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> tuple[Tensor, Tensor]:
        starts = torch.randint(0, self.data.numel() - self.context, (self.batch_size,), generator=self.generator)
        windows = self.data[starts.to(self.data.device)[:, None] + self.offsets].long()  # (B, T+1)
        return windows[:, :-1], windows[:, 1:]  # (B, T) each

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def eval_windows(data: Tensor, context: int, count: int = 0) -> Tensor:
    """Fixed evaluation windows (N, context + 1), uint8: the split tiled into non-overlapping windows
    from its start (each byte after a window's first is predicted once), all of them for `count` 0,
    else `count` of them evenly spread over the split. The same for every run of the same corpus."""
    if count < 0:
        raise ValueError(f"count must be >= 0 (0: every window), got {count}")
    starts = torch.arange(0, data.numel() - context, context)  # (N,)
    if starts.numel() == 0:
        raise ValueError(f"{data.numel()} bytes hold no window of context + 1 = {context + 1} bytes")
    if 0 < count < starts.numel():
        starts = starts[torch.linspace(0, starts.numel() - 1, count).round().long()]
    return data[starts[:, None] + torch.arange(context + 1)]  # (N, T+1)
