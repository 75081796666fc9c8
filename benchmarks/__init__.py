"""Benchmarks of course_lib's kernels against their PyTorch peers: ``python -m benchmarks NAME``.

Each benchmark is a module ``benchmarks/NAME.py`` with a ``run()`` function; registering
it is one line in ``BENCHMARKS`` below. Kernel timings need a CUDA GPU; the benchmarks in
``CPU_BENCHMARKS`` also compare whole trainings against their peer on the CPU.

**The GPU report.** ``make gpu-report`` (``benchmarks/report.py``) runs the ``gpu`` tests and
then every benchmark in ``BENCHMARKS``, each in its own process under a share of a time
budget, and writes ``benchmarks/reports/<device>-<date>.md``. A registered benchmark is in
the report with nothing more to do, as long as it measures through ``harness.measure`` (each
row is recorded the moment it is timed; give ``flops=`` and ``dtype=`` for a compute-bound
case so the report shows TFLOP/s against the device's peak) and prints its tables with
``harness.format_table``. Measure course_lib's implementation first in each case: a table
cut off by the time limit is reported with the first implementation as the reference. A
result that is not a CUDA timing (CPU wall clock, words/s) goes through
``harness.record_result``. In the report, a benchmark runs as ``run()``, or as
``main(REPORT_ARGS[NAME])`` when it has a line in ``REPORT_ARGS`` (keep its sizes modest:
the whole report must fit in a few minutes on one H100); ``None`` leaves it out unless
named (``make gpu-report BENCH="embedding optim"``).
"""

BENCHMARKS = {
    "embedding": "embedding lookup, forward and backward: Triton vs torch eager vs torch.compile",
    "optim": "AdamW / SGD-momentum step on GPT-2 small (124M): course Triton fused vs torch foreach and fused",
    "word2vec": "word2vec training: course_lib (C loop on CPU, Triton SGNS kernel on GPU) vs gensim, words/s and accuracy",
    "bert": "BERT pretraining step vs HF (CPU and GPU); flash attention vs SDPA, LayerNorm/bias-GELU bandwidth (GPU)",
    "roberta_albert": "RoBERTa MLM / ALBERT MLM+SOP training step vs HF eager (CPU); dynamic masking vs HF's collator",
    "gpt2": "GPT-2 generate with the KV cache vs HF (tokens/s, CPU and GPU); fused linear+cross-entropy peak memory and time",
    "t5": "T5 training step vs HF (CPU and GPU); RMSNorm kernel vs torch eager and compiled, attention with relative bias vs SDPA (GPU)",
    "autograde": "autograding throughput: 100 ch01 submissions, 1 worker vs one per core (CPU, sandbox, root)",
}

CPU_BENCHMARKS = {"word2vec", "bert", "autograde", "gpt2", "t5", "roberta_albert"}

# How `make gpu-report` runs a benchmark: main(argv) with these arguments, or None to leave it
# out of the default set (not listed: run()). tests/test_gpu_report.py checks they parse.
REPORT_ARGS = {
    # The speed part only, on issue 16's corpus shape (840k tokens, 3 epochs); quality is the CPU's.
    "word2vec": ["--parts", "1", "--repeats", "1", "--shapes", "issue-16"],
    "bert": ["--quick", "--repeats", "3"],  # CPU: the small config only; the GPU part in full
    "autograde": None,  # grading throughput: CPU only, nothing on the GPU
    "gpt2": ["--quick", "--repeats", "1"],  # CPU: the tiny generate case and the loss memory; the GPU part in full
    "t5": ["--quick", "--repeats", "3"],  # CPU: the small config only; the GPU part in full
    "roberta_albert": ["--quick", "--repeats", "3"],  # CPU only: the small configs and the masking
}
