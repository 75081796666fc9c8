"""Chapter 7: where the normalisation goes, pre-LN or post-LN, measured on a small model.

The original Transformer (Vaswani et al., 2017), BERT and BART normalise *after* the residual
addition (**post-LN**, 后置层归一化)::

    x = Norm(x + Sublayer(x))

GPT-2 and T5 normalise the sub-layer's *input* and leave the residual stream untouched
(**pre-LN**, 前置层归一化), with one more norm after the last layer::

    x = x + Sublayer(Norm(x))

Xiong et al. (2020) showed that at initialisation the gradients of the last post-LN layers are
large (of order d·sqrt(ln d) for the last layer's feed-forward weights, whatever the depth), so a large learning rate
right from step 0 can throw the model off, and a warm-up of the learning rate is needed; in
a pre-LN stack they shrink like 1/sqrt(L), and training works without warm-up.
:func:`lr_sweep` reproduces the comparison on a synthetic language-modelling task that runs on
a CPU in seconds: the same stack (``torch.nn.TransformerEncoderLayer``, whose ``norm_first``
switches the placement) trained over a range of learning rates, with and without warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def markov_corpus(vocab_size: int = 32, n_sequences: int = 256, length: int = 24, seed: int = 0) -> torch.Tensor:
    """(n_sequences, length) token ids from a random first-order Markov chain whose rows are
    peaked (a Dirichlet(0.1) draw each): a language a small model can learn in a few hundred
    steps, whose best possible loss is the chain's entropy rate."""
    g = torch.Generator().manual_seed(seed)
    gamma = torch._standard_gamma(torch.full((vocab_size, vocab_size), 0.1), generator=g)
    transitions = gamma / gamma.sum(-1, keepdim=True)  # (V, V), each row a distribution
    ids = torch.empty(n_sequences, length, dtype=torch.long)
    ids[:, 0] = torch.randint(0, vocab_size, (n_sequences,), generator=g)
    for t in range(1, length):
        ids[:, t] = torch.multinomial(transitions[ids[:, t - 1]], 1, generator=g).squeeze(1)
    return ids


class TinyLM(nn.Module):
    """A causal Transformer LM of ``n_layer`` blocks, pre-LN (``norm_first=True``, with a final
    LayerNorm) or post-LN (``norm_first=False``, as the original Transformer)."""

    def __init__(self, vocab_size: int, d_model: int = 64, n_layer: int = 6, n_head: int = 4, max_len: int = 64,
                 norm_first: bool = True):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_head, 4 * d_model, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=norm_first)
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(d_model) if norm_first else nn.Identity()  # pre-LN needs a final norm
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(T, device=ids.device))  # (B, T, D)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=ids.device)
        return self.head(self.ln_f(self.blocks(x, mask=mask, is_causal=True)))  # (B, T, V)


def unigram_entropy(corpus: torch.Tensor) -> float:
    """The loss (nats per token) of the best model that ignores the context: the entropy of
    the next tokens' frequencies. A run that ends above it has learned nothing of the chain."""
    counts = torch.bincount(corpus[:, 1:].reshape(-1)).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


@dataclass
class Run:
    norm_first: bool
    lr: float
    warmup_steps: int
    losses: list[float]
    baseline: float  # unigram_entropy of the corpus

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10):]  # the mean of the last tenth of the steps
        return sum(tail) / len(tail)

    @property
    def failed(self) -> bool:
        """Not finite, or ending no better than the unigram baseline: the large early steps
        knocked the model into the state of predicting token frequencies only, and it did not
        recover."""
        return not all(math.isfinite(v) for v in self.losses) or self.final_loss >= self.baseline - 0.05


def train(corpus: torch.Tensor, *, norm_first: bool, lr: float, warmup_steps: int = 0, steps: int = 80,
          batch_size: int = 16, seed: int = 0, **model_kwargs) -> Run:
    """Adam (beta2 = 0.98, as the Transformer paper) at a constant ``lr`` after a linear warm-up of
    ``warmup_steps``; the training loss of every step."""
    torch.manual_seed(seed)
    V = int(corpus.max()) + 1
    model = TinyLM(V, norm_first=norm_first, **model_kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / warmup_steps) if warmup_steps else 1.0)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    for _ in range(steps):
        batch = corpus[torch.randint(0, len(corpus), (batch_size,), generator=g)]
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), batch[:, 1:].reshape(-1))
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return Run(norm_first, lr, warmup_steps, losses, unigram_entropy(corpus))


def lr_sweep(corpus: torch.Tensor, lrs, warmup_steps: int = 30, **kwargs) -> list[Run]:
    """Every (placement, learning rate, with / without warm-up) combination."""
    return [train(corpus, norm_first=nf, lr=lr, warmup_steps=w, **kwargs)
            for nf in (False, True) for w in (0, warmup_steps) for lr in lrs]


__all__ = ["Run", "TinyLM", "lr_sweep", "markov_corpus", "train", "unigram_entropy"]
