"""One step of skip-gram with negative sampling (SGNS) as a fused Triton kernel.

For a batch of B training pairs (centre word c, context word o) with K negative
words n_1..n_K drawn from the noise distribution, one SGD step on

    loss = -log σ(u_o · v_c) - Σ_k log σ(-u_{n_k} · v_c)

(v = rows of ``W_in``, the word vectors; u = rows of ``W_out``, the output vectors)
changes the K + 2 rows it touches by

    g_o   = lr · (1 - σ(u_o · v_c))          g_k = lr · (0 - σ(u_{n_k} · v_c))
    v_c  += g_o · u_o + Σ_k g_k · u_{n_k}
    u_o  += g_o · v_c                        u_{n_k} += g_k · v_c

(Mikolov et al. 2013, "Distributed Representations of Words and Phrases", eq. 4;
the update is word2vec.c's, where ``g`` carries the learning rate.) As in word2vec.c
and gensim, a negative that happens to equal the context word is skipped: it
contributes neither to the loss nor to the update. The names follow the paper; training
(:class:`course_lib.word2vec.Word2Vec` on a GPU) passes the pairs in word2vec.c's
direction, the context word's row of ``W_in`` predicting the centre word's row of
``W_out``, which gives the same pairs with the roles swapped. On the CPU, word2vec trains
with the per-pair C loop of :mod:`course_lib.kernels.word2vec_cpu` instead: this batched
step is the GPU's way.

**Reference semantics.** :func:`sgns_step_reference` computes every pair's gradient
from the weights as they were *before* the step and adds all of them with
``index_add_``: a pair whose centre or context occurs elsewhere in the batch does not
see the other pairs' updates (a mini-batch step on the summed loss).

**The kernel** runs one program per pair: it gathers the centre row and the K + 1
output rows, takes the dot products, the sigmoid and the gradients in registers, and
adds the updates back with ``tl.atomic_add``. It reads from one pair of tables and
adds into another, so :func:`sgns_step` offers two modes:

* ``hogwild=True`` (what training uses): read and write the same tables. Programs
  run concurrently and see some of each other's updates, as word2vec.c's threads do
  (Recht et al. 2011, "Hogwild!"): lock-free and, on a GPU, fast.
* ``hogwild=False``: read from a snapshot taken before the launch and add into the
  live tables. Every gradient then comes from the pre-step weights, exactly as in the
  reference, and the two agree up to the order of fp32 additions.

**Why atomic adds, when word2vec.c uses plain ``+=``.** word2vec.c has a handful of
CPU threads; two of them rarely update the same row at the same instant, and a lost
update now and then does no harm. A GPU has thousands of programs in flight, and the
most frequent words are drawn as negatives in a large share of them: with a plain
load-add-store, most of the updates to exactly those rows would be overwritten. The
atomic add keeps every update, and the frequent rows it serializes live in L2.

The tables must be fp32: an SGD increment is ~1e-4 of a weight of ~1e-1, below the
resolution of bf16 (8 significant bits) and close to that of fp16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .backend import INDEX_DTYPES, check_tensor, use_triton

# One program holds the centre row (BLOCK_D) and the context + negative rows
# (BLOCK_K x BLOCK_D) in registers; word vectors have 50 to 300 dimensions.
MAX_DIM = 1024


# ---- kernel -----------------------------------------------------------------------------


@triton.jit
def _sgns_kernel(
    centres_ptr,  # (B,)    rows of W_in
    contexts_ptr,  # (B,)   rows of W_out, label 1
    negatives_ptr,  # (B, K) rows of W_out, label 0
    w_in_read_ptr,  # (V, D) the tables the dot products read ...
    w_out_read_ptr,  # (V, D)
    w_in_ptr,  # (V, D)     ... and the tables the updates are added to (the same in Hogwild mode)
    w_out_ptr,  # (V, D)
    loss_ptr,  # (B,) fp32
    lr,
    K,
    D,
    BLOCK_K: tl.constexpr,  # next power of 2 >= K + 1
    BLOCK_D: tl.constexpr,  # next power of 2 >= D
):
    pair = tl.program_id(0).to(tl.int64)
    slots = tl.arange(0, BLOCK_K)  # slot 0: the context word; slots 1..K: the negatives
    features = tl.arange(0, BLOCK_D)
    in_d = features < D

    centre = tl.load(centres_ptr + pair).to(tl.int64)
    context = tl.load(contexts_ptr + pair).to(tl.int64)
    is_negative = (slots >= 1) & (slots <= K)
    negative = tl.load(negatives_ptr + pair * K + slots - 1, mask=is_negative, other=0).to(tl.int64)
    rows = tl.where(slots == 0, context, negative)  # (BLOCK_K,)
    # A negative equal to the context word is skipped, as in word2vec.c and gensim.
    active = (slots == 0) | (is_negative & (negative != context))  # (BLOCK_K,)
    tile = active[:, None] & in_d[None, :]  # (BLOCK_K, BLOCK_D)
    # int64 offsets: row * D passes 2^31 for tables above 2^31 elements.
    out_offsets = rows[:, None] * D + features[None, :]  # (BLOCK_K, BLOCK_D)

    v = tl.load(w_in_read_ptr + centre * D + features, mask=in_d, other=0.0)  # (BLOCK_D,)
    u = tl.load(w_out_read_ptr + out_offsets, mask=tile, other=0.0)  # (BLOCK_K, BLOCK_D)
    score = tl.sum(u * v[None, :], axis=1)  # (BLOCK_K,) u_k · v_c
    label = (slots == 0).to(tl.float32)
    g = tl.where(active, (label - tl.sigmoid(score)) * lr, 0.0)  # (BLOCK_K,)

    # -log σ(x) with x = +score for the context, -score for a negative; written as
    # softplus(-x) = max(-x, 0) + log(1 + exp(-|x|)), which never overflows.
    x = tl.where(slots == 0, score, -score)
    nll = tl.maximum(-x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
    tl.store(loss_ptr + pair, tl.sum(tl.where(active, nll, 0.0), axis=0))

    grad_v = tl.sum(g[:, None] * u, axis=0)  # (BLOCK_D,)  Σ_k g_k u_k
    grad_u = g[:, None] * v[None, :]  # (BLOCK_K, BLOCK_D)  g_k v_c
    tl.atomic_add(w_in_ptr + centre * D + features, grad_v, mask=in_d)
    tl.atomic_add(w_out_ptr + out_offsets, grad_u, mask=tile)


# ---- launcher ---------------------------------------------------------------------------


def sgns_step_triton(
    W_in: torch.Tensor,
    W_out: torch.Tensor,
    centres: torch.Tensor,
    contexts: torch.Tensor,
    negatives: torch.Tensor,
    lr: float,
    hogwild: bool = True,
) -> torch.Tensor:
    """Launch one program per pair; update ``W_in`` and ``W_out`` in place; return the
    per-pair loss (B,). Inputs must already be checked (see :func:`sgns_step`)."""
    B, K = negatives.shape
    D = W_in.shape[1]
    loss = torch.empty(B, dtype=torch.float32, device=W_in.device)
    if B == 0:  # an empty grid is not a valid launch
        return loss
    # Hogwild: read what the other programs have written so far. Exact: read a snapshot.
    w_in_read, w_out_read = (W_in, W_out) if hogwild else (W_in.clone(), W_out.clone())
    block_d = triton.next_power_of_2(D)
    # With K = 0 the negatives tensor is empty (perhaps a null pointer); pass any valid one,
    # the kernel masks every load from it.
    _sgns_kernel[(B,)](
        centres, contexts, negatives if K > 0 else contexts, w_in_read, w_out_read, W_in, W_out, loss,
        float(lr), K, D,
        BLOCK_K=triton.next_power_of_2(K + 1),
        BLOCK_D=block_d,
        num_warps=4 if block_d >= 512 else 2,
    )
    return loss


# ---- reference --------------------------------------------------------------------------


def sgns_step_reference(
    W_in: torch.Tensor,
    W_out: torch.Tensor,
    centres: torch.Tensor,
    contexts: torch.Tensor,
    negatives: torch.Tensor,
    lr: float,
) -> torch.Tensor:
    """The same step in PyTorch: all gradients from the pre-step weights, applied with
    ``index_add_`` (so repeated rows receive the sum of their updates). Updates ``W_in``
    and ``W_out`` in place and returns the per-pair loss (B,)."""
    B, K = negatives.shape
    D = W_in.shape[1]
    rows = torch.cat([contexts[:, None], negatives], dim=1)  # (B, 1 + K): the context, then the negatives
    v = W_in.index_select(0, centres)  # (B, D)
    u = W_out.index_select(0, rows.reshape(-1)).view(B, K + 1, D)  # (B, 1 + K, D)
    score = torch.bmm(v[:, None, :], u.transpose(1, 2)).squeeze(1)  # (B, 1 + K)  u_k · v_c
    label = torch.zeros(K + 1, dtype=score.dtype, device=score.device)
    label[0] = 1.0  # (1 + K,): 1 for the context, 0 for the negatives
    active = rows != contexts[:, None]  # a negative equal to its context is skipped ...
    active[:, 0] = True  # ... the context itself never is
    g = (label - torch.sigmoid(score)) * active * lr  # (B, 1 + K)
    loss = (F.softplus((1 - 2 * label) * score) * active).sum(1)  # (B,)  Σ -log σ(±score)
    W_in.index_add_(0, centres, torch.bmm(g[:, None, :], u).squeeze(1))  # Σ_k g_k u_k
    W_out.index_add_(0, rows.reshape(-1), (g[:, :, None] * v[:, None, :]).view(-1, D))  # g_k v_c
    return loss


# ---- checks and dispatch ----------------------------------------------------------------


def _check_inputs(W_in, W_out, centres, contexts, negatives) -> None:
    check_tensor("W_in", W_in, dim=2, dtypes=(torch.float32,))
    check_tensor("W_out", W_out, dim=2, dtypes=(torch.float32,), device=W_in.device)
    check_tensor("centres", centres, dim=1, dtypes=INDEX_DTYPES, device=W_in.device)
    check_tensor("contexts", contexts, dim=1, dtypes=INDEX_DTYPES, device=W_in.device)
    check_tensor("negatives", negatives, dim=2, dtypes=INDEX_DTYPES, device=W_in.device)
    if W_in.shape[1] != W_out.shape[1]:
        raise ValueError(
            f"W_in and W_out must have the same number of columns, got {tuple(W_in.shape)} and {tuple(W_out.shape)}"
        )
    if not (W_in.is_contiguous() and W_out.is_contiguous()):
        raise ValueError("W_in and W_out must be contiguous (the step updates them in place)")
    B = centres.shape[0]
    if contexts.shape[0] != B or negatives.shape[0] != B:
        raise ValueError(
            f"centres, contexts and negatives must have the same length B, got "
            f"{centres.shape[0]}, {contexts.shape[0]} and {tuple(negatives.shape)}"
        )
    checks = (("centres", centres, W_in), ("contexts", contexts, W_out), ("negatives", negatives, W_out))
    for name, idx, table in checks:
        if idx.numel():
            low, high = (int(x) for x in torch.aminmax(idx))
            if low < 0 or high >= table.shape[0]:
                raise IndexError(f"{name} must be in [0, {table.shape[0]}), got values in [{low}, {high}]")


def sgns_step(
    W_in: torch.Tensor,
    W_out: torch.Tensor,
    centres: torch.Tensor,
    contexts: torch.Tensor,
    negatives: torch.Tensor,
    lr: float,
    *,
    hogwild: bool = True,
    check: bool = True,
) -> torch.Tensor:
    """One SGNS step, in place, on the backend :func:`~course_lib.kernels.backend.use_triton`
    picks; returns the per-pair loss (B,).

    ``W_in`` and ``W_out`` are (V_in, D) and (V_out, D) fp32 tables, ``centres`` and
    ``contexts`` (B,) and ``negatives`` (B, K) integer indices. ``hogwild`` only affects the
    Triton path (see the module docstring); the reference is always exact. ``check=False``
    skips the index-range checks (one host sync each) inside a training loop whose
    indices are valid by construction."""
    if check:
        _check_inputs(W_in, W_out, centres, contexts, negatives)
        if W_in.shape[1] > MAX_DIM and use_triton(W_in, op="sgns_step"):
            raise ValueError(f"sgns_step: the Triton kernel supports D <= {MAX_DIM}, got D = {W_in.shape[1]}")
    if use_triton(W_in, W_out, op="sgns_step"):
        return sgns_step_triton(
            W_in, W_out, centres.contiguous(), contexts.contiguous(), negatives.contiguous(), lr, hogwild
        )
    return sgns_step_reference(W_in, W_out, centres, contexts, negatives, lr)
