"""Chapter 6: XLNet's permutation language model and Transformer-XL's segment recurrence.

**Permutation language modelling** (排列语言模型; Yang et al., 2019). An autoregressive
model factorises p(x) left to right; XLNet maximises the likelihood over *all* factorisation
orders z of the T positions,

    max_theta  E_{z ~ Z_T} [ sum_t log p_theta(x_{z_t} | x_{z_<t}) ],

so that in expectation every token is predicted from every subset of the others (both
sides), with no [MASK] token. The text is **not** reordered: tokens keep their positions
(and position encodings); only the attention masks change. With rank(i) = the index of
position i in z, position i may use position j iff rank(j) < rank(i).

Predicting x_{z_t} needs to know *which position* is predicted (z_t) without seeing its
content, while the representations of the earlier tokens must contain their content. Hence
**two-stream attention**: the *content stream* h_i sees x_i and everything earlier in the
order (rank(j) <= rank(i)); the *query stream* g_i sees its own position only, plus the
content h_j of the tokens strictly earlier (rank(j) < rank(i)), and predicts x_i. Both
streams share the weights. XLNet trains only the last 1/K of each order (partial prediction,
K = 6 or 7): the first tokens of an order have too little context to be worth the cost.

**Transformer-XL** (Dai et al., 2019), XLNet's backbone: a long text is cut into segments;
when the model processes segment s, each layer also attends to the cached hidden states of
segment s - 1 (the *memory*), which receive no gradient (``detach``). The reachable context
therefore grows with depth: the top layer sees M = mem_len states back, and each of those saw
its own segment and memory one layer down, so the last token of a segment of S reaches
(S - 1) + M + (L - 1) S tokens back with L layers (M <= S): the paper's O(N x L), N = S
(measured by :func:`context_reach`). Absolute
positions would collide across segments (every segment restarts at 0), so attention uses
**relative positions**: the score of query i and key j is

    (q_i + u) . k_j  +  (q_i + v) . W_R r_{i-j}     (r_d: the sinusoid of distance d)

with two learned vectors u, v shared by all positions (Dai et al., eq. in section 3.3).
Here the first term goes through the FlashAttention kernel with q + u as the queries, the
second is its additive ``bias``, and the causal mask aligned to the bottom right is exactly
the memory's (query i of the segment sees memory and segment keys j <= i + mem).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels.flash_attention import flash_attention, visibility_bias
from .models.layers import LayerNorm

# ---- permutation masks -----------------------------------------------------------------


def factorisation_order(T: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random factorisation order: a permutation z of 0..T-1 (z[t] = the position predicted t-th)."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    return torch.randperm(T, generator=generator)


def order_ranks(order: torch.Tensor) -> torch.Tensor:
    """rank[i] = t such that order[t] = i: when position i comes in the order. (..., T)."""
    _check_order(order)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return ranks


def _check_order(order) -> None:
    if not isinstance(order, torch.Tensor) or order.dim() not in (1, 2) or order.is_floating_point():
        raise ValueError(f"order must be an integer tensor (T,) or (B, T), got {getattr(order, 'shape', order)!r}")
    T = order.shape[-1]
    if not torch.equal(order.sort(dim=-1).values, torch.arange(T, device=order.device).expand_as(order)):
        raise ValueError(f"order must be a permutation of 0..{T - 1}, got {order.tolist()}")


def permutation_masks(order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(content, query) visibility for the factorisation ``order`` (T,) or (B, T), each
    (..., T, T) bool with True = position i (row) may attend to position j (column):

    * content stream: rank(j) <= rank(i), so it sees its own token;
    * query stream:   rank(j) <  rank(i), never its own token.

    With the identity order these are the causal mask and the strictly causal mask."""
    ranks = order_ranks(order)
    r_i, r_j = ranks[..., :, None], ranks[..., None, :]
    return r_j <= r_i, r_j < r_i


def hf_perm_mask(order: torch.Tensor) -> torch.Tensor:
    """The same order as Hugging Face's ``XLNetModel(perm_mask=...)`` wants it: (B, T, T)
    float, 1.0 where i may NOT attend to j (its query stream's view; HF adds the self-view of
    the content stream itself)."""
    _, query = permutation_masks(order if order.dim() == 2 else order[None])
    return (~query).float()


def partial_prediction_targets(order: torch.Tensor, K: float = 6) -> torch.Tensor:
    """Which positions are predicted under partial prediction: the last ceil(T / K) of the
    order (at least one). Bool (..., T)."""
    if not K >= 1:
        raise ValueError(f"K must be >= 1 (1 predicts every token), got {K!r}")
    T = order.shape[-1]
    n = max(1, math.ceil(T / K))
    return order_ranks(order) >= T - n


# ---- a tiny two-stream model --------------------------------------------------------------


@dataclass
class TwoStreamConfig:
    vocab_size: int = 64
    n_positions: int = 32
    d_model: int = 32
    n_head: int = 2
    n_layer: int = 2
    d_inner: int = 64


class TwoStreamLayer(nn.Module):
    """One post-LN layer run on both streams with the same weights: the content stream
    attends to content (rank <= own), the query stream attends to content (rank < own)."""

    def __init__(self, config: TwoStreamConfig):
        super().__init__()
        d = config.d_model
        self.n_head = config.n_head
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln_attn, self.ln_ff = LayerNorm(d), LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, config.d_inner), nn.GELU(), nn.Linear(config.d_inner, d))

    def _heads(self, x):
        B, T, d = x.shape
        return x.view(B, T, self.n_head, d // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def attend(self, queries, content, bias):
        k, v = self._heads(self.k(content)), self._heads(self.v(content))
        y = flash_attention(self._heads(self.q(queries)), k, v, bias=bias)  # rows with no visible key: 0
        B, _, T, _ = y.shape
        y = self.o(y.transpose(1, 2).reshape(B, T, -1))
        x = self.ln_attn(y, residual=queries)
        return self.ln_ff(self.ff(x), residual=x)

    def forward(self, h, g, content_bias, query_bias):
        return self.attend(h, h, content_bias), self.attend(g, h, query_bias)  # g's keys are h: content


class TwoStreamLM(nn.Module):
    """XLNet's two streams in a few lines: h0 = token + position, g0 = w + position (a
    learned vector w instead of the token: the query knows *where*, not *what*). Returns
    the logits of both streams; the query stream's are the permutation LM's predictions."""

    def __init__(self, config: TwoStreamConfig):
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.n_positions, config.d_model)  # the ORIGINAL positions
        self.w = nn.Parameter(torch.randn(config.d_model) * 0.02)
        self.layers = nn.ModuleList(TwoStreamLayer(config) for _ in range(config.n_layer))
        self.head = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, input_ids, order):
        """input_ids (B, T); order (T,) or (B, T). -> (content logits, query logits), (B, T, V) each."""
        B, T = input_ids.shape
        if order.shape[-1] != T:
            raise ValueError(f"order must have T = {T} entries, got {tuple(order.shape)}")
        content, query = permutation_masks(order.expand(B, T))  # (B, T, T)
        content_bias = visibility_bias(content)[:, None]  # (B, 1, T, T): 0 visible, -inf hidden
        query_bias = visibility_bias(query)[:, None]
        p = self.pos(torch.arange(T, device=input_ids.device))  # (T, d)
        h = self.tok(input_ids) + p  # content stream: what and where
        g = (self.w + p).expand(B, T, -1)  # query stream: where only
        for layer in self.layers:
            h, g = layer(h, g, content_bias, query_bias)
        return self.head(h), self.head(g)


# ---- Transformer-XL ------------------------------------------------------------------------


def sinusoid(distances: torch.Tensor, d_model: int) -> torch.Tensor:
    """The Transformer's sinusoid encoding of (relative) distances: (n,) -> (n, d_model)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d_model, 2, device=distances.device, dtype=torch.float32) / d_model))
    angles = distances.float()[:, None] * inv_freq[None, :]  # (n, d/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (n, d)


@dataclass
class TransformerXLConfig:
    vocab_size: int = 64
    d_model: int = 32
    n_head: int = 2
    n_layer: int = 2
    d_inner: int = 64
    mem_len: int = 16  # hidden states kept per layer for the next segment (0: a vanilla segment model)


class RelPartialLearnableAttention(nn.Module):
    """Transformer-XL's attention (its "relative partial learnable" form), with memory."""

    def __init__(self, config: TransformerXLConfig):
        super().__init__()
        d, nh = config.d_model, config.n_head
        self.n_head, self.head_size = nh, d // nh
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.r_net = nn.Linear(d, d, bias=False)  # W_R: projects the distance encodings
        self.r_w_bias = nn.Parameter(torch.zeros(nh, d // nh))  # u: content bias
        self.r_r_bias = nn.Parameter(torch.zeros(nh, d // nh))  # v: position bias
        self.o = nn.Linear(d, d, bias=False)

    def forward(self, x, mem):
        """x (B, S, d): the segment; mem (B, M, d): the previous segment's states at this
        layer's input (no gradient). Query i (of S) sees keys j <= i + M (of M + S)."""
        B, S, d = x.shape
        M = mem.shape[1]
        nh, hs = self.n_head, self.head_size
        q, _, _ = self.qkv(x).split(d, dim=-1)
        _, k, v = self.qkv(torch.cat([mem, x], dim=1)).split(d, dim=-1)  # keys over memory and segment
        q = q.view(B, S, nh, hs).transpose(1, 2)  # (B, nh, S, hs)
        k, v = (t.view(B, M + S, nh, hs).transpose(1, 2) for t in (k, v))  # (B, nh, M+S, hs)
        # Position term (q_i + v) . W_R r_{i+M-j} for every distance 0..M+S-1, then gathered per (i, j).
        r = self.r_net(sinusoid(torch.arange(M + S, device=x.device), d)).view(M + S, nh, hs)  # (M+S, nh, hs)
        bd = torch.einsum("bnid,rnd->bnir", q + self.r_r_bias[:, None], r)  # (B, nh, S, distance)
        distance = (torch.arange(S, device=x.device)[:, None] + M - torch.arange(M + S, device=x.device)[None, :])
        bd = bd.gather(-1, distance.clamp(min=0).expand(B, nh, S, M + S))  # (B, nh, S, M+S); j > i+M masked below
        scale = hs**-0.5
        y = flash_attention(q + self.r_w_bias[:, None], k, v, scale=scale, causal=True, bias=bd * scale)
        return self.o(y.transpose(1, 2).reshape(B, S, d))


class TransformerXLLayer(nn.Module):
    def __init__(self, config: TransformerXLConfig):
        super().__init__()
        self.attn = RelPartialLearnableAttention(config)
        self.ln_1, self.ln_2 = LayerNorm(config.d_model), LayerNorm(config.d_model)
        self.ff = nn.Sequential(nn.Linear(config.d_model, config.d_inner), nn.ReLU(),
                                nn.Linear(config.d_inner, config.d_model))

    def forward(self, x, mem):
        x = self.ln_1(self.attn(x, mem), residual=x)  # post-LN, as the original
        return self.ln_2(self.ff(x), residual=x)


@dataclass
class TransformerXLOutput:
    logits: torch.Tensor  # (B, S, V)
    mems: tuple[torch.Tensor, ...]  # per layer (B, <= mem_len, d): the next segment's memory, detached


class TransformerXL(nn.Module):
    """A tiny Transformer-XL language model: ``forward(segment, mems)`` -> logits and the
    memory for the next segment."""

    def __init__(self, config: TransformerXLConfig):
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(TransformerXLLayer(config) for _ in range(config.n_layer))
        self.head = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, input_ids, mems=None):
        B, S = input_ids.shape
        if mems is None:
            mems = tuple(torch.zeros(B, 0, self.config.d_model, device=input_ids.device) for _ in self.layers)
        if len(mems) != len(self.layers):
            raise ValueError(f"mems must hold one tensor per layer ({len(self.layers)}), got {len(mems)}")
        x = self.tok(input_ids) * self.config.d_model**0.5  # no absolute position: positions are relative
        new_mems = []
        for layer, mem in zip(self.layers, mems):
            # The next segment's memory at this layer: this layer's inputs, the last mem_len of them,
            # with no gradient: segment s's loss never back-propagates into segment s - 1.
            keep = self.config.mem_len
            new_mems.append(torch.cat([mem, x], dim=1)[:, -keep:].detach() if keep else x[:, :0].detach())
            x = layer(x, mem)
        return TransformerXLOutput(self.head(x), tuple(new_mems))


@torch.no_grad()
def context_reach(model: TransformerXL, segment_len: int, n_segments: int, *, seed: int = 0,
                  tol: float = 1e-6) -> torch.Tensor:
    """How far back the model sees, measured: run ``n_segments`` segments with the memory;
    for every earlier token, change it and record whether the logits of the *last* token of
    the last segment change. Returns a bool tensor over distances 0..(n_segments*segment_len - 1)
    back from that last token (True = the token at that distance influences it)."""
    g = torch.Generator().manual_seed(seed)
    total = n_segments * segment_len
    ids = torch.randint(0, model.config.vocab_size, (1, total), generator=g)

    def last_logits(seq):
        mems = None
        for s in range(n_segments):
            out = model(seq[:, s * segment_len : (s + 1) * segment_len], mems)
            mems = out.mems
        return out.logits[0, -1]

    base = last_logits(ids)
    reach = torch.zeros(total, dtype=torch.bool)
    variants = ids.repeat(total, 1)
    variants[torch.arange(total), torch.arange(total)] = (ids[0] + 1) % model.config.vocab_size  # one change per row
    for pos in range(total):
        reach[total - 1 - pos] = (last_logits(variants[pos : pos + 1]) - base).abs().max() > tol
    return reach


__all__ = [
    "TransformerXL", "TransformerXLConfig", "TransformerXLOutput", "TwoStreamConfig", "TwoStreamLM",
    "context_reach", "factorisation_order", "hf_perm_mask", "order_ranks", "partial_prediction_targets",
    "permutation_masks", "sinusoid",
]  # fmt: skip
