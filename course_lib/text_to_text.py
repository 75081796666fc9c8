"""Chapter 7: T5's text-to-text format on toy tasks, small enough to train on a CPU.

T5 casts every task as "input text -> output text", with the task named by a prefix of the
input ("translate English to German: ...", "cola sentence: ..."; Raffel et al., 2020, §2.4):
one model, one loss (the decoder's cross-entropy) and one decoding procedure serve all tasks,
and a classifier's answer is a word. :func:`toy_examples` builds three such tasks over a small
word vocabulary: ``reverse:`` (the words backwards), ``sort:`` (alphabetical order) and
``count:`` (how many words, written as a word); :func:`train_text_to_text` trains a tiny
:class:`~course_lib.models.t5.T5ForConditionalGeneration` on a mixture of them, and
:func:`exact_match` decodes greedily with the KV cache and scores whole answers.
"""

from __future__ import annotations

import torch

from .models.t5 import T5Config, T5ForConditionalGeneration
from .span_corruption import collate_seq2seq

WORDS = ("apple bird cat dog egg fish goat hat ink jam kite lamp moon nest owl pig").split()
NUMBERS = ("zero one two three four five six seven eight nine").split()
TASKS = ("reverse", "sort", "count")


class WordVocab:
    """Word-level ids in T5's layout: 0 ``<pad>`` (also the decoder start), 1 ``</s>``, 2 ``<unk>``."""

    def __init__(self, words):
        self.itos = ["<pad>", "</s>", "<unk>", *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, 2) for w in text.split()] + [1]

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return " ".join(self.itos[i] for i in ids if i > 2)


def toy_vocab() -> WordVocab:
    return WordVocab([f"{t}:" for t in TASKS] + WORDS + [n for n in NUMBERS if n not in WORDS])


def toy_examples(n: int, seed: int = 0, min_words: int = 2, max_words: int = 6) -> list[tuple[str, str]]:
    """n (input, target) string pairs, the three tasks in turn, words drawn with replacement."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(n):
        k = int(torch.randint(min_words, max_words + 1, (), generator=g))
        words = [WORDS[j] for j in torch.randint(0, len(WORDS), (k,), generator=g).tolist()]
        task = TASKS[i % len(TASKS)]
        target = {"reverse": words[::-1], "sort": sorted(words), "count": [NUMBERS[k]]}[task]
        pairs.append((f"{task}: " + " ".join(words), " ".join(target)))
    return pairs


def tiny_t5_config(vocab_size: int) -> T5Config:
    """Two encoder and two decoder layers of width 64: T5's architecture at 1/5,000 of t5-small's size."""
    return T5Config(vocab_size=vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=16, relative_attention_max_distance=32, dropout_rate=0.0)


def train_text_to_text(pairs, vocab: WordVocab, steps: int = 300, batch_size: int = 32, lr: float = 3e-3,
                       seed: int = 0, progress=None):
    """AdamW on the mixture of tasks, teacher forcing with ``labels`` (the model shifts them right).
    Returns the model and the loss of every step."""
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(tiny_t5_config(len(vocab)))
    encoded = [(vocab.encode(s), vocab.encode(t)) for s, t in pairs]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    steps_iter = progress(range(steps)) if progress else range(steps)
    model.train()
    for _ in steps_iter:
        batch = collate_seq2seq([encoded[i] for i in torch.randint(0, len(encoded), (batch_size,), generator=g)],
                                pad_token_id=0)
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses


@torch.no_grad()
def exact_match(model, pairs, vocab: WordVocab, max_new_tokens: int = 10) -> dict[str, float]:
    """Greedy decoding (KV cache) of every input; the fraction of exactly right answers per task."""
    batch = collate_seq2seq([(vocab.encode(s), vocab.encode(t)) for s, t in pairs], pad_token_id=0)
    out = model.generate(batch["input_ids"], max_new_tokens, attention_mask=batch["attention_mask"])
    right: dict[str, list[bool]] = {}
    for (source, target), ids in zip(pairs, out):
        right.setdefault(source.split(":")[0], []).append(vocab.decode(ids) == target)
    return {task: sum(v) / len(v) for task, v in right.items()}


__all__ = ["WordVocab", "exact_match", "tiny_t5_config", "toy_examples", "toy_vocab", "train_text_to_text"]
