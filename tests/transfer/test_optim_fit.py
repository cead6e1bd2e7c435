"""Data-fitted batch and learning rates of the switch (`optim: data`), the paper preset, explicit values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossadapt.transfer.optim_fit import choose_optim, fitted_batch_size, scaled_embedding_lr
from crossadapt.transfer.switch_config import ConfigError, parse_switch_config

SYNTHETIC = {"synthetic": {"preset": "small", "rows": 12_000}}


@pytest.mark.parametrize(
    ("rows", "steps", "batch"),
    [
        (16_000, 100, 128),  # the demo's sample: 10% of 160k D_train rows → 125 steps per epoch
        (40_000, 100, 256),  # a 1M-row file's sample (10% of 400k)
        (400_000, 100, 2048),  # all of its D_train: still >= 100 steps
        (12_799, 100, 64),  # 127 rows per step: the largest power of two below is 64
        (12_800, 100, 128),  # exactly 128 rows per step
        (10_000_000, 100, 4096),  # the paper's scale: capped at the paper's batch
        (500, 100, 64),  # tiny data: floored at 64 rather than a noisy 4-row batch
        (1, 1, 64),
    ],
)
def test_fitted_batch_is_the_largest_power_of_two_with_enough_steps(rows: int, steps: int, batch: int) -> None:
    assert fitted_batch_size(rows, steps) == batch


@pytest.mark.parametrize(("rows", "steps"), [(0, 100), (100, 0)])
def test_fitted_batch_refuses_empty_input(rows: int, steps: int) -> None:
    with pytest.raises(ValueError, match="needs rows >= 1"):
        fitted_batch_size(rows, steps)


@pytest.mark.parametrize(
    ("preset", "given", "expected", "explicit"),
    [
        ("data", {}, (128, 0.1 * 128 / 4096, 1e-3), []),
        ("paper", {}, (4096, 0.1, 1e-3), []),
        ("data", {"batch_size": 1024}, (1024, 0.025, 1e-3), ["batch_size"]),  # lr follows an explicit batch
        ("data", {"embedding_lr": 0.05}, (128, 0.05, 1e-3), ["embedding_lr"]),
        ("paper", {"batch_size": 512}, (512, 0.1, 1e-3), ["batch_size"]),  # paper values stay the paper's
        ("data", {"batch_size": 256, "embedding_lr": 0.2, "dense_lr": 0.01}, (256, 0.2, 0.01),
         ["batch_size", "embedding_lr", "dense_lr"]),
    ],
)
def test_choice_fills_what_the_config_left_out(preset: str, given: dict, expected: tuple, explicit: list) -> None:
    choice = choose_optim(preset, basis_rows=16_000, basis="offline sample", **given)  # type: ignore[arg-type]
    assert (choice.batch_size, choice.embedding_lr, choice.dense_lr) == pytest.approx(expected)
    assert choice.explicit == explicit
    assert choice.steps_per_epoch == -(-16_000 // choice.batch_size)
    reason = choice.reason()
    assert f"batch {choice.batch_size}" in reason and f"{choice.steps_per_epoch} steps per epoch" in reason
    assert ("optim: paper" in reason) == (preset == "paper")


def test_scaled_embedding_lr_is_the_papers_at_its_batch() -> None:
    assert scaled_embedding_lr(4096) == pytest.approx(0.1) and scaled_embedding_lr(256) == pytest.approx(0.00625)


def test_config_accepts_a_preset_name_and_rejects_bad_values() -> None:
    assert parse_switch_config({"data": SYNTHETIC, "optim": "paper"}).optim.preset == "paper"
    assert parse_switch_config({"data": SYNTHETIC, "optim": {"batch_size": 512}}).optim.batch_size == 512
    for optim, needle in [
        ("fast", "optim.preset: Input should be 'data' or 'paper'"),
        ({"batch_size": 0}, "optim.batch_size: Input should be greater than or equal to 1"),
        ({"embedding_lr": -0.1}, "optim.embedding_lr: Input should be greater than 0"),
        ({"dense_lr": 0}, "optim.dense_lr: Input should be greater than 0"),
        ({"steps_per_epoch": 0}, "optim.steps_per_epoch: Input should be greater than or equal to 1"),
        ({"preset": "paper", "steps_per_epoch": 50}, "optim: optim.steps_per_epoch fits the batch to the data"),
        ({"batchsize": 512}, "optim.batchsize: unknown key"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_switch_config({"data": SYNTHETIC, "optim": optim})
        assert needle in str(info.value), (optim, str(info.value))


def test_fit_follows_the_sample_or_d_train() -> None:
    from crossadapt.transfer.switch import fit_optim

    config = parse_switch_config({"data": SYNTHETIC})
    assert fit_optim(config, 160_000).batch_size == 128  # 16k sampled rows
    without_sampling = parse_switch_config({"data": SYNTHETIC, "ablation": {"sampling": False}})
    assert fit_optim(without_sampling, 160_000).batch_size == 1024  # all 160k rows
    assert "D_train" == fit_optim(without_sampling, 160_000).basis


def test_switch_trains_every_stage_with_the_fitted_values(tmp_path: Path) -> None:
    from crossadapt.transfer.switch import begin_switch

    config = parse_switch_config({
        "data": SYNTHETIC, "baselines": [],
        "teacher": {"train": {"model": {"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]}}},
        "offline": {"sampling": {"ratio": 1.0}}, "optim": {"steps_per_epoch": 20},
    })
    run = begin_switch(config, tmp_path)
    train_rows = len(run.splits["train"])
    expected = fitted_batch_size(train_rows, 20)
    assert expected == 128  # 4800 rows / 20 steps = 240 rows per step → 128
    assert run.optim is not None and run.optim.batch_size == expected and run.optim.basis_rows == train_rows
    assert run.ctx.optim.batch_size == expected == run.config.optim.batch_size
    assert run.ctx.optim.embedding_lr == pytest.approx(scaled_embedding_lr(expected))
    teacher = json.loads((tmp_path / "teacher" / "manifest.json").read_text())
    assert teacher["extra"]["batch_size"] == expected  # the teacher trained with it too
