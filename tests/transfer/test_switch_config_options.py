"""Switch config: unclicked-exposure augmentation (pCVR) and rolling drift re-estimation are typed,
validated options (the engine reads them from crossadapt.transfer.experiments.methods; see its wiring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossadapt.transfer.online.replay import ReplayConfig
from crossadapt.transfer.offline.sampling import SamplingConfig
from crossadapt.transfer.switch_config import ConfigError, parse_switch_config

SYNTHETIC = {"synthetic": {"preset": "small", "rows": 20_000}}


def parse(**sections) -> object:
    return parse_switch_config({"data": SYNTHETIC, **sections})


def test_defaults_leave_both_off() -> None:
    config = parse()
    sampling, drift = config.offline.sampling, config.online.drift
    assert (sampling.target, sampling.unclicked_ratio) == ("click", 0.0)
    assert (drift.rolling, drift.window_rows) == (False, 100_000)


def test_options_parse_and_map_onto_the_engine_configs() -> None:
    config = parse(
        offline={"sampling": {"target": "conversion", "unclicked_ratio": 0.5}},
        online={"drift": {"rolling": True, "window_rows": 20_000}},
    )
    sampling, drift = config.offline.sampling, config.online.drift
    assert (sampling.target, sampling.unclicked_ratio) == ("conversion", 0.5)
    assert (drift.rolling, drift.window_rows) == (True, 20_000)
    # the fields are the ones the engine's own configs take (what methods.py passes on)
    assert SamplingConfig(unclicked_ratio=sampling.unclicked_ratio).unclicked_ratio == 0.5
    replay = ReplayConfig(rolling=drift.rolling, window_rows=drift.window_rows)
    assert replay.rolling and replay.window_rows == 20_000


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"offline": {"sampling": {"unclicked_ratio": 0.5}}}, "set offline.sampling.target to 'conversion'"),
        ({"offline": {"sampling": {"unclicked_ratio": -1}}}, "unclicked_ratio: Input should be greater than or equal to 0"),
        ({"offline": {"sampling": {"target": "purchase"}}}, "offline.sampling.target"),
        ({"offline": {"sampling": {"unclicked": 0.5}}}, "offline.sampling.unclicked: unknown key"),
        ({"online": {"drift": {"window_rows": 1}}}, "window_rows: Input should be greater than or equal to 2"),
        ({"online": {"drift": {"rolling": "sometimes"}}}, "online.drift.rolling"),
        ({"online": {"drift": {"rolling_window": 5}}}, "online.drift.rolling_window: unknown key"),
        ({"online": {"drift": {"rolling": True}}, "ablation": {"adaptive_replay": False}}, "needs ablation.online_stage"),
        ({"offline": {"sampling": {"target": "conversion"}}, "ablation": {"sampling": False}}, "need the offline stage"),
    ],
)
def test_bad_values_are_rejected_with_the_field(sections: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse(**sections)
    assert message in str(info.value)


def test_conversion_target_needs_a_conversion_column(tmp_path: Path) -> None:
    for name, columns in (("clicks", ["categorical", "numerical", "label"]), ("buys", ["categorical", "numerical", "label", "conversion"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dataset.json").write_text(json.dumps({"columns": columns}))
    sampling = {"sampling": {"target": "conversion", "unclicked_ratio": 1.0}}
    with pytest.raises(ConfigError, match="has no conversion column"):
        parse_switch_config({"data": {"dir": str(tmp_path / "clicks")}, "offline": sampling})
    config = parse_switch_config({"data": {"dir": str(tmp_path / "buys")}, "offline": sampling})
    assert config.offline.sampling.unclicked_ratio == 1.0


def test_grow_vocabulary_is_off_by_default_typed_and_needs_the_online_stage() -> None:
    assert parse().online.grow_vocabulary is False
    assert parse(online={"grow_vocabulary": True}).online.grow_vocabulary is True
    with pytest.raises(ConfigError, match="online.grow_vocabulary"):
        parse(online={"grow_vocabulary": "often"})
    with pytest.raises(ConfigError, match="grow_vocabulary .*online_stage"):
        parse(online={"grow_vocabulary": True}, ablation={"online_stage": False})
