"""Atomic file writes: a reader (or Snakemake after a crash) sees the old file or the new one, never half.

Every result file of the project goes through here: write to a temporary file in the same folder,
flush it to disk, then `os.replace` it over the target (atomic on POSIX within one file system).
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["atomic_path", "is_temp_file", "write_text", "write_json", "save_torch", "write_csv", "write_rows"]

_TEMP_PREFIX, _TEMP_SUFFIX = ".", ".tmp"  # `.NAME.XXXXXXXX.tmp` beside NAME


def is_temp_file(name: str) -> bool:
    """Whether a file name is one of our temporary files (`atomic_path` names them so; a SIGKILL
    mid-write leaves one behind), which a run directory may hold without being foreign."""
    return name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{target.name}.", suffix=_TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _write_with(path: str | os.PathLike[str], mode: str, writer: Callable[[IO[Any]], None]) -> None:
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        writer(fh)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` atomically."""
    _write_with(path, "w", lambda fh: fh.write(text))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON (byte-stable for identical inputs)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike[str], frame: Any) -> None:
    """Write a pandas DataFrame without its index, atomically."""
    _write_with(path, "w", lambda fh: frame.to_csv(fh, index=False, lineterminator="\n"))


def write_rows(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write dict rows as CSV atomically, as `write_csv` would write their DataFrame (NaN as an empty
    field), without importing pandas: every training job writes its tables, and pandas costs each
    of them about 0.4 s of start-up."""

    def field(value: Any) -> Any:
        return "" if isinstance(value, float) and math.isnan(value) else value

    def write(fh: IO[Any]) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([field(row.get(c, float("nan"))) for c in columns] for row in rows)

    _write_with(path, "w", write)


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """`torch.save` atomically (checkpoints)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
