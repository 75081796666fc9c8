"""Benchmarks of course_lib's kernels against their PyTorch peers: ``python -m benchmarks NAME``.

Each benchmark is a module ``benchmarks/NAME.py`` with a ``run()`` function; registering
it is one line in ``BENCHMARKS`` below. Kernel timings need a CUDA GPU; the benchmarks in
``CPU_BENCHMARKS`` also compare whole trainings against their peer on the CPU.
"""

BENCHMARKS = {
    "embedding": "embedding lookup, forward and backward: Triton vs torch eager vs torch.compile",
    "optim": "AdamW / SGD-momentum step on GPT-2 small (124M): course Triton fused vs torch foreach and fused",
    "word2vec": "word2vec training: course_lib (torch on CPU, Triton SGNS kernel on GPU) vs gensim, words/s and accuracy",
    "bert": "BERT pretraining step vs HF (CPU and GPU); flash attention vs SDPA, LayerNorm/bias-GELU bandwidth (GPU)",
    "autograde": "autograding throughput: 100 ch01 submissions, 1 worker vs one per core (CPU, sandbox, root)",
}

CPU_BENCHMARKS = {"word2vec", "bert", "autograde"}
