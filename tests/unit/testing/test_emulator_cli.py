"""The emulator's --help documents every fault field, and a bad --faults is one line, not a traceback."""

from __future__ import annotations

import dataclasses

import pytest

from worker.testing.emulator.__main__ import FAULTS_HELP, config_from_args, parse_args
from worker.testing.emulator.faults import FaultConfig, ScriptedFault


def test_help_names_every_fault_field() -> None:
    for model in (FaultConfig, ScriptedFault):
        for field in dataclasses.fields(model):
            assert field.name in FAULTS_HELP


def test_the_faults_example_in_the_help_is_accepted() -> None:
    example = FAULTS_HELP.split("--faults '", 1)[1].split("'", 1)[0].replace("\n        ", "")
    config = config_from_args(parse_args(["--faults", example]))
    assert config.faults.latency_ms == 50 and config.faults.scripted[0].action == "createDocument"


def test_an_unknown_fault_field_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        config_from_args(parse_args(["--faults", '{"latency": 5}']))
    assert "unknown fault setting 'latency'" in str(exit_.value.code)
