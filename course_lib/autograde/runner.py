"""The independent check's runner: runs INSIDE the sandbox, in a fresh Python process.

The grader copies this file and ``wire.py`` into a read-only job folder and starts::

    python -I /job/runner.py /job /out

``/job/job.json`` holds the preamble (the notebook's imports), the student's definitions (only
the top-level ``def``/``class``/imports/constants of their cells, extracted by the grader from
the notebook's text: nothing the notebook's cells did when they ran; each is run on its own,
and one that raises is skipped) and the checks to run; ``/job/inputs.safetensors`` the input tensors. For every case the runner calls
the student's function and appends one JSON line to ``/out/progress.jsonl``; returned tensors
go to ``/out/r<check>_<case>.safetensors``.

Nothing here is trusted: the student's code runs in this process and may rewrite any of it.
The grader reads the results as data (JSON, safetensors), checks their types, dtypes, shapes
and values against references it computed itself outside the sandbox, and reads the progress
lines only to know which check a hang or crash happened in. Only the standard library, torch
and safetensors are imported here: ``course_lib`` is not even visible in the sandbox.
"""

import json
import os
import sys


def main(job_dir: str, out_dir: str) -> int:
    progress = open(os.path.join(out_dir, "progress.jsonl"), "a", buffering=1, encoding="utf-8")
    runner_pid = os.getpid()

    def only_the_runner() -> None:  # a process the student forked must not go on checking
        if os.getpid() != runner_pid:
            os._exit(0)

    def emit(**event) -> None:
        progress.write(json.dumps(event) + "\n")
        progress.flush()

    sys.path.insert(0, job_dir)
    import torch  # noqa: F401 - loaded before any student code
    from safetensors.torch import load, save

    import wire

    with open(os.path.join(job_dir, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    with open(os.path.join(job_dir, "inputs.safetensors"), "rb") as f:
        inputs = load(f.read())
    namespace = {"__name__": "__student__"}
    try:
        exec(compile(job["preamble"], "<notebook imports>", "exec"), namespace)
    except BaseException as err:  # noqa: BLE001
        emit(event="load_error", error=type(err).__name__, message=str(err)[:300])
        return 0
    for n, (label, code) in enumerate(job["definitions"]):
        try:  # one statement at a time: a failing one leaves its name undefined, nothing more
            exec(compile(code, f"<{label}>", "exec"), namespace)
        except BaseException as err:  # noqa: BLE001 - SystemExit included
            only_the_runner()
            emit(event="skipped", statement=n, error=type(err).__name__)
        only_the_runner()
    emit(event="loaded")
    for k, check in enumerate(job["checks"]):
        emit(event="start", check=k)
        fn = namespace.get(check["function"])
        for i, case in enumerate(check["cases"]):
            if not callable(fn):
                emit(event="result", check=k, case=i, status="missing")
                continue
            fresh = {name: t.clone() for name, t in inputs.items() if name.startswith(f"c{check['index']}.{i}.")}
            args = wire.decode(case["args"], fresh)
            kwargs = wire.decode(case["kwargs"], fresh)
            try:
                out = fn(*args, **kwargs)
            except BaseException as err:  # noqa: BLE001
                only_the_runner()
                emit(event="result", check=k, case=i, status="raised",
                     exc=[c.__name__ for c in type(err).__mro__], message=str(err)[:300])
                continue
            only_the_runner()
            try:
                tensors: dict = {}
                value = wire.encode(out, tensors, "out")
                if tensors:
                    with open(os.path.join(out_dir, f"r{k}_{i}.safetensors"), "wb") as f:
                        f.write(save(tensors))
                emit(event="result", check=k, case=i, status="returned", value=value)
            except Exception:  # noqa: BLE001 - an object that is not plain data
                emit(event="result", check=k, case=i, status="unsendable", type=type(out).__name__[:100])
        emit(event="done", check=k)
    emit(event="finished")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
