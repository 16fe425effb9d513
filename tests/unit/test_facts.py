"""The facts of a launch as typed records (``detcore.facts``): old work dirs read the same, new writers write
what the old ones wrote, a torn or unknown line never breaks a reader, and nobody builds a fact by hand again.

``tests/data/facts/events_recorded.jsonl`` was written by the writers as they were before the records existed
(the shim's start/end/hang, Ray's train loop start, Ray Train's controller callbacks (lost, stage), the Ray
driver's node verdict, the Slurm task's requeues, ``detcore train``'s scaling and weights), one of every kind.
"""
from __future__ import annotations

import ast
import json
import shutil
import types
from pathlib import Path

import pytest

from detcore import facts as F
from detcore.facts import (End, Hang, Lost, Requeue, Scaling, Stage, Start, UnknownFact, Weights, append_fact,
                           fact_line, read_facts)

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "data" / "facts" / "events_recorded.jsonl"


@pytest.fixture()
def recorded(tmp_path) -> Path:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    shutil.copy(RECORDED, run / "events.jsonl")
    return run


def test_an_old_events_file_reads_as_records_of_every_kind(recorded):
    facts = read_facts(recorded)
    assert [type(f) for f in facts] == [Start, Start, Hang, End, End, Start, Start, Lost, Lost, Stage, Stage,
                                        Requeue, Requeue, Requeue, Scaling, Weights]
    local, slurm, hang, killed, failed, ray0, ray1, unreachable, node, placing, starting = facts[:11]
    assert (local.rank, local.attempt, local.pid, local.master_addr, local.master_port, local.world_size,
            local.node, local.cuda_visible_devices) == (0, 0, 4242, "10.0.0.5", 29517, 2, None, None)
    assert (slurm.node, slurm.cuda_visible_devices, slurm.local_rank) == ("node7", "0,1", 1)
    assert (hang.rank, hang.state, hang.detail.startswith("no rank finished")) == (1, "stopped", True)
    assert (killed.exit_code, failed.exit_code, failed.detail) == (-15, 1, "ValueError: bad annotation file x.json")
    assert (ray0.node_id, ray0.restored, ray1.restored) == ("abcdef0123456789", {"checkpoint": "iter_8.pth", "iter": 8},
                                                            None)
    assert (unreachable.kind, unreachable.rank, unreachable.source, unreachable.time) == ("unreachable", 1, "ray",
                                                                                         1700000100.5)
    assert (node.kind, node.node, node.detail) == ("node", "fedcba987654 (10.0.0.9)", "Ray: health check failed")
    assert (placing.stage, placing.workers, placing.resources) == ("placing", 2, {"CPU": 1.0})
    assert (starting.stage, starting.resources) == ("starting", None)
    usr2, usr2_unknown, hung, scaling, weights = facts[11:]
    assert (usr2.signal, usr2.time_left_s, usr2.signal_delay_s, usr2.cause) == ("USR2", 95, 120, None)
    assert (usr2_unknown.time_left_s, hung.cause, hung.signal) == (None, "hang", None)
    assert scaling.scaling["scaled_lr"] == 0.005 and weights.weights[0]["sha256"] == "ab12"
    assert all(not f.extra for f in facts if not isinstance(f, UnknownFact))  # every key is a field


def test_every_recorded_line_is_written_back_byte_for_byte(recorded):
    lines = RECORDED.read_bytes().splitlines(keepends=True)
    assert [fact_line(f) for f in read_facts(recorded)] == lines


def test_the_writers_write_the_keys_they_wrote_before(tmp_path, monkeypatch):
    """The shim's, Ray's and Slurm's writers and detcore train's, run now, give each kind the keys it had."""
    from detcore.tools import train
    from launcher.backends.ray_train import reports
    from launcher.backends.ray_train.callbacks import RecordStages
    from launcher.backends.slurm.task import SlurmTask
    from launcher.runtime import rank as R

    run = tmp_path / "run"
    log = tmp_path / "logs" / "rank1.log"
    log.parent.mkdir()
    log.write_text("ValueError: x\n")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.5")
    monkeypatch.setenv("MASTER_PORT", "29517")
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    R.record_start(run, 0, 0, 4242)
    monkeypatch.setenv("SLURMD_NODENAME", "node7")
    R.record_start(run, 1, 0, 4243)
    R.RankAttempt(str(run), str(log.parent), 1, 2, 0).hung(4243, "stopped", "no rank finished")
    R.record_end(run, 1, 0, 4243, 1, log)
    monkeypatch.delenv("SLURMD_NODENAME")
    R.record_start(run, 0, 1, 5000, node_id="fedcba9876543210", restored=None)

    class ActorUnavailableError(Exception):
        pass

    for fact in reports.failure_facts({0: ActorUnavailableError("gone")}, read_facts(run), 1.0):
        append_fact(run, fact)
    dead = [{"NodeID": "fedcba9876543210", "Alive": False, "NodeManagerAddress": "10.0.0.9"}]
    for fact in reports.node_losses(read_facts(run), dead, 2.0):
        append_fact(run, fact)
    stages = RecordStages(str(run))
    stages.before_worker_group_start(types.SimpleNamespace(num_workers=2, resources_per_worker={"CPU": 1.0}))
    stages.after_worker_group_start(types.SimpleNamespace(get_workers=lambda: [1, 2]))
    task = types.SimpleNamespace(run_dir=str(run))
    SlurmTask._record_requeue(task, 1, signal="USR2", time_left_s=95, signal_delay_s=120)
    SlurmTask._record_requeue(task, 2, signal="USR2", time_left_s=None, signal_delay_s=0)
    SlurmTask._record_requeue(task, 3, cause="hang")
    monkeypatch.setenv("DETLAUNCH_RUN_DIR", str(run))
    monkeypatch.setenv("RANK", "0")
    train.record_scaling({"world_size": 2})
    train.record_weights([{"key": "model", "given": "x", "file": "/c/x.pth", "sha256": "ab12"}])

    def keys(path: Path) -> list[tuple[str, tuple[str, ...]]]:
        return [(o["event"], tuple(sorted(o))) for o in map(json.loads, path.read_text().splitlines())]

    old = keys(RECORDED)
    # the recorded file has a second end, two more Ray starts' twins and an unreachable before the node verdict
    new = keys(run / "events.jsonl")
    assert set(new) == set(old)
    assert [k for k, _ in new] == ["start", "start", "hang", "end", "start", "lost", "lost", "stage", "stage",
                                   "requeue", "requeue", "requeue", "scaling", "weights"]


def test_a_torn_or_garbled_line_is_skipped_and_a_newer_writers_facts_stay_readable(tmp_path):
    run = tmp_path / "run"
    assert read_facts(run) == []  # no file yet
    append_fact(run, End(rank=1, attempt=0, pid=7, exit_code=-9, time=5.0))
    with open(run / "events.jsonl", "a") as f:
        f.write('["not", "an", "object"]\n{"no_event": 1}\n\x00\xff garbage\n')
        f.write('{"event": "end", "rank": 0, "attempt": 0, "exit_code": 1, "gpu_memory": 12.5, "time": 6.0}\n')
        f.write('{"event": "checkpointed", "rank": 0, "iteration": 100}\n')
        f.write('{"event": "end", "rank": "x", "attempt": 1, "exit_code": {"odd": 1}}\n')
        f.write('{"event": "start", "rank": 1, "attempt": ')  # torn: the writer died mid-line
    facts = read_facts(run)
    assert [type(f) for f in facts] == [End, End, UnknownFact, End]
    assert facts[0] == End(rank=1, attempt=0, pid=7, exit_code=-9, detail="", time=5.0)
    assert facts[1].exit_code == 1 and facts[1].extra == {"gpu_memory": 12.5}
    assert facts[2] == UnknownFact("checkpointed", {"rank": 0, "iteration": 100})
    assert (facts[3].rank, facts[3].attempt, facts[3].exit_code) == (0, 1, 0)  # wrong types: the defaults
    # what a newer writer added is written back as it came
    assert json.loads(fact_line(facts[1]))["gpu_memory"] == 12.5
    assert json.loads(fact_line(facts[2])) == {"event": "checkpointed", "rank": 0, "iteration": 100}


def test_the_policy_passes_over_facts_it_does_not_know():
    from launcher.runtime.facts import summarize

    facts = [Start(rank=0, attempt=0), UnknownFact("checkpointed", {"attempt": 5}), Scaling(scaling={}),
             End(rank=0, attempt=0, exit_code=0)]
    summary = summarize(facts)
    assert summary.attempt == 0 and summary.all_succeeded(1) and summary.failures == ()


def test_a_fact_that_cannot_be_written_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert append_fact(blocker / "run", Stage(stage="placing")) is False


# ---- nobody builds or parses a fact dict by hand -------------------------------------------------------

RECORDS = ROOT / "detcore" / "facts.py"


def hand_built(source: str) -> list[int]:
    """Lines of a dict literal with an ``"event"`` key, or of ``x["event"]`` / ``x.get("event")``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "event" for k in node.keys):
            found.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "event":
            found.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "event"):
            found.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
              and any(k.arg == "event" for k in node.keywords)):
            found.append(node.lineno)
    return sorted(found)


def test_the_check_finds_a_hand_built_fact():
    source = ('a = {"event": "end", "rank": 0}\nb = rec.get("event") == "start"\nc = rec["event"]\n'
              'd = dict(event="hang")\ne = {"events": 1}\nf = rec.get("kind")\n')
    assert hand_built(source) == [1, 2, 3, 4]


@pytest.mark.parametrize("package", ["detcore", "launcher"])
def test_no_module_builds_or_parses_a_fact_dict_by_hand(package):
    offenders = [f"{path.relative_to(ROOT)}:{line}" for path in sorted((ROOT / package).rglob("*.py"))
                 if path != RECORDS for line in hand_built(path.read_text())]
    assert offenders == [], ("facts are detcore.facts records (append_fact/read_facts), not dicts: "
                             + ", ".join(offenders))


def test_every_kind_has_one_record_class():
    assert sorted(F.KINDS) == ["end", "hang", "lost", "requeue", "scaling", "stage", "start", "weights"]
