"""Benchmarks of course_lib's kernels against their PyTorch peers: ``python -m benchmarks NAME``.

Each benchmark is a module ``benchmarks/NAME.py`` with a ``run()`` function; registering
it is one line in ``BENCHMARKS`` below. Timing needs a CUDA GPU.
"""

BENCHMARKS = {
    "embedding": "embedding lookup, forward and backward: Triton vs torch eager vs torch.compile",
    "optim": "AdamW / SGD-momentum step on GPT-2 small (124M): course Triton fused vs torch foreach and fused",
}
