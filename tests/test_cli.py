"""The command line as a user meets it: every flag of every command says what it does, once."""

from __future__ import annotations

import dataclasses
import re

import pytest

from adaloss import cli
from adaloss.train import TrainConfig

COMMANDS = ["train", "evaluate", "costs", "bench", "tables", "eann", "report"]


def _help(command: str) -> str:
    parser = cli.build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return sub.format_help()


def test_every_trainconfig_field_has_its_own_help_line():
    assert set(cli._HELP) >= {f.name for f in dataclasses.fields(TrainConfig)}
    text = _help("train")
    for name in ("update per", "ada momentum", "final extra"):  # field names are not explanations
        assert f"  {name} (default" not in text.replace("\n", " ")


@pytest.mark.parametrize("command", COMMANDS)
def test_no_help_line_repeats_its_default(command):
    text = " ".join(_help(command).split())
    assert not re.search(r"\(default: [^)]*\) \(default:", text), text
