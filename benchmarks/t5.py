"""T5 training step: course_lib's T5ForConditionalGeneration against Hugging Face's; RMSNorm kernel.

One *step* is forward (encoder, decoder, cross-entropy on the labels) + backward + AdamW. Both
models start from the same weights (HF's random initialisation loaded into course_lib's) and see
the same batch: a padded encoder input and right-padded labels.

* On the CPU (always): a small config and t5-small's shape, threads=2, median of repeats of a
  wall-clock timer; ratio = course / HF (below 1: course faster).
* On a CUDA GPU (additionally): the RMSNorm Triton kernel (forward and forward + backward)
  against torch eager ``F.rms_norm`` and against the course's PyTorch reference compiled with
  ``torch.compile``, achieved bandwidth against the device's peak; attention with T5's
  (1, heads, T, T) relative bias against SDPA with the same additive mask; the t5-small step
  against HF under bf16 autocast.

    python -m benchmarks.t5 [--quick] [--threads N] [--repeats N]
"""

from __future__ import annotations

import os
import sys

import torch

from .harness import model_benchmark_main, time_autocast_step

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .bert import time_cpu  # noqa: E402 - the same median wall-clock timer

# (name, config overrides, batch, encoder length, decoder length). Dropout at T5's 0.1 in both models.
CPU_CASES = (
    ("small 2+2L/128", dict(vocab_size=4000, d_model=128, d_kv=32, d_ff=512, num_layers=2, num_heads=4), 16, 64, 16),
    ("t5-small 6+6L/512", dict(), 8, 128, 32),
)  # fmt: skip


def _models(overrides: dict, device: str):
    import tempfile

    import transformers

    from course_lib.models.t5 import T5ForConditionalGeneration

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**overrides, decoder_start_token_id=0,
                                                                       attn_implementation="eager"))
    with tempfile.TemporaryDirectory() as path:
        hf.save_pretrained(path)
        ours = T5ForConditionalGeneration.from_pretrained(path)
    return ours.to(device), hf.to(device)


def _batch(vocab_size: int, B: int, S: int, T: int, device: str):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, vocab_size, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[B // 2 :, 3 * S // 4 :] = 0  # half the batch padded by a quarter
    labels = torch.randint(2, vocab_size, (B, T), generator=g)
    labels[B // 2 :, T // 2 :] = -100
    return {k: v.to(device) for k, v in dict(input_ids=ids.masked_fill(mask == 0, 0), attention_mask=mask,
                                               labels=labels).items()}  # fmt: skip


def _step_fn(model, batch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    model.train()

    def step():
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_cpu(threads: int, repeats: int, quick: bool) -> str:
    from course_lib.kernels import force_backend

    from .harness import record_result

    torch.set_num_threads(threads)
    title = (f"T5 training step (forward + backward + AdamW) on the CPU, {threads} threads, "
             f"median of {repeats} (wall clock); ratio = course / HF, below 1 means course is faster")
    lines = [title, f"{'case':20} {'B x S x T':>11} {'course (ms)':>12} {'HF eager (ms)':>14} {'ratio':>6}"]
    for name, overrides, B, S, T in CPU_CASES[:1] if quick else CPU_CASES:
        ours, hf = _models(overrides, "cpu")
        batch = _batch(ours.config.vocab_size, B, S, T, "cpu")
        with force_backend("torch"):
            t_ours = time_cpu(_step_fn(ours, batch), repeats=repeats)
        t_hf = time_cpu(_step_fn(hf, batch), repeats=repeats)
        shape = f"{B}x{S}x{T}"
        for impl, ms, role in (("course", t_ours, "ours"), ("HF eager", t_hf, "peer")):
            record_result(title, f"{name} {shape}", impl, ms, "ms", higher_is_better=False, role=role)
        lines.append(f"{name:20} {shape:>11} {t_ours:12.1f} {t_hf:14.1f} {t_ours / t_hf:6.2f}")
        del ours, hf
    return "\n".join(lines)


def run_gpu() -> str:
    import torch.nn.functional as F

    from course_lib.kernels.flash_attention import flash_attention
    from course_lib.kernels.rms_norm import rms_norm, rms_norm_forward_reference

    from .harness import Timing, format_table, measure, peak_bandwidth_gbps

    device_name = torch.cuda.get_device_name()
    peak = peak_bandwidth_gbps(device_name)
    out = []
    # -- RMSNorm: bandwidth-bound (read x, write y; the backward reads x, dy and writes dx) --
    timings = []
    compiled = torch.compile(lambda x, w: rms_norm_forward_reference(x, w, 1e-6)[0])
    for dtype in (torch.float32, torch.bfloat16):
        N, H = 32 * 512, 1024
        x = torch.randn(N, H, device="cuda", dtype=dtype, requires_grad=True)
        w = torch.randn(H, device="cuda", dtype=dtype, requires_grad=True)
        dy = torch.randn_like(x)
        es = x.element_size()
        case = f"RMSNorm fwd {N}x{H} {str(dtype)[6:]}"
        timings.append(measure(case, "course (Triton)", lambda: rms_norm(x, w, 1e-6), 2 * N * H * es))
        timings.append(measure(case, "torch eager F.rms_norm", lambda: F.rms_norm(x, (H,), w, 1e-6), 2 * N * H * es))
        timings.append(measure(case, "torch.compile reference", lambda: compiled(x, w), 2 * N * H * es))
        case = f"RMSNorm fwd+bwd {N}x{H} {str(dtype)[6:]}"
        timings.append(measure(case, "course (Triton)",
                               lambda: torch.autograd.grad(rms_norm(x, w, 1e-6), (x, w), dy), 5 * N * H * es))
        timings.append(measure(case, "torch eager F.rms_norm",
                               lambda: torch.autograd.grad(F.rms_norm(x, (H,), w, 1e-6), (x, w), dy), 5 * N * H * es))
        timings.append(measure(case, "torch.compile reference",
                               lambda: torch.autograd.grad(compiled(x, w), (x, w), dy), 5 * N * H * es))
    out.append(format_table(f"RMSNorm on {device_name}", timings, ours="course (Triton)", peak_gbps=peak))
    # -- attention with T5's relative bias (an additive (1, nh, T, T) tensor), fp16 --
    timings = []
    B, nh, T, hs = 16, 8, 512, 64
    q, k, v = (torch.randn(B, nh, T, hs, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, nh, T, T, device="cuda", dtype=torch.float16, requires_grad=True)
    io = 4 * q.numel() * 2 + bias.numel() * 2
    flops = 4 * B * nh * T * T * hs
    case = f"attention + bias fwd+bwd {B}x{nh}x{T}x{hs} fp16"
    timings.append(measure(case, "course flash (Triton)", lambda: torch.autograd.grad(
        flash_attention(q, k, v, scale=1.0, bias=bias), (q, k, v, bias), torch.ones_like(q)), 3 * io,
        flops=int(3.5 * flops), dtype="fp16"))  # fmt: skip
    timings.append(measure(case, "torch SDPA (attn_mask=bias)", lambda: torch.autograd.grad(
        F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0), (q, k, v, bias), torch.ones_like(q)),
        3 * io, flops=int(3.5 * flops), dtype="fp16"))  # fmt: skip
    out.append(format_table(f"T5 attention with relative bias on {device_name}", timings, ours="course flash (Triton)",
                            peak_gbps=peak))  # fmt: skip
    # -- the whole t5-small step --
    timings = []
    ours, hf = _models({}, "cuda")
    batch = _batch(ours.config.vocab_size, 32, 512, 128, "cuda")
    case = "t5-small step 32x512x128 bf16 autocast"
    timings.append(Timing(case, "course", time_autocast_step(_step_fn(ours, batch)), 0))
    timings.append(Timing(case, "HF eager", time_autocast_step(_step_fn(hf, batch)), 0))
    out.append(format_table(f"t5-small training step on {device_name} (GB/s column meaningless: 0)", timings,
                            ours="course"))  # fmt: skip
    return "\n\n".join(out)


def run() -> None:
    print(run_cpu(threads=2, repeats=5, quick=False))
    if torch.cuda.is_available():
        print()
        print(run_gpu())


def main(argv: list[str] | None = None) -> int:
    return model_benchmark_main("python -m benchmarks.t5", __doc__, run_cpu, run_gpu, argv)


if __name__ == "__main__":
    sys.exit(main())
