"""User text with control characters is shown escaped wherever it is printed: a note cannot clear the screen or
forge a state, a grid value cannot forge a row."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from launcher.views.printable import printable, printable_cells
from launcher.spec import JobSpec, JobState, JobStatus, Resources
from launcher.store import ExperimentStore, experiment_from_spec

ROOT = Path(__file__).resolve().parents[3]
CLEAR_AND_LIE = "\x1b[2J\x1b[Hstate: succeeded\rok\n00000009  fake  succeeded"


def test_printable_escapes_every_control_character_and_nothing_else():
    assert printable("plain, ünïcödé 日本 ✓") == "plain, ünïcödé 日本 ✓"
    assert printable(CLEAR_AND_LIE) == "\\x1b[2J\\x1b[Hstate: succeeded\\rok\\n00000009  fake  succeeded"
    assert printable("\x00\x07\t\x7f\x9b\u202eevil\u2028") == "\\x00\\x07\\t\\x7f\\x9b\\u202eevil\\u2028"
    assert printable(3) == "3"
    assert printable_cells([("a", "b\x1b"), ("c", "d")]) == [("a", "b\\x1b"), ("c", "d")]


def test_list_status_and_compare_show_user_text_escaped(tmp_path):
    home = tmp_path / "home"
    store = ExperimentStore(home)
    for i in (1, 2):
        spec = JobSpec(id=f"0000000{i}", name=f"x{i}", config=str(tmp_path / "c.yaml"),
                       work_dir=str(tmp_path / f"w{i}\x1b[31m"), cwd="/", resources=Resources(nproc=1),
                       overrides=(f'model.note="a\\x1b]0;title\\x07{i}"',))  # YAML makes these real
        store.insert(experiment_from_spec(spec, JobState.PENDING, sweep="5eed0001",
                                          grid={"model.note": f"v{i}\nforged row"}))
        store.set_backend_job(spec.id, "1", {})
        store.record_status(spec.id, JobStatus(JobState.FAILED, reason=f"rank 0: \x1b[2Jboom {i}"))
        store.set_note(spec.id, CLEAR_AND_LIE)
    store.close()
    (tmp_path / "c.yaml").write_text("model: {note: a}\n")
    env = {**os.environ, "LAUNCHER_HOME": str(home), "PYTHONPATH": str(ROOT)}

    def run(*argv: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "launcher", *argv], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout + proc.stderr

    for argv in (("list", "--wide"), ("status", "00000001"), ("compare", "00000001", "00000002")):
        out = run(*argv)
        assert not any(ch in out for ch in "\x1b\r\x07"), (argv, out)
    listed = run("list", "--wide").splitlines()
    assert len(listed) == 3 and "v1\\nforged row" in listed[1] and "\\x1b[2J\\x1b[Hstate: succeeded" in listed[1]
    status = run("status", "00000001")
    assert "note: \\x1b[2J\\x1b[Hstate: succeeded\\rok\\n00000009  fake  succeeded" in status
    assert "reason: rank 0: \\x1b[2Jboom 1" in status and "w1\\x1b[31m" in status
    compared = [line.split() for line in run("compare", "00000001", "00000002").splitlines()]
    assert ["model.note", "a\\x1b]0;title\\x071", "a\\x1b]0;title\\x072"] in compared
    raw = json.loads(run("status", "00000001", "--json").split("\n", 1)[0])
    assert raw["note"] == CLEAR_AND_LIE  # JSON keeps the text exactly (json escapes it)
