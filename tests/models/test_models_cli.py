"""``crossadapt models``: one registry name per line; `show` prints valid, loadable configs."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from crossadapt.cli.models import app, list_models_command
from crossadapt.models import list_models, paper_student_config, paper_teacher_config, parse_model_config

runner = CliRunner()


def test_list_models_command_prints_one_name_per_line(capsys):
    list_models_command()
    assert capsys.readouterr().out.splitlines() == list_models()


def test_group_without_subcommand_and_list_subcommand():
    for args in ([], ["list"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == list_models()


def test_show_prints_a_config_that_parses_back():
    result = runner.invoke(app, ["show", "dcnv2"])
    assert result.exit_code == 0, result.output
    config = parse_model_config(json.loads(result.output))
    assert config.architecture == "dcnv2" and config.num_cross_layers == 3
    result = runner.invoke(app, ["show", "--paper", "teacher"])
    assert parse_model_config(json.loads(result.output)) == paper_teacher_config()
    result = runner.invoke(app, ["show", "--paper", "student"])
    assert parse_model_config(json.loads(result.output)) == paper_student_config()


def test_show_rejects_unknown_names():
    result = runner.invoke(app, ["show", "transformer"])
    assert result.exit_code == 2 and "transformer" in result.output
    assert runner.invoke(app, ["show"]).exit_code == 2
    assert runner.invoke(app, ["show", "--paper", "boss"]).exit_code == 2
