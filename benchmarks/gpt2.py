"""GPT-2: generation with the KV cache against Hugging Face, and the fused linear + cross-entropy.

* **Generate, CPU** (always): greedy decoding of ``new`` tokens after a prompt, with the KV
  cache, course_lib's ``GPT2LMHeadModel.generate`` against HF's ``generate`` on the same
  weights (the outputs are checked equal). Tokens/s; ratio = course / HF (above 1: course faster).
* **Fused cross-entropy, CPU** (always): the peak memory of loss + backward of the LM head
  (N tokens, H = 768, V = 50257), fused (chunked, :mod:`course_lib.kernels.cross_entropy`)
  against the unfused ``F.cross_entropy(x @ W^T)``, each in a fresh process (peak resident
  set size above the inputs', the smaller of two runs); ratio = fused / unfused (target <= 1/4).
* **On a CUDA GPU** (additionally): the fused cross-entropy's time and peak memory against
  the unfused one (fp32 and bf16), causal attention against SDPA (prefill, and decode: one
  query against a long cache), and GPT-2 small's generate against HF's with SDPA.

    python -m benchmarks.gpt2 [--quick] [--threads N] [--repeats N] [--cpu-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .harness import record_result  # noqa: E402

# (name, GPT2Config overrides, batch, prompt length, new tokens)
GENERATE_CASES = (
    ("tiny 4L/256", dict(vocab_size=5000, n_positions=512, n_embd=256, n_layer=4, n_head=4), 1, 32, 96),
    ("GPT-2 small 124M", dict(), 1, 32, 64),
)  # fmt: skip
CE_CASE = (2048, 768, 50257)  # N tokens, H, V


def _models(overrides: dict, device: str, hf_attn: str = "eager"):
    import transformers

    from course_lib.models.gpt2 import GPT2Config, GPT2LMHeadModel

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    ours = GPT2LMHeadModel(GPT2Config(**overrides)).to(device).eval()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**overrides, attn_implementation=hf_attn)).to(device).eval()
    hf.load_state_dict(ours.state_dict())  # the same weights; Conv1D layouts are identical
    return ours, hf


def _time_pair(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Median wall-clock seconds of two functions, run alternately (a, b, a, b, ...) so that a
    change in the machine's load affects both alike."""
    fn_a(), fn_b()  # warm-up
    times = ([], [])
    for _ in range(repeats):
        for fn, t in zip((fn_a, fn_b), times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def run_generate_cpu(threads: int, repeats: int, quick: bool) -> str:
    from course_lib.kernels import force_backend

    torch.set_num_threads(threads)
    lines = [f"Greedy generate with the KV cache on the CPU ({threads} threads, median of {repeats}, run "
             "alternately); tokens/s, ratio = course / HF (above 1: course faster)",
             f"{'case':18} {'B x prompt + new':>17} {'course tok/s':>13} {'HF tok/s':>10} {'ratio':>6}"]  # fmt: skip
    for name, overrides, B, T, new in GENERATE_CASES[:1] if quick else GENERATE_CASES:
        ours, hf = _models(overrides, "cpu")
        ids = torch.randint(0, ours.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))
        with force_backend("torch"):
            got = ours.generate(ids, new, eos_token_id=[])
            want = hf.generate(ids, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
            if not torch.equal(got, want):
                raise AssertionError(f"{name}: course and HF generated different tokens")
            t_ours, t_hf = _time_pair(
                lambda: ours.generate(ids, new, eos_token_id=[]),
                lambda: hf.generate(ids, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0),
                repeats)  # fmt: skip
        case = f"{name}, {B}x{T}+{new}, {threads} thread(s)"
        for impl, t, role in (("course", t_ours, "ours"), ("HF eager", t_hf, "peer")):
            record_result("generate tokens/s, CPU", case, impl, B * new / t, "tokens/s", higher_is_better=True, role=role)
        lines.append(f"{name:18} {f'{B} x {T} + {new}':>17} {B * new / t_ours:13.1f} {B * new / t_hf:10.1f} "
                     f"{t_hf / t_ours:6.2f}")
        del ours, hf
    return "\n".join(lines)


_PEAK_SCRIPT = r"""
import json, os, sys, time, torch
os.environ["COURSE_LIB_BACKEND"] = "torch"
torch.set_num_threads(int(sys.argv[2]))
from course_lib.kernels.cross_entropy import linear_cross_entropy, linear_cross_entropy_reference
N, H, V = map(int, sys.argv[3:6])
g = torch.Generator().manual_seed(0)
x = torch.randn(N, H, generator=g).requires_grad_()
w = (torch.randn(V, H, generator=g) * 0.02).requires_grad_()
t = torch.randint(0, V, (N,), generator=g)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def high_water_mark():  # VmHWM: this process's peak resident set since the last reset
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
fn = linear_cross_entropy if sys.argv[1] == "fused" else linear_cross_entropy_reference
# Not getrusage's ru_maxrss: Linux carries it over from the parent across fork and exec, so a
# benchmark that already holds a GPT-2 would set the child's "peak". Reset VmHWM to now instead.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = rss()
start = time.perf_counter()
loss = fn(x, w, t)
loss.backward()
seconds = time.perf_counter() - start
peak = high_water_mark()
print(json.dumps({"peak_above_inputs": peak - before, "seconds": seconds, "loss": loss.item(),
                  "grad_w": w.grad.abs().sum().item()}))
"""


def run_cross_entropy_cpu(threads: int, N: int) -> str:
    _, H, V = CE_CASE
    results = {}
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    for impl in ("fused", "unfused"):
        runs = []
        for _ in range(2):  # the smaller of two fresh processes' peaks: allocator noise only ever adds
            proc = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, impl, str(threads), str(N), str(H), str(V)],
                                  capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(f"{impl}: {proc.stderr[-2000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        results[impl] = min(runs, key=lambda r: r["peak_above_inputs"])
    f, u = results["fused"], results["unfused"]
    if abs(f["loss"] - u["loss"]) > 1e-4 * abs(u["loss"]) or abs(f["grad_w"] - u["grad_w"]) > 1e-3 * u["grad_w"]:
        raise AssertionError(f"fused and unfused disagree: {f} vs {u}")
    case = f"N={N}, H={H}, V={V}, fp32"
    for impl, r, role in (("course fused (chunked)", f, "ours"), ("unfused F.cross_entropy", u, "peer")):
        record_result("LM-head loss + backward, peak memory above the inputs, CPU", case, impl,
                      r["peak_above_inputs"] / 2**20, "MiB", higher_is_better=False, role=role)
    logits_mib = N * V * 4 / 2**20
    return "\n".join([
        f"LM-head cross-entropy, loss + backward on the CPU ({case}); peak resident memory above the inputs",
        f"(one (N, V) fp32 logits matrix is {logits_mib:.0f} MiB; dW alone, needed by both, {V * H * 4 / 2**20:.0f} MiB)",
        f"{'implementation':26} {'peak (MiB)':>11} {'time (s)':>9}",
        f"{'course fused (chunked)':26} {f['peak_above_inputs'] / 2**20:11.0f} {f['seconds']:9.2f}",
        f"{'unfused F.cross_entropy':26} {u['peak_above_inputs'] / 2**20:11.0f} {u['seconds']:9.2f}",
        f"peak ratio fused / unfused = {f['peak_above_inputs'] / u['peak_above_inputs']:.3f} (target <= 0.25)",
    ])  # fmt: skip


def run_gpu() -> str:
    import torch.nn.functional as F

    from course_lib.kernels.cross_entropy import linear_cross_entropy, linear_cross_entropy_reference
    from course_lib.kernels.flash_attention import flash_attention

    from .harness import format_table, measure, peak_bandwidth_gbps

    device_name = torch.cuda.get_device_name()
    out = []
    # -- fused linear + cross-entropy: time, then peak memory --
    timings, memory = [], []
    N, H, V = 8192, 768, 50257
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        x = torch.randn(N, H, device="cuda", dtype=dtype, requires_grad=True)
        w = (torch.randn(V, H, device="cuda", dtype=dtype) * 0.02).requires_grad_()
        t = torch.randint(0, V, (N,), device="cuda")
        case = f"LM-head CE fwd+bwd {N}x{H}->{V} {name}"
        flops = 3 * 2 * N * H * V  # logits, dx, dW
        for impl, fn in (("course fused (Triton)", linear_cross_entropy), ("torch unfused", linear_cross_entropy_reference)):
            timings.append(measure(case, impl, lambda fn=fn: torch.autograd.grad(fn(x, w, t), (x, w)), 0,
                                   flops=flops, dtype="tf32" if name == "fp32" else name))  # fmt: skip
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            torch.autograd.grad(fn(x, w, t), (x, w))
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            memory.append(f"{case:44} {impl:24} peak above inputs {peak:8.0f} MiB")
            record_result("LM-head CE peak memory, GPU", case, impl, peak, "MiB", higher_is_better=False,
                          role="ours" if impl.startswith("course") else "peer")
    out.append(format_table(f"Fused linear + cross-entropy on {device_name}", timings, ours="course fused (Triton)"))
    out.append("\n".join(memory))
    # -- causal attention: prefill and decode against SDPA --
    timings = []
    for B, Tq, Tk in ((8, 1024, 1024), (8, 1, 1024), (8, 1, 4096)):
        q = torch.randn(B, 12, Tq, 64, device="cuda", dtype=torch.float16)
        k, v = (torch.randn(B, 12, Tk, 64, device="cuda", dtype=torch.float16) for _ in range(2))
        case = f"causal attention {B}x12x{Tq}<-{Tk}x64 fp16"
        io = (q.numel() * 2 + 2 * k.numel()) * 2
        timings.append(measure(case, "course flash (Triton)", lambda: flash_attention(q, k, v, causal=True), io))
        # SDPA's is_causal aligns the mask to the top left; for a cache (Tq < Tk) no mask is needed at Tq = 1.
        timings.append(measure(case, "torch SDPA", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=Tq == Tk), io))
    out.append(format_table(f"Causal attention (prefill and KV-cache decode) on {device_name}", timings,
                            ours="course flash (Triton)", peak_gbps=peak_bandwidth_gbps(device_name)))  # fmt: skip
    # -- generate, GPT-2 small --
    ours, hf = _models({}, "cuda", hf_attn="sdpa")
    ids = torch.randint(0, 50257, (8, 64), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    for impl, fn, role in (("course", lambda: ours.generate(ids, 64, eos_token_id=[]), "ours"),
                           ("HF sdpa", lambda: hf.generate(ids, max_new_tokens=64, do_sample=False, eos_token_id=None,
                                                           pad_token_id=0), "peer")):  # fmt: skip
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        tps = 8 * 64 / (time.perf_counter() - start)
        record_result("generate tokens/s, GPU", "GPT-2 small, 8x64+64, fp32", impl, tps, "tokens/s",
                      higher_is_better=True, role=role)
        out.append(f"generate GPT-2 small 8x64+64 fp32, {impl}: {tps:.0f} tokens/s")
    return "\n\n".join(out)


def run() -> None:
    main([])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpt2", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="CPU thread counts for generate (default: 1 and 2); the loss uses the last")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each generate (median)")
    parser.add_argument("--quick", action="store_true", help="CPU: the tiny generate case only")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU part even when a GPU is present")
    args = parser.parse_args(argv)
    for threads in args.threads:
        print(run_generate_cpu(threads, args.repeats, args.quick))
        print()
    print(run_cross_entropy_cpu(args.threads[-1], CE_CASE[0]))
    if torch.cuda.is_available() and not args.cpu_only:
        from course_lib.kernels.backend import interpreter_active

        if interpreter_active():
            print("benchmarks.gpt2: TRITON_INTERPRET=1 is set; the GPU part would run in the interpreter; skipped.")
            return 1
        print()
        print(run_gpu())
    return 0


if __name__ == "__main__":
    sys.exit(main())
