"""The command line as a user meets it: every flag of every command says what it does, once."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from adaloss import cli
from adaloss.errors import NAME_PATTERN
from adaloss.train import TrainConfig

SCHEMA = Path(__file__).parent.parent / "workflow" / "schemas" / "config.schema.yaml"

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


def test_the_cli_name_rule_is_the_config_schemas():
    pattern = yaml.safe_load(SCHEMA.read_text())["$defs"]["name"]["pattern"]
    assert f"^{NAME_PATTERN.pattern}$" == pattern


@pytest.mark.parametrize("flag,value", [("--dataset", "../outside"), ("--dataset", "/data/x"), ("--dataset", "CIFAR"),
                                        ("--model-name", "a/b"), ("--model-name", "x-y")])
def test_train_refuses_a_name_the_config_schema_refuses_in_one_line_before_creating_out(tmp_path, capsys, flag, value):
    argv = ["train", "--dataset", "digits", "--out", str(tmp_path / "run"), flag, value]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{value!r}: not a valid" in err
    assert not (tmp_path / "run").exists()


def test_force_has_a_train_flag_and_is_not_part_of_a_runs_identity():
    assert "--force" in _help("train")
    assert "force" not in TrainConfig(dataset="digits", out="x", force=True).identity()
