"""A real data-parallel run on one CPU: two processes, ``torch.distributed`` with the gloo backend.

    >>> from course_utils import distributed
    >>> run = distributed.run_data_parallel(world_size=2, steps=3)     # ~3-5 s: two fresh Python processes
    >>> run.grads[0].keys() == run.grads[1].keys()
    True

What each worker process does (:func:`worker`, a top-level function so ``multiprocessing`` can pickle it):

1. join a process group (``gloo``, the CPU backend; NCCL is the GPU one) on a free local TCP port;
2. build the same small byte-level language model from the same seed (every replica starts identical);
3. take *its* slice of the combined batch (rank ``r`` gets the ``r``-th contiguous block of
   ``BATCH_PER_RANK`` rows), compute the mean loss on it and ``backward()``;
4. **all-reduce** the gradients (sum over processes, then divide by ``world_size``) by hand with
   ``dist.all_reduce`` and record them: this is what DDP does for you after every backward pass;
5. then wrap the model in the real ``torch.nn.parallel.DistributedDataParallel`` and train ``steps`` SGD
   steps; DDP all-reduces gradients in buckets while ``backward()`` is still running.

The parent collects the recorded gradients, losses and final weights of every rank through one pipe per
worker (plain pipes, no shared-memory semaphores, so it also works in the grading sandbox). The
notebook then computes the gradient of the mean loss over the *combined* batch in a single process, with
:func:`make_model` and :func:`make_batch`, and compares: they agree to float32 rounding.

Nothing here needs a GPU or the network beyond the loopback interface. It works in Jupyter and under
nbclient: on Linux the workers are forked (they inherit the imported torch and start in a fraction of a
second); elsewhere they are spawned, which re-imports this module in each child, hence a top-level worker.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
from torch import nn

VOCAB = 256          # bytes: no tokenizer needed in the worker processes
CONTEXT = 8          # the model sees the previous 8 bytes
BATCH_PER_RANK = 16  # rows of (CONTEXT + 1) bytes that each process handles per step
LR = 0.5


def make_model(seed: int = 0) -> nn.Module:
    """A tiny byte-level language model: embed the last ``CONTEXT`` bytes, an MLP, logits over 256 bytes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Embedding(VOCAB, 16),            # (B, C) -> (B, C, 16)
        nn.Flatten(),                       # (B, C * 16)
        nn.Linear(CONTEXT * 16, 64),        # (B, 64)
        nn.Tanh(),
        nn.Linear(64, VOCAB),               # (B, 256) logits for the next byte
    )


def _text_bytes() -> torch.Tensor:
    """A few course-world stories as one long tensor of bytes (deterministic)."""
    from course_utils import world

    text = "\n".join(world.stories(world.TRAIN_SEED, 40))
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)  # (N,)


def make_batch(step: int, world_size: int = 2, batch_per_rank: int = BATCH_PER_RANK,
               data: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The *combined* batch of one step: ``world_size * batch_per_rank`` rows, the same in every process.

    Returns ``(x, y)``: ``x`` (B, CONTEXT) previous bytes, ``y`` (B,) the next byte. Rank ``r`` trains on
    rows ``r * batch_per_rank : (r + 1) * batch_per_rank``.
    """
    data = _text_bytes() if data is None else data
    gen = torch.Generator().manual_seed(1000 + step)
    starts = torch.randint(len(data) - CONTEXT - 1, (world_size * batch_per_rank,), generator=gen)  # (B,)
    rows = torch.stack([data[s: s + CONTEXT + 1] for s in starts.tolist()])  # (B, CONTEXT + 1)
    return rows[:, :-1], rows[:, -1]


def rank_slice(x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The rows of the combined batch ``x`` that process ``rank`` handles (a contiguous block)."""
    per = x.shape[0] // world_size
    return x[rank * per: (rank + 1) * per]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _to_numpy(params: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {k: v.detach().cpu().clone().numpy() for k, v in params.items()}


def worker(rank: int, world_size: int, port: int, steps: int, seed: int, results: Any) -> None:
    """One data-parallel process (top level so that the ``spawn`` start method can pickle it).

    Sends ``(rank, dict)`` through the pipe end ``results``: the hand all-reduced gradients of step 0, the
    loss of every step on this rank's slice, and the final weights; or ``(rank, "error", traceback)``.
    """
    import torch.distributed as dist

    torch.set_num_threads(1)  # two processes on two cores: one thread each
    if sys.platform.startswith("linux") and "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # stay on the loopback interface
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=60))
        try:
            data = _text_bytes()
            model = make_model(seed)  # the same seed on every rank: identical replicas
            loss_fn = nn.CrossEntropyLoss()

            # Step 0 by hand: local backward, then average the gradients over all processes.
            x, y = make_batch(0, world_size, data=data)
            loss = loss_fn(model(rank_slice(x, rank, world_size)), rank_slice(y, rank, world_size))
            loss.backward()
            local = {n: p.grad.clone() for n, p in model.named_parameters()}
            for p in model.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # every rank now holds the sum ...
                p.grad /= world_size                           # ... and the mean
            reduced = {n: p.grad.clone() for n, p in model.named_parameters()}
            model.zero_grad(set_to_none=True)

            # Now the real thing: DistributedDataParallel does the all-reduce inside backward().
            ddp = nn.parallel.DistributedDataParallel(model)
            opt = torch.optim.SGD(ddp.parameters(), lr=LR)
            losses = []
            for step in range(steps):
                x, y = make_batch(step, world_size, data=data)
                loss = loss_fn(ddp(rank_slice(x, rank, world_size)), rank_slice(y, rank, world_size))
                opt.zero_grad(set_to_none=True)
                loss.backward()  # gradients arrive already averaged over the processes
                opt.step()
                losses.append(loss.item())
            results.send((rank, {"local_grads": _to_numpy(local), "grads": _to_numpy(reduced),
                                "losses": losses, "params": _to_numpy(dict(model.named_parameters())),
                                "pid": os.getpid()}))
        finally:
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - sent to the parent, which raises it with context
        results.send((rank, "error", traceback.format_exc()))
    finally:
        results.close()


@dataclass
class DataParallelRun:
    """What came back from :func:`run_data_parallel` (tensors, one dict per rank)."""
    world_size: int
    steps: int
    seed: int
    local_grads: list[dict[str, torch.Tensor]]   # step 0, each rank's own slice, before the all-reduce
    grads: list[dict[str, torch.Tensor]]         # step 0, after the all-reduce (mean over ranks)
    losses: list[list[float]]                    # per rank, per DDP step, on that rank's slice
    params: list[dict[str, torch.Tensor]]        # per rank, after ``steps`` DDP steps
    pids: list[int] = field(default_factory=list)
    seconds: float = 0.0


def default_start_method() -> str:
    """``fork`` on Linux (the children inherit the already imported torch: ~0.5 s instead of ~3 s to start),
    ``spawn`` elsewhere (macOS and Windows, where forking a process with threads is unsafe or impossible)."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def run_data_parallel(world_size: int = 2, steps: int = 3, seed: int = 0, timeout_s: float = 90.0,
                      start_method: str | None = None) -> DataParallelRun:
    """Start ``world_size`` worker processes, wait for them, and return what each one recorded.

    ``start_method``: how the processes start (``"fork"``, ``"spawn"`` or ``"forkserver"``; default
    :func:`default_start_method`). Raises ``RuntimeError`` with the worker's traceback if one fails, and
    ``TimeoutError`` (after stopping the workers) if they do not finish within ``timeout_s`` seconds.
    """
    import multiprocessing as mp

    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    start = time.perf_counter()
    method = start_method or default_start_method()
    if method not in mp.get_all_start_methods():
        raise ValueError(f"start_method {method!r} is not available here; use one of {mp.get_all_start_methods()}")
    ctx = mp.get_context(method)
    if method == "fork":
        # DDP's constructor imports torch._dynamo (seconds): import it once here, not in each child
        importlib.import_module("torch._dynamo")
    from multiprocessing.connection import wait

    port = free_port()
    pipes = [ctx.Pipe(duplex=False) for _ in range(world_size)]  # (reader, writer) per worker
    procs = [ctx.Process(target=worker, args=(r, world_size, port, steps, seed, pipes[r][1]), daemon=True)
             for r in range(world_size)]
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s  # counted from before the start: spawning is part of the budget
    try:
        for p in procs:
            p.start()
        for _, writer in pipes:
            writer.close()  # the workers hold the writing ends now: EOF on a reader = that worker is gone
        pending = {pipes[r][0]: r for r in range(world_size)}
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the {world_size} data-parallel workers did not finish within {timeout_s} s "
                                   f"(ranks done: {sorted(got)}); try again, or raise timeout_s")
            for reader in wait(list(pending), timeout=min(1.0, left)):
                rank = pending.pop(reader)
                try:
                    item = reader.recv()
                except EOFError:
                    procs[rank].join(timeout=5)
                    raise RuntimeError(f"data-parallel worker {rank} exited (code {procs[rank].exitcode}) "
                                       "before reporting") from None
                if len(item) == 3:
                    raise RuntimeError(f"data-parallel worker {item[0]} failed:\n{item[2]}")
                got[item[0]] = item[1]
        for p in procs:
            p.join(timeout=10)
    finally:
        for p in procs:  # clean shutdown: nothing is left running, even after an error
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for reader, writer in pipes:
            reader.close()
            writer.close()

    def tensors(d: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in d.items()}

    order = [got[r] for r in range(world_size)]
    return DataParallelRun(world_size=world_size, steps=steps, seed=seed,
                           local_grads=[tensors(o["local_grads"]) for o in order],
                           grads=[tensors(o["grads"]) for o in order],
                           losses=[o["losses"] for o in order],
                           params=[tensors(o["params"]) for o in order],
                           pids=[o["pid"] for o in order], seconds=time.perf_counter() - start)


def single_process_gradients(seed: int = 0, world_size: int = 2, step: int = 0) -> dict[str, torch.Tensor]:
    """Gradients of the mean loss over the combined batch of ``step``, in this one process.

    The notebook writes this out itself; this copy is for the unit tests.
    """
    model = make_model(seed)
    x, y = make_batch(step, world_size)
    nn.CrossEntropyLoss()(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def single_process_training(seed: int = 0, world_size: int = 2, steps: int = 3) -> dict[str, torch.Tensor]:
    """Weights after ``steps`` SGD steps on the combined batches, in one process (for the unit tests)."""
    model = make_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    data = _text_bytes()
    for step in range(steps):
        x, y = make_batch(step, world_size, data=data)
        loss = nn.CrossEntropyLoss()(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}
