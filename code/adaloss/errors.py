"""Unusable inputs: the one error type they raise, and the rule every name that becomes a path obeys.

A study reads files it did not write (checkpoints, metrics.json, data sets) and takes names that
become paths. When one of them cannot be used, the user needs one line that says which file, what
is wrong with it and what to do, not a traceback from deep inside torch or numpy, and it must come
before any compute is spent. `InputError` is that line; `python -m adaloss` prints it and exits 2.
"""

from __future__ import annotations

import os
import re

__all__ = ["InputError", "NAME_PATTERN", "check_name", "reason"]

# The config schema's name rule (workflow/schemas/config.schema.yaml, $defs/name): a data set or
# model name is a label in paths and tables, never a path of its own.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


class InputError(ValueError):
    """A file, directory or name that cannot be used. The message is one line,
    `WHERE: PROBLEM; FIX`: the file (or name), what is wrong with it, and what to do."""

    def __init__(self, where: str | os.PathLike[str], problem: str, fix: str = "") -> None:
        self.where, self.problem, self.fix = str(where), problem, fix
        text = f"{where}: {problem}" + (f"; {fix}" if fix else "")
        # parsers' messages (torch, numpy, json) may span lines; the user gets one
        super().__init__(re.sub(r"\s*\n\s*", " ", text).strip())


def reason(exc: BaseException, limit: int = 200) -> str:
    """`Type: first sentence` of a parser's exception, for the middle of an InputError's line.
    torch's and numpy's messages run to paragraphs (advice about miniz, every mismatched tensor);
    the first sentence of their detail is what says what is wrong. A heading line ending in ':'
    (torch's "Error(s) in loading state_dict for X:") gives way to the line after it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    text = lines[0].split(". ")[0].rstrip(".") if lines else ""
    text = text if len(text) <= limit else text[:limit] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_name(kind: str, name: str) -> str:
    """`name` if it obeys the config schema's name rule, else an InputError. Why: `--dataset
    ../outside` would otherwise read a file outside the data folder and label the run with a path;
    a folder is given with `--data-root`, never smuggled into a name."""
    if not NAME_PATTERN.fullmatch(name):
        raise InputError(
            f"{kind} {name!r}", f"not a valid {kind} name (lower-case letters, digits and _, starting with a letter)",
            "put a custom data set in the --data-root folder as NAME.npz and pass --dataset NAME"
            if kind == "dataset" else f"choose a {kind} name such as resann_small",
        )
    return name
