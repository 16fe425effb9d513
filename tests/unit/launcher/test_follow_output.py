"""What a person watching sees without a terminal: a sweep prints a line as each job ends, and a resume follows
only its own launch's lines of the log that every launch appends to."""
from __future__ import annotations

import io
import json

import pytest

from launcher.cli import commands
from launcher.views.follow import follow_experiment
from launcher.runtime.files import line_count
from launcher.spec import JobSpec, JobState, Resources
from launcher.views.status_text import ended_line
from launcher.store import ExperimentStore, experiment_from_spec

NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path):
    s = ExperimentStore(tmp_path / "home")
    yield s
    s.close()


def ended(store: ExperimentStore, i: int, state: JobState, work_dir: str = "/w", **kw) -> str:
    spec = JobSpec(id=f"{i:08x}", name=f"mgr-lr=0.0{i}-seed={i}", config="/c.yaml", work_dir=f"{work_dir}/{i}",
                   cwd="/", resources=Resources(nproc=1))
    values = experiment_from_spec(spec, state, now=NOW + i, sweep="0000abcd",
                                  grid={"optimizer.lr": f"0.0{i}", "seed": str(i)})
    values.update(started=NOW, ended=NOW + 107, best_ap=0.25 * i if state is JobState.SUCCEEDED else None, **kw)
    store.insert(values)
    return values["id"]


def test_a_sweep_without_a_terminal_prints_a_line_as_each_job_ends(store, capsys):
    a = ended(store, 1, JobState.SUCCEEDED)
    b = ended(store, 2, JobState.FAILED, reason="rank 0: exit code 1")
    assert commands._wait_sweep(store, [a, b], as_json=False) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{a}  lr=0.01 seed=1  succeeded  best AP 0.250  0:01:47"
    assert out[1] == f"{b}  lr=0.02 seed=2  failed  best AP -  0:01:47  rank 0: exit code 1"
    assert out[2].startswith("ID") and len(out) == 5  # then the closing table
    commands._wait_sweep(store, [a], as_json=True)
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["id"] == a and captured.err.startswith(a)  # JSON alone on stdout


def test_ended_line_of_a_plain_run_names_it(store):
    spec = JobSpec(id="0000000f", name="faster", config="/c.yaml", work_dir="/w", cwd="/", resources=Resources(nproc=1))
    store.insert(experiment_from_spec(spec, JobState.CANCELLED, now=NOW))
    assert ended_line(store.get("0000000f")) == "0000000f  faster  cancelled  best AP -"


class AppendedLog:
    """A backend whose rank-0 log holds an earlier launch's lines, then this launch's."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def logs(self, handle, rank: int = 0, follow: bool = False):
        yield from self.lines


def test_a_resume_follows_only_its_own_launch(store, tmp_path):
    log = tmp_path / "rank0.log"
    log.write_text("old launch 1\nold launch 2\n")
    assert line_count(log) == 2 and line_count(tmp_path / "none.log") == 0
    exp_id = ended(store, 1, JobState.SUCCEEDED)
    out = io.StringIO()
    follow_experiment(store, AppendedLog(["old launch 1", "old launch 2", "new launch 1", "new launch 2"]), exp_id,
                      out=out, err=io.StringIO(), skip_lines=line_count(log))
    assert out.getvalue().splitlines() == ["new launch 1", "new launch 2"]
