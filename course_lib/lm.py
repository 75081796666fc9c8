"""Chapter 6: training and evaluating a causal language model on the CPU.

* :class:`CharTokenizer`: one id per character, the simplest tokenizer that can spell any
  text of its alphabet (the chapter's small GPT uses it: no unknown words, and samples that
  are readable even when the model is weak).
* :func:`token_blocks`: a token stream cut into (N, block_size) training blocks.
* :func:`train_causal_lm`: AdamW, warmup + cosine decay, gradient clipping, a tqdm bar; the
  loss is the model's own shifted next-token cross-entropy (maximum likelihood).
* :func:`sliding_window_perplexity`: exp(mean NLL) of a long text under a model with a
  bounded context, evaluated in windows of ``max_length`` moved by ``stride`` as in
  Hugging Face's perplexity guide: every window scores only its last ``stride`` tokens
  (those not scored by the previous window), using the rest as context.
* :func:`token_nll`: the per-position negative log-likelihoods of a batch, for experiments
  (exposure bias, in-context copying).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import tqdm

from .optim import AdamW
from .schedules import linear_warmup_cosine_decay_factor


class CharTokenizer:
    """Characters as tokens: ``encode(text)`` -> ids, ``decode(ids)`` -> text."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        if not self.chars:
            raise ValueError("the text must contain at least one character")
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        missing = sorted(set(text) - set(self.stoi))
        if missing:
            raise ValueError(f"text contains characters outside the alphabet: {missing[:10]}")
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return "".join(self.chars[i] for i in ids)


def token_blocks(ids: torch.Tensor | list[int], block_size: int) -> torch.Tensor:
    """The stream cut into consecutive, non-overlapping blocks: (N, block_size), the tail dropped."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    if block_size < 1 or ids.numel() < block_size:
        raise ValueError(f"block_size must be in [1, {ids.numel()}] (the stream's length), got {block_size}")
    n = ids.numel() // block_size
    return ids[: n * block_size].view(n, block_size)


@dataclass
class LMTrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    seed: int = 0
    log_every: int = 10
    max_seconds: float | None = None  # stop early when the time is up (the book's budget)


def train_causal_lm(model, blocks: torch.Tensor, config: LMTrainConfig, progress: bool = True) -> list[dict]:
    """Maximum-likelihood training: minimise the mean of -log p(x_t | x_<t) over random
    batches of ``blocks``. Returns the logged history ({"step", "loss", "lr"})."""
    import time

    g = torch.Generator().manual_seed(config.seed)
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # no weight decay on biases, LayerNorms, position table
        (no_decay if p.dim() < 2 or "wpe" in name else decay).append(p)
    optimizer = AdamW([{"params": decay, "weight_decay": config.weight_decay},
                       {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    history = []
    model.train()
    start = time.perf_counter()
    bar = tqdm.tqdm(total=config.steps, disable=not progress, desc="training", mininterval=1.0)
    for step in range(config.steps):
        lr = config.lr * linear_warmup_cosine_decay_factor(step, config.warmup_steps, config.steps, min_lr_ratio=0.1)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = blocks[torch.randint(0, len(blocks), (config.batch_size,), generator=g)]
        loss = model(batch, labels=batch).loss  # the shifted loss: position t predicts token t + 1
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % config.log_every == 0 or step == config.steps - 1:
            history.append({"step": step, "loss": loss.item(), "lr": lr})
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
        if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
            break
    bar.close()
    model.eval()
    return history


@torch.no_grad()
def token_nll(model, ids: torch.Tensor) -> torch.Tensor:
    """-log p(x_t | x_<t) for t = 1..T-1 of every row of ids (B, T): (B, T - 1), in nats."""
    logits = model(ids).logits[:, :-1].float()  # position t predicts t + 1
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")


@torch.no_grad()
def sliding_window_perplexity(model, ids: torch.Tensor | list[int], max_length: int, stride: int) -> dict:
    """Perplexity exp(NLL / n) of one long token stream, as in HF's perplexity guide.

    Windows of ``max_length`` tokens start every ``stride`` tokens; in each, only the tokens
    that the previous window did not score get a label (the others are context, label -100),
    so with stride < max_length every token after the first is scored exactly once, with at
    least ``max_length - stride`` tokens of context once the windows are full. stride =
    max_length is the disjoint-chunks evaluation: tokens early in a chunk see little context,
    and each chunk's first token is not scored at all (nothing before it in its window). A
    small stride approaches the model's best, at the price of max_length / stride forward passes.
    Returns {"perplexity", "nll" (mean, nats), "tokens" (scored), "windows"}."""
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length = {max_length}], got {stride}")
    if ids.numel() < 2:
        raise ValueError(f"ids must hold at least 2 tokens, got {ids.numel()}")
    total_nll, scored, windows, prev_end = 0.0, 0, 0, 0
    for begin in range(0, ids.numel(), stride):
        end = min(begin + max_length, ids.numel())
        window = ids[begin:end][None]  # (1, L)
        labels = window.clone()
        labels[:, : -(end - prev_end)] = -100  # only the tokens not scored before; the rest is context
        out = model(window, labels=labels)
        # The loss is a mean over the labelled positions after the shift: count them the same way.
        n = int((labels[:, 1:] != -100).sum())
        total_nll += out.loss.item() * n
        scored += n
        windows += 1
        prev_end = end
        if end == ids.numel():
            break
    nll = total_nll / scored
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": scored, "windows": windows}


__all__ = ["CharTokenizer", "LMTrainConfig", "sliding_window_perplexity", "token_blocks", "token_nll",
           "train_causal_lm"]
