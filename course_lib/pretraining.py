"""Chapter 4: pretraining BERT: masked LM inputs, next-sentence pairs, a training loop.

* :func:`mask_tokens`: BERT's masked language model (MLM) corruption. 15% of the real
  tokens are chosen for prediction; of those, 80% become [MASK], 10% a random token and
  10% stay unchanged. The random and unchanged 20% exist because [MASK] never appears
  when the model is fine-tuned: the model may not assume that only [MASK] positions
  matter, so it has to keep a good representation of every token.
* :func:`create_nsp_examples`: next sentence prediction (NSP) pairs "[CLS] A [SEP] B
  [SEP]" where B really follows A half of the time and comes from another document
  otherwise, built as Google's ``create_pretraining_data.py`` does.
* :func:`pretrain`: a small training loop (AdamW, warmup then linear decay, gradient
  clipping) with a tqdm progress bar and checkpoints that resume exactly.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import tqdm

from .optim import AdamW

IGNORE_INDEX = -100  # label of positions the MLM loss skips (F.cross_entropy's default ignore_index)


# ---- masked language model ------------------------------------------------------------


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    vocab_size: int,
    mask_token_id: int,
    special_token_ids: Iterable[int],
    attention_mask: torch.Tensor | None = None,
    mlm_probability: float = 0.15,
    mask_probability: float = 0.8,
    random_probability: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's MLM corruption of a batch of token ids. Returns ``(inputs, labels)``.

    Every token that is neither special (``special_token_ids``: [CLS], [SEP], [PAD], ...)
    nor padding (``attention_mask == 0``) is selected independently with probability
    ``mlm_probability``, as Hugging Face's data collator does (Google's script instead
    picks exactly round(15% of the length) positions per sequence). A selected token is
    replaced by [MASK] with probability 0.8, by a uniformly random non-special token with
    probability 0.1, and left as it is otherwise. ``labels`` holds the original id at
    the selected positions and -100 everywhere else.

    All random numbers come from ``generator`` (on the ids' device; the default generator
    if None), so a seed fixes the masking; nothing leaves the ids' device."""
    if not 0 <= mlm_probability <= 1 or not 0 <= mask_probability + random_probability <= 1:
        raise ValueError(
            f"probabilities must lie in [0, 1] with mask + random <= 1, got mlm={mlm_probability}, "
            f"mask={mask_probability}, random={random_probability}"
        )
    if input_ids.is_floating_point():
        raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
    device = input_ids.device
    special = torch.tensor(sorted(set(special_token_ids)), dtype=input_ids.dtype, device=device)
    candidates = ~torch.isin(input_ids, special)
    if attention_mask is not None:
        candidates &= attention_mask.bool()

    def uniform():
        return torch.rand(input_ids.shape, generator=generator, device=device)

    selected = candidates & (uniform() < mlm_probability)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    u = uniform()  # one draw decides between [MASK], random and unchanged
    to_mask = selected & (u < mask_probability)
    to_random = selected & (u >= mask_probability) & (u < mask_probability + random_probability)

    # Random replacements are drawn from the non-special ids only.
    allowed = torch.ones(vocab_size, dtype=torch.bool, device=device)
    allowed[special[special < vocab_size]] = False
    allowed_ids = allowed.nonzero().squeeze(1)  # (V - #special,)
    pick = torch.randint(len(allowed_ids), input_ids.shape, generator=generator, device=device)
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(to_random, allowed_ids[pick].to(input_ids.dtype), inputs)
    return inputs, labels


# ---- next sentence prediction ---------------------------------------------------------


@dataclass
class NSPExample:
    tokens_a: list[int]
    tokens_b: list[int]
    is_random_next: bool  # the NSP label: True (1, NotNext) if B was drawn from another document


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int, rng: random.Random) -> None:
    """Shorten A and B in place until len(A) + len(B) <= max_num_tokens: always cut the
    longer (B on a tie), at the front or the back at random, as BERT's
    ``create_pretraining_data.py`` does (the random side avoids always losing sentence ends)."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def create_nsp_examples(
    documents: Sequence[Sequence[Sequence[int]]],
    max_num_tokens: int,
    rng: random.Random,
    short_seq_prob: float = 0.1,
) -> list[NSPExample]:
    """NSP pairs from ``documents`` (each a list of sentences, each a list of token ids).

    Following ``create_pretraining_data.py``: walk through each document collecting
    sentences until they reach a target length (``max_num_tokens``, or with probability
    ``short_seq_prob`` a random shorter one, so the model also sees short inputs); A is a
    random-length prefix of the collected sentences; with probability 1/2, B is the rest
    (IsNext), otherwise B is taken from a random position of another document (NotNext)
    and the unused sentences go back to be used for the next pair; finally the pair is cut
    to ``max_num_tokens`` with :func:`truncate_seq_pair` (leave 3 for [CLS], [SEP], [SEP]).

    One deviation: when only one sentence was collected, Google's script always makes B
    random, which tilts the labels towards NotNext; here that sentence is split at a random
    token instead when the coin says IsNext, so the labels stay 50/50."""
    if len(documents) < 2:
        raise ValueError(f"NSP needs at least 2 documents to draw random next sentences from, got {len(documents)}")
    if max_num_tokens < 2:
        raise ValueError(f"max_num_tokens must be >= 2 (one token each for A and B), got {max_num_tokens}")
    examples = []
    for doc_index, document in enumerate(documents):
        document = [list(s) for s in document if len(s)]
        # One target length per document, as in Google's script.
        target = rng.randint(2, max_num_tokens) if rng.random() < short_seq_prob else max_num_tokens
        chunk, length, i = [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for s in chunk[:a_end] for t in s]
                is_random = rng.random() < 0.5
                if is_random or (len(chunk) == 1 and len(tokens_a) < 2):
                    is_random = True
                    tokens_b = _random_continuation(documents, doc_index, max(1, target - len(tokens_a)), rng)
                    i -= len(chunk) - a_end  # the sentences not used for A are used again
                elif len(chunk) == 1:  # one sentence: split it, so that an IsNext pair still exists
                    cut = rng.randint(1, len(tokens_a) - 1)
                    tokens_a, tokens_b = tokens_a[:cut], tokens_a[cut:]
                else:
                    tokens_b = [t for s in chunk[a_end:] for t in s]
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                examples.append(NSPExample(tokens_a, tokens_b, is_random))
                chunk, length = [], 0
            i += 1
    return examples


def _random_continuation(documents, doc_index, target_length, rng):
    for _ in range(10):  # another document: its sentences are unrelated to A
        other = rng.randint(0, len(documents) - 1)
        if other != doc_index and any(len(s) for s in documents[other]):
            break
    sentences = [s for s in documents[other] if len(s)]
    tokens = []
    for s in sentences[rng.randint(0, len(sentences) - 1):]:
        tokens.extend(s)
        if len(tokens) >= target_length:
            break
    return tokens


def documents_from_sentences(sentences: Sequence[Sequence[int]], sentences_per_document: int = 16):
    """Group consecutive sentences into pseudo-documents for NSP.

    ``course_lib.data.stdlib_docstrings_corpus`` is a flat list of sentences in source
    order, so neighbours mostly come from the same docstring or module: a group of
    consecutive sentences is a fair stand-in for a document."""
    n = sentences_per_document
    return [list(sentences[i : i + n]) for i in range(0, len(sentences), n)]


def encode_examples(examples: Sequence[NSPExample], *, cls_id: int, sep_id: int, pad_id: int, max_length: int):
    """Pack pairs into padded (N, max_length) tensors "[CLS] A [SEP] B [SEP] [PAD]...":
    ``input_ids``, ``token_type_ids``, ``attention_mask`` and ``next_sentence_label`` (N,)."""
    N = len(examples)
    ids = torch.full((N, max_length), pad_id, dtype=torch.long)
    types = torch.zeros(N, max_length, dtype=torch.long)
    mask = torch.zeros(N, max_length, dtype=torch.long)
    for n, ex in enumerate(examples):
        seq = [cls_id, *ex.tokens_a, sep_id, *ex.tokens_b, sep_id]
        if len(seq) > max_length:
            raise ValueError(f"example {n} has {len(seq)} tokens with the specials, more than max_length={max_length}")
        ids[n, : len(seq)] = torch.tensor(seq)
        types[n, len(ex.tokens_a) + 2 : len(seq)] = 1  # "B [SEP]" is segment 1
        mask[n, : len(seq)] = 1
    labels = torch.tensor([int(ex.is_random_next) for ex in examples], dtype=torch.long)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "next_sentence_label": labels}


def stdlib_pretraining_data(
    vocab_size: int = 4000,
    max_length: int = 64,
    sentences_per_document: int = 16,
    max_sentences: int | None = None,
    seed: int = 0,
    tokenizer=None,
):
    """Everything the book needs to pretrain a tiny BERT offline: a WordPiece tokenizer
    trained on the standard library's docstrings (unless one is given) and those
    docstrings as encoded NSP pairs. Returns ``(tokenizer, tensors)``."""
    from .data import stdlib_docstrings_corpus
    from .tokenization import WordPieceTokenizer

    texts = [" ".join(s) for s in stdlib_docstrings_corpus(max_sentences)]
    if tokenizer is None:
        tokenizer = WordPieceTokenizer.train(texts, vocab_size)
    sentences = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t)) for t in texts]
    documents = documents_from_sentences(sentences, sentences_per_document)
    examples = create_nsp_examples(documents, max_length - 3, random.Random(seed))
    ids = tokenizer.vocab
    return tokenizer, encode_examples(
        examples, cls_id=ids["[CLS]"], sep_id=ids["[SEP]"], pad_id=ids["[PAD]"], max_length=max_length
    )


# ---- the training loop ----------------------------------------------------------------


@dataclass
class PretrainingConfig:
    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3  # peak; BERT-base used 1e-4 with batch 256, a tiny model tolerates more
    warmup_steps: int = 100  # linear warmup to the peak, then linear decay to 0 (as BERT)
    weight_decay: float = 0.01  # not applied to biases and LayerNorm parameters
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    max_grad_norm: float = 1.0
    mlm_probability: float = 0.15
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end (when a checkpoint_dir is given)


def learning_rate(step: int, config: PretrainingConfig) -> float:
    """Linear warmup over warmup_steps, then linear decay to 0 at max_steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr * max(0.0, (config.max_steps - step) / max(1, config.max_steps - config.warmup_steps))


def _param_groups(model: torch.nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for p in model.parameters():
        # Biases and LayerNorm gains/shifts are not weights that overfit: BERT exempts them.
        (no_decay if p.dim() < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def pretrain(
    model,
    data: dict[str, torch.Tensor],
    config: PretrainingConfig,
    *,
    mask_token_id: int,
    special_token_ids: Iterable[int],
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    until: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train a ``BertForPreTraining`` on encoded NSP pairs (see :func:`encode_examples`)
    with MLM + NSP loss; returns the history, one dict per ``log_every`` steps.

    Masking is dynamic (new masks every time an example is seen, as RoBERTa later made
    standard; BERT fixed 10 maskings in advance). Every random choice of step s (batch
    order, masks, dropout) is a function of (seed, s), so with ``checkpoint_dir`` a run
    that stops and resumes from its last checkpoint continues exactly as if it had not
    stopped. ``until`` stops after that step (checkpointing there) while the learning-rate
    schedule still runs to ``config.max_steps``: a long run split across notebook cells."""
    special_token_ids = sorted(set(special_token_ids))
    device = next(model.parameters()).device
    data = {k: v.to(device) for k, v in data.items()}
    N = len(data["input_ids"])
    if N < config.batch_size:
        raise ValueError(f"batch_size={config.batch_size} is larger than the data ({N} examples)")
    # Chapter 3's AdamW (decoupled weight decay); it reproduces torch.optim.AdamW bit for bit.
    optimizer = AdamW(
        _param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas, eps=config.eps
    )
    step, history = 0, []
    if checkpoint_dir is not None and resume and latest_checkpoint(checkpoint_dir) is not None:
        step, history = load_checkpoint(latest_checkpoint(checkpoint_dir), model, optimizer)

    steps_per_epoch = N // config.batch_size  # the last incomplete batch is dropped
    rng_devices = []  # the CUDA devices whose generator fork_rng must save and restore
    if device.type == "cuda":
        rng_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    model.train()
    last = config.max_steps if until is None else min(until, config.max_steps)
    bar = tqdm.tqdm(total=config.max_steps, initial=step, disable=not progress, desc="pretraining")
    while step < last:
        epoch, k = divmod(step, steps_per_epoch)
        order = torch.randperm(N, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        rows = order[k * config.batch_size : (k + 1) * config.batch_size].to(device)
        batch = {key: t[rows] for key, t in data.items()}
        masker = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + step)
        inputs, labels = mask_tokens(
            batch["input_ids"], vocab_size=model.config.vocab_size, mask_token_id=mask_token_id,
            special_token_ids=special_token_ids, attention_mask=batch["attention_mask"],
            mlm_probability=config.mlm_probability, generator=masker,
        )
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        # Dropout draws from the global generator: seed it per step, without disturbing the caller's.
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(config.seed * 1_000_033 + step)
            out = model(
                inputs, batch["attention_mask"], batch["token_type_ids"], labels=labels,
                next_sentence_label=batch["next_sentence_label"], masked_positions_only=True,
            )
            out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step == 1 or step % config.log_every == 0 or step == config.max_steps:  # step 1: the untrained loss
            with torch.no_grad():
                targets = labels[labels != IGNORE_INDEX]
                hits = out.prediction_logits.argmax(-1) == targets
                mlm_acc = hits.float().mean().item() if len(targets) else math.nan
                nsp_acc = (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).float().mean().item()
            history.append({
                "step": step, "lr": optimizer.param_groups[0]["lr"], "loss": out.loss.item(),
                "mlm_loss": out.mlm_loss.item(), "nsp_loss": out.nsp_loss.item(),
                "mlm_accuracy": mlm_acc, "nsp_accuracy": nsp_acc,
            })
            bar.set_postfix(mlm=f"{out.mlm_loss.item():.3f}", nsp=f"{out.nsp_loss.item():.3f}")
        bar.update(1)
        if checkpoint_dir is not None and (
            step == last or (config.checkpoint_every and step % config.checkpoint_every == 0)
        ):
            save_checkpoint(checkpoint_dir, model, optimizer, step, history, config)
    bar.close()
    model.eval()
    return history


# ---- checkpoints: safetensors + JSON, nothing pickled ---------------------------------


def save_checkpoint(
    checkpoint_dir, model, optimizer, step: int, history: list[dict], config: PretrainingConfig
) -> Path:
    """Write ``checkpoint_dir/step-000123/`` (the model in HF format, the optimizer's
    tensors as safetensors, the rest as JSON), then point ``checkpoint_dir/latest`` at it
    and delete older ones. The pointer is replaced atomically, so an interrupted save
    leaves the previous checkpoint intact."""
    from safetensors.torch import save_file

    root = Path(checkpoint_dir)
    target = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    state = optimizer.state_dict()
    tensors = {f"{i}.{name}": t.detach().contiguous().cpu() for i, s in state["state"].items() for name, t in s.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    trainer_state = {"step": step, "history": history, "config": asdict(config), "param_groups": groups}
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    pointer = root / "latest.tmp"
    pointer.write_text(target.name, encoding="utf-8")
    pointer.replace(root / "latest")
    for old in root.glob("step-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(checkpoint_dir) -> Path | None:
    pointer = Path(checkpoint_dir) / "latest"
    if not pointer.is_file():
        return None
    path = Path(checkpoint_dir) / pointer.read_text(encoding="utf-8").strip()
    return path if path.is_dir() else None


def load_checkpoint(path, model, optimizer) -> tuple[int, list[dict]]:
    """Restore model and optimizer from a :func:`save_checkpoint` directory; returns
    (step, history)."""
    from safetensors.torch import load_file

    path = Path(path)
    model.load_hf_state_dict(load_file(str(path / "model.safetensors")), strict=True, source=str(path))
    trainer_state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    tensors = load_file(str(path / "optimizer.safetensors"))
    device = next(model.parameters()).device
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        i, name = key.split(".", 1)
        # AdamW keeps `step` on the CPU unless it runs fused/capturable; moments live with the parameters.
        state.setdefault(int(i), {})[name] = t if name == "step" else t.to(device)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in trainer_state["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return trainer_state["step"], trainer_state["history"]


__all__ = [
    "IGNORE_INDEX",
    "NSPExample",
    "PretrainingConfig",
    "create_nsp_examples",
    "documents_from_sentences",
    "encode_examples",
    "latest_checkpoint",
    "learning_rate",
    "load_checkpoint",
    "mask_tokens",
    "pretrain",
    "save_checkpoint",
    "stdlib_pretraining_data",
    "truncate_seq_pair",
]
