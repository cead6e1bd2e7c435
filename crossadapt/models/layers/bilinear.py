"""FiBiNET's bilinear-interaction layer, vectorised over all field pairs.

Symbols: ``B`` batch, ``S`` stacked inputs, ``F`` fields, ``P = F (F - 1) / 2`` pairs, ``D`` width.

For each pair ``i < j`` the FiBiNET paper (Huang et al., RecSys 2019, Sec. 3.4) forms
``p_ij = (v_i · W) ⊙ v_j`` with three ways to share ``W``:

* ``field_all``: one ``W`` for every pair;
* ``field_each``: one ``W_i`` per left field;
* ``field_interaction``: one ``W_ij`` per pair.

No Python loop over pairs or fields: ``field_all``/``field_each`` first map each field once
(``v_i W_i``: one batched matmul over ``F`` fields, not ``P`` pairs) and then multiply the gathered
pairs; ``field_interaction`` gathers the left fields and applies the ``P`` pair weights in one ``bmm``.
Both run in the field-major layout of :mod:`crossadapt.models.layers.pairs`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from crossadapt.models.layers.pairs import PairBilinear, PairProduct, pair_row_indices, to_field_major

BILINEAR_TYPES = ("field_all", "field_each", "field_interaction")


class BilinearInteraction(nn.Module):
    """Bilinear interactions of every field pair, for ``S`` stacked inputs with separate weights.

    FiBiNET uses ``S = 2`` (the raw embeddings and the SENET-reweighted ones), each with its own ``W``.

    Args:
        num_fields: ``F``.
        embedding_dim: ``D``.
        bilinear_type: ``"field_all"`` (weight ``[S, D, D]``), ``"field_each"`` (``[F - 1, S, D, D]``, the
            last field is never on the left of a pair) or ``"field_interaction"`` (``[P, S, D, D]``).
        num_inputs: ``S``.

    Shapes:
        ``fields [B, S, F, D] -> [B, P * S * D]``. The output is a transposed view of a contiguous
        ``[P * S * D, B]`` buffer; columns are ordered ``(pair, input, d)``, i.e. column
        ``(p * S + s) * D + d`` holds ``p_{I[p] J[p]}[d]`` of input ``s``. Feed it straight to ``nn.Linear``.

    Example::

        layer = BilinearInteraction(num_fields=3, embedding_dim=4, bilinear_type="field_all", num_inputs=2)
        out = layer(torch.randn(8, 2, 3, 4))   # [8, 3 pairs * 2 inputs * 4] = [8, 24]
    """

    left_rows: torch.Tensor
    right_rows: torch.Tensor

    def __init__(
        self, num_fields: int, embedding_dim: int, bilinear_type: str = "field_interaction", *, num_inputs: int = 1
    ):
        super().__init__()
        if bilinear_type not in BILINEAR_TYPES:
            raise ValueError(f"bilinear_type must be one of {BILINEAR_TYPES}, got {bilinear_type!r}")
        if num_fields < 2:
            raise ValueError(f"bilinear interactions need at least 2 fields, got {num_fields}")
        self.num_fields = num_fields
        self.embedding_dim = embedding_dim
        self.bilinear_type = bilinear_type
        self.num_inputs = num_inputs
        self.num_pairs = num_fields * (num_fields - 1) // 2
        left_rows, right_rows = pair_row_indices(num_fields, num_inputs * embedding_dim)
        self.register_buffer("left_rows", left_rows, persistent=False)
        self.register_buffer("right_rows", right_rows, persistent=False)
        leading = {"field_all": (), "field_each": (num_fields - 1,), "field_interaction": (self.num_pairs,)}
        self.weight = nn.Parameter(torch.empty(*leading[bilinear_type], num_inputs, embedding_dim, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-normal per D x D map (fan_in = fan_out = D), as FuxiCTR initialises its bilinear weights.
        nn.init.normal_(self.weight, 0.0, math.sqrt(1.0 / self.embedding_dim))

    @property
    def output_dim(self) -> int:
        return self.num_pairs * self.num_inputs * self.embedding_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        batch, inputs, num_fields, width = fields.shape
        if (inputs, num_fields, width) != (self.num_inputs, self.num_fields, self.embedding_dim):
            raise ValueError(
                f"expected fields [B, {self.num_inputs}, {self.num_fields}, {self.embedding_dim}], "
                f"got {tuple(fields.shape)}"
            )
        x = to_field_major(fields)  # [F * S * D, B]
        if self.bilinear_type == "field_interaction":
            pairs = PairBilinear.apply(x, self.weight, self.left_rows, self.right_rows)
        else:
            by_field = x.view(num_fields, inputs, width, batch)
            left_fields = by_field if self.bilinear_type == "field_all" else by_field[:-1]
            # v_i W for every field in one broadcast matmul: [S, D_out, D_in] @ [F', S, D, B] -> [F', S, D, B].
            mapped = torch.matmul(self.weight.transpose(-1, -2), left_fields).view(-1, batch)
            pairs = PairProduct.apply(mapped, x, self.left_rows, self.right_rows, inputs * width)
        return pairs.t()
