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

Chapter 5 adds what RoBERTa, ALBERT and SpanBERT changed: static vs dynamic masking
(:func:`static_masking`), FULL-SENTENCES / DOC-SENTENCES packing without NSP
(:func:`pack_sentences`), ALBERT's sentence-order pairs (:func:`create_sop_examples`),
SpanBERT's geometric whole-word span masking (:func:`span_mask`) and its span boundary
objective (:class:`SpanBoundaryHead`).
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


# =========================================================================================
# Chapter 5: RoBERTa's, ALBERT's and SpanBERT's objectives
# =========================================================================================


# ---- static vs dynamic masking (RoBERTa, Section 4.1) -----------------------------------


def static_masking(
    input_ids: torch.Tensor,
    *,
    dupe_factor: int = 10,
    generator: torch.Generator | None = None,
    **mask_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's *static* masking as RoBERTa reproduces it: "the training data was duplicated
    10 times so that each sequence is masked in 10 different ways over the 40 epochs of
    training. Thus, each training sequence was seen with the same mask four times"
    (Liu et al., 2019, Section 4.1). Returns ``(inputs, labels)`` of shape
    (dupe_factor, N, T), computed once, before training; epoch e reads copy
    ``e % dupe_factor`` (:func:`static_epoch`). ``mask_kwargs`` go to :func:`mask_tokens`.

    *Dynamic* masking is :func:`mask_tokens` called on every batch, on the batch's device,
    as it is drawn (``pretrain`` and :func:`train_mlm` do that): a sequence never sees the
    same mask twice, and no copies are stored."""
    if dupe_factor < 1:
        raise ValueError(f"dupe_factor must be >= 1, got {dupe_factor}")
    copies = [mask_tokens(input_ids, generator=generator, **mask_kwargs) for _ in range(dupe_factor)]
    return torch.stack([c[0] for c in copies]), torch.stack([c[1] for c in copies])


def static_epoch(masked: tuple[torch.Tensor, torch.Tensor], epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (inputs, labels) that epoch ``epoch`` trains on under static masking."""
    inputs, labels = masked
    return inputs[epoch % len(inputs)], labels[epoch % len(labels)]


# ---- input formats without NSP (RoBERTa, Section 4.2) ---------------------------------


def pack_sentences(
    documents: Sequence[Sequence[Sequence[int]]],
    max_tokens: int,
    *,
    cross_documents: bool = True,
    doc_separator: int | None = None,
) -> list[list[int]]:
    """RoBERTa's inputs without NSP: full sentences, contiguous, up to ``max_tokens`` each.

    * ``cross_documents=True``: FULL-SENTENCES. "Inputs may cross document boundaries.
      When we reach the end of one document, we begin sampling sentences from the next
      document and add an extra separator token between documents" (``doc_separator``).
    * ``cross_documents=False``: DOC-SENTENCES. The same, but an input never crosses a
      document boundary, so inputs at the end of a document are shorter (RoBERTa then
      enlarges those batches to keep the tokens per batch constant; it found DOC-SENTENCES
      slightly better but used FULL-SENTENCES for its fixed batch size).

    A sentence longer than ``max_tokens`` is cut into ``max_tokens``-long pieces, each
    its own input (nothing is dropped)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    blocks, current = [], []

    def flush():
        nonlocal current
        if current:
            blocks.append(current)
        current = []

    for document in documents:
        if not cross_documents:
            flush()
        # The separator goes in only when the next sentence joins this input after it.
        separate = cross_documents and doc_separator is not None and bool(current)
        for sentence in document:
            sentence = list(sentence)
            if not sentence:
                continue
            if len(current) + separate + len(sentence) > max_tokens:
                flush()
                separate = False  # a new input is boundary enough
            if separate:
                current.append(doc_separator)
                separate = False
            while len(sentence) > max_tokens:  # longer than an input: its own pieces
                blocks.append(sentence[:max_tokens])
                sentence = sentence[max_tokens:]
            current.extend(sentence)
    flush()
    return blocks


def encode_blocks(blocks: Sequence[Sequence[int]], *, bos_id: int, eos_id: int, pad_id: int, max_length: int):
    """``<s> block </s> <pad>...`` as (N, max_length) ``input_ids`` and ``attention_mask``."""
    N = len(blocks)
    ids = torch.full((N, max_length), pad_id, dtype=torch.long)
    mask = torch.zeros(N, max_length, dtype=torch.long)
    for n, block in enumerate(blocks):
        seq = [bos_id, *block, eos_id]
        if len(seq) > max_length:
            raise ValueError(f"block {n} has {len(seq)} tokens with <s> and </s>, more than max_length={max_length}")
        ids[n, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[n, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


# ---- sentence-order prediction (ALBERT, Section 3) ------------------------------------


@dataclass
class SOPExample:
    tokens_a: list[int]
    tokens_b: list[int]
    is_swapped: bool  # the SOP label: 1 if B came first in the document, 0 if the order is kept


def create_sop_examples(
    documents: Sequence[Sequence[Sequence[int]]],
    max_num_tokens: int,
    rng: random.Random,
    short_seq_prob: float = 0.1,
) -> list[SOPExample]:
    """ALBERT's sentence-order prediction pairs: A and B are two *consecutive* segments of
    one document, collected as for NSP (:func:`create_nsp_examples`); with probability 1/2
    they are swapped (label 1). Both classes share topic and style, so only the order
    (coherence) tells them apart, unlike NSP, whose negatives come from other documents.

    One deviation from ALBERT's ``create_pretraining_data.py``: when only one sentence was
    collected, that script falls back to a B from another document (an NSP-style pair)
    labelled 1; here the sentence is split at a random token instead, so every pair is
    a true SOP pair."""
    if max_num_tokens < 2:
        raise ValueError(f"max_num_tokens must be >= 2 (one token each for A and B), got {max_num_tokens}")
    examples = []
    for document in documents:
        document = [list(s) for s in document if len(s)]
        target = rng.randint(2, max_num_tokens) if rng.random() < short_seq_prob else max_num_tokens
        chunk, length = [], 0
        for i, sentence in enumerate(document):
            chunk.append(sentence)
            length += len(sentence)
            if i == len(document) - 1 or length >= target:
                if len(chunk) >= 2:
                    a_end = rng.randint(1, len(chunk) - 1)
                    tokens_a = [t for s in chunk[:a_end] for t in s]
                    tokens_b = [t for s in chunk[a_end:] for t in s]
                elif len(chunk[0]) >= 2:
                    cut = rng.randint(1, len(chunk[0]) - 1)
                    tokens_a, tokens_b = chunk[0][:cut], chunk[0][cut:]
                else:  # a one-token document: no pair to make
                    chunk, length = [], 0
                    continue
                swapped = rng.random() < 0.5
                if swapped:
                    tokens_a, tokens_b = tokens_b, tokens_a
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                examples.append(SOPExample(tokens_a, tokens_b, swapped))
                chunk, length = [], 0
    return examples


# ---- SpanBERT: span masking and the span boundary objective (Joshi et al., 2020) --------


def span_length_distribution(p: float = 0.2, max_length: int = 10, mode: str = "truncate") -> torch.Tensor:
    """P(span length = 1 .. max_length) for SpanBERT's geometric span lengths.

    ``mode="truncate"`` (SpanBERT's code: ``len_distrib`` renormalised over 1..10) gives
    P(l) = p (1-p)^(l-1) / (1 - (1-p)^max_length), mean 3.80 for p = 0.2: the paper's
    "mean span length 3.8". ``mode="clip"`` (the paper's wording, "clipping l at
    l_max = 10") puts all the tail's mass on 10 instead, mean 4.46."""
    if not 0 < p <= 1 or max_length < 1:
        raise ValueError(f"need 0 < p <= 1 and max_length >= 1, got p={p}, max_length={max_length}")
    lengths = torch.arange(1, max_length + 1, dtype=torch.float64)
    probs = p * (1 - p) ** (lengths - 1)
    if mode == "truncate":
        return probs / probs.sum()
    if mode == "clip":
        probs[-1] = (1 - p) ** (max_length - 1)  # P(l >= max_length)
        return probs
    raise ValueError(f"mode must be 'truncate' or 'clip', got {mode!r}")


@dataclass
class SpanMasking:
    input_ids: list[int]  # after replacement
    labels: list[int]  # original id at masked positions, -100 elsewhere
    spans: list[tuple[int, int]]  # (first, last) token positions of each masked span, inclusive


def span_mask(
    input_ids: Sequence[int],
    word_starts: Sequence[bool],
    *,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids: Iterable[int] = (),
    mask_ratio: float = 0.15,
    p: float = 0.2,
    max_span_length: int = 10,
    mode: str = "truncate",
    generator: torch.Generator | None = None,
) -> SpanMasking:
    """SpanBERT's masking of one sequence (Section 3.1 of the paper, and its code).

    Until ``ceil(mask_ratio * n)`` of the n maskable tokens are masked: draw a span length
    l in *words* (:func:`span_length_distribution`), pick a random token, go back to the
    start of its word, and mask l whole words from there (stopping at the budget, at a
    special token, at an earlier span or at the end: spans are disjoint; SpanBERT's code
    lets a new span run over an earlier one, whose tokens are then replaced twice). A word is a token with ``word_starts`` True and the
    tokens after it up to the next word start (byte-level BPE: a token beginning with
    "Ġ"). Then, *per span*, as BERT does per token: with probability 0.8 every token of
    the span becomes ``mask_token_id``, 0.1 every token becomes a random non-special token,
    0.1 the span stays as it is. All draws come from ``generator``."""
    ids = list(input_ids)
    n = len(ids)
    if len(word_starts) != n:
        raise ValueError(f"word_starts has {len(word_starts)} entries for {n} tokens")
    special = set(special_token_ids)
    maskable = [t not in special for t in ids]
    budget = math.ceil(mask_ratio * sum(maskable))
    probs = span_length_distribution(p, max_span_length, mode)
    # Word boundaries: word w covers tokens [start[w], start[w + 1]); specials are words of their own.
    starts = [i for i in range(n) if word_starts[i] or i == 0 or not maskable[i] or not maskable[i - 1]]
    word_of = [0] * n
    for w, s in enumerate(starts):
        end = starts[w + 1] if w + 1 < len(starts) else n
        for i in range(s, end):
            word_of[i] = w

    def word_range(w):
        return starts[w], (starts[w + 1] if w + 1 < len(starts) else n)

    masked = [False] * n
    spans, count, tries = [], 0, 0
    candidates = [i for i in range(n) if maskable[i]]
    while count < budget and tries < 100 * n + 100:
        tries += 1
        length = int(torch.multinomial(probs, 1, generator=generator)) + 1
        anchor = candidates[int(torch.randint(len(candidates), (1,), generator=generator))]
        if masked[anchor]:
            continue
        w = word_of[anchor]
        first, last, stop = None, None, False
        for w2 in range(w, min(w + length, len(starts))):
            lo, hi = word_range(w2)
            for i in range(lo, hi):
                # A span ends at the budget, at a special token, or where an earlier span
                # begins: spans never overlap, so each is replaced as one unit below.
                if count >= budget or not maskable[i] or masked[i]:
                    stop = True
                    break
                masked[i] = True
                count += 1
                first = i if first is None else first
                last = i
            if stop:
                break
        if first is not None:
            spans.append((first, last))
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, masked)]
    allowed = [t for t in range(vocab_size) if t not in special]
    out = list(ids)
    for first, last in spans:
        u = float(torch.rand((), generator=generator))
        for i in range(first, last + 1):
            if u < 0.8:
                out[i] = mask_token_id
            elif u < 0.9:
                out[i] = allowed[int(torch.randint(len(allowed), (1,), generator=generator))]
    return SpanMasking(out, labels, spans)


def span_boundary_targets(spans_per_row: Sequence[Sequence[tuple[int, int]]], labels: torch.Tensor,
                          max_span_length: int) -> dict[str, torch.Tensor]:
    """The SBO's inputs for a batch: one row per masked token x_i of a span (s, e):
    ``row``, ``left`` = s - 1 and ``right`` = e + 1 (the boundary tokens, unmasked),
    ``offset`` = i - s (its position inside the span) and ``target`` = its original id.
    Spans touching the sequence's ends, or longer than ``max_span_length`` tokens, are
    skipped (their boundary or offset does not exist). When two spans touch, a boundary is
    itself masked, as it can be in SpanBERT's code."""
    B, T = labels.shape
    rows, left, right, offset, target = [], [], [], [], []
    for b, spans in enumerate(spans_per_row):
        for s, e in spans:
            if s < 1 or e + 1 >= T or e - s + 1 > max_span_length:
                continue
            for i in range(s, e + 1):
                if int(labels[b, i]) != IGNORE_INDEX:
                    rows.append(b), left.append(s - 1), right.append(e + 1), offset.append(i - s)
                    target.append(int(labels[b, i]))
    t = lambda x: torch.tensor(x, dtype=torch.long, device=labels.device)  # noqa: E731
    return {"row": t(rows), "left": t(left), "right": t(right), "offset": t(offset), "target": t(target)}


class SpanBoundaryHead(torch.nn.Module):
    """SpanBERT's span boundary objective (SBO): predict each token of a masked span from
    the two boundary tokens' final states and its position in the span only:
    y_i = f(x_{s-1}, x_{e+1}, p_{i-s+1}), f a 2-layer feed-forward net with GeLU and
    LayerNorm (Joshi et al., 2020, Section 3.2), scored against the (tied) word table.
    The representations at the boundaries must then summarise the whole span, which
    helps span-selection tasks such as extractive QA and coreference."""

    def __init__(self, hidden_size: int, word_embeddings: torch.nn.Embedding, max_span_length: int = 10,
                 layer_norm_eps: float = 1e-12):
        super().__init__()
        H = hidden_size
        self.position_embeddings = torch.nn.Embedding(max_span_length, H)
        self.layer1, self.norm1 = torch.nn.Linear(3 * H, H), torch.nn.LayerNorm(H, eps=layer_norm_eps)
        self.layer2, self.norm2 = torch.nn.Linear(H, H), torch.nn.LayerNorm(H, eps=layer_norm_eps)
        self.word_embeddings = word_embeddings  # shared with the encoder's input table: not a copy
        if word_embeddings.embedding_dim != H:
            raise ValueError(f"the word table is {word_embeddings.embedding_dim} wide, the head {H}")
        self.bias = torch.nn.Parameter(torch.zeros(word_embeddings.num_embeddings))

    def forward(self, hidden_states: torch.Tensor, targets: dict[str, torch.Tensor]):
        """hidden_states (B, T, H); targets from :func:`span_boundary_targets`. Returns
        ``(logits (M, V), loss)`` for the M masked span tokens."""
        r = targets["row"]
        h = torch.cat([hidden_states[r, targets["left"]], hidden_states[r, targets["right"]],
                       self.position_embeddings(targets["offset"])], dim=-1)  # (M, 3H)
        h = self.norm1(torch.nn.functional.gelu(self.layer1(h)))  # (M, H)
        h = self.norm2(torch.nn.functional.gelu(self.layer2(h)))  # (M, H)
        logits = h @ self.word_embeddings.weight.T + self.bias  # (M, V)
        loss = torch.nn.functional.cross_entropy(logits, targets["target"]) if len(r) else logits.sum() * 0
        return logits, loss


__all__ = [
    "IGNORE_INDEX",
    "NSPExample",
    "PretrainingConfig",
    "SOPExample",
    "SpanBoundaryHead",
    "SpanMasking",
    "create_nsp_examples",
    "create_sop_examples",
    "documents_from_sentences",
    "encode_blocks",
    "encode_examples",
    "latest_checkpoint",
    "learning_rate",
    "load_checkpoint",
    "mask_tokens",
    "pack_sentences",
    "pretrain",
    "save_checkpoint",
    "span_boundary_targets",
    "span_length_distribution",
    "span_mask",
    "static_epoch",
    "static_masking",
    "stdlib_pretraining_data",
    "truncate_seq_pair",
]
