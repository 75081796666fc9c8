"""Embedding lookup: course_lib's Triton kernels against PyTorch eager and torch.compile.

Byte model, the traffic any implementation must cause (s: bytes per element, i: bytes
per index, N tokens, a (V, D) table):

  forward   read N indices and N rows, write N rows:             N*i + 2*N*D*s
  backward  read N indices and N gradient rows, write the dense
            (V, D) gradient, which dominates when V >> N:          N*i + N*D*s + V*D*s

Not counted, so that GB/s measures useful traffic only: the atomic read-modify-writes
of our backward (mostly served by L2) and its fp32 accumulator for bf16 (a choice of
this implementation, not a requirement of the operation).
"""

import torch
import torch.nn.functional as F

from course_lib.kernels.embedding import embedding

from .harness import REPEATS, Timing, format_table, measure, peak_bandwidth_gbps

# (label, num_embeddings V, embedding_dim D, token batch shape)
CASES = [
    ("BERT-base 30522x768, 32x512", 30522, 768, (32, 512)),
    ("GPT-2 50257x768, 8x1024", 50257, 768, (8, 1024)),
    ("large D 32000x4096, 4x2048", 32000, 4096, (4, 2048)),  # Llama-2-7B's table
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
OURS = "course_lib"


def run() -> None:
    implementations = {
        OURS: embedding,
        "torch eager": F.embedding,
        # dynamic=False: one graph specialised per shape, as in training with fixed shapes.
        "torch.compile": torch.compile(F.embedding, dynamic=False),
    }
    forward: list[Timing] = []
    backward: list[Timing] = []
    for label, V, D, batch in CASES:
        for dtype_name, dtype in DTYPES.items():
            case = f"{label}, {dtype_name}"
            # requires_grad even for the forward: it is timed as it runs in a training step.
            weight = torch.randn(V, D, dtype=dtype, device="cuda", requires_grad=True)  # (V, D)
            indices = torch.randint(0, V, batch, device="cuda")  # batch
            grad_out = torch.randn(*batch, D, dtype=dtype, device="cuda")  # batch + (D,)
            N, s, i = indices.numel(), weight.element_size(), indices.element_size()
            for impl, fn in implementations.items():
                timing = measure(case, impl, lambda: fn(indices, weight), N * i + 2 * N * D * s)
                forward.append(timing)
                backward_bytes = N * i + N * D * s + V * D * s
                if timing.ms is None:  # no forward, so no graph to run backward through
                    backward.append(Timing(case, impl, None, backward_bytes, timing.note))
                    continue
                out = fn(indices, weight)  # one forward; each timed call replays only its backward
                step = lambda: torch.autograd.grad(out, weight, grad_out, retain_graph=True)  # noqa: E731
                backward.append(measure(case, impl, step, backward_bytes))

    device = torch.cuda.get_device_name()
    peak = peak_bandwidth_gbps(device)
    print(f"embedding on {device}; median of {REPEATS} runs, L2 flushed before each")
    print(f"{OURS}'s forward includes its index-range check (one reduction and a host sync)\n")
    print(format_table("embedding forward", forward, OURS, peak))
    print()
    print(format_table("embedding backward (gradient w.r.t. weight)", backward, OURS, peak))
