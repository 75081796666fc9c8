"""Data-parallel training of the chapter's GPT with ``torch.distributed``.

**Data parallelism** (数据并行): N processes (*ranks*) each hold a full copy of the model,
each takes a different slice of the global batch, and after the backward pass the
gradients are **all-reduced** (summed across ranks, then divided by N) so that every copy
takes the same optimizer step. ``DistributedDataParallel`` (DDP; Li et al., 2020) does the
all-reduce in buckets while the backward is still running, and ``DistributedSampler`` gives
rank r the examples perm[r], perm[r + N], perm[r + 2N], ... of each epoch's permutation, so
the ranks' slices are disjoint and together are exactly what one process with N times the
batch would see. With equal slices, mean of the N local mean losses = the global mean loss,
so the parameters follow the single-process run up to float rounding (tests/test_distributed.py).

**Gradient accumulation** (梯度累积): ``grad_accum_steps`` micro-batches per step, each loss
divided by their number; inside ``model.no_sync()`` DDP skips the all-reduce, so only the
last micro-batch of a step communicates.

**When the model no longer fits: FSDP** (完全分片数据并行; Zhao et al., 2023, after ZeRO,
Rajbhandari et al., 2020). DDP keeps on every rank the parameters, the gradients and the
optimizer state: with AdamW in fp32, 16 bytes per parameter (4 + 4 + 8), so a 1B-parameter
model needs 16 GB per GPU before a single activation. ``parallel="fsdp"`` shards all three:
each rank stores 1/N of every tensor; before a block runs, its full weights are
*all-gathered* and freed right after; gradients are *reduce-scattered* (each rank receives the
sum of its own shard only) and each rank updates its shard. The arithmetic is DDP's, the
memory per rank is divided by N, the price is more communication (an all-gather in the
forward and again in the backward, where DDP does one all-reduce).

Launch with ``torchrun`` (one process per CPU core or GPU):

    torchrun --standalone --nproc_per_node=2 -m course_lib.distributed --config run.json

``gloo`` is the CPU backend, ``nccl`` the GPU one. torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous address in each worker's environment; without them (a plain
``python``) :func:`train` runs one process and no process group at all.

**Checkpoints and exact resume**: rank 0 writes the model, the optimizer state and the step;
a resumed run continues *bitwise* where the first stopped, because nothing else carries
state: the data order is a function of (seed, epoch) and the position in it a function of the
step, and each step re-seeds the RNG from (seed, rank, step) (dropout).

**A worker that dies** must not leave the others waiting forever in an all-reduce: torchrun
notices the failed process and stops the rest, and every collective has a ``timeout_s``
(``init_process_group(timeout=...)``), after which :func:`train` raises an error that says
which rank gave up and why, instead of hanging.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, TensorDataset

from .models.gpt2 import GPT2Config, GPT2LMHeadModel
from .optim import SGD, AdamW


@dataclass
class TrainConfig:
    """One training run. ``batch_size`` is per rank and per micro-batch: the global batch is
    batch_size * grad_accum_steps * world_size sequences."""

    data: str  # a file written by torch.save: an int64 tensor (N, T) of token blocks
    out_dir: str
    model: dict = field(default_factory=dict)  # GPT2Config keyword arguments
    steps: int = 100
    batch_size: int = 8
    grad_accum_steps: int = 1
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9)
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    save_every: int = 0  # 0: save only at the end
    resume: str | None = None  # a checkpoint file written by this module
    timeout_s: float = 60.0  # how long a collective may wait for the other ranks
    fused_loss: bool = False
    parallel: str = "ddp"  # "ddp": every rank holds everything; "fsdp": parameters, gradients, optimizer state sharded
    crash_at_step: int | None = None  # tests only: at this step, rank crash_rank...
    crash_rank: int = 1
    crash_mode: str = "exit"  # ... exits abruptly ("exit") or stops answering ("hang")

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.crash_mode not in ("exit", "hang"):
            raise ValueError(f"crash_mode must be 'exit' or 'hang', got {self.crash_mode!r}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        if self.parallel == "fsdp" and self.resume:
            raise ValueError("resume: checkpoints of FSDP runs hold the model only (no sharded optimizer state)")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s!r}")


# ---- the process group --------------------------------------------------------------------


def init_distributed(timeout_s: float = 60.0) -> tuple[int, int]:
    """Join the process group that torchrun describes in the environment; (rank, world_size).
    Without torchrun's variables: (0, 1) and no process group."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def _device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


class WorkerLost(RuntimeError):
    """A collective failed or timed out: another rank died or stopped responding."""


@contextlib.contextmanager
def _collectives(rank: int, world_size: int, timeout_s: float, what: str):
    """Turn the backend's low-level failure (a closed socket, a timeout) into one sentence."""
    try:
        yield
    except (RuntimeError, dist.DistError) as e:
        if world_size == 1 or isinstance(e, WorkerLost):
            raise
        raise WorkerLost(
            f"rank {rank} of {world_size}: {what} failed: another worker died or did not answer within "
            f"timeout_s = {timeout_s:g} s (its log says why). Backend error: {str(e).splitlines()[0][:300]}"
        ) from e


# ---- data -----------------------------------------------------------------------------------


def load_blocks(path: str | os.PathLike) -> TensorDataset:
    blocks = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blocks, torch.Tensor) or blocks.dim() != 2 or blocks.is_floating_point():
        raise ValueError(f"{path} must hold an integer tensor (N, T) of token blocks, got "
                         f"{getattr(blocks, 'shape', type(blocks).__name__)}")
    return TensorDataset(blocks)


def micro_batches(dataset, rank: int, world_size: int, config: TrainConfig, step: int):
    """The ``grad_accum_steps`` micro-batches of rank ``rank`` at optimizer step ``step``: a
    pure function of (seed, step), which is what makes resuming exact."""
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed,
                                 drop_last=True)
    per_step = config.batch_size * config.grad_accum_steps
    steps_per_epoch = len(sampler) // per_step
    if steps_per_epoch == 0:
        raise ValueError(f"the data has {len(dataset)} blocks: too few for {world_size} rank(s) x "
                         f"{per_step} blocks per step")
    sampler.set_epoch(step // steps_per_epoch)  # a new permutation every epoch, the same on every rank
    indices = list(sampler)
    start = (step % steps_per_epoch) * per_step
    blocks = dataset.tensors[0]
    for m in range(config.grad_accum_steps):
        chosen = indices[start + m * config.batch_size : start + (m + 1) * config.batch_size]
        yield blocks[chosen]


# ---- checkpoints --------------------------------------------------------------------------


def full_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's state dict with FSDP's shards gathered into whole tensors (a collective:
    every rank must call it); plain tensors pass through."""
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(path: str | os.PathLike, model_state: dict, optimizer, step: int, config: TrainConfig) -> None:
    """Model, optimizer (None for FSDP) and step, written atomically (a crash while saving
    leaves the old file)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model_state, "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "step": step, "config": asdict(config)}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, model, optimizer) -> int:
    """Restore model and optimizer in place; returns the step to continue from."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


# ---- training -----------------------------------------------------------------------------


def build(config: TrainConfig, device=None, shard: bool = False):
    """The model (the same initial weights on every rank: seeded) and its optimizer. With
    ``shard`` (FSDP), each block and then the rest (embeddings, ln_f, the tied head) become
    FSDP units: each rank keeps 1/N of every parameter, gathers a unit's full weights just
    before using it and frees them after; gradients are reduce-scattered, and the optimizer
    updates only the local shard (built after sharding, on the shards)."""
    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(GPT2Config(**config.model)).to(device or "cpu")
    if shard:
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    if config.optimizer == "sgd":
        optimizer = SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    else:
        optimizer = AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return model, optimizer


def train(config: TrainConfig) -> dict:
    """Train for ``config.steps`` optimizer steps on this rank; returns (on every rank) the
    per-step mean losses and the final checkpoint's path."""
    rank, world_size = init_distributed(config.timeout_s)
    device = _device()
    fsdp = config.parallel == "fsdp" and world_size > 1
    with _collectives(rank, world_size, config.timeout_s, "sharding the model"):
        model, optimizer = build(config, device, shard=fsdp)
    start = load_checkpoint(config.resume, model, optimizer) if config.resume else 0
    dataset = load_blocks(config.data)
    ddp = None
    if world_size > 1 and not fsdp:
        from torch.nn.parallel import DistributedDataParallel

        with _collectives(rank, world_size, config.timeout_s, "broadcasting the initial weights"):
            ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    net = ddp if ddp is not None else model
    out_dir = Path(config.out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    losses = []
    model.train()
    for step in range(start, config.steps):
        if config.crash_at_step == step and rank == config.crash_rank:
            print(f"rank {rank}: simulated {config.crash_mode} at step {step}", file=sys.stderr, flush=True)
            if config.crash_mode == "exit":
                os._exit(17)  # as if killed: no clean-up, no goodbye to the other ranks
            time.sleep(10 * config.timeout_s)  # alive but silent: the others must time out, not wait forever
        torch.manual_seed(config.seed + 1_000_003 * rank + step)  # dropout: a function of (rank, step)
        step_loss = torch.zeros((), device=device)
        for m, batch in enumerate(micro_batches(dataset, rank, world_size, config, step)):
            batch = batch.to(device)
            last = m == config.grad_accum_steps - 1
            # Every micro-batch but the last only accumulates .grad locally: no all-reduce.
            sync = contextlib.nullcontext() if (ddp is None or last) else ddp.no_sync()
            if fsdp:  # FSDP's equivalent of no_sync: no reduce-scatter until the last micro-batch
                model.set_requires_gradient_sync(last)
            with sync, _collectives(rank, world_size, config.timeout_s, f"the gradient all-reduce of step {step}"):
                loss = net(batch, labels=batch, fused_loss=config.fused_loss).loss / config.grad_accum_steps
                loss.backward()
            step_loss += loss.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if world_size > 1:  # for the log only: the mean loss over all ranks
            with _collectives(rank, world_size, config.timeout_s, f"the loss all-reduce of step {step}"):
                dist.all_reduce(step_loss)
            step_loss /= world_size
        losses.append(step_loss.item())
        done = step + 1
        if done == config.steps or (config.save_every and done % config.save_every == 0):
            with _collectives(rank, world_size, config.timeout_s, "gathering the checkpoint"):
                state = full_state_dict(model) if fsdp else model.state_dict()
            if rank == 0:
                save_checkpoint(out_dir / f"step{done}.pt", state, None if fsdp else optimizer, done, config)
    if world_size > 1:
        with _collectives(rank, world_size, config.timeout_s, "the final barrier"):
            dist.barrier()
    local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())
    return {"rank": rank, "world_size": world_size, "losses": losses, "local_parameters": local,
            "parameters": sum(p.numel() for p in model.parameters()), "parallel": config.parallel,
            "checkpoint": str(out_dir / f"step{config.steps}.pt")}


def run_torchrun(config: TrainConfig | list[TrainConfig], nproc: int, *, timeout_s: float = 300.0,
                 env: dict | None = None):
    """Launch ``torchrun --standalone --nproc_per_node=nproc`` on ``config`` (written next to
    its outputs) and return the finished ``subprocess.CompletedProcess``. A list of configs
    runs them one after the other in the same worker processes and process group (one launch:
    on a CPU most of a small run's time is starting the processes)."""
    import subprocess

    configs = [config] if isinstance(config, TrainConfig) else list(config)
    if not configs or not all(isinstance(c, TrainConfig) for c in configs):
        raise ValueError(f"config must be a TrainConfig or a non-empty list of them, got {config!r}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "course_lib.distributed"]
    for c in configs:
        out = Path(c.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(c)))
        command += ["--config", str(out / "config.json")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    environment.pop("TRITON_INTERPRET", None)  # the workers run the plain PyTorch paths on the CPU
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=environment)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, action="append",
                        help="a JSON file with TrainConfig's fields; repeated: the runs one after the other")
    args = parser.parse_args(argv)
    configs = [TrainConfig(**json.loads(Path(path).read_text())) for path in args.config]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        for config in configs:
            result = train(config)
            if result["rank"] == 0:
                (Path(config.out_dir) / "result.json").write_text(json.dumps(result))
                print(f"rank 0 of {result['world_size']}: {config.steps} steps, final loss {result['losses'][-1]:.4f}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
