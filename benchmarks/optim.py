"""Fused optimizer steps on GPT-2 small's 124M parameters: the course's Triton AdamW/SGD
against torch.optim's multi-tensor (``foreach=True``) and fused (``fused=True``) steps.

Byte model (fp32 parameters and states), per parameter per step:
  AdamW         read θ, g, m, v; write θ, m, v  -> 7 x 4 bytes
  SGD-momentum  read θ, g, b;    write θ, b     -> 5 x 4 bytes
An optimizer step does a few flops per 4-byte number, so memory bandwidth bounds it:
the GB/s column is this byte model divided by the measured time.

    python -m benchmarks.optim            (or, once registered, python -m benchmarks optim)
"""

from __future__ import annotations

import argparse
import sys
import torch

# GPT-2 small (Radford et al. 2019; Hugging Face "gpt2"): 148 tensors, 124,439,808 parameters
# (the output layer shares the token embedding).
N_LAYER, N_EMBD, VOCAB, N_CTX = 12, 768, 50257, 1024


def gpt2_small_shapes() -> list[tuple[int, ...]]:
    d = N_EMBD
    block = [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),  # ln_1, attn.c_attn, attn.c_proj
             (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]  # ln_2, mlp.c_fc, mlp.c_proj  # fmt: skip
    return [(VOCAB, d), (N_CTX, d)] + block * N_LAYER + [(d,), (d,)]  # wte, wpe, h.0-11, ln_f


def _make_params(shapes, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, device="cuda", generator=g) * 0.02)
        p.grad = torch.randn(shape, device="cuda", generator=g) * 1e-3
        params.append(p)
    return params


def _cases():
    """(case, bytes per parameter, {implementation: optimizer factory})."""
    from course_lib import optim as co

    return [
        ("AdamW", 7 * 4, {
            "course fused (Triton)": lambda ps: co.AdamW(ps, lr=1e-3, fused=True),
            "torch foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
            "torch fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
            "course per-parameter": lambda ps: co.AdamW(ps, lr=1e-3),
        }),
        ("SGD-momentum", 5 * 4, {
            "course fused (Triton)": lambda ps: co.SGD(ps, lr=1e-3, momentum=0.9, fused=True),
            "torch foreach": lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=True),
            "torch fused": lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, fused=True),
            "course per-parameter": lambda ps: co.SGD(ps, lr=1e-3, momentum=0.9),
        }),
    ]  # fmt: skip


def run() -> None:
    from .harness import Timing, format_table, measure, peak_bandwidth_gbps

    shapes = gpt2_small_shapes()
    n = sum(torch.Size(s).numel() for s in shapes)
    timings: list[Timing] = []
    for case, bytes_per_param, factories in _cases():
        label = f"GPT-2 small {case}, {n / 1e6:.1f}M fp32 params in {len(shapes)} tensors"
        for impl, make in factories.items():
            params = _make_params(shapes)
            try:
                optimizer = make(params)
                optimizer.step()  # creates the states (and compiles the kernels) outside the timing
            except Exception as error:  # e.g. an older torch without fused SGD
                timings.append(Timing(label, impl, None, n * bytes_per_param, f"failed: {error}"[:120]))
                continue
            timings.append(measure(label, impl, optimizer.step, n * bytes_per_param))
            del optimizer, params
            torch.cuda.empty_cache()
    device = torch.cuda.get_device_name()
    title = f"Optimizer step on {device} (CUDA events, 10 warm-up steps, median of 50, L2 flushed before each)"
    print(format_table(title, timings, ours="course fused (Triton)", peak_gbps=peak_bandwidth_gbps(device)))
    print("bytes per step: AdamW 7 x 4 B per parameter (read θ, g, m, v; write θ, m, v), "
          "SGD-momentum 5 x 4 B (read θ, g, b; write θ, b)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.optim", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks.optim: timing needs a CUDA GPU and none is available; nothing was timed.")
        return 0
    from course_lib.kernels.backend import interpreter_active

    if interpreter_active():
        print("benchmarks.optim: TRITON_INTERPRET=1 is set, so the kernels would run in the CPU interpreter; unset it.")
        return 1
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
