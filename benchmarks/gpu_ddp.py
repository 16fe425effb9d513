"""``python -m benchmarks.gpu_ddp --device cuda|cpu --store FILE``: NCCL and DDP on one rank.

The GPU check's ``nccl + ddp (1 rank)`` step runs this in a process of its own, so a node with
one GPU still runs NCCL and ``DistributedDataParallel`` code (``--device cpu``: gloo, the CPU
smoke). Through detcore's own calls (:func:`detcore.engine.dist.start_process_group`, the
device bound, and :func:`~detcore.engine.dist.shutdown_distributed`) it

1. creates a world-size-1 group on ``--store`` (NCCL on CUDA, connecting at start);
2. all-reduces a known tensor and passes a barrier on the device;
3. trains a DDP-wrapped tiny model for a few steps beside an unwrapped copy fed the same
   batches, counting the gradient buckets DDP all-reduces (a comm hook around torch's own
   all-reduce hook): both copies must end with the same parameters;
4. destroys the group (a finished run's ending), then creates a second one, all-reduces on it
   and ends it as a rank that failed alone does: aborted under NCCL (destroyed under gloo, as
   detcore does there).

It prints one JSON line (backend, device, steps, buckets all-reduced, seconds) and exits 0, or
prints ``gpu_ddp: FAILED: ...`` and exits 1.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from datetime import timedelta

STEPS = 3
TIMEOUT = timedelta(minutes=2)  # every collective; the whole program takes seconds


def _group(backend: str, device, store_path: str) -> None:
    import torch.distributed as dist

    from detcore.engine.dist import start_process_group

    start_process_group(backend, device, TIMEOUT, dist.FileStore(store_path, 1), rank=0, world_size=1)
    if dist.get_backend() != backend or dist.get_world_size() != 1:
        raise RuntimeError(f"the group is {dist.get_backend()} of {dist.get_world_size()} rank(s), expected {backend} "
                           f"of 1")


def _collectives(device) -> None:
    """An all-reduce of a known tensor and a barrier, on ``device``."""
    import torch
    import torch.distributed as dist

    t = torch.arange(1.0, 5.0, device=device)
    dist.all_reduce(t)
    if t.tolist() != [1.0, 2.0, 3.0, 4.0]:
        raise RuntimeError(f"all_reduce over 1 rank changed the tensor to {t.tolist()}")
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def _ddp_steps(device) -> list[int]:
    """Train a DDP-wrapped tiny model beside an unwrapped copy; the sizes of the buckets DDP all-reduced.

    The models are freed on return, before the group ends (as a finished detcore run frees its
    DDP model, whose reducer holds the group).
    """
    import torch
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).to(device)
    wrapped = DistributedDataParallel(copy.deepcopy(plain), device_ids=None if device.index is None else [device.index])
    buckets: list[int] = []

    def counting_allreduce(state, bucket):
        buckets.append(bucket.buffer().numel())
        return default_hooks.allreduce_hook(state, bucket)

    wrapped.register_comm_hook(None, counting_allreduce)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (plain, wrapped)]
    for _ in range(STEPS):
        x = torch.randn(4, 8, device=device)
        for model, opt in zip((plain, wrapped), opts):
            opt.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    numel = sum(p.numel() for p in plain.parameters())
    if len(buckets) < STEPS or sum(buckets) != STEPS * numel:
        raise RuntimeError(f"DDP all-reduced {len(buckets)} bucket(s) of {sum(buckets)} values in {STEPS} steps, "
                           f"expected every gradient ({numel} values) once per step")
    for (name, a), b in zip(plain.named_parameters(), wrapped.module.parameters()):
        if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
            raise RuntimeError(f"after {STEPS} steps the DDP copy's {name} differs from the plain model's")
    return buckets


def check(device_name: str, store: str) -> dict:
    """Run steps 1-4 (module docstring) on ``device_name``; the figures, or RuntimeError."""
    import torch
    import torch.distributed as dist

    from detcore.engine.dist import resolve_device, shutdown_distributed

    t0 = time.perf_counter()
    device = resolve_device(device_name, 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    _group(backend, device, store + ".1")
    try:
        _collectives(device)
        buckets = _ddp_steps(device)
    except BaseException:
        shutdown_distributed(failed=True)
        raise
    shutdown_distributed()
    if dist.is_initialized():
        raise RuntimeError("the group is still initialised after shutdown_distributed()")
    _group(backend, device, store + ".2")  # a rank failing alone: its group is aborted, not destroyed
    try:
        _collectives(device)
    finally:
        shutdown_distributed(failed=True)
    if dist.is_initialized():
        raise RuntimeError("the group is still initialised after shutdown_distributed(failed=True)")
    nccl = torch.cuda.nccl.version() if backend == "nccl" else None  # (2, 21, 5) in recent torch
    return {"backend": backend, "device": str(device), "steps": STEPS, "buckets": len(buckets),
            "values_reduced": sum(buckets), "seconds": round(time.perf_counter() - t0, 3), "torch": torch.__version__,
            "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_ddp", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (NCCL), cuda:N, or cpu (gloo)")
    p.add_argument("--store", required=True, help="a file path for the groups' FileStore (FILE.1, FILE.2)")
    args = p.parse_args(argv)
    try:
        print(json.dumps(check(args.device, args.store)), flush=True)
    except Exception as exc:  # one line for the GPU check's row; the traceback stays in its log
        import traceback

        traceback.print_exc()
        print(f"gpu_ddp: FAILED: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
              file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
