"""Typed model configurations: one pydantic class per architecture, a discriminated union on ``architecture``.

Every class forbids unknown keys, so ``{"architecture": "dcn", "crossing_layers": 4}`` is rejected and the
error names ``crossing_layers`` (FuxiCTR's ``**kwargs`` bag would silently ignore it).

Common fields (all architectures):
    embedding_dim: ``D``, the width of every field embedding.
    hidden_units: widths of the deep tower (Linear -> [BatchNorm] -> ReLU -> [Dropout] per layer).
    dropout: dropout probability after each hidden layer.
    batch_norm: BatchNorm1d after each hidden Linear.
    embedding_init_std: embeddings start as ``N(0, std^2)`` (FuxiCTR's default 1e-4).

Example configs from the CrossAdapt paper (Appendix, "Model Configurations"): the teacher is
:func:`paper_teacher_config` (MLP, width 8, ``[64, 32, 4]``) and the mismatched student is
:func:`paper_student_config` (FiBiNET, width 16, ``[256, 128, 16]``)::

    parse_model_config({"architecture": "mlp", "embedding_dim": 8, "hidden_units": [64, 32, 4]})
    parse_model_config({"architecture": "fibinet", "embedding_dim": 16, "hidden_units": [256, 128, 16],
                        "reduction_ratio": 3, "bilinear_type": "field_interaction"})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, TypeAdapter

HiddenUnits = list[PositiveInt]
BilinearType = Literal["field_all", "field_each", "field_interaction"]


class _CommonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    embedding_dim: PositiveInt = 16
    hidden_units: HiddenUnits = Field(default_factory=lambda: [256, 128, 16])
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    embedding_init_std: float = Field(1e-4, gt=0.0, le=1.0)


class MLPConfig(_CommonConfig):
    """Plain DNN over the concatenated field embeddings (the paper's teacher)."""

    architecture: Literal["mlp"] = "mlp"
    embedding_dim: PositiveInt = 8
    hidden_units: HiddenUnits = Field(default_factory=lambda: [64, 32, 4])


class WideDeepConfig(_CommonConfig):
    """Wide (first-order linear) + deep (DNN) towers summed into one logit."""

    architecture: Literal["widedeep"] = "widedeep"


class DeepFMConfig(_CommonConfig):
    """First-order term + factorisation machine + DNN, sharing one embedding."""

    architecture: Literal["deepfm"] = "deepfm"


class DCNConfig(_CommonConfig):
    """Deep & Cross: ``num_cross_layers`` vector cross layers in parallel with the DNN."""

    architecture: Literal["dcn"] = "dcn"
    num_cross_layers: PositiveInt = 3


class DCNv2Config(_CommonConfig):
    """DCN-V2: matrix cross layers (``x0 * (W x + b) + x``), optionally low-rank (``W = U V^T``)."""

    architecture: Literal["dcnv2"] = "dcnv2"
    num_cross_layers: PositiveInt = 3
    low_rank: PositiveInt | None = Field(None, description="Rank r of W = U V^T; None = full matrix.")
    structure: Literal["parallel", "stacked"] = "parallel"


class AutoIntConfig(_CommonConfig):
    """AutoInt: stacked multi-head self-attention over fields; ``hidden_units`` adds a parallel DNN (AutoInt+)."""

    architecture: Literal["autoint"] = "autoint"
    hidden_units: HiddenUnits = Field(default_factory=list)
    attention_layers: PositiveInt = 3
    attention_heads: PositiveInt = 2
    attention_dim: PositiveInt = Field(32, description="Width of each head's queries/keys/values.")
    use_residual: bool = True
    layer_norm: bool = False


class AFMConfig(_CommonConfig):
    """AFM: attention-weighted sum of pairwise products; ``hidden_units`` (empty in the paper) adds a DNN on top."""

    architecture: Literal["afm"] = "afm"
    hidden_units: HiddenUnits = Field(default_factory=list)
    attention_dim: PositiveInt = 16


class FiBiNETConfig(_CommonConfig):
    """FiBiNET: SENET field reweighting + bilinear interactions of raw and reweighted embeddings + DNN."""

    architecture: Literal["fibinet"] = "fibinet"
    reduction_ratio: float = Field(3.0, ge=1.0, description="SENET squeeze width = max(1, floor(F / ratio)).")
    bilinear_type: BilinearType = "field_interaction"


class XDeepFMConfig(_CommonConfig):
    """xDeepFM: compressed interaction network (CIN) + first-order term + DNN."""

    architecture: Literal["xdeepfm"] = "xdeepfm"
    cin_layer_units: HiddenUnits = Field(default_factory=lambda: [16, 16, 16], min_length=1)


ModelConfig = Annotated[
    Union[
        MLPConfig,
        WideDeepConfig,
        DeepFMConfig,
        DCNConfig,
        DCNv2Config,
        AutoIntConfig,
        AFMConfig,
        FiBiNETConfig,
        XDeepFMConfig,
    ],
    Field(discriminator="architecture"),
]

_MODEL_CONFIG_ADAPTER: TypeAdapter[ModelConfig] = TypeAdapter(ModelConfig)


def architecture_names() -> list[str]:
    """Every architecture a config can name, in the registry's order, without building (or importing) a model."""
    union = get_args(ModelConfig)[0]
    return [config.model_fields["architecture"].default for config in get_args(union)]


def parse_model_config(data: Mapping[str, Any] | BaseModel) -> ModelConfig:
    """Validate a mapping (or re-validate a config) into the architecture's config class.

    Raises:
        pydantic.ValidationError (a ``ValueError``): unknown ``architecture``, an unknown key (named in the
        message) or a bad value.
    """
    if isinstance(data, BaseModel):
        data = data.model_dump()
    return _MODEL_CONFIG_ADAPTER.validate_python(dict(data))


def paper_teacher_config() -> MLPConfig:
    """The CrossAdapt paper's production teacher: MLP, embedding width 8, hidden ``[64, 32, 4]``."""
    return MLPConfig(embedding_dim=8, hidden_units=[64, 32, 4])


def paper_student_config() -> FiBiNETConfig:
    """The paper's mismatched student: FiBiNET, width 16, SENET + bilinear, hidden ``[256, 128, 16]``."""
    return FiBiNETConfig(embedding_dim=16, hidden_units=[256, 128, 16])
