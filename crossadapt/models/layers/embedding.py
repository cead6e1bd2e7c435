"""One fused embedding lookup for every field of a :class:`~crossadapt.models.spec.FeatureSpec`.

Symbols: ``B`` batch, ``C`` categorical fields, ``N`` numerical fields, ``F = C + N`` fields,
``D`` embedding width, ``V_k`` rows of categorical field ``k`` (its vocabulary, ``<UNK>`` = id 0 included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crossadapt.models.spec import FeatureSpec

NUMERICAL_TABLE = "__numerical__"


@dataclass(frozen=True)
class TableGrowth:
    """Where :meth:`FeatureEmbedding.grow` put the new rows of the fused table.

    ``rows`` new rows were inserted at fused row ``at`` (the end of the field's block): fused row ``r``
    of the old table is row ``r`` if ``r < at``, else ``r + rows``. :func:`grow_optimizer_state` applies
    the same insertion to an optimizer's per-row state.
    """

    field: str
    at: int
    rows: int
    old_vocab_size: int
    new_vocab_size: int


class FeatureEmbedding(nn.Module):
    """All categorical tables stacked into ONE ``nn.Embedding``, plus one vector per numerical field.

    Field ``k``'s rows live at ``offsets[k] : offsets[k] + V_k`` of the fused table, so the whole batch
    is embedded by a single gather (``table[categorical + offsets]``) instead of ``C`` small lookups.
    A numerical field ``n`` with (already transformed) value ``x`` is embedded as ``x * vectors[n]``.

    Initialisation follows FuxiCTR: every row and vector is drawn from ``N(0, init_std^2)``. FuxiCTR's
    default (and ours) is ``init_std=1e-4``; values from 1e-4 to 1e-2 train alike with Adam-style
    optimisers because the first interaction layers rescale their input. Draws come from the global
    torch RNG, so ``torch.manual_seed`` makes a model reproducible.

    Args:
        spec: the fields (names, vocabulary sizes) in the order the batch columns use.
        embedding_dim: ``D``.
        init_std: standard deviation of the normal initialisation.
        sparse: sparse gradients for the fused table (for ``torch.optim.SparseAdam``); the numerical
            vectors always get dense gradients. Can be switched later through :attr:`sparse`.

    Example::

        spec = FeatureSpec(categorical=(CategoricalField(name="site", vocab_size=5),), numerical=("price",))
        emb = FeatureEmbedding(spec, embedding_dim=8)
        fields = emb(torch.tensor([[3]]), torch.tensor([[0.5]]))   # [1, 2, 8]: site row 3, 0.5 * price vector
    """

    offsets: torch.Tensor
    vocab_sizes: torch.Tensor

    def __init__(self, spec: FeatureSpec, embedding_dim: int, *, init_std: float = 1e-4, sparse: bool = False):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if spec.num_fields < 1:
            raise ValueError("the feature spec has no fields")
        if not (init_std > 0 and math.isfinite(init_std)):
            raise ValueError(f"init_std must be a positive finite number, got {init_std}")
        self.embedding_dim = embedding_dim
        self.init_std = init_std
        self._set_layout(spec)
        self.table = nn.Embedding(max(sum(field.vocab_size for field in spec.categorical), 1), embedding_dim, sparse=sparse)
        self.numerical_vectors = nn.Parameter(torch.empty(len(spec.numerical), embedding_dim))
        self.check_ids = True  # one cheap comparison per batch; an out-of-range id would silently read another field
        with torch.no_grad():
            self.table.weight.normal_(0.0, init_std)
            self.numerical_vectors.normal_(0.0, init_std)

    def _set_layout(self, spec: FeatureSpec) -> None:
        """Offsets and per-field row ranges of the fused table for ``spec``."""
        self.spec = spec
        sizes = [field.vocab_size for field in spec.categorical]
        starts = [0]
        for size in sizes[:-1]:
            starts.append(starts[-1] + size)
        device = self.offsets.device if hasattr(self, "offsets") else None
        # Buffers, not persistent: they follow from the spec, and the state_dict stays only the weights.
        self.register_buffer("offsets", torch.tensor(starts, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("vocab_sizes", torch.tensor(sizes, dtype=torch.long, device=device), persistent=False)
        self._row_ranges = {field.name: (start, field.vocab_size) for field, start in zip(spec.categorical, starts)}

    @property
    def num_categorical(self) -> int:
        return len(self.spec.categorical)

    @property
    def num_numerical(self) -> int:
        return len(self.spec.numerical)

    @property
    def num_fields(self) -> int:
        return self.num_categorical + self.num_numerical

    @property
    def sparse(self) -> bool:
        return self.table.sparse

    @sparse.setter
    def sparse(self, value: bool) -> None:
        self.table.sparse = bool(value)

    def forward(self, categorical: torch.Tensor, numerical: torch.Tensor) -> torch.Tensor:
        """Embed a batch.

        Args:
            categorical: ``[B, C]`` integer per-field ids (no offsets), ``0 <= id < V_k``.
            numerical: ``[B, N]`` float values.

        Returns:
            ``[B, F, D]``: the ``C`` categorical embeddings, then the ``N`` numerical ones.
        """
        self._check_inputs(categorical, numerical)
        parts = []
        if self.num_categorical:
            ids = categorical.long() + self.offsets
            parts.append(F.embedding(ids, self.table.weight, sparse=self.table.sparse))
        if self.num_numerical:
            parts.append(numerical.to(self.numerical_vectors.dtype).unsqueeze(-1) * self.numerical_vectors)
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts, dim=1)

    def _check_inputs(self, categorical: torch.Tensor, numerical: torch.Tensor) -> None:
        if categorical.dim() != 2 or categorical.shape[1] != self.num_categorical:
            raise ValueError(
                f"categorical must be [B, {self.num_categorical}] "
                f"(fields {self.table_names()[: self.num_categorical]}), "
                f"got shape {tuple(categorical.shape)}"
            )
        if numerical.dim() != 2 or numerical.shape[1] != self.num_numerical:
            raise ValueError(
                f"numerical must be [B, {self.num_numerical}] (fields {list(self.spec.numerical)}), "
                f"got shape {tuple(numerical.shape)}"
            )
        if numerical.shape[0] != categorical.shape[0]:
            raise ValueError(f"categorical has {categorical.shape[0]} rows but numerical has {numerical.shape[0]}")
        if self.check_ids and self.num_categorical and categorical.numel():
            bad = (categorical < 0) | (categorical >= self.vocab_sizes)
            if bool(bad.any()):
                row, col = (int(v) for v in bad.nonzero()[0])
                field = self.spec.categorical[col]
                raise ValueError(
                    f"categorical id {int(categorical[row, col])} at row {row} is out of range for field "
                    f"{field.name!r} (column {col}, vocab_size {field.vocab_size})"
                )

    # -- per-field addressing (embedding projection reads and writes whole tables) --------------------

    def table_names(self) -> list[str]:
        """Categorical field names in column order, then ``"__numerical__"`` if there are numerical fields."""
        names = [field.name for field in self.spec.categorical]
        if self.num_numerical:
            names.append(NUMERICAL_TABLE)
        return names

    def locate_table(self, name: str) -> tuple[torch.Tensor, int, int]:
        """(parameter, first row, rows) holding table ``name`` (a checkpoint stores a table as those rows of it)."""
        if name in self._row_ranges:
            start, rows = self._row_ranges[name]
            return self.table.weight, start, rows
        if name == NUMERICAL_TABLE and self.num_numerical:
            return self.numerical_vectors, 0, self.num_numerical
        raise KeyError(f"no embedding table named {name!r}; tables are {self.table_names()}")

    def get_table(self, name: str) -> torch.Tensor:
        """A detached copy of table ``name``: ``[V_k, D]`` for a categorical field, ``[N, D]`` for numerical."""
        weight, start, rows = self.locate_table(name)
        return weight.detach()[start : start + rows].clone()

    def set_table(self, name: str, values: torch.Tensor) -> None:
        """Overwrite table ``name`` in place (no autograd); ``values`` must be ``[V_k, D]`` and finite."""
        weight, start, rows = self.locate_table(name)
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"table {name!r}: expected a torch.Tensor, got {type(values).__name__}")
        expected = (rows, self.embedding_dim)
        if tuple(values.shape) != expected:
            raise ValueError(
                f"table {name!r}: expected shape {expected} (rows, embedding_dim), got {tuple(values.shape)}"
            )
        if not values.is_floating_point():
            raise TypeError(f"table {name!r}: expected a floating-point tensor, got dtype {values.dtype}")
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0, 0])
            raise ValueError(f"table {name!r}: row {row} holds a non-finite value (NaN or inf)")
        with torch.no_grad():
            weight[start : start + rows].copy_(values.to(device=weight.device, dtype=weight.dtype))

    # -- growth (a vocabulary that grows with the stream) ------------------------------------------------

    def grow(
        self, field: str, new_rows: int, init: torch.Tensor | None = None, *, use_init: torch.Tensor | None = None
    ) -> TableGrowth:
        """Append ``new_rows`` rows to categorical field ``field``'s table (ids ``V_k .. V_k + new_rows - 1``).

        Existing rows keep their values and ids. New rows come from ``init`` (``[new_rows, D]``, e.g. the
        teacher's projected rows of the same new values), else from the initialiser (``N(0, init_std^2)``
        from the global torch RNG); with ``use_init`` (``[new_rows]`` bool) only the rows where it is True
        come from ``init`` (the teacher has them), the others from the initialiser.

        The fused weight keeps its ``Parameter`` object (an optimizer holding it stays valid) but gets a
        new shape: per-row optimizer state must follow (:func:`grow_optimizer_state`), and a pending
        ``.grad`` is dropped. ``spec`` is updated to the new vocab size.

        Example::

            growth = model.embedding.grow("C3", 2, init=teacher_rows)        # C3 ids V, V+1 now valid
            grow_optimizer_state(optimizer, model.embedding.table.weight, growth)
        """
        if field not in self._row_ranges:
            raise KeyError(f"no categorical field {field!r}; fields are {[f.name for f in self.spec.categorical]}")
        if not isinstance(new_rows, int) or new_rows < 0:
            raise ValueError(f"new_rows must be an int >= 0, got {new_rows!r}")
        weight = self.table.weight
        start, rows = self._row_ranges[field]
        block = torch.empty(new_rows, self.embedding_dim, dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            block.normal_(0.0, self.init_std)
            if init is not None:
                self._check_init(field, init, new_rows)
                values = init.detach().to(device=weight.device, dtype=weight.dtype)
                if use_init is None:
                    block.copy_(values)
                else:
                    mask = torch.as_tensor(use_init, dtype=torch.bool, device=weight.device)
                    if mask.shape != (new_rows,):
                        raise ValueError(f"use_init must be [{new_rows}] booleans, got shape {tuple(mask.shape)}")
                    block[mask] = values[mask]
            elif use_init is not None:
                raise ValueError("use_init needs init")
            at = start + rows
            grown = torch.cat([weight.detach()[:at], block, weight.detach()[at:]])
        weight.data = grown
        weight.grad = None
        self.table.num_embeddings = grown.shape[0]
        fields = tuple(f.model_copy(update={"vocab_size": f.vocab_size + new_rows}) if f.name == field else f
                       for f in self.spec.categorical)  # fmt: skip
        self._set_layout(self.spec.model_copy(update={"categorical": fields}))
        return TableGrowth(field=field, at=at, rows=new_rows, old_vocab_size=rows, new_vocab_size=rows + new_rows)

    def _check_init(self, field: str, init: torch.Tensor, new_rows: int) -> None:
        if not isinstance(init, torch.Tensor) or not init.is_floating_point():
            raise TypeError(f"field {field!r}: init must be a floating-point torch.Tensor")
        if tuple(init.shape) != (new_rows, self.embedding_dim):
            raise ValueError(f"field {field!r}: init must be [{new_rows}, {self.embedding_dim}], got {tuple(init.shape)}")
        if not bool(torch.isfinite(init).all()):
            raise ValueError(f"field {field!r}: init holds a non-finite value (NaN or inf)")

    def extra_repr(self) -> str:
        return (
            f"categorical={self.num_categorical}, numerical={self.num_numerical}, rows={self.table.num_embeddings}, "
            f"embedding_dim={self.embedding_dim}, sparse={self.sparse}"
        )


def grow_optimizer_state(optimizer: torch.optim.Optimizer, parameter: torch.Tensor, growth: TableGrowth) -> None:
    """Insert ``growth.rows`` zero rows at ``growth.at`` into every per-row state tensor of ``parameter``
    (Adam/SparseAdam moments, Adagrad sums: fresh rows start with no history); scalars such as ``step``
    are kept. Call it right after :meth:`FeatureEmbedding.grow` with the same parameter."""
    state = optimizer.state.get(parameter)
    if not state:
        return
    old_rows = parameter.shape[0] - growth.rows
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == old_rows:
            zeros = value.new_zeros((growth.rows, *value.shape[1:]))
            state[key] = torch.cat([value[: growth.at], zeros, value[growth.at :]])
