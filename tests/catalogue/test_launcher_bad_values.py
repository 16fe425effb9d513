"""The hostile-input catalogue's model and data values through ``launcher submit``: the launcher's
pre-start check refuses each one with exit code 2 (a user error, never retried), one line, no
work dir, no experiment row and no job, both for ``--dry-run`` and a real local submit.

Each submit runs as a subprocess under the catalogue's 1 GiB address-space limit: the check
happens without importing torch (importing torch alone maps about 3.5 GiB).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.catalogue.test_detcore_hostile_input import CONFIG_AS, TIMEOUT_S, VALUES, _limit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "submit"])
@pytest.mark.parametrize("case", VALUES, ids=[v[0] for v in VALUES])
def test_launcher_submit_refuses_the_value_before_anything_exists(case, dry_run, tmp_path: Path) -> None:
    _, text, extra, words = case
    (tmp_path / "c.yaml").write_text(text)
    home = tmp_path / "home"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAUNCHER_HOME": str(home)}
    argv = ["submit", "c.yaml", "--backend", "local", *(["--dry-run"] if dry_run else []), *extra]
    proc = subprocess.run([sys.executable, "-m", "launcher", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S, preexec_fn=_limit(CONFIG_AS))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("launcher submit: error: ")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, f"left behind: {set(after) - set(before)}"  # no work_dirs/, no store, no job folder
