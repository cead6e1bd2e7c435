"""Building blocks of the model zoo (FuxiCTR-style: one small file per kind of layer)."""

from crossadapt.models.layers.attention import AttentionalPooling, FieldSelfAttention
from crossadapt.models.layers.bilinear import BilinearInteraction
from crossadapt.models.layers.cin import CompressedInteractionNet
from crossadapt.models.layers.cross import CrossNet, CrossNetV2
from crossadapt.models.layers.embedding import FeatureEmbedding
from crossadapt.models.layers.fm import FactorizationMachine
from crossadapt.models.layers.linear import FirstOrderTerm
from crossadapt.models.layers.mlp import MLPBlock
from crossadapt.models.layers.senet import SqueezeExcitation

__all__ = [
    "AttentionalPooling",
    "BilinearInteraction",
    "CompressedInteractionNet",
    "CrossNet",
    "CrossNetV2",
    "FactorizationMachine",
    "FeatureEmbedding",
    "FieldSelfAttention",
    "FirstOrderTerm",
    "MLPBlock",
    "SqueezeExcitation",
]
