"""course_lib.distributed: DDP on 2 CPU processes (gloo) equals one process with the global
batch; a checkpoint resumes bitwise; a worker that dies ends the run with a clear error.

The 2-process runs go through ``torchrun`` exactly as a user launches them (one subprocess
each, a few seconds); the single-process reference runs in this process."""

import json
from pathlib import Path

import pytest
import torch

from course_lib import distributed as cd

MODEL = dict(vocab_size=61, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
             attn_pdrop=0.0)


pytestmark = pytest.mark.usefixtures("one_thread_torch_backend")  # conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("blocks") / "blocks.pt"
    torch.save(torch.randint(0, 61, (48, 16), generator=torch.Generator().manual_seed(0)), path)
    return str(path)


def config(data, out_dir, **kwargs):
    # SGD, not Adam, for the equality: some gradients are exactly zero in exact arithmetic (the
    # key bias: softmax ignores a constant shift), and Adam's g / sqrt(v) would turn their
    # rounding noise, different in the two runs, into steps of size lr.
    return cd.TrainConfig(data=data, out_dir=str(out_dir), **{
        "model": MODEL, "steps": 5, "batch_size": 3, "grad_accum_steps": 2, "optimizer": "sgd", "lr": 0.1, "timeout_s": 30.0,
        **kwargs})


def params(checkpoint):
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]


def test_two_processes_equal_one_process_with_the_global_batch(data, tmp_path):
    """2 ranks x 2 micro-batches (no_sync on the first) x 3 blocks = one process with 12 blocks
    per step; the run crosses an epoch boundary (48 blocks, 12 per step: 4 steps per epoch)."""
    result = cd.run_torchrun(config(data, tmp_path / "ddp"), nproc=2, timeout_s=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    single = cd.train(config(data, tmp_path / "single", batch_size=6))
    ddp, ref = params(tmp_path / "ddp" / "step5.pt"), params(single["checkpoint"])
    worst = max((ddp[k] - ref[k]).abs().max().item() for k in ref)
    moved = max((ref[k] - cd.build(config(data, tmp_path))[0].state_dict()[k]).abs().max().item() for k in ref)
    print(f"DDP (2 processes) vs 1 process: max |param diff| = {worst:.2e} after 5 steps (params moved {moved:.2e})")
    assert worst <= 1e-6 and moved > 1e-2


def test_fsdp_on_two_processes_equals_one_process(data, tmp_path):
    """The same run with the parameters sharded (FSDP2's fully_shard, gloo): each rank holds
    half of every parameter, and the result is the single-process one. DDP runs first in the
    same launch (two configs, one process group), as the book runs them."""
    runs = [config(data, tmp_path / name, parallel=name, steps=3) for name in ("ddp", "fsdp")]
    result = cd.run_torchrun(runs, nproc=2, timeout_s=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    single = cd.train(config(data, tmp_path / "single", batch_size=6, steps=3))
    ref = params(single["checkpoint"])
    for name in ("ddp", "fsdp"):
        got = params(tmp_path / name / "step3.pt")
        assert sorted(got) == sorted(ref)
        worst = max((got[k] - ref[k]).abs().max().item() for k in ref)
        info = json.loads((tmp_path / name / "result.json").read_text())
        print(f"{name.upper()} (2 processes) vs 1 process: max |param diff| = {worst:.2e}; rank 0 holds "
              f"{info['local_parameters']:,} of {info['parameters']:,} parameters")
        assert worst <= 1e-6 and info["parallel"] == name
    assert info["local_parameters"] <= info["parameters"] // 2 + 64  # FSDP: half, up to the padding of odd rows
    with pytest.raises(ValueError, match="config must be a TrainConfig or a non-empty list"):
        cd.run_torchrun([], nproc=2)


def test_resume_from_a_checkpoint_is_exact(data, tmp_path):
    straight = cd.train(config(data, tmp_path / "a", optimizer="adamw", lr=1e-2, steps=6, model={**MODEL, "resid_pdrop": 0.1}))
    cd.train(config(data, tmp_path / "b", optimizer="adamw", lr=1e-2, steps=3, model={**MODEL, "resid_pdrop": 0.1}))
    resumed = cd.train(config(data, tmp_path / "b", optimizer="adamw", lr=1e-2, steps=6, resume=str(tmp_path / "b" / "step3.pt"),
                              model={**MODEL, "resid_pdrop": 0.1}))
    a, b = params(straight["checkpoint"]), params(resumed["checkpoint"])
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise, dropout included
    assert resumed["losses"] == straight["losses"][3:]


def test_a_dying_worker_ends_the_run_with_a_clear_error(data, tmp_path):
    result = cd.run_torchrun(config(data, tmp_path / "crash", crash_at_step=2, timeout_s=20.0), nproc=2, timeout_s=120)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "simulated exit at step 2" in log
    # torchrun names the failed rank and its exit code (17); the other rank was stopped, not left hanging.
    assert "exitcode" in log and "17" in log, log[-3000:]
    assert not Path(tmp_path / "crash" / "step5.pt").exists()


def test_a_silent_worker_times_out_with_a_clear_error(data, tmp_path):
    """A rank that is alive but stops answering: the others give up after timeout_s with a
    message that says so (WorkerLost), and torchrun then stops the silent one."""
    result = cd.run_torchrun(config(data, tmp_path / "hang", crash_at_step=1, crash_mode="hang", timeout_s=3.0),
                             nproc=2, timeout_s=120)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "WorkerLost: rank 0 of 2" in log and "did not answer within timeout_s = 3 s" in log, log[-3000:]


def test_bad_config_is_named(data, tmp_path):
    with pytest.raises(ValueError, match="grad_accum_steps must be a positive int"):
        config(data, tmp_path, grad_accum_steps=0)
    with pytest.raises(ValueError, match="optimizer must be 'adamw' or 'sgd'"):
        config(data, tmp_path, optimizer="lion")
    with pytest.raises(ValueError, match="too few for 1 rank"):
        cd.train(config(data, tmp_path, batch_size=40))
