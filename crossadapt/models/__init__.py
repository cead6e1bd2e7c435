"""CTR model zoo: one fused embedding lookup + an interaction network per architecture.

Symbols: ``B`` batch, ``C`` categorical fields, ``N`` numerical fields, ``F = C + N``, ``D`` width.

Every model is a :class:`CTRModel`: :class:`FeatureEmbedding` embeds all fields with ONE lookup into a
fused table (``[B, F, D]``; a numerical field is ``value * vector``), then the architecture's interaction
network scores them. Architectures (:func:`list_models`) and their extra config fields:

==========  ===========================================================================================
mlp         DNN over flattened embeddings (defaults: the paper's teacher, width 8, ``[64, 32, 4]``)
widedeep    first-order wide part + DNN
deepfm      first-order + FM + DNN
dcn         ``num_cross_layers`` (3) vector cross layers + parallel DNN
dcnv2       ``num_cross_layers`` (3), ``low_rank`` (None = full), ``structure`` (parallel | stacked)
autoint     ``attention_layers`` (3), ``attention_heads`` (2), ``attention_dim`` (32), ``use_residual``,
            ``layer_norm``; ``hidden_units`` (default empty) adds a parallel DNN
afm         ``attention_dim`` (16); attention-pooled pair products + first-order
fibinet     ``reduction_ratio`` (3), ``bilinear_type`` (field_all | field_each | field_interaction);
            defaults: the paper's student, width 16, ``[256, 128, 16]``
xdeepfm     ``cin_layer_units`` ([16, 16, 16]) + first-order + DNN
==========  ===========================================================================================

Common fields: ``embedding_dim`` (16), ``hidden_units`` ([256, 128, 16]), ``dropout`` (0), ``batch_norm``
(False), ``embedding_init_std`` (1e-4). Usage::

    from crossadapt.models import build_model, paper_student_config
    model = build_model(paper_student_config(), spec)          # or a dict with "architecture"
    logits = model(categorical, numerical)                      # [B]
    logits, hidden = model.forward_with_representation(categorical, numerical)   # hidden [B, H]

Adding an architecture: a config class in ``config.py`` (added to the ``ModelConfig`` union), a
~50-line ``CTRModel`` subclass wiring layers from ``layers/``, and one entry in ``registry.py``.
"""

from typing import TYPE_CHECKING

from crossadapt.lazy import lazy_members

if TYPE_CHECKING:
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

_HOMES = {
    **dict.fromkeys(('CTRModel',), 'base'),
    **dict.fromkeys(('AFMConfig', 'AutoIntConfig', 'DCNConfig', 'DCNv2Config', 'DeepFMConfig', 'FiBiNETConfig', 'MLPConfig', 'ModelConfig', 'WideDeepConfig', 'XDeepFMConfig', 'paper_student_config', 'paper_teacher_config', 'parse_model_config'), 'config'),
    **dict.fromkeys(('NUMERICAL_TABLE', 'FeatureEmbedding'), 'layers.embedding'),
    **dict.fromkeys(('MODEL_REGISTRY', 'build_model', 'list_models'), 'registry'),
    **dict.fromkeys(('CategoricalField', 'FeatureSpec'), 'spec'),
}
__getattr__ = lazy_members(__name__, _HOMES, globals())

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
