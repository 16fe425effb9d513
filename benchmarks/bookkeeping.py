"""7. Launcher bookkeeping: ``launcher list`` over 10,000 experiments; 100 simultaneous allocations.

``launcher list``: a temporary ``LAUNCHER_HOME`` is filled with ``experiments`` rows through
the store API (``ExperimentStore.insert(experiment_from_spec(spec, state))``, all in terminal
states, as a long-lived store mostly is, with every column the table shows filled: a third of
them sweep rows with grid values, scaled LRs, progress, loss, best AP, tags), then
``python -m launcher list`` runs as a fresh process with its output on a pipe; the figure is
its wall time (goal < 0.3 s). A second row sorts by best AP and filters by a tag.

Allocations: a helper process (fresh, so nothing has started threads before it forks) forks
``clients`` processes that wait on one barrier, then each at once (a) leases one GPU from the
launcher's ``LeaseBook`` with ``LAUNCHER_FAKE_GPUS=clients`` fake GPUs, kept by its own
pid, and (b) takes a rendezvous port the way the local backend does: the launcher never
picks a local port itself, its c10d rendezvous on ``127.0.0.1:0`` has the kernel assign one,
so each client binds and listens on ``127.0.0.1:0``. Every process holds both until all are
done; the figure is the wall time from the barrier to the last one done (goal: no two got
the same GPU or port, and < 1 s in total). The lease file is read back while they hold.
For reference, the same number of leases taken one after another in one process, and the
Slurm backend's port rule (a pure function of the job id) over as many consecutive ids.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import jobs
from benchmarks.harness import Context, Goal, NotAvailable, Result, Row, log, measured, not_available

TITLE = "launcher bookkeeping: list over 10,000 experiments, 100 simultaneous port + GPU-lease allocations"
LIST_GOAL = Goal("value", "<", 0.3, "s")
ALLOC_GOAL = Goal("value", "<", 1.0, "s")


def populate(home: Path, count: int) -> None:
    """``count`` finished experiments in the store at ``home``, through the store API."""
    try:
        from launcher.spec import JobSpec, JobState, Resources
        from launcher.store import ExperimentStore, experiment_from_spec
    except ImportError as exc:
        raise NotAvailable(f"launcher store API not importable ({exc})") from None
    store = ExperimentStore(home)
    states = [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]
    now = time.time()
    store.conn.execute("BEGIN")
    for i in range(count):
        grid = {"optimizer.lr": f"0.0{1 + i % 4}", "data.samples_per_gpu": str(2 + i % 2)} if i % 3 == 0 else {}
        spec = JobSpec(id=f"{i:08x}", name=f"shapes-lr{i % 7}-seed{i % 13}", config=str(jobs.SHAPES_CONFIG),
                       work_dir=f"/tmp/work_dirs/exp-{i:08x}", cwd=str(jobs.REPO_ROOT),
                       resources=Resources(nproc=1 + i % 2))
        values = experiment_from_spec(spec, states[i % 3], now=now - (count - i) * 60, sweep=None, grid=grid)
        base_lr = 0.01 * (1 + i % 4)
        values.update(lr=base_lr * (1 + i % 2), total_batch=4 * (1 + i % 2), last_iter=300, max_iter=300,
                      last_loss=0.5 + (i % 100) / 100, last_ap=(i % 97) / 100, best_ap=(i % 89) / 100,
                      started=now - (count - i) * 60 + 5, ended=now - (count - i) * 60 + 1805,
                      tags=json.dumps(["baseline", f"t{i % 5}"] if i % 2 else []),
                      scaling=json.dumps({"base_lr": base_lr, "lr": base_lr * (1 + i % 2)}))
        store.insert(values)
    store.conn.execute("COMMIT")
    store.close()


def time_list(home: Path, repeats: int, *options: str) -> tuple[list[float], int]:
    env = jobs.bench_env(extra={"LAUNCHER_HOME": str(home)})
    times, lines = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "launcher", "list", *options], env=env, capture_output=True,
                             text=True, cwd=str(jobs.REPO_ROOT), timeout=120)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise RuntimeError(f"launcher list exited {out.returncode}: {out.stderr.strip()[-500:]}")
        lines = len(out.stdout.splitlines())
    return times, lines


def python_start(repeats: int) -> list[float]:
    """Wall time of ``python -c pass``: the floor under any command-line tool here."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out.append(time.perf_counter() - t0)
    return out


# ---- the allocation helper (runs as `python -m benchmarks.bookkeeping allocate ...`) ----------

def _client(i: int, home: str, inventory: tuple, barrier, results, release) -> None:
    import socket

    from launcher.resources.leases import GPU_POOL, LeaseBook
    from launcher.resources.procinfo import current_process

    pid, start = current_process()
    barrier.wait()
    t0 = time.perf_counter()
    got = LeaseBook(home).acquire(GPU_POOL, inventory, 1, f"exp{i:05d}", pid, start)
    t_lease = time.perf_counter()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # what the c10d store server does with port 0
    server.bind(("127.0.0.1", 0))
    server.listen()
    t1 = time.perf_counter()
    results.put({"i": i, "gpus": list(got) if got else None, "port": server.getsockname()[1], "t0": t0,
                 "t_lease": t_lease, "t1": t1})
    release.wait(120)
    server.close()


def allocate(clients: int, home: str) -> dict:
    import multiprocessing as mp

    import launcher.resources.procinfo  # noqa: F401  (what the clients use is imported once, before forking:
    import launcher.errors  # noqa: F401  the figure is the allocation, not Python imports)

    from launcher.backends.local import FAKE_GPUS_ENV, detect_gpus
    from launcher.resources.leases import GPU_POOL, LeaseBook

    inventory = detect_gpus({FAKE_GPUS_ENV: str(clients)})
    ctx = mp.get_context("fork")
    barrier, results, release = ctx.Barrier(clients + 1), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_client, args=(i, home, inventory, barrier, results, release)) for i in range(clients)]
    for p in procs:
        p.start()
    barrier.wait()
    got = [results.get(timeout=120) for _ in range(clients)]
    held = LeaseBook(home).held().get(GPU_POOL, {})
    release.set()
    for p in procs:
        p.join(60)
    return {"results": got, "held": {unit: lease.holder for unit, lease in held.items()}}


def time_allocations(ctx: Context, clients: int) -> dict:
    work = ctx.workdir("allocations")
    out = work / "alloc.json"
    env = jobs.bench_env(extra={"LAUNCHER_FAKE_GPUS": str(clients)})
    jobs.run([sys.executable, "-m", "benchmarks.bookkeeping", "allocate", str(clients), str(work / "home"), str(out)],
             work / "stdout.log", env, 300, "allocation helper")
    data = json.loads(out.read_text())
    res = data["results"]
    gpus = [g for r in res for g in (r["gpus"] or [])]
    ports = [r["port"] for r in res]
    start = min(r["t0"] for r in res)
    return {"total_s": max(r["t1"] for r in res) - start,
            "leases_done_s": max(r["t_lease"] for r in res) - start,
            "per_client_s": sorted(r["t1"] - r["t0"] for r in res),
            "refused": sum(1 for r in res if r["gpus"] is None),
            "gpu_collisions": len(gpus) - len(set(gpus)),
            "port_collisions": len(ports) - len(set(ports)),
            "held_leases": len(data["held"]),
            "held_distinct_holders": len(set(data["held"].values()))}


def run(ctx: Context) -> Result:
    try:
        import launcher.resources.leases  # noqa: F401
        import launcher.store  # noqa: F401
    except ImportError as exc:
        raise NotAvailable(f"the launcher package is not importable ({exc})") from None
    count = ctx.pick(10_000, 10_000)
    repeats = ctx.pick(5, 15)
    clients = 100
    alloc_repeats = ctx.pick(2, 5)
    rows: list[Row] = []
    details: dict = {}

    home = ctx.workdir("list_home")
    log(f"bookkeeping: populating {count} experiments")
    t0 = time.perf_counter()
    try:
        populate(home, count)
        populate_s = time.perf_counter() - t0
        times, lines = time_list(home, repeats)
        rows.append(measured(f"launcher list, {count:,} experiments", times, "s", goal=LIST_GOAL,
                             note=f"fresh process, {lines - 1} rows printed, every column filled"))
        times, lines = time_list(home, repeats, "--sort", "-ap", "--tag", "baseline")
        rows.append(measured(f"launcher list --sort -ap --tag baseline, {count:,} experiments", times, "s",
                             goal=LIST_GOAL, note=f"fresh process, {lines - 1} rows printed"))
        rows.append(measured("python -c pass (start-up floor)", python_start(repeats), "s"))
        details["populate_s"] = populate_s
    except NotAvailable as exc:
        rows.append(not_available("launcher list", str(exc)))

    log(f"bookkeeping: {clients} simultaneous allocations x {alloc_repeats}")
    try:
        runs = [time_allocations(ctx, clients) for _ in range(alloc_repeats)]
    except jobs.JobFailed as exc:
        rows.append(not_available(f"{clients} simultaneous port + GPU-lease allocations", str(exc).splitlines()[0]))
    else:
        collisions = sum(r["gpu_collisions"] + r["port_collisions"] + r["refused"] for r in runs)
        fine = collisions == 0 and all(r["held_leases"] == clients == r["held_distinct_holders"] for r in runs)
        row = measured(f"{clients} simultaneous port + GPU-lease allocations", [r["total_s"] for r in runs], "s",
                       goal=ALLOC_GOAL, note=f"collisions/refusals: {collisions}; lease file held {runs[0]['held_leases']}"
                                             f" leases for {runs[0]['held_distinct_holders']} holders")
        if not fine:
            row.met = False
        rows.append(row)
        details["allocations"] = runs
        rows.append(measured("  of which: last GPU lease taken", [r["leases_done_s"] for r in runs], "s",
                             note="the lease file's lock serialises the 100 clients (they wait in the kernel, no polling)"))
        rows.append(measured(f"{clients} GPU leases one after another (1 process)",
                             [sequential_leases(ctx, clients) for _ in range(alloc_repeats)], "s",
                             note="the floor without contention"))
        rows.append(_slurm_ports(clients))
    settings = {"experiments": count, "list_repeats": repeats, "clients": clients, "allocation_repeats": alloc_repeats,
                "fake_gpus": clients}
    return Result(rows, settings, details)


def sequential_leases(ctx: Context, n: int) -> float:
    from launcher.resources.leases import GPU_POOL, LeaseBook
    from launcher.resources.procinfo import current_process

    book = LeaseBook(ctx.workdir("sequential_leases"))
    inventory = tuple(str(i) for i in range(n))
    pid, start = current_process()
    t0 = time.perf_counter()
    for i in range(n):
        if book.acquire(GPU_POOL, inventory, 1, f"exp{i:05d}", pid, start) is None:
            raise RuntimeError(f"sequential lease {i} of {n} was refused")
    return time.perf_counter() - t0


def _slurm_ports(n: int) -> Row:
    """The Slurm backend's ports are a pure function of the job id: distinct for ``n`` consecutive ids?"""
    try:
        from launcher.backends.slurm.task import master_port
    except ImportError as exc:
        return not_available(f"Slurm master_port over {n} consecutive job ids", f"not importable ({exc})")
    t0 = time.perf_counter()
    ports = [master_port(1000 + i) for i in range(n)]
    elapsed = time.perf_counter() - t0
    return Row(f"Slurm master_port over {n} consecutive job ids", elapsed, "s", goal=ALLOC_GOAL,
               met=len(set(ports)) == n and elapsed < 1.0, note=f"{n - len(set(ports))} collisions (pure function)")


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "allocate":
        print("usage: python -m benchmarks.bookkeeping allocate CLIENTS HOME OUT.json", file=sys.stderr)
        return 2
    clients, home, out = int(argv[1]), argv[2], Path(argv[3])
    os.makedirs(home, exist_ok=True)
    out.write_text(json.dumps(allocate(clients, home)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
