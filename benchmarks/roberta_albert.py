"""Chapter 5: RoBERTa and ALBERT training steps against Hugging Face's, and dynamic masking's throughput.

* **Training step** (forward with the MLM loss, and for ALBERT the SOP loss, + backward + AdamW)
  of course_lib's ``RobertaForMaskedLM`` and ``AlbertForPreTraining`` against HF's eager
  models, same config, same weights (ours copied into HF's), same batch; CPU, median of
  repeats of a wall-clock timer; ratio = course / HF (below 1: course faster). Both score the
  MLM head at every position (HF cannot do otherwise), so the ratio is the implementations'.
* **Dynamic masking**: ``course_lib.pretraining.mask_tokens`` on a (B, T) batch of ids against
  ``transformers.DataCollatorForLanguageModeling`` (``return_tensors="pt"``) given the same
  ids as a list of examples, as a data loader would; sequences per second, and the ratio
  course / HF (above 1: course faster).

    python -m benchmarks.roberta_albert [--quick] [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from .bert import time_cpu

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# (name, model, config overrides, batch, sequence length)
CPU_CASES = (
    ("RoBERTa 2L/128H", "roberta", dict(vocab_size=4000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=512, max_position_embeddings=130), 32, 64),
    ("ALBERT 4L/128H E64", "albert", dict(vocab_size=4000, embedding_size=64, hidden_size=128, num_hidden_layers=4,
                                          num_attention_heads=2, intermediate_size=512,
                                          max_position_embeddings=128), 32, 64),
    ("RoBERTa-base", "roberta", dict(), 8, 128),
    ("ALBERT-base", "albert", dict(), 8, 128),
)  # fmt: skip


def _models(kind: str, overrides: dict):
    import transformers

    from course_lib.models import albert, roberta

    torch.manual_seed(0)
    if kind == "roberta":
        ours = roberta.RobertaForMaskedLM(roberta.RobertaConfig(**overrides))
        hf = transformers.RobertaForMaskedLM(transformers.RobertaConfig(**ours.config.to_dict(),
                                                                        attn_implementation="eager"))
    else:
        ours = albert.AlbertForPreTraining(albert.AlbertConfig(**overrides))
        hf = transformers.AlbertForPreTraining(transformers.AlbertConfig(**ours.config.to_dict(),
                                                                         attn_implementation="eager"))
    hf.load_state_dict(ours.state_dict(), strict=False)  # the same weights; tied decoders follow
    return ours, hf


def _batch(kind: str, vocab_size: int, B: int, T: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[B // 2:, 3 * T // 4:] = 0
    ids = ids.masked_fill(mask == 0, 1 if kind == "roberta" else 0)  # padding by its id (RoBERTa's positions)
    labels = torch.full((B, T), -100)
    chosen = (torch.rand(B, T, generator=g) < 0.15) & mask.bool()
    labels[chosen] = ids[chosen]
    batch = dict(input_ids=ids, attention_mask=mask, labels=labels)
    if kind == "albert":
        batch["sentence_order_label"] = torch.randint(0, 2, (B,), generator=g)
    return batch


def _step_fn(model, batch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    model.train()

    def step():
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_steps(threads: int, repeats: int, quick: bool) -> str:
    from .harness import record_result

    torch.set_num_threads(threads)
    title = (f"RoBERTa / ALBERT training step (forward + backward + AdamW) on the CPU, {threads} threads, "
             f"median of {repeats} (wall clock); ratio = course / HF, below 1 means course is faster")
    lines = [title, f"{'case':20} {'batch':>7} {'course (ms)':>12} {'HF eager (ms)':>14} {'ratio':>6}"]
    for name, kind, overrides, B, T in CPU_CASES[:2] if quick else CPU_CASES:
        ours, hf = _models(kind, overrides)
        batch = _batch(kind, ours.config.vocab_size, B, T)
        t_ours = time_cpu(_step_fn(ours, batch), repeats=repeats)
        t_hf = time_cpu(_step_fn(hf, batch), repeats=repeats)
        for impl, ms, role in (("course", t_ours, "ours"), ("HF eager", t_hf, "peer")):
            record_result(title, f"{name} {B}x{T}", impl, ms, "ms", higher_is_better=False, role=role)
        lines.append(f"{name:20} {f'{B}x{T}':>7} {t_ours:12.1f} {t_hf:14.1f} {t_ours / t_hf:6.2f}")
        del ours, hf
    return "\n".join(lines)


def run_masking(threads: int, repeats: int, device: str = "cpu") -> str:
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    from course_lib.pretraining import mask_tokens

    from .harness import record_result

    torch.set_num_threads(threads)
    V, B, T = 50265, 256, 128
    # A stand-in tokenizer: the collator needs only the special ids, the mask id and len().
    vocab = {f"t{i}": i for i in range(V)}
    vocab.update({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": V - 1})
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                  bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                  mask_token="<mask>")
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, return_tensors="pt")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, V - 1, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    examples = [{"input_ids": row} for row in ids.tolist()]
    specials = [0, 1, 2, 3, V - 1]
    ids_dev = ids.to(device)
    masker = torch.Generator(device=device).manual_seed(0)
    t_ours = time_cpu(lambda: mask_tokens(ids_dev, vocab_size=V, mask_token_id=V - 1, special_token_ids=specials,
                                          generator=masker), repeats=repeats)
    t_hf = time_cpu(lambda: collator(examples), repeats=repeats)
    # The collator's masking step alone, on the already collated tensor (no list -> tensor work).
    t_hf_mask = time_cpu(lambda: collator.torch_mask_tokens(ids.clone()), repeats=repeats)
    title = (f"Dynamic masking of a {B}x{T} batch (V={V}), {threads} threads, median of {repeats}; "
             f"course mask_tokens on a tensor vs HF DataCollatorForLanguageModeling on examples")
    lines = [title, f"{'implementation':52} {'ms':>8} {'sequences/s':>12}"]
    rows = (("course mask_tokens", t_ours, "ours"), ("HF DataCollatorForLanguageModeling", t_hf, "peer"),
            ("HF torch_mask_tokens (masking step only)", t_hf_mask, "other"))
    for impl, ms, role in rows:
        record_result(title, f"{B}x{T}", impl, B / ms * 1e3, "sequences/s", higher_is_better=True, role=role)
        lines.append(f"{impl:52} {ms:8.2f} {B / ms * 1e3:12,.0f}")
    lines.append(f"course is {t_hf / t_ours:.1f}x faster than the collator, "
                 f"{t_hf_mask / t_ours:.1f}x faster than its masking step alone")
    return "\n".join(lines)


def run() -> None:
    print(run_steps(threads=2, repeats=5, quick=False))
    print()
    print(run_masking(threads=2, repeats=7))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roberta_albert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case (median)")
    parser.add_argument("--quick", action="store_true", help="only the small configs")
    args = parser.parse_args(argv)
    print(run_steps(args.threads, args.repeats, args.quick))
    print()
    print(run_masking(args.threads, args.repeats + 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
