"""Equal compute: four architectures trained with the same FLOPs on the same text, then compared.

    python -m benchmarks.decoder_only_equal_compute [--budgets 5e11,2e12] [--seeds 3] [--out PATH]

A CPU-sized version of Wang et al. (2022, "What language model architecture and pretraining
objective work best for zero-shot generalization?"), with Chapters 4, 6 and 7's models:

==================  ==========================  ====================================================
name                model                       objective
==================  ==========================  ====================================================
decoder (CLM)       GPT2LMHeadModel (L layers)  next token at every position (Wang's CD:FLM)
prefix LM (PLM)     the same GPT-2, prefix mask prefix of random length read bidirectionally, loss on
                    (course_lib.decoder_only)   the rest (Wang's ND:PLM)
enc-dec (PLM)       T5 (L + L layers)           encoder reads the first half, decoder writes the second
enc-dec (span)      T5 (L + L layers)           T5's span corruption (Wang's ED:MLM)
encoder (MLM)       BertForMaskedLM (L layers)  BERT's 15% masking, no NSP
==================  ==========================  ====================================================

Every model has the same width; the encoder-decoder has L layers on each side, so it has about
twice the parameters but, on a text split into input and output halves, the same FLOPs per text
as an L-layer decoder (Raffel et al., 2020, §3.2.2; Wang et al. match their 11B encoder-decoder
with a 4.8B decoder the same way). FLOPs are counted from the configs with
``course_lib.decoder_only.training_flops`` (checked against ``torch.utils.flop_counter`` in the
tests), and each run gets as many steps as fit the budget.

Evaluated on held-out windows (other standard-library modules than the training text):

* **continuation loss**: nats per token of the second half of a window given the first half,
  teacher forced (the quantity all generative designs can compute; BERT cannot: "n/a"; for the
  span-corruption encoder-decoder it is a use it was not trained for, as Wang et al.'s ED:MLM
  before adaptation);
* **zero-shot, which continuation?**: the true next 8 tokens among 4 candidates (3 drawn from
  other windows), ranked by log-likelihood; BERT ranks by pseudo-log-likelihood (Salazar et al.,
  2020). Chance is 25%;
* **zero-shot, word swap**: a window vs the same window with two adjacent tokens of its second
  half swapped (minimal pairs in the style of BLiMP); chance is 50%.

It also measures the rank of each trained model's attention matrices and final hidden states
(the "low-rank" hypothesis; the book measures random attention matrices itself).
Results (with command, commit, machine, date) go to ``benchmarks/results/decoder_only_equal_compute.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.decoder_only_common import RESULTS, corpus_windows, provenance, read_results, write_results
from course_lib import decoder_only as do
from course_lib.models.bert import BertConfig, BertForMaskedLM
from course_lib.models.gpt2 import GPT2Config, GPT2LMHeadModel
from course_lib.optim import AdamW
from course_lib.pretraining import mask_tokens
from course_lib.schedules import linear_warmup_cosine_decay_factor
from course_lib.span_corruption import span_corruption

try:  # Chapter 7
    from course_lib.models.t5 import T5Config, T5ForConditionalGeneration
except ImportError:  # pragma: no cover - reported in the results
    T5Config = T5ForConditionalGeneration = None

NAME = "decoder_only_equal_compute"
IGNORE = -100


def _args(argv):
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.split("\n")[0])
    p.add_argument("--budgets", default="5e11,2e12", help="training FLOPs per run, comma-separated")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--window", type=int, default=64, help="tokens per training text")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=4, help="L: layers of the decoder / encoder (each side of T5)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--eval-windows", type=int, default=400)
    p.add_argument("--max-sentences", type=int, default=None, help="use only the first N corpus sentences")
    p.add_argument("--archs", default="all", help="comma-separated subset of the architecture names")
    p.add_argument("--out", default=None)
    p.add_argument("--merge", action="store_true",
                   help="keep the runs of other architectures already in the output file (add T5 later)")
    return p.parse_args(argv)


# ---- the architectures ---------------------------------------------------------------------


class Arch:
    """One (architecture, objective): builds the model, a training loss, FLOPs per text, and
    log-probabilities of a target given a context."""

    name = ""
    generative = True

    def __init__(self, a, tok):
        self.a, self.tok, self.T = a, tok, a.window

    def flops_per_text(self) -> int:
        raise NotImplementedError

    def params(self, model) -> int:
        return sum(p.numel() for p in model.parameters())


def _gpt2(a, tok):
    return GPT2Config(vocab_size=len(tok), n_positions=a.window + 8, n_embd=a.d_model, n_layer=a.layers,
                      n_head=a.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=None, eos_token_id=None)


def _target_logprobs(logits, target):
    """log p(target tokens) from the logits that predict them: (B, n) each."""
    return torch.log_softmax(logits.float(), -1).gather(-1, target[..., None])[..., 0]


class DecoderCLM(Arch):
    name = "decoder (CLM)"

    def build(self):
        self.config = _gpt2(self.a, self.tok)
        return GPT2LMHeadModel(self.config)

    def flops_per_text(self):
        return do.training_flops(do.TransformerShape.from_config(self.config), 0, self.T)

    def loss(self, model, x, g):
        return model(x, labels=x).loss

    def logprobs(self, model, context, target):
        logits = model(torch.cat([context, target], 1)).logits
        return _target_logprobs(logits[:, context.shape[1] - 1 : -1], target)


class PrefixLM(Arch):
    name = "prefix LM (PLM)"

    def build(self):
        self.config = _gpt2(self.a, self.tok)
        return GPT2LMHeadModel(self.config)

    def flops_per_text(self):  # the output layer runs only where there is a loss: T/2 on average
        s = do.TransformerShape.from_config(self.config)
        return do.training_flops(s, self.T // 2, self.T - self.T // 2, logits=self.T - self.T // 2)

    def loss(self, model, x, g):
        B, T = x.shape
        p = torch.randint(1, T, (B,), generator=g)  # prefix lengths, as Wang et al.'s random split
        h = do.prefix_lm_forward(model, x, p)  # (B, T, C)
        pos = torch.arange(T - 1)
        keep = pos[None, :] >= p[:, None] - 1  # hidden t predicts token t + 1, outside the prefix
        logits = model.lm_head(h[:, :-1][keep])  # (N, V)
        return F.cross_entropy(logits, x[:, 1:][keep])

    def logprobs(self, model, context, target):
        x = torch.cat([context, target], 1)
        h = do.prefix_lm_forward(model, x, torch.full((len(x),), context.shape[1]))
        return _target_logprobs(model.lm_head(h[:, context.shape[1] - 1 : -1]), target)


class EncoderMLM(Arch):
    name = "encoder (MLM)"
    generative = False

    def build(self):
        a = self.a
        self.config = BertConfig(vocab_size=len(self.tok), hidden_size=a.d_model, num_hidden_layers=a.layers,
                                 num_attention_heads=a.heads, intermediate_size=4 * a.d_model,
                                 max_position_embeddings=a.window + 8, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0, type_vocab_size=1)
        self.specials = sorted(self.tok.special_ids)
        return BertForMaskedLM(self.config)

    def flops_per_text(self):
        s = do.TransformerShape.from_config(self.config)
        return do.training_flops(s, self.T, 0, logits=do.loss_tokens("mlm", self.T)["target_length"])

    def loss(self, model, x, g):
        inputs, labels = mask_tokens(x, vocab_size=len(self.tok), mask_token_id=self.tok.mask_token_id,
                                     special_token_ids=self.specials, generator=g)
        return model(inputs, labels=labels, masked_positions_only=True).loss

    def logprobs(self, model, context, target):
        """Pseudo-log-likelihood: each target token masked in turn, all others visible."""
        x = torch.cat([context, target], 1)
        B, n, c = len(x), target.shape[1], context.shape[1]
        rows = x.repeat_interleave(n, 0)  # (B n, T): copy j masks target position j
        j = torch.arange(n).repeat(B)
        rows[torch.arange(B * n), c + j] = self.tok.mask_token_id
        logits = model(rows).logits[torch.arange(B * n), c + j]  # (B n, V)
        return _target_logprobs(logits, target.reshape(-1)).view(B, n)


class EncoderDecoder(Arch):
    """T5 (Chapter 7), L layers on each side; objective "prefix" or "span"."""

    def __init__(self, a, tok, objective):
        super().__init__(a, tok)
        self.objective = objective
        self.name = f"enc-dec ({'PLM' if objective == 'prefix' else 'span'})"

    def build(self):
        a = self.a
        self.sentinels = list(range(len(self.tok), len(self.tok) + 16))  # extra ids, as T5's <extra_id_N>
        self.eos = self.tok.vocab["[SEP]"]
        self.config = T5Config(vocab_size=len(self.tok) + len(self.sentinels), d_model=a.d_model,
                               d_kv=a.d_model // a.heads, d_ff=4 * a.d_model, num_layers=a.layers,
                               num_decoder_layers=a.layers, num_heads=a.heads, dropout_rate=0.0,
                               pad_token_id=self.tok.pad_token_id, eos_token_id=self.eos,
                               decoder_start_token_id=self.tok.pad_token_id, tie_word_embeddings=True)
        return T5ForConditionalGeneration(self.config)

    def flops_per_text(self):
        s = do.TransformerShape.from_config(self.config)
        if self.objective == "prefix":
            return do.training_flops(s, self.T // 2, self.T - self.T // 2)
        n = do.loss_tokens("span", self.T)
        return do.training_flops(s, n["input_length"], n["target_length"])

    def span_corrupt(self, x, g):
        """T5's span corruption of each row (Chapter 7's ``span_corruption``: 15%, mean span 3,
        inputs and targets each ending with EOS)."""
        pairs = [span_corruption(row, self.sentinels, self.eos, generator=g) for row in x]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])  # equal lengths: T5's counts

    def loss(self, model, x, g):
        if self.objective == "prefix":
            h = x.shape[1] // 2
            return model(input_ids=x[:, :h], labels=x[:, h:]).loss
        inputs, targets = self.span_corrupt(x, g)
        return model(input_ids=inputs, labels=targets).loss

    def logprobs(self, model, context, target):
        logits = model(input_ids=context, labels=target).logits
        return _target_logprobs(logits, target)


def architectures(a, tok) -> list[Arch]:
    archs = [DecoderCLM(a, tok), PrefixLM(a, tok)]
    if T5ForConditionalGeneration is not None:
        archs += [EncoderDecoder(a, tok, "prefix"), EncoderDecoder(a, tok, "span")]
    archs.append(EncoderMLM(a, tok))
    if a.archs != "all":
        wanted = {w.strip() for w in a.archs.split(",")}
        archs = [x for x in archs if x.name in wanted]
    return archs


# ---- training and evaluation --------------------------------------------------------------


def train(arch: Arch, train_x, a, seed, budget):
    torch.manual_seed(seed)
    model = arch.build()
    per_step = arch.flops_per_text() * a.batch
    steps = do.steps_for_budget(budget, per_step)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
                lr=a.lr, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(seed)
    warmup = max(1, steps // 20)
    curve, t0 = [], time.perf_counter()
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = a.lr * linear_warmup_cosine_decay_factor(step, warmup, steps, 0.1)
        idx = torch.randint(0, len(train_x), (a.batch,), generator=g)
        loss = arch.loss(model, train_x[idx], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(1, steps // 25) == 0 or step == steps - 1:
            curve.append({"step": step, "flops": (step + 1) * per_step, "loss": loss.item()})
    model.eval()
    return model, {"steps": steps, "flops_per_step": per_step, "train_flops": steps * per_step,
                   "train_seconds": time.perf_counter() - t0, "final_train_loss": curve[-1]["loss"], "curve": curve}


@torch.no_grad()
def evaluate(arch: Arch, model, held, seed, chunk=50):
    g = torch.Generator().manual_seed(1000 + seed)
    T = held.shape[1]
    h = T // 2
    out = {}
    if arch.generative:
        lp = torch.cat([arch.logprobs(model, held[i : i + chunk, :h], held[i : i + chunk, h:])
                        for i in range(0, len(held), chunk)])
        out["continuation_loss"] = float(-lp.mean())
    # which continuation? context: tokens [8, 40), candidates: the next 8 tokens of 4 windows
    n = len(held)
    ctx = held[:, 8:40]
    others = torch.stack([torch.randperm(n - 1, generator=g)[:3] for _ in range(n)])
    others = others + (others >= torch.arange(n)[:, None])  # never the window itself
    cands = torch.stack([held[:, 40:48], *(held[others[:, j], 40:48] for j in range(3))], 1)  # (n, 4, 8)
    scores = torch.stack([torch.cat([arch.logprobs(model, ctx[i : i + chunk], cands[i : i + chunk, j]).sum(-1)
                                     for i in range(0, n, chunk)]) for j in range(4)], 1)  # (n, 4)
    out["zero_shot_continuation_acc"] = float((scores.argmax(1) == 0).float().mean())
    # word swap: tokens [0, 8) as context, [8, 24) scored; two adjacent tokens of [8, 24) swapped
    base = held[:, :24].clone()
    where = torch.randint(8, 23, (n,), generator=g)
    swapped = base.clone()
    rows = torch.arange(n)
    swapped[rows, where], swapped[rows, where + 1] = base[rows, where + 1], base[rows, where]
    same = swapped[rows, where] == swapped[rows, where + 1]
    s_true = torch.cat([arch.logprobs(model, base[i : i + chunk, :8], base[i : i + chunk, 8:]).sum(-1)
                        for i in range(0, n, chunk)])
    s_swap = torch.cat([arch.logprobs(model, swapped[i : i + chunk, :8], swapped[i : i + chunk, 8:]).sum(-1)
                        for i in range(0, n, chunk)])
    keep = ~same  # a swap of two equal tokens changes nothing
    out["zero_shot_swap_acc"] = float((s_true[keep] > s_swap[keep]).float().mean())
    return out


@torch.no_grad()
def ranks(arch: Arch, model, held, rtol=1e-3):
    """Effective and numerical rank (at rtol) of every head's attention matrix on 8 held-out
    windows, and of the final hidden states (T x d), averaged."""
    x = held[:8]
    if isinstance(arch, PrefixLM):
        hidden, att = do.prefix_lm_forward(model, x, torch.full((len(x),), x.shape[1] // 2), output_attentions=True)
    elif isinstance(arch, DecoderCLM):
        o = model.transformer(x, output_attentions=True)
        hidden, att = o.last_hidden_state, o.attentions
    elif isinstance(arch, EncoderMLM):
        o = model.bert(x, output_attentions=True)
        hidden, att = o.last_hidden_state, o.attentions
    else:
        o = model.get_encoder()(x, output_attentions=True)
        hidden, att = o.last_hidden_state, o.attentions
    A = torch.stack(list(att)).double()  # (L, B, nh, T, T)
    return {"attention_effective_rank": float(do.effective_rank(A).mean()),
            "attention_numerical_rank": float(do.numerical_rank(A, rtol).double().mean()),
            "hidden_effective_rank": float(do.effective_rank(hidden.double()).mean()),
            "rtol": rtol, "T": x.shape[1], "head_size": _head_size(model.config)}


def _head_size(config):
    s = do.TransformerShape.from_config(config)
    return s.head_size


def _summary(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    if not vals:
        return None
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": statistics.fmean(vals), "sd": sd, "n": len(vals)}


def run_one(arch, train_x, held, a, seed, budget) -> dict:
    model, info = train(arch, train_x, a, seed, budget)
    row = {"arch": arch.name, "budget": budget, "seed": seed, "params": arch.params(model),
           "flops_per_text": arch.flops_per_text(), **info, **evaluate(arch, model, held, seed)}
    if seed == 0:
        row["ranks"] = ranks(arch, model, held)
    print(f"{budget:.0e} {arch.name:16} seed {seed}: {info['steps']:5d} steps, {info['train_seconds']:6.1f} s, "
          f"train loss {info['final_train_loss']:.3f}, cont. loss {row.get('continuation_loss', float('nan')):.3f}, "
          f"which-cont {row['zero_shot_continuation_acc']:.3f}, swap {row['zero_shot_swap_acc']:.3f}", flush=True)
    return row


def main(argv=None) -> int:
    """The experiment on the plain PyTorch paths (under TRITON_INTERPRET=1 the kernels would
    run in the interpreter) unless $COURSE_LIB_BACKEND says otherwise; scoped to this call,
    so importing the module changes nothing for the importing process."""
    from course_lib.kernels import force_backend

    with force_backend(os.environ.get("COURSE_LIB_BACKEND") or "torch"):
        return _main(argv)


def _main(argv=None) -> int:
    a = _args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    tok, train_x, held = corpus_windows(a.window, a.vocab, max_sentences=a.max_sentences)
    held = held[: a.eval_windows]
    archs = architectures(a, tok)
    runs = []
    budgets = [float(b) for b in a.budgets.split(",")]
    for budget in budgets:
        for arch in archs:
            for seed in range(a.seeds):
                runs.append(run_one(arch, train_x, held, a, seed, budget))
    out_path = a.out or RESULTS / f"{NAME}.json"
    merged_from = []
    if a.merge and os.path.exists(out_path):
        done = {(r["arch"], r["budget"]) for r in runs}
        old = read_results(NAME, out_path)
        merged_from = [*old.get("merged_from", []), {"provenance": old["provenance"], "settings": old["settings"]}]
        runs = [r for r in old["runs"] if (r["arch"], r["budget"]) not in done] + runs
    keys = list(dict.fromkeys((r["budget"], r["arch"]) for r in runs))
    summary = [{"budget": b, "arch": name, **{k: _summary([r for r in runs if (r["budget"], r["arch"]) == (b, name)], k)
               for k in ("continuation_loss", "zero_shot_continuation_acc", "zero_shot_swap_acc", "params", "steps",
                         "train_seconds")}} for b, name in keys]
    payload = {"experiment": NAME, "provenance": provenance([NAME, *(sys.argv[1:] if argv is None else argv)]),
               "settings": {**vars(a), "train_windows": len(train_x), "heldout_windows": len(held),
                            "vocab_size": len(tok)},
               "missing": [] if T5ForConditionalGeneration is not None else ["enc-dec: course_lib.models.t5 not available"],
               "summary": summary, "runs": runs, "total_seconds": time.perf_counter() - t_start,
               "merged_from": merged_from}
    path = write_results(NAME, payload, a.out)
    print(f"wrote {path} in {payload['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
