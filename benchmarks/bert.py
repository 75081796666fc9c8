"""BERT pretraining step: course_lib's BertForPreTraining against Hugging Face's, same config and batch.

One *step* is forward (MLM + NSP loss) + backward + AdamW, the unit a pretraining run repeats.
Both models start from the same weights (course_lib's are copied into HF's) and see the same
batch, so any difference in time is the implementation's.

* On the CPU (always): a small config and BERT-base, threads=2, median of repeats of a wall-clock
  timer; ratio = course / HF (below 1: course faster).
* On a CUDA GPU (additionally): the attention kernel against
  ``torch.nn.functional.scaled_dot_product_attention`` with the flash backend (forward and
  forward + backward), LayerNorm and bias-GELU achieved bandwidth against the device's peak, and
  the BERT-base step against HF with ``attn_implementation="sdpa"``.

    python -m benchmarks.bert [--quick] [--threads N] [--repeats N]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable

import torch

from .harness import model_benchmark_main, time_autocast_step

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# (name, config overrides, batch, sequence length). Dropout stays at BERT's 0.1 in both models.
CPU_CASES = (
    ("small 2L/128H", dict(vocab_size=4000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=512), 32, 64),
    ("base 12L/768H", dict(), 8, 128),
)  # fmt: skip


def time_cpu(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 7) -> float:
    """Median wall-clock time of ``fn()`` in milliseconds (``time.perf_counter``)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _models(overrides: dict, device: str, hf_attn: str = "eager"):
    from transformers import BertConfig as HFConfig
    from transformers import BertForPreTraining as HFBert

    from course_lib.models.bert import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    ours = BertForPreTraining(BertConfig(**overrides)).to(device)
    hf_config = HFConfig(**ours.config.to_dict(), attn_implementation=hf_attn)
    hf = HFBert(hf_config).to(device)
    hf.load_state_dict(ours.state_dict(), strict=False)  # the same weights; the tied decoder follows
    return ours, hf


def _batch(vocab_size: int, B: int, T: int, device: str):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[B // 2 :, 3 * T // 4 :] = 0  # half the batch padded by a quarter: the key-padding mask matters
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2 :] = 1
    labels = torch.full((B, T), -100)
    chosen = (torch.rand(B, T, generator=g) < 0.15) & mask.bool()
    labels[chosen] = ids[chosen]
    nsp = torch.randint(0, 2, (B,), generator=g)
    return {k: v.to(device) for k, v in dict(input_ids=ids, attention_mask=mask, token_type_ids=types,
                                               labels=labels, next_sentence_label=nsp).items()}  # fmt: skip


def _step_fn(model, batch, ours: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    extra = {"masked_positions_only": False} if ours else {}
    model.train()

    def step():
        out = model(**batch, **extra)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_cpu(threads: int, repeats: int, quick: bool) -> str:
    from .harness import record_result

    torch.set_num_threads(threads)
    title = (f"BERT pretraining step (forward + backward + AdamW) on the CPU, {threads} threads, "
             f"median of {repeats} (wall clock); ratio = course / HF, below 1 means course is faster")
    lines = [title, f"{'case':16} {'batch':>7} {'course (ms)':>12} {'HF eager (ms)':>14} {'ratio':>6}"]
    for name, overrides, B, T in CPU_CASES[:1] if quick else CPU_CASES:
        ours, hf = _models(overrides, "cpu")
        batch = _batch(ours.config.vocab_size, B, T, "cpu")
        t_ours = time_cpu(_step_fn(ours, batch, True), repeats=repeats)
        t_hf = time_cpu(_step_fn(hf, batch, False), repeats=repeats)
        for impl, ms, role in (("course", t_ours, "ours"), ("HF eager", t_hf, "peer")):
            record_result(title, f"{name} {B}x{T}", impl, ms, "ms", higher_is_better=False, role=role)
        lines.append(f"{name:16} {f'{B}x{T}':>7} {t_ours:12.1f} {t_hf:14.1f} {t_ours / t_hf:6.2f}")
        del ours, hf
    return "\n".join(lines)


def run_gpu() -> str:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from course_lib.kernels.bias_gelu import bias_gelu
    from course_lib.kernels.flash_attention import flash_attention
    from course_lib.kernels.layer_norm import layer_norm

    from .harness import Timing, format_table, measure, peak_bandwidth_gbps

    device_name = torch.cuda.get_device_name()
    peak = peak_bandwidth_gbps(device_name)
    out = []
    # -- attention, fp16, BERT-base heads, no padding (the flash backend takes no mask) --
    timings = []
    for B, T in ((32, 128), (8, 512)):
        q, k, v = (torch.randn(B, 12, T, 64, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(3))
        do = torch.randn_like(q)
        io = 4 * q.numel() * 2  # read Q, K, V, write O
        # QK^T and PV: 2 matmuls of 2*T*T*64 flops per head; the backward does 2.5x the
        # forward's (FlashAttention's count: 5 matmuls, the recomputed QK^T not counted).
        fwd_flops = 4 * B * 12 * T * T * 64
        case = f"attention fwd {B}x12x{T}x64 fp16"
        timings.append(measure(case, "course flash (Triton)", lambda: flash_attention(q, k, v), io,
                               flops=fwd_flops, dtype="fp16"))  # fmt: skip

        def sdpa():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v)

        timings.append(measure(case, "torch SDPA flash", sdpa, io, flops=fwd_flops, dtype="fp16"))
        case = f"attention fwd+bwd {B}x12x{T}x64 fp16"
        timings.append(measure(case, "course flash (Triton)",
                               lambda: torch.autograd.grad(flash_attention(q, k, v), (q, k, v), do), 3 * io,
                               flops=int(3.5 * fwd_flops), dtype="fp16"))  # fmt: skip
        timings.append(measure(case, "torch SDPA flash", lambda: torch.autograd.grad(sdpa(), (q, k, v), do), 3 * io,
                               flops=int(3.5 * fwd_flops), dtype="fp16"))  # fmt: skip
    out.append(format_table(f"Attention on {device_name}", timings, ours="course flash (Triton)", peak_gbps=peak))
    # -- LayerNorm (with residual) and bias + GELU: bandwidth-bound --
    timings = []
    for dtype in (torch.float32, torch.float16):
        N, H, I = 32 * 512, 768, 3072
        x = torch.randn(N, H, device="cuda", dtype=dtype)
        r, w, b = torch.randn_like(x), torch.ones(H, device="cuda", dtype=dtype), torch.zeros(H, device="cuda", dtype=dtype)
        es = x.element_size()
        case = f"LayerNorm(x + r) {N}x{H} {str(dtype)[6:]}"
        timings.append(measure(case, "course (Triton)", lambda: layer_norm(x, w, b, 1e-12, residual=r), 3 * N * H * es))
        timings.append(measure(case, "torch eager", lambda: F.layer_norm(x + r, (H,), w, b, 1e-12), 3 * N * H * es))
        u = torch.randn(N, I, device="cuda", dtype=dtype)
        bias = torch.randn(I, device="cuda", dtype=dtype)
        case = f"bias+GELU {N}x{I} {str(dtype)[6:]}"
        timings.append(measure(case, "course (Triton)", lambda: bias_gelu(u, bias), 2 * N * I * es))
        timings.append(measure(case, "torch eager", lambda: F.gelu(u + bias), 2 * N * I * es))
    out.append(format_table(f"LayerNorm and bias+GELU on {device_name}", timings, ours="course (Triton)", peak_gbps=peak))
    # -- the whole BERT-base step --
    timings = []
    for B, T in ((32, 128),):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            ours, hf = _models({}, "cuda", hf_attn="sdpa")
            batch = _batch(ours.config.vocab_size, B, T, "cuda")
            case = f"BERT-base step {B}x{T} bf16 autocast"
            timings.append(Timing(case, "course", time_autocast_step(_step_fn(ours, batch, True)), 0))
            timings.append(Timing(case, "HF sdpa", time_autocast_step(_step_fn(hf, batch, False)), 0))
    out.append(format_table(f"BERT-base pretraining step on {device_name} (GB/s column meaningless: 0)", timings,
                            ours="course"))  # fmt: skip
    return "\n\n".join(out)


def run() -> None:
    print(run_cpu(threads=2, repeats=5, quick=False))
    if torch.cuda.is_available():
        print()
        print(run_gpu())


def main(argv: list[str] | None = None) -> int:
    return model_benchmark_main("python -m benchmarks.bert", __doc__, run_cpu, run_gpu, argv)


if __name__ == "__main__":
    sys.exit(main())
