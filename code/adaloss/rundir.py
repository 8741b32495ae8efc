"""The run directory (`train --out`): checked before any compute, and never a place where we
overwrite files we did not write.

Why at the start: training writes its first file (the checkpoint) only after the first epoch, so an
unusable `--out` used to cost an epoch (hours on CIFAR) before a PermissionError. And a directory
that is not a run of ours may hold a user's metrics.json or log.csv, which our outputs would
silently replace.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .atomic import is_temp_file
from .checkpoint import CHECKPOINT
from .errors import InputError

__all__ = ["prepare_run_dir"]


def _write_probe(folder: Path) -> None:
    """Create and remove a temporary file in `folder`, as every atomic write there will; an
    OSError says the folder cannot take our files."""
    fd, name = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.unlink(name)


def prepare_run_dir(out: str | os.PathLike[str], force: bool = False) -> None:
    """Create `out` and check that it can be written and is ours to write, or raise an `InputError`.

    Refused: a path that is a file; a directory that cannot be created or written; a non-empty
    directory without a checkpoint (not an adaloss run: a run holds `checkpoint.pt` from its first
    epoch on), unless `force`. Our own temporary files, which a killed run leaves behind, do not
    make a directory foreign."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(path, "is a file, not a directory", "--out names the run directory: choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _write_probe(path)
    except OSError as exc:
        raise InputError(path, f"cannot be written ({exc.strerror or exc})",
                         "choose an --out in a folder where you may write") from exc
    if force or (path / CHECKPOINT).exists():
        return
    foreign = sorted(p.name for p in path.iterdir() if not is_temp_file(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputError(path, f"is not an adaloss run directory (no {CHECKPOINT}) and holds {shown}",
                         "choose a new or empty --out, or pass --force to write the run's files into it "
                         "(files of the same names are replaced)")
