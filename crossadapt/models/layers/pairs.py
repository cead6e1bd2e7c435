"""Vectorised field-pair kernels shared by AFM (pairwise products) and FiBiNET (bilinear interactions).

Symbols: ``B`` batch, ``F`` fields, ``P = F (F - 1) / 2`` pairs ``(i, j), i < j`` in ``torch.triu_indices``
order ``(0,1), (0,2), ..., (F-2, F-1)``, ``D`` width, ``S`` stacked inputs (FiBiNET: raw and SENET),
``R`` rows per field (``S * D``), ``Q = P * R`` rows of the pair output.

Layout: "field-major" matrices ``[F * R, B]`` (row ``f * R + r`` holds element ``r`` of field ``f`` for the
whole batch). Why:

* gathering the fields of every pair is one ``index_select`` of contiguous ``B``-float rows, a single
  parallel copy (on a 4-D tensor ``index_select`` takes a per-element path ~100x slower, and with a few
  huge rows it starts one multi-threaded copy per index);
* the gradient scatter is one ``index_add_`` of ``B``-float rows;
* per-pair bilinear maps are ONE ``bmm`` over ``P * S`` matrices of ``[D, D] @ [D, B]``;
* the ``[Q, B]`` result is, transposed, exactly the ``[B, Q]`` input a dense layer needs: ``nn.Linear``
  runs a transposed GEMM and autograd returns the gradient in the same layout, so the large pair tensor
  (~400 MB for FiBiNET at batch 4096) is never transposed or concatenated.

The autograd functions save only their small ``[F * R, B]`` inputs; the only pair-sized tensor they
allocate is their output (see :data:`CHUNK_ELEMENTS` for how the work is blocked).
"""

from __future__ import annotations

import threading

import torch
from torch.autograd.function import once_differentiable


def pair_indices(num_fields: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(left [P], right [P])`` int64 field indices of every pair ``i < j``, row-major order."""
    pairs = torch.triu_indices(num_fields, num_fields, offset=1)
    return pairs[0].contiguous(), pairs[1].contiguous()


def pair_row_indices(
    num_fields: int, rows_per_field: int, *, element_major: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(left [Q], right [Q])`` input rows of every output row of a pair kernel.

    Output row ``p * R + r`` (pair-major, the default) or ``r * P + p`` (``element_major``) reads input rows
    ``I[p] * R + r`` and ``J[p] * R + r``.
    """
    left, right = pair_indices(num_fields)
    offsets = torch.arange(rows_per_field)
    left_rows = left.unsqueeze(1) * rows_per_field + offsets  # [P, R]
    right_rows = right.unsqueeze(1) * rows_per_field + offsets
    if element_major:
        left_rows, right_rows = left_rows.t(), right_rows.t()
    return left_rows.flatten(), right_rows.flatten()


def to_field_major(fields: torch.Tensor) -> torch.Tensor:
    """``[B, S, F, D] -> [F * S * D, B]`` (a contiguous copy of the small per-field tensor)."""
    return fields.permute(2, 1, 3, 0).reshape(-1, fields.shape[0])


#: Pair work runs in blocks of whole pairs of at most about this many floats (64 MB), through scratch
#: buffers that are reused from block to block and from call to call. Why: a fresh pair-sized buffer
#: (~400 MB for FiBiNET at batch 4096) costs about as much in page faults as the arithmetic on it, while
#: every kernel in a block still sees the full batch (efficient per-pair GEMMs) and a handful of blocks
#: keeps the number of multi-threaded kernel launches low (each one waits for every core, which is
#: slow on a shared machine).
CHUNK_ELEMENTS = 1 << 24


def _row_blocks(rows: int, batch: int, align: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` covering ``rows``, each a multiple of ``align`` rows (one pair) and,
    where possible, at most ``CHUNK_ELEMENTS / batch`` rows."""
    step = max(align, CHUNK_ELEMENTS // max(batch, 1) // align * align)
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


_scratch_cache = threading.local()


def clear_scratch_buffers() -> None:
    """Free this thread's cached scratch buffers (up to 3 x ``CHUNK_ELEMENTS`` floats per device and dtype)."""
    _scratch_cache.buffers = {}


class _Scratch:
    """``count`` flat buffers, cached per thread, device and dtype, viewed as contiguous ``[n, batch]`` blocks.

    Safe to reuse across calls: a scratch buffer never leaves the function that fills it (outputs and
    saved tensors are allocated normally).
    """

    def __init__(self, like: torch.Tensor, rows: int, batch: int, count: int):
        self.batch = batch
        need = rows * batch
        cache = getattr(_scratch_cache, "buffers", None)
        if cache is None:
            cache = _scratch_cache.buffers = {}
        self.buffers = []
        for index in range(count):
            key = (like.device, like.dtype, index)
            buffer = cache.get(key)
            if buffer is None or buffer.numel() < need:
                # Never an inference tensor: it is written in place later, possibly outside inference mode.
                with torch.inference_mode(False):
                    buffer = cache[key] = torch.empty(need, dtype=like.dtype, device=like.device)
            self.buffers.append(buffer)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        index, rows = key
        return self.buffers[index][: rows * self.batch].view(rows, self.batch)


class PairProduct(torch.autograd.Function):
    """``out[q] = left[I_rows[q]] * right[J_rows[q]]`` for field-major ``left [*, B]``, ``right [*, B]``.

    Blocks are multiples of ``rows_per_pair`` rows (1 when nothing needs whole pairs). Returns ``[Q, B]``. Backward:
    ``grad_left = index_add(I_rows, grad * right[J_rows])``, ``grad_right = index_add(J_rows, grad * left[I_rows])``.
    """

    @staticmethod
    def forward(
        ctx,
        left: torch.Tensor,
        right: torch.Tensor,
        left_rows: torch.Tensor,
        right_rows: torch.Tensor,
        rows_per_pair: int,
    ):
        left, right = left.contiguous(), right.contiguous()
        rows, batch = left_rows.numel(), left.shape[1]
        out = left.new_empty(rows, batch)
        blocks = _row_blocks(rows, batch, rows_per_pair)
        scratch = _Scratch(left, blocks[0][1] if blocks else 0, batch, 1)
        for start, stop in blocks:
            block = out[start:stop]
            torch.index_select(left, 0, left_rows[start:stop], out=block)
            block.mul_(torch.index_select(right, 0, right_rows[start:stop], out=scratch[0, stop - start]))
        ctx.save_for_backward(left, right, left_rows, right_rows)
        ctx.rows_per_pair = rows_per_pair
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        left, right, left_rows, right_rows = ctx.saved_tensors
        need_left, need_right = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        rows, batch = left_rows.numel(), left.shape[1]
        grad_left = torch.zeros_like(left) if need_left else None
        grad_right = torch.zeros_like(right) if need_right else None
        blocks = _row_blocks(rows, batch, ctx.rows_per_pair)
        scratch = _Scratch(left, blocks[0][1] if blocks else 0, batch, 1)
        for start, stop in blocks:
            grad_block, buffer = grad[start:stop], scratch[0, stop - start]
            if need_left:
                partial = torch.index_select(right, 0, right_rows[start:stop], out=buffer).mul_(grad_block)
                grad_left.index_add_(0, left_rows[start:stop], partial)
            if need_right:
                partial = torch.index_select(left, 0, left_rows[start:stop], out=buffer).mul_(grad_block)
                grad_right.index_add_(0, right_rows[start:stop], partial)
        return grad_left, grad_right, None, None, None


class PairBilinear(torch.autograd.Function):
    """FiBiNET's field-interaction map ``p_ij = (v_i W_ij) ⊙ v_j`` for every pair and input at once.

    Inputs: field-major ``x [F * S * D, B]``, per-pair weights ``W [P, S, D, D]`` and the pair row indices
    of :func:`pair_row_indices` with ``R = S * D``. Output ``[P * S * D, B]``: the gathered left fields
    times their pair weights (one ``bmm`` over the ``(pair, input)`` matrices of a block), times the
    gathered right fields.

    Backward recomputes the left operand ``W^T x_I`` block by block instead of keeping it: one extra
    ``bmm`` (``2 P S D^2`` FLOPs per sample, ~2% of FiBiNET's training FLOPs) buys not writing, storing
    and page-faulting a second pair-sized tensor (~400 MB at batch 4096).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, left_rows: torch.Tensor, right_rows: torch.Tensor):
        x = x.contiguous()
        pairs, inputs, width, _ = weight.shape
        rows, batch = left_rows.numel(), x.shape[1]
        # W_p^T as a batch of [D_out, D_in] matrices, one per (pair, input), in row order.
        weight_t = weight.transpose(-1, -2).reshape(pairs * inputs, width, width)
        out = x.new_empty(rows, batch)
        blocks = _row_blocks(rows, batch, inputs * width)
        scratch = _Scratch(x, blocks[0][1] if blocks else 0, batch, 2)
        for start, stop in blocks:
            maps, count = slice(start // width, stop // width), stop - start
            gathered = torch.index_select(x, 0, left_rows[start:stop], out=scratch[0, count])
            left = scratch[1, count].view(-1, width, batch)
            torch.bmm(weight_t[maps], gathered.view(-1, width, batch), out=left)
            torch.index_select(x, 0, right_rows[start:stop], out=out[start:stop]).mul_(left.view(count, batch))
        ctx.save_for_backward(x, weight_t, left_rows, right_rows)
        ctx.weight_shape = weight.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight_t, left_rows, right_rows = ctx.saved_tensors
        pairs, inputs, width, _ = ctx.weight_shape
        need_x, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        rows, batch = left_rows.numel(), x.shape[1]
        grad_x = torch.zeros_like(x) if need_x else None
        grad_weight_t = torch.zeros_like(weight_t) if need_weight else None
        blocks = _row_blocks(rows, batch, inputs * width)
        scratch = _Scratch(x, blocks[0][1] if blocks else 0, batch, 3)
        for start, stop in blocks:
            maps, count = slice(start // width, stop // width), stop - start
            grad_block = grad[start:stop]
            gathered = torch.index_select(x, 0, left_rows[start:stop], out=scratch[0, count]).view(-1, width, batch)
            # left operand W^T x_I: its gradient is grad * x_J
            grad_left = torch.index_select(x, 0, right_rows[start:stop], out=scratch[1, count]).mul_(grad_block)
            grad_left = grad_left.view(-1, width, batch)
            if need_weight:
                grad_weight_t[maps] += torch.bmm(grad_left, gathered.transpose(1, 2))
            if need_x:
                # right operand x_J: its gradient is grad * (W^T x_I), recomputed here
                partial = torch.bmm(weight_t[maps], gathered, out=scratch[2, count].view(-1, width, batch))
                grad_x.index_add_(0, right_rows[start:stop], partial.view(count, batch).mul_(grad_block))
                grad_gathered = torch.bmm(weight_t[maps].transpose(1, 2), grad_left, out=partial)
                grad_x.index_add_(0, left_rows[start:stop], grad_gathered.view(count, batch))
        grad_weight = None
        if need_weight:
            grad_weight = grad_weight_t.view(pairs, inputs, width, width).transpose(-1, -2)
        return grad_x, grad_weight, None, None
