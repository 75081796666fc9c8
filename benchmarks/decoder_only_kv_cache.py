"""KV-cache reuse in a multi-turn dialogue: tokens run and wall time per turn, and cache bytes.

    python -m benchmarks.decoder_only_kv_cache [--turns 12] [--user 64] [--reply 8] [--repeats 3] [--out PATH]

A dialogue alternates user messages and model replies; the context of every reply is the whole
history. Three ways to serve it, with the course's models (random weights: speed and exactness do
not depend on training):

* **decoder, cache kept** (GPT-2, Chapter 6): each turn feeds only the user's new tokens with the
  ``past_key_values`` of everything before, then generates the reply token by token. A causal
  position never changes once computed, so the cache is exact across turns.
* **prefix LM** (the same GPT-2 with a prefix mask, ``course_lib.decoder_only.prefix_lm_forward``):
  the history is the bidirectional prefix, so each new turn changes every earlier position and the
  whole history is run again; the reply is then generated causally with a cache inside the turn.
* **encoder-decoder** (T5, Chapter 7, L/2 + L/2 layers: about GPT-2's parameters): the encoder re-reads
  the whole history each turn; the decoder generates the reply with its self- and cross-attention
  caches.

It also checks the two facts behind the claim: the decoder's cached keys equal recomputed ones
(max |difference|), while the prefix LM's keys of turn 1 change when turn 2 is appended; and it
compares the bytes of GPT-2's returned cache with ``kv_cache_bytes``' formula.
Results go to ``benchmarks/results/decoder_only_kv_cache.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from benchmarks.decoder_only_common import provenance, write_results
from course_lib import decoder_only as do
from course_lib.models.gpt2 import GPT2Config, GPT2LMHeadModel

try:  # Chapter 7
    from course_lib.models.t5 import T5Config, T5ForConditionalGeneration
except ImportError:  # pragma: no cover
    T5Config = T5ForConditionalGeneration = None

NAME = "decoder_only_kv_cache"


def _args(argv):
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.split("\n")[0])
    p.add_argument("--turns", type=int, default=12)
    p.add_argument("--user", type=int, default=64, help="tokens per user message")
    p.add_argument("--reply", type=int, default=8, help="tokens per generated reply")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is kept)")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def _greedy_reply(model, logits, past, n):
    """n greedy tokens continuing from the last logits and the cache; returns (tokens, past)."""
    out = []
    for _ in range(n):
        nxt = logits[:, -1:].argmax(-1)  # (1, 1)
        out.append(nxt)
        o = model(nxt, past_key_values=past, use_cache=True)
        logits, past = o.logits, o.past_key_values
    return torch.cat(out, 1), logits, past


@torch.no_grad()
def decoder_with_cache(model, users, n_reply):
    past, logits, times, run = None, None, [], []
    for user in users:
        t0 = time.perf_counter()
        o = model(user, past_key_values=past, use_cache=True)  # only the new tokens
        reply, logits, past = _greedy_reply(model, o.logits, o.past_key_values, n_reply)
        times.append(time.perf_counter() - t0)
        run.append(user.shape[1] + n_reply)
    return times, run, past


@torch.no_grad()
def prefix_lm(model, users, n_reply):
    history, times, run = torch.zeros(1, 0, dtype=torch.long), [], []
    for user in users:
        t0 = time.perf_counter()
        context = torch.cat([history, user], 1)  # the whole history again, read bidirectionally
        h, past = do.prefix_lm_forward(model, context, torch.tensor([context.shape[1]]), use_cache=True)
        reply, _, _ = _greedy_reply(model, model.lm_head(h[:, -1:]), past, n_reply)
        times.append(time.perf_counter() - t0)
        run.append(context.shape[1] + n_reply)
        history = torch.cat([context, reply], 1)
    return times, run


@torch.no_grad()
def encoder_decoder(model, users, n_reply):
    history, times, run = torch.zeros(1, 0, dtype=torch.long), [], []
    start = model.config.decoder_start_token_id
    for user in users:
        t0 = time.perf_counter()
        context = torch.cat([history, user], 1)
        enc = model.get_encoder()(context)  # the whole history through the encoder
        dec, past, reply = torch.tensor([[start]]), None, []
        for _ in range(n_reply):
            o = model(encoder_outputs=enc, decoder_input_ids=dec, past_key_values=past, use_cache=True)
            past = o.past_key_values
            dec = o.logits[:, -1:].argmax(-1)
            reply.append(dec)
        times.append(time.perf_counter() - t0)
        run.append(context.shape[1] + n_reply)
        history = torch.cat([context, *reply], 1)
    return times, run


@torch.no_grad()
def exactness(model, users):
    """max |cached - recomputed| of the last layer's keys of turn 1's tokens after turn 2, for
    the causal decoder (0: the cache is exact) and the prefix LM (not 0: it must be recomputed)."""
    a, b = users[0], users[1]
    ab = torch.cat([a, b], 1)
    k_cached = model(a, use_cache=True).past_key_values[-1][0]
    k_again = model(ab, use_cache=True).past_key_values[-1][0][:, :, : a.shape[1]]
    _, p1 = do.prefix_lm_forward(model, a, torch.tensor([a.shape[1]]), use_cache=True)
    _, p2 = do.prefix_lm_forward(model, ab, torch.tensor([ab.shape[1]]), use_cache=True)
    return {"decoder_max_abs_change": float((k_cached - k_again).abs().max()),
            "prefix_lm_max_abs_change": float((p1[-1][0] - p2[-1][0][:, :, : a.shape[1]]).abs().max())}


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
    torch.manual_seed(0)
    n_ctx = a.turns * (a.user + a.reply) + 8
    config = GPT2Config(vocab_size=a.vocab, n_positions=n_ctx, n_embd=a.d_model, n_layer=a.layers, n_head=a.heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    gpt2 = GPT2LMHeadModel(config).eval()
    g = torch.Generator().manual_seed(1)
    users = [torch.randint(0, a.vocab, (1, a.user), generator=g) for _ in range(a.turns)]
    designs = {"decoder, cache kept": lambda: decoder_with_cache(gpt2, users, a.reply)[:2],
               "prefix LM": lambda: prefix_lm(gpt2, users, a.reply)}
    missing = []
    if T5ForConditionalGeneration is not None:
        t5 = T5ForConditionalGeneration(T5Config(
            vocab_size=a.vocab, d_model=a.d_model, d_kv=a.d_model // a.heads, d_ff=4 * a.d_model,
            num_layers=a.layers // 2 or 1, num_decoder_layers=a.layers // 2 or 1, num_heads=a.heads,
            dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).eval()
        designs["encoder-decoder"] = lambda: encoder_decoder(t5, users, a.reply)
    else:
        missing.append("encoder-decoder: course_lib.models.t5 not available")
    rows = []
    for name, fn in designs.items():
        fn()  # warm-up
        reps = [fn() for _ in range(a.repeats)]
        for turn in range(a.turns):
            rows.append({"design": name, "turn": turn + 1, "tokens_run": reps[0][1][turn],
                         "seconds": statistics.median(r[0][turn] for r in reps)})
    _, _, past = decoder_with_cache(gpt2, users, a.reply)
    seq = a.turns * (a.user + a.reply)
    cache = {"measured_bytes": do.cache_bytes(past), "sequence_length": past[0][0].shape[2],
             "formula_bytes": do.kv_cache_bytes(config.n_layer, config.n_head, config.head_size,
                                                past[0][0].shape[2], 1, past[0][0].element_size()),
             "dtype": str(past[0][0].dtype)}
    assert cache["sequence_length"] == seq
    payload = {"experiment": NAME, "provenance": provenance([NAME, *(sys.argv[1:] if argv is None else argv)]),
               "settings": {**vars(a), "gpt2_params": sum(p.numel() for p in gpt2.parameters())},
               "missing": missing, "per_turn": rows, "cache": cache, "exactness": exactness(gpt2, users),
               "formula_tokens": {d: do.dialogue_tokens([(a.user, a.reply)] * a.turns, d)
                                  for d in ("decoder", "prefix", "encoder-decoder")}}
    path = write_results(NAME, payload, a.out)
    for name in designs:
        total = sum(r["seconds"] for r in rows if r["design"] == name)
        print(f"{name:22} {total * 1e3:8.1f} ms for {a.turns} turns")
    print(f"cache: {cache}; exactness: {payload['exactness']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
