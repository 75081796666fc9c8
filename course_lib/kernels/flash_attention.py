"""Attention, FlashAttention style, as Triton kernels: the one attention file of the course.

    O = softmax(Q K^T * scale + bias + mask) V,    Q: (B, nh, Tq, hs), K, V: (B, nh, Tk, hs)

Every model of the course calls this one function; each adds what its architecture needs:

* BERT, RoBERTa, ALBERT (Chapters 4-5): a **key-padding mask** ``attention_mask`` (B, Tk).
* GPT-2 (Chapter 6): ``causal=True``; with a KV cache the Tq new queries are the *last* Tq
  positions of the Tk keys, so query i sees key j when j <= i + (Tk - Tq) (the causal mask
  aligned to the bottom right, as FlashAttention-2 and Hugging Face do it).
* T5 (Chapter 7): an additive ``bias`` such as the relative-position bias, any float tensor
  that broadcasts to (B, nh, Tq, Tk) (so (1, nh, Tq, Tk) is stored once for the batch); its
  gradient is returned too, since T5 learns it. Cross-attention is Tq != Tk.
* Any other visibility pattern (prefix LM, K-BERT's visible matrix; Chapters 5 and 8) is a
  bias of 0 (visible) and -inf (hidden): :func:`visibility_bias`.

Materialising the (B, nh, Tq, Tk) score matrix costs O(T^2) memory and two trips through
it. FlashAttention (Dao et al., 2022; FlashAttention-2, Dao, 2023) never stores it: each
program keeps a block of BLOCK_M queries in registers and streams over the keys in blocks of
BLOCK_N, keeping an *online softmax*: a running row maximum m, a running sum
l = sum exp(s - m) and an unnormalised output acc = sum exp(s - m) v. When a new block raises
the maximum from m to m', the old sum and output are rescaled by exp(m - m'), so at the end
acc / l is exactly the softmax-weighted sum. With ``causal`` a query block stops at the last
key it may see, and a key block starts at the first query that may see it: about half the
work of the full square.

The forward saves only O and the per-row log-sum-exp L = m + log(l), (B, nh, Tq). The
backward recomputes P = exp(S - L) block by block (FlashAttention-2's recipe):

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - delta),   delta = rowsum(dO * O),
    dQ = dS K * scale,   dK = dS^T Q * scale,   dbias = dS (summed over broadcast dims)

in two kernels: one program per key block accumulates dK and dV over all queries, one
program per query block accumulates dQ over all keys (no atomics: deterministic); the
second also writes dS when the bias needs a gradient.

Key-padding mask: ``attention_mask`` (B, Tk), 1/True = a real token that may be attended
to, 0/False = padding (Hugging Face's convention; note that ``nn.MultiheadAttention``'s
``key_padding_mask`` means the opposite). Queries at padded positions still attend to the
real keys, as in BERT; their outputs are simply ignored downstream.

Fully masked rows (a query that may see no key at all: a sequence of padding only, or a
left-padded position under a causal mask): softmax over an empty set is undefined. Here such
a row's output is **zeros**, its stored L is +inf (so exp(S - L) = 0 in the backward and the
row passes no gradient), and the reference below agrees. Hugging Face's eager models instead
add a large negative number to masked scores and so average V uniformly over the masked
keys; the two differ only at positions whose outputs are never used.

Layout as in ``embedding.py``: kernels, launchers, PyTorch references, one autograd
Function that dispatches, the public :func:`flash_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .backend import FLOAT_DTYPES, check_tensor, interpreter_active, use_triton

# Tile sizes, read at call time (tests shrink them to exercise many blocks on small inputs).
# tl.dot needs every dimension >= 16; 64 x 64 tiles of fp16 fit comfortably in registers.
BLOCK_M = 64  # queries per program
BLOCK_N = 64  # keys per inner-loop step


def _block_d(hs: int) -> int:
    return max(16, triton.next_power_of_2(hs))  # the head dimension, padded and masked


# ---- kernels ----------------------------------------------------------------------------


@triton.jit
def _load_tile(base, rows, dims, stride_t, T, HS, UPCAST: tl.constexpr):
    # A (len(rows), BLOCK_D) tile of a (T, HS) matrix; rows past T and columns past HS read 0.
    mask = (rows < T)[:, None] & (dims < HS)[None, :]
    tile = tl.load(base + rows[:, None] * stride_t + dims[None, :], mask=mask, other=0.0)
    if UPCAST:  # the interpreter computes bf16/fp16 wrongly: work in fp32 there
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _visible(mask_ptr, b, rows, cols, TQ, TK, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr):
    # (BLOCK_M, BLOCK_N): may query `rows` see key `cols`? Real keys only, and with CAUSAL
    # only keys at or before the query's own position (queries are the last TQ of TK).
    valid = cols < TK  # (BLOCK_N,)
    if HAS_MASK:
        valid = valid & (tl.load(mask_ptr + b * TK + cols, mask=cols < TK, other=0) != 0)
    keep = valid[None, :]  # (1, BLOCK_N), broadcast over the queries
    if CAUSAL:
        keep = keep & (cols[None, :] <= rows[:, None] + (TK - TQ))
    return keep


@triton.jit
def _scores(q, k, scale, bias_base, rows, cols, stride_zq, stride_zk, TQ, TK, keep,
            HAS_BIAS: tl.constexpr, FP64: tl.constexpr):
    # S = Q K^T * scale (+ bias), with the hidden entries at -inf: (BLOCK_M, BLOCK_N).
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
    if HAS_BIAS:
        in_range = (rows < TQ)[:, None] & (cols < TK)[None, :]
        bias = tl.load(bias_base + rows[:, None] * stride_zq + cols[None, :] * stride_zk, mask=in_range, other=0.0)
        s = s + bias.to(tl.float64 if FP64 else tl.float32)
    return tl.where(keep, s, float("-inf"))


@triton.jit
def _flash_forward_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, bias_ptr, o_ptr, lse_ptr,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_zb, stride_zh, stride_zq, stride_zk,
    NH, TQ, TK, HS, scale,
    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr,
    UPCAST: tl.constexpr, FP64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh = tl.program_id(1).to(tl.int64)  # (batch, head) pair
    b, h = bh // NH, bh % NH
    first = tl.program_id(0) * BLOCK_M
    rows = first + tl.arange(0, BLOCK_M)  # query positions
    dims = tl.arange(0, BLOCK_D)
    q = _load_tile(q_ptr + b * stride_qb + h * stride_qh, rows, dims, stride_qt, TQ, HS, UPCAST)  # (BLOCK_M, BLOCK_D)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    bias_base = bias_ptr + b * stride_zb + h * stride_zh

    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=ACC)  # running row maximum
    l_i = tl.zeros((BLOCK_M,), dtype=ACC)  # running sum of exp(s - m_i)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=ACC)  # running sum of exp(s - m_i) * v
    hi = TK
    if CAUSAL:  # the block's last query sees keys up to first + BLOCK_M - 1 + (TK - TQ)
        hi = tl.minimum(TK, first + BLOCK_M + (TK - TQ))
    for start in range(0, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # key positions
        k = _load_tile(k_base, cols, dims, stride_kt, TK, HS, UPCAST)  # (BLOCK_N, BLOCK_D)
        v = _load_tile(v_base, cols, dims, stride_vt, TK, HS, UPCAST)
        keep = _visible(mask_ptr, b, rows, cols, TQ, TK, HAS_MASK, CAUSAL)
        s = _scores(q, k, scale, bias_base, rows, cols, stride_zq, stride_zk, TQ, TK, keep, HAS_BIAS, FP64)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # While a row has seen no visible key, m is -inf; shifting by 0 instead keeps
        # exp(-inf - (-inf)) = NaN out: every exp(.) of that row is then exp(-inf) = 0.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_shift)  # rescales what was accumulated under the old maximum
        p = tl.exp(s - m_shift[:, None])  # (BLOCK_M, BLOCK_N)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new

    empty = l_i == 0.0  # rows with no visible key: output 0, L = +inf (see the module docstring)
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.log(tl.where(empty, 1.0, l_i)))
    # O and L are written densely: (B, nh, Tq, hs) and (B, nh, Tq).
    out_mask = (rows < TQ)[:, None] & (dims < HS)[None, :]
    tl.store(o_ptr + (bh * TQ + rows)[:, None] * HS + dims[None, :], o, mask=out_mask)
    tl.store(lse_ptr + bh * TQ + rows, lse, mask=rows < TQ)


@triton.jit
def _row_stats(lse_ptr, delta_ptr, bh, TQ, rows):
    # Rows past Tq read L = +inf, so their P is exp(-inf) = 0 and they add nothing.
    lse = tl.load(lse_ptr + bh * TQ + rows, mask=rows < TQ, other=float("inf"))  # (BLOCK_M,)
    delta = tl.load(delta_ptr + bh * TQ + rows, mask=rows < TQ, other=0.0)
    return lse, delta


@triton.jit
def _probs_and_score_grads(s, v, do, lse, delta):
    # The forward's softmax P, recomputed from L, and dS = P * (dO V^T - delta): the one
    # piece both backward kernels need, each summing it along its own axis.
    p = tl.exp(s - lse[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision="ieee")  # (BLOCK_M, BLOCK_N)
    return p, p * (dp - delta[:, None])


@triton.jit
def _flash_backward_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_zb, stride_zh, stride_zq, stride_zk,
    NH, TQ, TK, HS, scale,
    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr,
    UPCAST: tl.constexpr, FP64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program per block of keys: dK and dV of those keys sum over every query.
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // NH, bh % NH
    first = tl.program_id(0) * BLOCK_N
    cols = first + tl.arange(0, BLOCK_N)  # key positions
    dims = tl.arange(0, BLOCK_D)
    k = _load_tile(k_ptr + b * stride_kb + h * stride_kh, cols, dims, stride_kt, TK, HS, UPCAST)  # (BLOCK_N, BLOCK_D)
    v = _load_tile(v_ptr + b * stride_vb + h * stride_vh, cols, dims, stride_vt, TK, HS, UPCAST)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    do_base = do_ptr + bh * TQ * HS  # dO, like O, is dense (B, nh, Tq, hs)
    bias_base = bias_ptr + b * stride_zb + h * stride_zh

    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=ACC)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=ACC)
    lo = 0
    if CAUSAL:  # queries before first - (TK - TQ) see none of these keys: start at that block
        lo = (tl.maximum(first - (TK - TQ), 0) // BLOCK_M) * BLOCK_M
    for start in range(lo, TQ, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)  # query positions
        q = _load_tile(q_base, rows, dims, stride_qt, TQ, HS, UPCAST)  # (BLOCK_M, BLOCK_D)
        do = _load_tile(do_base, rows, dims, HS, TQ, HS, UPCAST)
        lse, delta = _row_stats(lse_ptr, delta_ptr, bh, TQ, rows)
        keep = _visible(mask_ptr, b, rows, cols, TQ, TK, HAS_MASK, CAUSAL)
        s = _scores(q, k, scale, bias_base, rows, cols, stride_zq, stride_zk, TQ, TK, keep, HAS_BIAS, FP64)
        p, ds = _probs_and_score_grads(s, v, do, lse, delta)
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision="ieee")
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision="ieee")
    out_mask = (cols < TK)[:, None] & (dims < HS)[None, :]
    offsets = (bh * TK + cols)[:, None] * HS + dims[None, :]
    tl.store(dk_ptr + offsets, dk * scale, mask=out_mask)
    tl.store(dv_ptr + offsets, dv, mask=out_mask)


@triton.jit
def _flash_backward_dq_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, dbias_ptr,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_zb, stride_zh, stride_zq, stride_zk,
    NH, TQ, TK, HS, scale,
    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, BIAS_GRAD: tl.constexpr,
    UPCAST: tl.constexpr, FP64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program per block of queries: dQ of those queries sums over every key; with
    # BIAS_GRAD it also writes dS, which is the gradient of the (un-broadcast) bias.
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // NH, bh % NH
    first = tl.program_id(0) * BLOCK_M
    rows = first + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    q = _load_tile(q_ptr + b * stride_qb + h * stride_qh, rows, dims, stride_qt, TQ, HS, UPCAST)
    do = _load_tile(do_ptr + bh * TQ * HS, rows, dims, HS, TQ, HS, UPCAST)
    lse, delta = _row_stats(lse_ptr, delta_ptr, bh, TQ, rows)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    bias_base = bias_ptr + b * stride_zb + h * stride_zh

    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float64 if FP64 else tl.float32)
    hi = TK
    if CAUSAL:
        hi = tl.minimum(TK, first + BLOCK_M + (TK - TQ))
    for start in range(0, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        k = _load_tile(k_base, cols, dims, stride_kt, TK, HS, UPCAST)
        v = _load_tile(v_base, cols, dims, stride_vt, TK, HS, UPCAST)
        keep = _visible(mask_ptr, b, rows, cols, TQ, TK, HAS_MASK, CAUSAL)
        s = _scores(q, k, scale, bias_base, rows, cols, stride_zq, stride_zk, TQ, TK, keep, HAS_BIAS, FP64)
        _, ds = _probs_and_score_grads(s, v, do, lse, delta)
        dq += tl.dot(ds.to(k.dtype), k, input_precision="ieee")
        if BIAS_GRAD:  # dense (B, nh, Tq, Tk); blocks a causal row never reaches stay 0
            in_range = (rows < TQ)[:, None] & (cols < TK)[None, :]
            tl.store(dbias_ptr + (bh * TQ + rows)[:, None] * TK + cols[None, :], ds, mask=in_range)
    out_mask = (rows < TQ)[:, None] & (dims < HS)[None, :]
    tl.store(dq_ptr + (bh * TQ + rows)[:, None] * HS + dims[None, :], dq * scale, mask=out_mask)


# ---- launchers --------------------------------------------------------------------------


def _kernel_args(q, k, v, mask, bias):
    # Q, K, V may be strided views (the model passes (B, T, nh, hs) transposed to
    # (B, nh, T, hs)), as long as each head's vectors are contiguous. The bias is passed
    # as its broadcast view: stride 0 along every broadcast dimension, never copied.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    # The mask as int32 (B*Tk*4 bytes, nothing next to Q, K, V): Triton 3.7 cannot lower int8
    # mask loads next to fp64 dots for sm_90 (found by tests/test_kernels_compile.py).
    mask_arg = mask.to(torch.int32).contiguous() if mask is not None else q  # unused without a mask
    if bias is not None:
        bias_arg = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        bias_strides = bias_arg.stride()
    else:
        bias_arg, bias_strides = q, (0, 0, 0, 0)  # unused without a bias
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *bias_strides)
    return q, k, v, mask_arg, bias_arg, strides


def _constexprs(q, mask, bias, causal):
    return dict(
        HAS_MASK=mask is not None, HAS_BIAS=bias is not None, CAUSAL=bool(causal),
        UPCAST=interpreter_active() and q.dtype in (torch.float16, torch.bfloat16),
        FP64=q.dtype == torch.float64,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=_block_d(q.shape[-1]),
    )


def flash_attention_forward_triton(q, k, v, mask, bias, scale, causal):
    """Returns O (B, nh, Tq, hs) in q's dtype and L (B, nh, Tq) in fp32 (fp64 for fp64 inputs)."""
    B, NH, TQ, HS = q.shape
    TK = k.shape[2]
    o = torch.empty(B, NH, TQ, HS, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, NH, TQ, dtype=_acc_dtype(q.dtype), device=q.device)
    if o.numel() == 0:
        return o, lse.fill_(float("inf"))
    q, k, v, mask_arg, bias_arg, strides = _kernel_args(q, k, v, mask, bias)
    grid = (triton.cdiv(TQ, BLOCK_M), B * NH)
    _flash_forward_kernel[grid](
        q, k, v, mask_arg, bias_arg, o, lse, *strides, NH, TQ, TK, HS, scale, **_constexprs(q, mask, bias, causal)
    )
    return o, lse


def flash_attention_backward_triton(do, q, k, v, mask, bias, o, lse, scale, causal, bias_grad):
    """Returns dQ, dK, dV (dense, in the inputs' dtype) and dS (B, nh, Tq, Tk) in the
    accumulator dtype when ``bias_grad`` (else None)."""
    B, NH, TQ, HS = q.shape
    TK = k.shape[2]
    dq, dk, dv = (torch.zeros(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    ds = torch.zeros(B, NH, TQ, TK, dtype=lse.dtype, device=q.device) if bias_grad else None
    if q.numel() == 0 or k.numel() == 0:
        return dq, dk, dv, ds
    do = do.contiguous()
    # delta_i = sum_d dO_id O_id = sum_j P_ij dP_ij: one dot product per row, cheap in torch.
    delta = (do.to(lse.dtype) * o.to(lse.dtype)).sum(-1)  # (B, nh, Tq)
    q, k, v, mask_arg, bias_arg, strides = _kernel_args(q, k, v, mask, bias)
    meta = _constexprs(q, mask, bias, causal)
    _flash_backward_dkdv_kernel[(triton.cdiv(TK, BLOCK_N), B * NH)](
        q, k, v, mask_arg, bias_arg, do, lse, delta, dk, dv, *strides, NH, TQ, TK, HS, scale, **meta
    )
    _flash_backward_dq_kernel[(triton.cdiv(TQ, BLOCK_M), B * NH)](
        q, k, v, mask_arg, bias_arg, do, lse, delta, dq, ds if bias_grad else lse, *strides,
        NH, TQ, TK, HS, scale, BIAS_GRAD=bias_grad, **meta,
    )  # fmt: skip
    return dq, dk, dv, ds


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- reference --------------------------------------------------------------------------


def causal_mask(tq: int, tk: int, device=None) -> torch.Tensor:
    """(Tq, Tk) bool, True where query i may see key j: j <= i + (Tk - Tq). The Tq queries
    are the last Tq positions of the Tk keys (with a KV cache, the new tokens)."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(tk - tq)


def visibility_bias(visible: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A bool visibility matrix (..., Tq, Tk) (True = may attend) as an additive bias:
    0 where visible, -inf where hidden. Pass it as ``bias`` for any mask that is not
    key padding or causal (prefix LM, K-BERT's visible matrix, UniLM's masks)."""
    if visible.dtype != torch.bool:
        raise TypeError(f"visible must be a bool tensor (True = may attend), got {visible.dtype}")
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(~visible, float("-inf"))


def attention_scores(q, k, attention_mask=None, bias=None, scale=1.0, causal=False):
    """S = Q K^T * scale + bias, with hidden entries at -inf: (B, nh, Tq, Tk), in fp32
    (fp64 for fp64 inputs). The materialised path's scores, shared by the reference and
    by models that need the probabilities themselves (to plot them, or for dropout)."""
    acc = _acc_dtype(q.dtype)
    s = (q.to(acc) @ k.to(acc).transpose(-2, -1)) * scale  # (B, nh, Tq, Tk)
    if bias is not None:
        s = s + bias.to(acc)
    if attention_mask is not None:
        s = s.masked_fill(~attention_mask.bool()[:, None, None, :], float("-inf"))
    if causal:
        s = s.masked_fill(~causal_mask(q.shape[2], k.shape[2], q.device), float("-inf"))
    return s


def flash_attention_forward_reference(q, k, v, mask, bias, scale, causal):
    """The same O and L, with the whole score matrix materialised."""
    s = attention_scores(q, k, mask, bias, scale, causal)  # (B, nh, Tq, Tk)
    lse = torch.logsumexp(s, dim=-1)  # (B, nh, Tq); -inf for a row with no visible key
    lse = lse.masked_fill(lse == float("-inf"), float("inf"))  # ... stored as +inf, as the kernel does
    p = torch.exp(s - lse[..., None])  # softmax; all zeros for an empty row
    return (p @ v.to(s.dtype)).to(q.dtype), lse


def attention_inference_reference(q, k, v, mask, bias, scale, causal):
    """O alone, for calls that need no gradient (evaluation, decoding): no row statistics
    are kept, so PyTorch's fused CPU kernel does it in one call instead of the dozen small
    ops of the reference above; per-op overhead dominates a decode step (Tq = 1) on the CPU.
    Same conventions: a row with no visible key gives zeros (tests/test_kernel_flash_attention.py)."""
    TQ, TK = q.shape[2], k.shape[2]
    keep = mask.bool()[:, None, None, :] if mask is not None else None  # (B, 1, 1, Tk)
    if causal and TQ > 1:  # with Tq = 1 the one query is the last position: it sees every key
        c = causal_mask(TQ, TK, q.device)
        keep = c if keep is None else keep & c
    attn = keep
    if bias is not None:
        attn = bias.to(q.dtype) if keep is None else bias.to(q.dtype).masked_fill(~keep, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn, scale=scale)


def flash_attention_backward_reference(do, q, k, v, mask, bias, o, lse, scale, causal, bias_grad):
    acc = lse.dtype
    p = torch.exp(attention_scores(q, k, mask, bias, scale, causal) - lse[..., None])  # (B, nh, Tq, Tk)
    do32 = do.to(acc)
    dv = p.transpose(-2, -1) @ do32  # (B, nh, Tk, hs)
    dp = do32 @ v.to(acc).transpose(-2, -1)  # (B, nh, Tq, Tk)
    ds = p * (dp - (do32 * o.to(acc)).sum(-1, keepdim=True))
    dq = ds @ k.to(acc) * scale  # (B, nh, Tq, hs)
    dk = ds.transpose(-2, -1) @ q.to(acc) * scale  # (B, nh, Tk, hs)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), ds if bias_grad else None


# ---- autograd and dispatch --------------------------------------------------------------


class FlashAttentionFunction(torch.autograd.Function):
    """Attention for autograd: saves Q, K, V, the mask, the bias, O and L, never the
    (Tq, Tk) probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, mask, bias, scale, causal):
        tensors = [t for t in (q, k, v, mask, bias) if t is not None]
        ctx.used_triton = use_triton(*tensors, op="flash_attention")
        forward = flash_attention_forward_triton if ctx.used_triton else flash_attention_forward_reference
        o, lse = forward(q, k, v, mask, bias, scale, causal)
        ctx.save_for_backward(q, k, v, mask, bias, o, lse)
        ctx.scale, ctx.causal = scale, causal
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, mask, bias, o, lse = ctx.saved_tensors
        bias_grad = bias is not None and ctx.needs_input_grad[4]
        backward = flash_attention_backward_triton if ctx.used_triton else flash_attention_backward_reference
        dq, dk, dv, ds = backward(do, q, k, v, mask, bias, o, lse, ctx.scale, ctx.causal, bias_grad)
        dbias = ds.sum_to_size(bias.shape).to(bias.dtype) if bias_grad else None  # undo the broadcast
        return dq, dk, dv, None, dbias, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    causal: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(Q K^T * scale + bias, masked) V for q (B, nh, Tq, hs), k and v (B, nh, Tk, hs).

    ``attention_mask`` (B, Tk): 1/True for keys that may be attended to, 0/False for
    padding. ``causal``: query i sees key j only when j <= i + (Tk - Tq). ``bias``: added to
    the scaled scores, any float tensor broadcastable to (B, nh, Tq, Tk) (its gradient is
    computed). ``scale`` defaults to 1/sqrt(hs) (T5 passes 1.0). A query that may see no key
    gets zeros."""
    check_tensor("q", q, dim=4, dtypes=FLOAT_DTYPES)
    check_tensor("k", k, dim=4, dtypes=(q.dtype,), device=q.device)
    check_tensor("v", v, dim=4, dtypes=(q.dtype,), device=q.device)
    B, NH, TQ, HS = q.shape
    TK = k.shape[2]
    if k.shape != v.shape or k.shape[:2] != (B, NH) or k.shape[3] != HS:
        raise ValueError(
            "q must be (B, nh, Tq, hs) and k, v both (B, nh, Tk, hs) with the same B, nh, hs; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if HS == 0:
        raise ValueError(f"the head size (last dimension) must be positive, got q {tuple(q.shape)}")
    if attention_mask is not None:
        check_tensor("attention_mask", attention_mask, dim=2, device=q.device)
        if attention_mask.is_floating_point() or attention_mask.is_complex():
            raise TypeError(f"attention_mask must be bool or integer (1 = attend), got {attention_mask.dtype}")
        if tuple(attention_mask.shape) != (B, TK):
            raise ValueError(f"attention_mask must have shape (B, Tk) = {(B, TK)}, got {tuple(attention_mask.shape)}")
    if causal and TQ > TK:
        raise ValueError(
            f"causal attention needs Tq <= Tk (the queries are the last Tq of the Tk positions), got Tq={TQ}, Tk={TK}"
        )
    if bias is not None:
        check_tensor("bias", bias, dim=(1, 2, 3, 4), dtypes=FLOAT_DTYPES, device=q.device)
        try:
            torch.broadcast_shapes(bias.shape, (B, NH, TQ, TK))
            broadcastable = torch.broadcast_shapes(bias.shape, (B, NH, TQ, TK)) == (B, NH, TQ, TK)
        except RuntimeError:
            broadcastable = False
        if not broadcastable:
            raise ValueError(
                f"bias must broadcast to (B, nh, Tq, Tk) = {(B, NH, TQ, TK)}, got {tuple(bias.shape)}"
            )
    scale = 1.0 / math.sqrt(HS) if scale is None else float(scale)
    tensors = [t for t in (q, k, v, attention_mask, bias) if t is not None]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, bias) if t is not None)
    if (not needs_grad and q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64) and q.numel()
            and k.numel() and not use_triton(*tensors, op="flash_attention")):
        return attention_inference_reference(q, k, v, attention_mask, bias, scale, bool(causal))
    return FlashAttentionFunction.apply(q, k, v, attention_mask, bias, scale, bool(causal))
