"""Every Triton kernel in course_lib.kernels compiles for an H100 (sm_90), without a GPU.

The other kernel tests run the kernels through TRITON_INTERPRET=1, which accepts code that
the real compiler rejects (wrong dtypes in a ``tl.where``, a constexpr used as a runtime
value, an fp64 op that has no PTX lowering, ...). Here each kernel that a launcher launches
(``_..._kernel[grid](...)``) is compiled to PTX and a cubin for ``GPUTarget("cuda", 90, 32)``,
once per distinct code path: each dtype family (fp32, bf16/fp16 with fp32 math, fp64), each
constexpr branch, forward and backward. The ``@triton.jit`` helpers they call are compiled
with them.

Signatures mirror what the launchers pass: pointers typed by the tensor they receive
(``*bf16``, ``*i64``, ...), Python ints as ``i32``, Python floats as ``fp32`` (``fp64``
where the kernel annotates ``tl.float64``), constexprs with the values the launchers
compute (their own helpers and module constants, read below). As the JIT specialises:
pointers are marked 16-byte aligned (a fresh torch allocation is; the optimizer's
address-table rows, views at arbitrary offsets, are not), ints that BERT-sized inputs make
multiples of 16 (D = 768, strides, ...) are marked so in the variants that model them, and
a dense table's unit stride is the constant 1.

All compilations run in ONE subprocess (importing Triton takes seconds), without
TRITON_INTERPRET (under it the kernels in this process are interpreter functions, which
cannot be compiled) and with a fresh TRITON_CACHE_DIR (so they really compile). It prints
one JSON line per variant; each variant is one test case here.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    _NVIDIA = importlib.util.find_spec("triton.backends.nvidia")
except ModuleNotFoundError:  # no triton at all
    _NVIDIA = None
if _NVIDIA is None:
    pytest.skip("Triton's NVIDIA backend is not installed", allow_module_level=True)

import triton  # noqa: E402

from course_lib.kernels import bias_gelu as BG  # noqa: E402
from course_lib.kernels import cross_entropy as CE  # noqa: E402
from course_lib.kernels import embedding as EMB  # noqa: E402
from course_lib.kernels import flash_attention as FA  # noqa: E402
from course_lib.kernels import optim_step as OPT  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KERNELS_DIR = ROOT / "course_lib" / "kernels"


def variant(vid, module, kernel, signature, constexprs, *, num_warps=4, aligned=True, divisible=(),
            vector_loads=False):  # fmt: skip
    """One compilation: ``signature`` types every runtime argument, ``constexprs`` gives the
    compile-time ones; dtype constexprs are written "tl.<name>" (JSON-friendly). ``aligned``:
    mark every pointer 16-byte aligned; ``divisible``: the int arguments to mark multiples of 16."""
    return dict(
        id=vid, module=module, kernel=kernel, signature=signature, constexprs=constexprs,
        num_warps=num_warps, aligned=aligned, divisible=list(divisible), vector_loads=vector_loads,
    )  # fmt: skip


def _acc(dtype):  # the fp32 accumulator of fp16/bf16/fp32, fp64 for fp64
    return "fp64" if dtype == "fp64" else "fp32"


def _if_multiple_of_16(n, *names):  # the int arguments the JIT marks divisible when a size is n
    return names if n % 16 == 0 else ()


# ---- embedding ----------------------------------------------------------------------------


def _embedding_forward(dtype, index, D, dense=True):
    # A dense table's stride_col is 1, which the JIT turns into a constant; a strided view's is not.
    sig = {"indices_ptr": f"*{index}", "weight_ptr": f"*{dtype}", "out_ptr": f"*{dtype}",
           "N": "i32", "D": "i32", "stride_row": "i32"} | ({} if dense else {"stride_col": "i32"})  # fmt: skip
    constexprs = dict(BLOCK_N=EMB.BLOCK_N, BLOCK_D=EMB._block_d(D)) | (dict(stride_col=1) if dense else {})
    return variant(f"embedding_forward-{dtype}-{index}-{'dense' if dense else 'strided'}", "embedding",
                   "_embedding_forward_kernel", sig, constexprs,
                   divisible=_if_multiple_of_16(D, "D", "stride_row"))  # fmt: skip


def _embedding_backward(dtype, index, D):
    sig = {"grad_out_ptr": f"*{dtype}", "indices_ptr": f"*{index}", "grad_weight_ptr": f"*{_acc(dtype)}",
           "N": "i32", "D": "i32", "padding_idx": "i32"}  # fmt: skip
    return variant(f"embedding_backward-{dtype}-{index}", "embedding", "_embedding_backward_kernel", sig,
                   dict(BLOCK_N=EMB.BLOCK_N, BLOCK_D=EMB._block_d(D)),
                   divisible=_if_multiple_of_16(D, "D"))  # fmt: skip


# ---- SGNS ---------------------------------------------------------------------------------


def _sgns(index, K, D):
    sig = {name: f"*{index}" for name in ("centres_ptr", "contexts_ptr", "negatives_ptr")}
    sig.update({name: "*fp32" for name in ("w_in_read_ptr", "w_out_read_ptr", "w_in_ptr", "w_out_ptr", "loss_ptr")})
    sig.update(lr="fp32", K="i32", D="i32")
    block_d = triton.next_power_of_2(D)
    return variant(f"sgns-{index}-K{K}-D{D}", "sgns", "_sgns_kernel", sig,
                   dict(BLOCK_K=triton.next_power_of_2(K + 1), BLOCK_D=block_d),
                   num_warps=4 if block_d >= 512 else 2)  # fmt: skip


# ---- bias + GELU --------------------------------------------------------------------------


def _bias_gelu(direction, dtype, approximate):
    names = ("x_ptr", "b_ptr", "y_ptr") if direction == "forward" else ("dy_ptr", "x_ptr", "b_ptr", "dx_ptr")
    sig = {name: f"*{dtype}" for name in names} | {"numel": "i32", "N": "i32"}
    return variant(f"bias_gelu_{direction}-{dtype}-{approximate}", "bias_gelu", f"_bias_gelu_{direction}_kernel",
                   sig, dict(TANH=approximate == "tanh", FP64=dtype == "fp64", BLOCK=BG.BLOCK),
                   divisible=("numel", "N") if dtype != "fp64" else ())  # BERT's (B*T, 3072) in fp32/bf16  # fmt: skip


# ---- LayerNorm ----------------------------------------------------------------------------


def _layer_norm_forward(dtype, residual, weight, N):
    sig = {"x_ptr": f"*{dtype}", "r_ptr": f"*{residual or dtype}", "w_ptr": f"*{weight}", "b_ptr": f"*{weight}",
           "y_ptr": f"*{dtype}", "h_ptr": f"*{dtype}", "mean_ptr": f"*{_acc(dtype)}", "rstd_ptr": f"*{_acc(dtype)}",
           "N": "i32", "eps": "fp32"}  # fmt: skip
    return variant(f"layer_norm_forward-{dtype}-residual_{residual}-weight_{weight}", "layer_norm",
                   "_layer_norm_forward_kernel", sig,
                   dict(HAS_RESIDUAL=residual is not None, FP64=dtype == "fp64", BLOCK=triton.next_power_of_2(N)),
                   divisible=_if_multiple_of_16(N, "N"))  # fmt: skip


def _layer_norm_backward(dtype, weight, N):
    acc = _acc(dtype)
    sig = {"dy_ptr": f"*{dtype}", "h_ptr": f"*{dtype}", "w_ptr": f"*{weight}", "mean_ptr": f"*{acc}",
           "rstd_ptr": f"*{acc}", "dh_ptr": f"*{dtype}", "dw_ptr": f"*{acc}", "db_ptr": f"*{acc}",
           "M": "i32", "N": "i32"}  # fmt: skip
    return variant(f"layer_norm_backward-{dtype}-weight_{weight}", "layer_norm", "_layer_norm_backward_kernel", sig,
                   dict(FP64=dtype == "fp64", BLOCK=triton.next_power_of_2(N)),
                   divisible=_if_multiple_of_16(N, "N"))  # fmt: skip


# ---- RMSNorm (T5) -------------------------------------------------------------------------


def _rms_norm(direction, dtype, weight, N):
    acc = _acc(dtype)
    names = {"forward": {"x_ptr": dtype, "w_ptr": weight, "y_ptr": dtype, "rstd_ptr": acc},
             "backward": {"dy_ptr": dtype, "x_ptr": dtype, "w_ptr": weight, "rstd_ptr": acc, "dx_ptr": dtype,
                          "dw_ptr": acc}}[direction]  # fmt: skip
    sig = {n: f"*{t}" for n, t in names.items()}
    sig |= {"N": "i32", "eps": "fp32"} if direction == "forward" else {"M": "i32", "N": "i32"}
    return variant(f"rms_norm_{direction}-{dtype}-weight_{weight}", "rms_norm", f"_rms_norm_{direction}_kernel", sig,
                   dict(FP64=dtype == "fp64", BLOCK=triton.next_power_of_2(N)),
                   divisible=_if_multiple_of_16(N, "N"))  # fmt: skip


# ---- softmax ------------------------------------------------------------------------------


def _softmax(direction, dtype, N):
    names = ("x_ptr", "y_ptr") if direction == "forward" else ("dy_ptr", "y_ptr", "dx_ptr")
    sig = {name: f"*{dtype}" for name in names} | {"N": "i32"}
    return variant(f"softmax_{direction}-{dtype}-N{N}", "softmax", f"_softmax_{direction}_kernel", sig,
                   dict(BLOCK=triton.next_power_of_2(N), FP64=dtype == "fp64"),
                   divisible=_if_multiple_of_16(N, "N"))  # fmt: skip


# ---- flash attention ----------------------------------------------------------------------

_FLASH_POINTERS = {
    "forward": ("q_ptr", "k_ptr", "v_ptr", "mask_ptr", "bias_ptr", "o_ptr", "lse_ptr"),
    "backward_dkdv": ("q_ptr", "k_ptr", "v_ptr", "mask_ptr", "bias_ptr", "do_ptr", "lse_ptr", "delta_ptr", "dk_ptr",
                      "dv_ptr"),
    "backward_dq": ("q_ptr", "k_ptr", "v_ptr", "mask_ptr", "bias_ptr", "do_ptr", "lse_ptr", "delta_ptr", "dq_ptr",
                    "dbias_ptr"),
}  # fmt: skip


def _flash(kernel, dtype, has_mask, *, causal=False, bias=None, hs=64):
    """``bias``: None, or the bias tensor's dtype (fp32 for T5's relative bias under any q dtype)."""
    sig = {}
    for name in _FLASH_POINTERS[kernel]:
        if name == "mask_ptr":  # the int32 mask, or q itself (unused) without one
            sig[name] = "*i32" if has_mask else f"*{dtype}"
        elif name == "bias_ptr":  # the bias' broadcast view, or q itself (unused) without one
            sig[name] = f"*{bias or dtype}"
        elif name == "dbias_ptr":  # dS in the accumulator dtype, or L (unused) without a bias gradient
            sig[name] = f"*{_acc(dtype)}"
        else:
            sig[name] = f"*{_acc(dtype)}" if name in ("lse_ptr", "delta_ptr") else f"*{dtype}"
    sig |= {f"stride_{t}{d}": "i32" for t in "qkv" for d in ("b", "h", "t")}
    sig |= {f"stride_z{d}": "i32" for d in "bhqk"}
    sig |= dict(NH="i32", TQ="i32", TK="i32", HS="i32", scale="fp32")
    constexprs = dict(
        HAS_MASK=has_mask, HAS_BIAS=bias is not None, CAUSAL=causal,
        UPCAST=False,  # UPCAST only under the interpreter
        FP64=dtype == "fp64", BLOCK_M=FA.BLOCK_M, BLOCK_N=FA.BLOCK_N, BLOCK_D=FA._block_d(hs),
    )  # fmt: skip
    if kernel == "backward_dq":
        constexprs["BIAS_GRAD"] = bias is not None
    flags = ["mask" if has_mask else "nomask"] + (["causal"] if causal else []) + ([f"bias_{bias}"] if bias else [])
    # Contiguous (B, nh, T, 64) tensors: every q/k/v stride and HS a multiple of 16 (fp16/bf16,
    # the GPU's dtypes); the fp32/fp64 variants model odd sizes.
    divisible = (
        [n for n in sig if n.startswith("stride_") and not n.startswith("stride_z")] + ["HS"]
        if dtype in ("fp16", "bf16") else ()
    )  # fmt: skip
    return variant(f"flash_{kernel}-{dtype}-{'-'.join(flags)}", "flash_attention", f"_flash_{kernel}_kernel", sig,
                   constexprs, divisible=divisible)  # fmt: skip


# ---- fused linear + cross-entropy ---------------------------------------------------------


def _cross_entropy(dtype, index, V):
    sig = {"logits_ptr": f"*{dtype}", "target_ptr": f"*{index}", "loss_ptr": f"*{_acc(dtype)}",
           "stride_row": "i32", "V": "i32", "ignore_index": "i32", "divisor": "i32"}  # fmt: skip
    return variant(f"cross_entropy-{dtype}-{index}-V{V}", "cross_entropy", "_cross_entropy_kernel", sig,
                   dict(FP64=dtype == "fp64", BLOCK_V=CE._block_v(V)), num_warps=CE.NUM_WARPS,
                   divisible=_if_multiple_of_16(V, "stride_row", "V"))  # fmt: skip


# ---- optimizer steps ----------------------------------------------------------------------


def _adam(param, *, l2=False, decoupled=False, amsgrad=False, maximize=False, aligned=True, vector_loads=False):
    addresses = ("param_addrs", "grad_addrs", "exp_avg_addrs", "exp_avg_sq_addrs", "max_exp_avg_sq_addrs",
                 "numels", "first_blocks")  # fmt: skip
    scalars = ("lr", "beta1", "beta2", "eps", "weight_decay", "step_size", "bias_correction2_sqrt")
    sig = {n: "*i64" for n in addresses} | {"num_tensors": "i32"} | {n: "fp64" for n in scalars}
    constexprs = dict(
        PARAM_DTYPE=f"tl.{_TL[param]}", STATE_DTYPE=f"tl.{_TL[_acc(param)]}", L2_DECAY=l2, DECOUPLED_DECAY=decoupled,
        AMSGRAD=amsgrad, MAXIMIZE=maximize, ALIGNED=aligned, BLOCK=OPT.BLOCK,
    )  # fmt: skip
    flags = "-".join(k for k, on in dict(l2=l2, decoupled=decoupled, amsgrad=amsgrad, maximize=maximize,
                                         aligned=aligned).items() if on) or "plain"  # fmt: skip
    # aligned=False for the pointers: the address-table rows are views at arbitrary offsets.
    return variant(f"adam-{param}-{flags}", "optim_step", "_adam_kernel", sig, constexprs,
                   num_warps=OPT.NUM_WARPS, aligned=False, vector_loads=vector_loads)  # fmt: skip


def _sgd(param, *, weight_decay=False, momentum=False, first_step=False, nesterov=False, maximize=False,
         aligned=True, vector_loads=False):  # fmt: skip
    sig = {n: "*i64" for n in ("param_addrs", "grad_addrs", "buf_addrs", "numels", "first_blocks")}
    sig |= {"num_tensors": "i32"} | {n: "fp64" for n in ("lr", "momentum", "dampening", "weight_decay")}
    flags = dict(HAS_WEIGHT_DECAY=weight_decay, HAS_MOMENTUM=momentum, FIRST_STEP=first_step, NESTEROV=nesterov,
                 MAXIMIZE=maximize, ALIGNED=aligned)  # fmt: skip
    constexprs = dict(PARAM_DTYPE=f"tl.{_TL[param]}", STATE_DTYPE=f"tl.{_TL[_acc(param)]}", **flags, BLOCK=OPT.BLOCK)
    name = "-".join(k.lower() for k, on in flags.items() if on) or "plain"
    return variant(f"sgd-{param}-{name}", "optim_step", "_sgd_kernel", sig, constexprs,
                   num_warps=OPT.NUM_WARPS, aligned=False, vector_loads=vector_loads)  # fmt: skip


_TL = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp64": "float64"}

VARIANTS = [
    # embedding: a pure copy (any float dtype, int32/int64 indices); the backward's atomic add
    # into an fp32 or fp64 accumulator. BERT's D = 768 gives BLOCK_D = 256.
    _embedding_forward("fp32", "i64", 768),
    _embedding_forward("bf16", "i32", 768),
    _embedding_forward("fp64", "i64", 10, dense=False),
    _embedding_backward("fp32", "i32", 768),
    _embedding_backward("bf16", "i64", 768),
    _embedding_backward("fp64", "i64", 10),
    # SGNS: fp32 tables only; word2vec's D = 300 (BLOCK_D = 512, 4 warps), and K = 0 negatives
    # (BLOCK_K = 1) with D = 100 (2 warps).
    _sgns("i64", 5, 300),
    _sgns("i32", 0, 100),
    # bias + GELU: erf and tanh, fp32 math (fp32 and bf16 tensors) and fp64 math.
    *(_bias_gelu(direction, dtype, approximate)
      for direction in ("forward", "backward")
      for dtype, approximate in (("fp32", "none"), ("bf16", "tanh"), ("fp64", "none"), ("fp64", "tanh"))),  # fmt: skip
    # LayerNorm: with and without the residual (an fp32 residual and weights with bf16 x, as
    # under autocast), fp64; BERT-base's N = 768 gives BLOCK = 1024.
    _layer_norm_forward("fp32", None, "fp32", 768),
    _layer_norm_forward("bf16", "fp32", "fp32", 768),
    _layer_norm_forward("fp16", "fp16", "fp16", 768),
    _layer_norm_forward("fp64", "fp64", "fp64", 100),
    _layer_norm_backward("fp32", "fp32", 768),
    _layer_norm_backward("bf16", "fp32", 768),
    _layer_norm_backward("fp64", "fp64", 100),
    # RMSNorm (T5): t5-small's d_model = 512; bf16 activations with fp32 weights (T5 keeps its
    # norms in fp32 under mixed precision), bf16 weights (xhat rounded to bf16 first), fp64.
    *(_rms_norm(direction, dtype, weight, N)
      for direction in ("forward", "backward")
      for dtype, weight, N in (("fp32", "fp32", 512), ("bf16", "fp32", 512), ("bf16", "bf16", 768),
                               ("fp16", "fp16", 512), ("fp64", "fp64", 100))),  # fmt: skip
    # softmax: BERT's attention rows (512 keys) and fp64.
    *(_softmax(direction, dtype, N)
      for direction in ("forward", "backward")
      for dtype, N in (("fp32", 512), ("bf16", 128), ("fp64", 512))),  # fmt: skip
    # flash attention: tensor-core dots (bf16, fp16), fp32 "ieee" dots and fp64 dots; with and
    # without the key-padding mask (BERT's head size 64).
    # The causal mask (GPT-2) and an fp32 additive bias (T5's relative positions) on top:
    *(_flash(kernel, dtype, has_mask, causal=causal, bias=bias)
      for kernel in ("forward", "backward_dkdv", "backward_dq")
      for dtype, has_mask, causal, bias in (
          ("bf16", True, False, None), ("fp16", False, False, None), ("fp32", True, False, None),
          ("fp64", False, False, None), ("bf16", True, True, None), ("fp32", False, True, "fp32"),
          ("bf16", True, False, "fp32"), ("fp64", True, True, "fp64"),
      )),  # fmt: skip
    # fused linear + cross-entropy: GPT-2's V = 50257 (two blocks of 32K per row), a Llama-like
    # V = 32000 with fp16 and int32 targets, fp64 on a small vocabulary.
    _cross_entropy("fp32", "i64", 50257),
    _cross_entropy("bf16", "i64", 50257),
    _cross_entropy("fp16", "i32", 32000),
    _cross_entropy("fp64", "i64", 1000),
    # optimizer steps: every constexpr branch in at least one variant; whole blocks of aligned
    # tensors must become 16-byte vector loads.
    _adam("bf16", decoupled=True, amsgrad=True, vector_loads=True),
    _adam("fp32", aligned=True),
    _adam("fp64", l2=True, maximize=True, aligned=False),
    _sgd("fp32", weight_decay=True, momentum=True, nesterov=True, vector_loads=True),
    _sgd("fp64", momentum=True, first_step=True, maximize=True, aligned=False),
    _sgd("fp16"),
]

COMPILE_SCRIPT = r"""
import importlib, json, sys, time, traceback
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)  # an H100

def constexpr_value(value):
    return getattr(tl, value[3:]) if isinstance(value, str) and value.startswith("tl.") else value

for v in json.load(sys.stdin):
    result = dict(id=v["id"])
    start = time.perf_counter()
    try:
        fn = getattr(importlib.import_module("course_lib.kernels." + v["module"]), v["kernel"])
        given = set(v["signature"]) | set(v["constexprs"])
        if given != set(fn.arg_names):
            raise TypeError(f"the test's arguments {sorted(given)} are not the kernel's {sorted(fn.arg_names)}")
        signature = {n: ("constexpr" if n in v["constexprs"] else v["signature"][n]) for n in fn.arg_names}
        constexprs = {n: constexpr_value(x) for n, x in v["constexprs"].items()}
        # What the JIT gives a 16-byte aligned tensor and an int that is a multiple of 16.
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
                 if (v["aligned"] and signature[n].startswith("*")) or n in v["divisible"]}
        unknown = set(v["divisible"]) - {n for n, t in v["signature"].items() if t[0] in "iu"}
        if unknown:
            raise TypeError(f"divisible names no int argument: {sorted(unknown)}")
        source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
        compiled = triton.compile(source, target=TARGET, options=dict(num_warps=v["num_warps"]))
        ptx = compiled.asm["ptx"]
        result.update(ok=True, cubin=bool(compiled.asm.get("cubin")), vector_loads="ld.global.v4" in ptx)
    except Exception as e:
        result.update(ok=False, error=f"{type(e).__name__}: {e}"[-6000:], traceback=traceback.format_exc()[-3000:])
    result["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(result), flush=True)
"""


def _launched_kernels() -> dict[str, set[str]]:
    """{module: names launched as ``name[grid](...)``} in course_lib/kernels/*.py."""
    launched = {}
    for path in sorted(KERNELS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript):
                if isinstance(node.func.value, ast.Name) and node.func.value.id.endswith("_kernel"):
                    launched.setdefault(path.stem, set()).add(node.func.value.id)
    return launched


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, dict]:
    """Compile every variant in one subprocess: {variant id: its JSON result}."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton_cache"))  # a fresh cache: really compile
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT], input=json.dumps(VARIANTS), env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["id"]] = result
    if proc.returncode != 0 or len(results) < len(VARIANTS):
        why = f"the compile subprocess exited with {proc.returncode}: {proc.stderr[-3000:]}"
        for v in VARIANTS:
            results.setdefault(v["id"], dict(id=v["id"], ok=False, error=why))
    return results


def test_every_launched_kernel_is_compiled():
    covered = {}
    for v in VARIANTS:
        covered.setdefault(v["module"], set()).add(v["kernel"])
    launched = _launched_kernels()
    assert launched, f"found no kernel launches in {KERNELS_DIR}"
    missing = {m: sorted(names - covered.get(m, set())) for m, names in launched.items()}
    missing = {m: names for m, names in missing.items() if names}
    assert not missing, f"kernels launched but never compiled here: {missing}"
    ids = [v["id"] for v in VARIANTS]
    assert len(ids) == len(set(ids)), "variant ids must be unique"


@pytest.mark.parametrize("v", VARIANTS, ids=[v["id"] for v in VARIANTS])
def test_kernel_compiles_for_sm90(compiled, v):
    result = compiled[v["id"]]
    where = f"{v['module']}.{v['kernel']} ({v['id']})"
    assert result["ok"], f"{where} does not compile for sm_90:\n{result['error']}\n{result.get('traceback', '')}"
    assert result["cubin"], "no cubin: ptxas did not run"
    if v["vector_loads"]:
        assert result["vector_loads"], "whole blocks of aligned tensors should use 16-byte vector loads (ld.global.v4)"
