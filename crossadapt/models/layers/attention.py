"""Attention over fields: AutoInt's interacting layer and AFM's attentional pooling of pair products.

Symbols: ``B`` batch, ``F`` fields, ``D`` width, ``h`` heads, ``d`` per-head width, ``P`` pairs, ``A``
AFM attention width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FieldSelfAttention(nn.Module):
    """AutoInt's interacting layer (Song et al., CIKM 2019, Sec. 4.3): multi-head self-attention over fields.

    ``out = ReLU(MultiHead(E) + E W_res)`` where each head attends with the plain inner product
    ``<q_i, k_j>`` (no 1/sqrt(d) scaling, as in the paper and FuxiCTR's default), and an optional
    LayerNorm after. The heads run as one ``scaled_dot_product_attention`` call.

    Args:
        input_dim: width of each field's input vector (``D`` for the first layer).
        heads: ``h``.
        head_dim: ``d``.
        use_residual: add the projected input ``E W_res``.
        layer_norm: LayerNorm over the ``h * d`` output.

    Shapes: ``[B, F, input_dim] -> [B, F, h * d]``.
    """

    def __init__(
        self, input_dim: int, heads: int, head_dim: int, *, use_residual: bool = True, layer_norm: bool = False
    ):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.query_key_value = nn.Linear(input_dim, 3 * heads * head_dim, bias=False)
        self.residual = nn.Linear(input_dim, heads * head_dim, bias=False) if use_residual else None
        self.norm = nn.LayerNorm(heads * head_dim) if layer_norm else None
        self.output_dim = heads * head_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        batch, num_fields, _ = fields.shape
        qkv = self.query_key_value(fields).view(batch, num_fields, 3, self.heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, h, F, d]
        attended = F.scaled_dot_product_attention(query, key, value, scale=1.0)
        out = attended.transpose(1, 2).reshape(batch, num_fields, self.output_dim)
        if self.residual is not None:
            out = out + self.residual(fields)
        out = torch.relu(out)
        if self.norm is not None:
            out = self.norm(out)
        return out


class AttentionalPooling(nn.Module):
    """AFM's attention-based pooling (Xiao et al., IJCAI 2017, Sec. 3.2) of field-major pair products.

    ``a_p = softmax_p(h^T ReLU(W v_p + b))`` and ``pooled = sum_p a_p v_p`` where ``v_p = e_i ⊙ e_j``.
    The products come element-major (``[D, P, B]``), so the attention layer is ONE GEMM
    ``W [A, D] @ V [D, P * B]``.

    Shapes: ``products [D, P, B] -> [B, D]``.
    """

    def __init__(self, embedding_dim: int, attention_dim: int):
        super().__init__()
        self.attention = nn.Linear(embedding_dim, attention_dim)
        self.context = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, products: torch.Tensor) -> torch.Tensor:
        width, pairs, batch = products.shape
        hidden = torch.addmm(self.attention.bias.unsqueeze(1), self.attention.weight, products.reshape(width, -1))
        scores = torch.mm(self.context.weight, torch.relu(hidden)).view(pairs, batch)
        weights = torch.softmax(scores, dim=0)  # over pairs
        return (products * weights).sum(dim=1).t()  # [B, D]
