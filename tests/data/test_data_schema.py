import json

import pytest
from pydantic import ValidationError

from crossadapt.data import DatasetSchema, PrepareConfig, SyntheticConfig, synthetic_preset


def test_schema_rejects_unknown_keys():
    with pytest.raises(ValidationError, match="labl"):
        DatasetSchema(labl="click", categorical=["a"])
    with pytest.raises(ValidationError, match="min_cnt"):
        PrepareConfig(min_cnt=3)
    with pytest.raises(ValidationError, match="zipf"):
        SyntheticConfig(cardinalities=[10], zipf=1.2)


def test_schema_rejects_conflicting_roles_and_empty_feature_lists():
    with pytest.raises(ValidationError, match="more than one role"):
        DatasetSchema(label="a", categorical=["a", "b"])
    with pytest.raises(ValidationError, match="at least one"):
        DatasetSchema(label="y")
    with pytest.raises(ValidationError, match="user_id"):
        DatasetSchema(label="y", categorical=["a"], user_id="y")
    # the user key may double as a categorical field
    assert DatasetSchema(label="y", categorical=["u"], user_id="u").columns == ["y", "u"]


def test_schema_files_json_and_yaml(tmp_path):
    data = {"label": "click", "timestamp": "ts", "categorical": ["u", "i"], "numerical": ["price"], "user_id": "u"}
    (tmp_path / "s.json").write_text(json.dumps(data))
    (tmp_path / "s.yaml").write_text("label: click\ntimestamp: ts\ncategorical: [u, i]\nnumerical: [price]\nuser_id: u\n")
    assert DatasetSchema.from_file(tmp_path / "s.json") == DatasetSchema.from_file(tmp_path / "s.yaml")
    (tmp_path / "bad.yaml").write_text("label: click\ncategorical: [u]\nnumericals: [x]\n")
    with pytest.raises(ValidationError, match="numericals"):
        DatasetSchema.from_file(tmp_path / "bad.yaml")


def test_split_parsing_and_bounds_tile_the_rows():
    config = PrepareConfig(split="4:4:1:1")
    assert config.split == (4, 4, 1, 1)
    assert config.split_bounds(1000) == {"hist": (0, 400), "train": (400, 800), "online": (800, 900), "test": (900, 1000)}
    bounds = PrepareConfig(split="3:3:2:1").split_bounds(1001)
    assert bounds["hist"][0] == 0 and bounds["test"][1] == 1001
    assert all(bounds[a][1] == bounds[b][0] for a, b in [("hist", "train"), ("train", "online"), ("online", "test")])
    for bad in ["4:4:1", "4:-1:1:1", "0:0:0:0"]:
        with pytest.raises(ValidationError):
            PrepareConfig(split=bad)


def test_min_count_overrides():
    config = PrepareConfig(min_count=10, min_count_per_field={"C1": 2})
    assert config.min_count_for("C1") == 2 and config.min_count_for("C2") == 10
    with pytest.raises(ValidationError):
        PrepareConfig(min_count_per_field={"C1": 0})


def test_synthetic_config_validation_and_presets():
    with pytest.raises(ValidationError):
        SyntheticConfig(cardinalities=[10, 1])
    with pytest.raises(ValidationError):
        SyntheticConfig(cardinalities=[10], shift_points=[0.5, 0.3])
    with pytest.raises(ValidationError):
        SyntheticConfig(cardinalities=[10], user_field=3)
    criteo = synthetic_preset("criteo_like")
    assert len(criteo.cardinalities) == 26 and criteo.num_numerical == 13
    assert min(criteo.cardinalities) == 10 and max(criteo.cardinalities) == 1_000_000
    assert criteo.categorical_names[criteo.user_field_index] == "C3"
    assert 20_000 <= synthetic_preset("small").rows <= 50_000
    assert synthetic_preset("small", rows=123).rows == 123
    with pytest.raises(ValueError, match="unknown preset"):
        synthetic_preset("huge")
