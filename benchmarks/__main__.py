"""``python -m benchmarks NAME [NAME ...]`` runs benchmarks; ``--list`` names them."""

import argparse
import importlib
import sys

import torch

from . import BENCHMARKS, CPU_BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    if args.list:
        for name, description in BENCHMARKS.items():
            print(f"{name:12}  {description}")
        return 0
    if not args.names:
        parser.error("name at least one benchmark (see --list)")
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    # Checked before importing the benchmarks, so a CPU machine needs nothing beyond torch.
    if torch.cuda.is_available():
        from course_lib.kernels.backend import interpreter_active

        if interpreter_active():
            print("benchmarks: TRITON_INTERPRET=1 is set, so the kernels would run in the CPU interpreter; unset it.")
            return 1
    for name in args.names:
        if not torch.cuda.is_available() and name not in CPU_BENCHMARKS:
            print(f"benchmarks: {name}: timing needs a CUDA GPU and none is available; nothing was timed.")
            continue
        importlib.import_module(f".{name}", __package__).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
