"""Configs: defaults, the paper's example configs, rejection of unknown keys and bad values, registry."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from crossadapt.models import (
    MODEL_REGISTRY,
    FiBiNETConfig,
    MLPConfig,
    ModelConfig,
    build_model,
    list_models,
    paper_student_config,
    paper_teacher_config,
    parse_model_config,
)

EXPECTED_NAMES = ["mlp", "widedeep", "deepfm", "dcn", "dcnv2", "autoint", "afm", "fibinet", "xdeepfm"]


def test_list_models_is_exactly_the_nine_architectures_in_order():
    assert list_models() == EXPECTED_NAMES


def test_registry_and_config_union_cover_the_same_architectures():
    union_members = typing.get_args(typing.get_args(ModelConfig)[0])
    tags = [member.model_fields["architecture"].default for member in union_members]
    assert tags == EXPECTED_NAMES == list(MODEL_REGISTRY)
    for name in EXPECTED_NAMES:
        config = parse_model_config({"architecture": name})
        assert MODEL_REGISTRY[name].architecture == config.architecture == name


def test_paper_configs():
    teacher = paper_teacher_config()
    assert (teacher.architecture, teacher.embedding_dim, teacher.hidden_units) == ("mlp", 8, [64, 32, 4])
    student = paper_student_config()
    assert (student.architecture, student.embedding_dim, student.hidden_units) == ("fibinet", 16, [256, 128, 16])
    assert student.reduction_ratio == 3.0 and student.bilinear_type == "field_interaction"
    # The defaults of the two classes are the paper's settings.
    assert MLPConfig() == teacher and FiBiNETConfig() == student


def test_per_architecture_defaults():
    defaults = {name: parse_model_config({"architecture": name}) for name in EXPECTED_NAMES}
    assert defaults["dcn"].num_cross_layers == 3
    assert defaults["dcnv2"].low_rank is None and defaults["dcnv2"].structure == "parallel"
    assert (defaults["autoint"].attention_layers, defaults["autoint"].attention_heads) == (3, 2)
    assert defaults["autoint"].hidden_units == [] and defaults["afm"].hidden_units == []
    assert defaults["xdeepfm"].cin_layer_units == [16, 16, 16]
    for config in defaults.values():
        assert config.dropout == 0.0 and config.batch_norm is False and config.embedding_init_std == 1e-4


def test_misspelt_key_is_rejected_with_its_name():
    with pytest.raises(ValidationError) as caught:
        parse_model_config({"architecture": "dcn", "crossing_layers": 4})
    assert "crossing_layers" in str(caught.value)
    with pytest.raises(ValidationError, match="bilinear_typ"):
        parse_model_config({"architecture": "fibinet", "bilinear_typ": "field_all"})
    # A key valid for another architecture is still unknown here.
    with pytest.raises(ValidationError, match="num_cross_layers"):
        parse_model_config({"architecture": "mlp", "num_cross_layers": 2})


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"architecture": "mlp", "embedding_dim": 0}, "embedding_dim"),
        ({"architecture": "mlp", "hidden_units": [64, 0]}, "hidden_units"),
        ({"architecture": "mlp", "dropout": 1.0}, "dropout"),
        ({"architecture": "mlp", "dropout": -0.1}, "dropout"),
        ({"architecture": "mlp", "embedding_init_std": 0.0}, "embedding_init_std"),
        ({"architecture": "fibinet", "bilinear_type": "field_pair"}, "bilinear_type"),
        ({"architecture": "fibinet", "reduction_ratio": 0.5}, "reduction_ratio"),
        ({"architecture": "dcnv2", "structure": "sideways"}, "structure"),
        ({"architecture": "dcnv2", "low_rank": 0}, "low_rank"),
        ({"architecture": "autoint", "attention_heads": 0}, "attention_heads"),
        ({"architecture": "xdeepfm", "cin_layer_units": []}, "cin_layer_units"),
        ({"architecture": "dcn", "num_cross_layers": "three"}, "num_cross_layers"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(bad, field):
    with pytest.raises(ValidationError) as caught:
        parse_model_config(bad)
    assert field in str(caught.value)


def test_unknown_or_missing_architecture_is_rejected():
    with pytest.raises(ValidationError, match="transformer"):
        parse_model_config({"architecture": "transformer"})
    with pytest.raises(ValidationError, match="architecture"):
        parse_model_config({"embedding_dim": 8})


def test_assignment_is_validated_too():
    config = parse_model_config({"architecture": "mlp"})
    with pytest.raises(ValidationError):
        config.dropout = 2.0


def test_build_model_accepts_mapping_or_config_and_keeps_a_private_copy(spec_factory):
    spec = spec_factory(3, 1)
    config = paper_teacher_config()
    model = build_model(config, spec)
    config.hidden_units.append(7)  # mutating the caller's object must not change the model's config
    assert model.config.hidden_units == [64, 32, 4]
    same = build_model(config.model_dump() | {"hidden_units": [64, 32, 4]}, spec)
    assert same.config == model.config
    with pytest.raises(ValidationError, match="hiden_units"):
        build_model({"architecture": "mlp", "hiden_units": [4]}, spec)


def test_config_round_trips_through_json():
    for name in EXPECTED_NAMES:
        config = parse_model_config({"architecture": name, "embedding_dim": 4, "dropout": 0.2})
        assert parse_model_config(config.model_dump(mode="json")) == config
        assert type(parse_model_config(config)) is type(config)


def test_architecture_names_are_the_registry_s_without_building_a_model() -> None:
    # The CLI's help lists them from the configs alone, so `crossadapt --help` and the servers never load torch.
    from crossadapt.models.config import architecture_names
    from crossadapt.models.registry import list_models

    assert architecture_names() == list_models() and len(set(architecture_names())) == 9
