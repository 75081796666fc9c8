"""Shared pieces of Chapter 8's experiments (``benchmarks/decoder_only_*.py``): provenance of a
result file, the corpus as fixed-length token windows, and writing results.

Every experiment writes one JSON file into ``benchmarks/results/`` with the exact command, the
commit (``git rev-parse HEAD``, plus whether the tree had uncommitted changes), the machine and
the date, so the book can plot committed results and say where each number came from.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def provenance(argv: list[str] | None = None) -> dict:
    """Command, commit, machine and date of this run."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    argv = sys.argv if argv is None else argv
    module = Path(argv[0]).stem if argv else "?"
    return {
        "command": " ".join(["python", "-m", f"benchmarks.{module}", *argv[1:]]),
        "commit": git("rev-parse", "HEAD") or "unknown",
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(name: str, payload: dict, out: str | os.PathLike | None = None) -> Path:
    """Write ``payload`` (with its provenance) as JSON; returns the path."""
    path = Path(out) if out is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def read_results(name: str, path: str | os.PathLike | None = None) -> dict:
    """The committed results of experiment ``name`` (the book reads them here)."""
    path = Path(path) if path is not None else RESULTS / f"{name}.json"
    return json.loads(path.read_text())


def corpus_windows(window: int, vocab_size: int = 2000, heldout_fraction: float = 0.1, max_sentences=None):
    """The stdlib docstrings (``course_lib.data``) in WordPiece tokens (Chapter 4's tokenizer,
    trained on the *training* sentences only), concatenated and cut into windows of ``window``
    tokens. The held-out windows come from the last sentences of the corpus: other modules of
    the standard library than the training windows. Returns (tokenizer, train, heldout)."""
    from course_lib.data import stdlib_docstrings_corpus
    from course_lib.tokenization import WordPieceTokenizer

    sentences = [" ".join(s) for s in stdlib_docstrings_corpus(max_sentences)]
    cut = int(len(sentences) * (1 - heldout_fraction))
    tokenizer = WordPieceTokenizer.train(sentences[:cut], vocab_size=vocab_size, show_progress=False)

    def windows(texts):
        ids = [i for t in texts for i in tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t))]
        n = len(ids) // window
        return torch.tensor(ids[: n * window]).view(n, window)

    return tokenizer, windows(sentences[:cut]), windows(sentences[cut:])
