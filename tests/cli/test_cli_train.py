"""The `crossadapt` CLI end to end: data prepare -> train -> evaluate -> models, and its error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossadapt.cli import run
from crossadapt.models import list_models


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "data"
    assert run(["data", "prepare", "--format", "synthetic", "--preset", "small", "--rows", "4000", "--out",
                str(folder)]) == 0
    return folder


def test_prepare_train_evaluate_models(prepared, tmp_path, capsys):
    ckpt = tmp_path / "teacher"
    code, out, err = _cli(capsys, "train", "--data", prepared, "--arch", "mlp", "--embedding-dim", 4,
                          "--hidden", "16,8", "--epochs", 2, "--batch-size", 256, "--threads", 1, "--out", ckpt)
    assert code == 0, err
    trained = _json(out)
    assert trained["checkpoint"] == str(ckpt) and trained["architecture"] == "mlp"
    assert trained["fit"]["train_rows"] > 0 and 0.0 < trained["validation"]["auc"] < 1.0
    assert (ckpt / "manifest.json").is_file()

    code, out, err = _cli(capsys, "evaluate", "--model", ckpt, "--data", prepared, "--split", "test")
    assert code == 0, err
    metrics = _json(out)
    assert metrics["split"] == "test" and metrics["target"] == "click" and metrics["rows"] == 400
    for key in ("auc", "logloss", "gauc", "pcoc", "oracle_auc"):
        assert isinstance(metrics[key], float), key

    code, out, _ = _cli(capsys, "models")
    assert code == 0 and out.split() == list_models()


def test_config_file_sets_model_and_train(prepared, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  architecture: fibinet\n  embedding_dim: 4\n  hidden_units: [8]\n"
                      "train:\n  epochs: 1\n  batch_size: 512\n  num_threads: 1\n  validation_fraction: 0.2\n")
    code, out, err = _cli(capsys, "train", "--data", prepared, "--config", config, "--out", tmp_path / "ck")
    assert code == 0, err
    result = _json(out)
    assert result["architecture"] == "fibinet" and result["fit"]["valid_rows"] == 320  # 20% of 1600 train rows
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert manifest["config"]["hidden_units"] == [8] and manifest["extra"]["train_config"]["batch_size"] == 512


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "{tmp}/missing", "--arch", "mlp", "--embedding-dim", "4", "--out", "{tmp}/o"],
         "no such dataset folder"),
        (["train", "--data", "{data}", "--arch", "nope", "--embedding-dim", "4", "--out", "{tmp}/o"],
         "unknown architecture 'nope'"),
        (["train", "--data", "{data}", "--embedding-dim", "4", "--out", "{tmp}/o"], "no architecture"),
        (["train", "--data", "{data}", "--config", "{tmp}/bad.json", "--out", "{tmp}/o"], "epochz"),
        (["train", "--data", "{data}", "--config", "{tmp}/absent.yaml", "--out", "{tmp}/o"], "config file not found"),
        (["train", "--data", "{data}", "--arch", "mlp", "--embedding-dim", "4", "--hidden", "8,x", "--out", "{tmp}/o"],
         "--hidden"),
        (["evaluate", "--model", "{tmp}/missing", "--data", "{data}"], "no such checkpoint folder"),
        (["evaluate", "--model", "{tmp}/o", "--data", "{data}", "--split", "future"], "no split 'future'"),
    ],
)
def test_user_errors_are_one_red_line_with_exit_code_2(prepared, tmp_path, capsys, args, message):
    (tmp_path / "bad.json").write_text(json.dumps({"model": {"architecture": "mlp"}, "train": {"epochz": 3}}))
    argv = [a.format(tmp=tmp_path, data=prepared) for a in args]
    code, out, err = _cli(capsys, *argv)
    assert code == 2
    assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""


def test_vocabulary_mismatch_is_refused(prepared, tmp_path, capsys):
    ckpt = tmp_path / "teacher"
    assert _cli(capsys, "train", "--data", prepared, "--arch", "mlp", "--embedding-dim", 4, "--epochs", 1,
                "--threads", 1, "--out", ckpt)[0] == 0
    other = tmp_path / "other"
    assert run(["data", "prepare", "--format", "synthetic", "--preset", "small", "--rows", "3000", "--seed", "9",
                "--out", str(other)]) == 0
    capsys.readouterr()
    code, _, err = _cli(capsys, "evaluate", "--model", ckpt, "--data", other)
    assert code == 2 and "vocabulary" in err
    code, _, err = _cli(capsys, "train", "--data", prepared, "--arch", "mlp", "--embedding-dim", 4, "--out", ckpt)
    assert code == 2 and "--overwrite" in err


def test_bench_train_json_keys(capsys):
    code, out, err = _cli(capsys, "bench", "train", "--arch", "fibinet", "--embedding-dim", 4, "--hidden", "8",
                          "--vocab-scale", 0.001, "--batch-size", 128, "--steps", 2, "--warmup", 1, "--threads", 1,
                          "--json")
    assert code == 0, err
    result = json.loads(out)
    for key in ("samples_per_s", "flops_per_sample", "achieved_gflops", "matmul_gflops", "ratio_to_matmul",
                "peak_rss_mb"):
        assert result[key] > 0, key
    assert result["achieved_gflops"] == pytest.approx(
        result["flops_per_sample"] * result["samples_per_s"] / 1e9, rel=1e-2)


def test_console_script_usage_error_has_no_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-c", "from crossadapt.cli import main; main()", "evaluate", "--model",
         str(tmp_path / "nope"), "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr and "error:" in completed.stderr


def test_mounting_is_table_driven_and_survives_a_broken_module(capsys):
    import typer

    from crossadapt import cli

    root = typer.Typer()
    cli.mount_all(root, {"models": "crossadapt.cli.models", "ghost": "crossadapt.cli.no_such_module"})
    original, cli.app = cli.app, root
    try:
        code, out, _ = _cli(capsys, "models")
        assert code == 0 and out.split() == list_models()
        code, _, err = _cli(capsys, "ghost", "anything")
        assert code == 2 and "crossadapt.cli.no_such_module" in err
    finally:
        cli.app = original
    code, out, _ = _cli(capsys, "bench", "--help")  # modules with register_bench add to the bench group
    assert code == 0 and "train" in out and "paper" in out


def test_bench_paper_help_names_every_preset():
    """The help is a literal (the presets module imports torch), so it must be kept in step by hand."""
    import typing

    from crossadapt.cli.switch import bench_paper_command
    from crossadapt.transfer.experiments.presets import PRESETS

    help_text = typing.get_type_hints(bench_paper_command, include_extras=True)["preset"].__metadata__[0].help
    assert sorted(name.strip() for name in help_text.split("|")) == sorted(PRESETS)
