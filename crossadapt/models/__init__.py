"""CTR model zoo: one fused embedding lookup + an interaction network per architecture.

Public API::

    from crossadapt.models import build_model, list_models, parse_model_config, FeatureSpec, CategoricalField
    model = build_model({"architecture": "fibinet", "embedding_dim": 16, "hidden_units": [256, 128, 16]}, spec)
    logits = model(categorical, numerical)                     # [B]
    logits, hidden = model.forward_with_representation(categorical, numerical)
"""

from crossadapt.models.base import CTRModel
from crossadapt.models.config import (
    AFMConfig,
    AutoIntConfig,
    DCNConfig,
    DCNv2Config,
    DeepFMConfig,
    FiBiNETConfig,
    MLPConfig,
    ModelConfig,
    WideDeepConfig,
    XDeepFMConfig,
    paper_student_config,
    paper_teacher_config,
    parse_model_config,
)
from crossadapt.models.layers.embedding import NUMERICAL_TABLE, FeatureEmbedding
from crossadapt.models.registry import MODEL_REGISTRY, build_model, list_models
from crossadapt.models.spec import CategoricalField, FeatureSpec

__all__ = [
    "AFMConfig",
    "AutoIntConfig",
    "CTRModel",
    "CategoricalField",
    "DCNConfig",
    "DCNv2Config",
    "DeepFMConfig",
    "FeatureEmbedding",
    "FeatureSpec",
    "FiBiNETConfig",
    "MLPConfig",
    "MODEL_REGISTRY",
    "ModelConfig",
    "NUMERICAL_TABLE",
    "WideDeepConfig",
    "XDeepFMConfig",
    "build_model",
    "list_models",
    "paper_student_config",
    "paper_teacher_config",
    "parse_model_config",
]
