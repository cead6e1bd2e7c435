"""Architecture name -> model class, and the one constructor everybody uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crossadapt.models.afm import AFM
from crossadapt.models.autoint import AutoInt
from crossadapt.models.base import CTRModel
from crossadapt.models.config import ModelConfig, parse_model_config
from crossadapt.models.dcn import DCN
from crossadapt.models.dcnv2 import DCNv2
from crossadapt.models.deepfm import DeepFM
from crossadapt.models.fibinet import FiBiNET
from crossadapt.models.mlp import MLP
from crossadapt.models.spec import FeatureSpec
from crossadapt.models.widedeep import WideDeep
from crossadapt.models.xdeepfm import XDeepFM

MODEL_REGISTRY: dict[str, type[CTRModel]] = {
    model.architecture: model for model in (MLP, WideDeep, DeepFM, DCN, DCNv2, AutoInt, AFM, FiBiNET, XDeepFM)
}


def list_models() -> list[str]:
    """Registered architecture names, in a fixed order."""
    return list(MODEL_REGISTRY)


def build_model(
    config: ModelConfig | Mapping[str, Any], spec: FeatureSpec, *, sparse: bool = False, base_rate: float | None = None
) -> CTRModel:
    """Build the model for ``config`` (a config object or a plain mapping, validated here) over ``spec``.

    Args:
        config: e.g. ``{"architecture": "fibinet", "embedding_dim": 16, "hidden_units": [256, 128, 16]}``.
        spec: the input layout (field names and vocabulary sizes).
        sparse: sparse gradients for the embedding tables (train those with ``torch.optim.SparseAdam``,
            see :meth:`CTRModel.sparse_parameters`).

    Seed with ``torch.manual_seed`` first for a reproducible initialisation.
    """
    config = parse_model_config(config)  # validates a mapping; re-validates (and copies) a config object
    model_class = MODEL_REGISTRY.get(config.architecture)
    if model_class is None:  # only if a config class was added without a model
        raise KeyError(f"no model registered for architecture {config.architecture!r}; known: {list_models()}")
    model = model_class(config, spec, sparse=sparse)
    if base_rate is not None:
        model.set_base_rate(base_rate)
    return model
