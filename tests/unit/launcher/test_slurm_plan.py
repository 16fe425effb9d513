"""A Slurm submit executes its dry run: the sbatch script is rendered once per submit (or sweep), stored in
the job folder with the plan, and ``sbatch`` reads exactly the text the dry run showed.

The ``launcher submit``/``sweep`` runs go through the real CLI; Slurm answers through the backend's one
subprocess seam (recorded ``scontrol show config``; ``sbatch`` answers a job id and keeps the script it read).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import launcher.backends.slurm.backend as slurm_backend
from launcher import cli
from launcher.backends.slurm import SlurmBackend, SlurmUnreachable
from launcher.backends.slurm.backend import SCRIPT_FILE
from launcher.backends.slurm.script import SlurmDefaults
from launcher.errors import LauncherError
from launcher.runtime.job_folder import JobFolder
from launcher.spec import JobSpec, Resources

ROOT = Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs" / "examples" / "faster_rcnn_tiny_augfpn_shapes.yaml")
CONS_TRES = (Path(__file__).parent / "recorded" / "scontrol_show_config_cons_tres.txt").read_text()


class Recorded(SlurmBackend):
    """Slurm as recorded: ``scontrol show config`` (or unreachable), ``sbatch`` keeps the script it was given."""

    config: str | None = CONS_TRES  # None: slurmctld does not answer
    sbatched: list[bytes] = []

    def _run(self, cmd):
        if cmd[0] == "scontrol":
            if self.config is None:
                raise SlurmUnreachable("slurmctld unreachable: scontrol: Unable to contact slurm controller")
            return self.config
        assert cmd[:2] == ["sbatch", "--parsable"], cmd
        self.sbatched.append(Path(cmd[2]).read_bytes())  # what sbatch reads
        return f"{40 + len(self.sbatched)}\n"


@pytest.fixture
def renders(monkeypatch):
    """Counts the sbatch scripts rendered (every call of render_sbatch by the backend)."""
    calls: list[str] = []
    real = slurm_backend.render_sbatch

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(slurm_backend, "render_sbatch", counting)
    monkeypatch.setattr(Recorded, "sbatched", [])
    monkeypatch.setattr(Recorded, "config", CONS_TRES)
    return calls


def run_cli(monkeypatch, capsys, tmp_path, *argv):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("launcher.backends.slurm.SlurmBackend", Recorded)
    monkeypatch.chdir(tmp_path)
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def stored_plan(folder: Path) -> dict:
    return json.loads(JobFolder(folder).plan.read_text())


def test_a_submit_renders_once_and_sbatch_reads_the_dry_runs_script(monkeypatch, capsys, tmp_path, renders):
    exp = run_cli(monkeypatch, capsys, tmp_path, "submit", CONFIG, "--backend", "slurm", "--gpus", "2", "--detach",
                  "--json")
    exp_id = json.loads(exp)["id"]
    assert len(renders) == 1  # the dry run's render; submit executes it
    folder = tmp_path / "home" / "slurm" / exp_id
    plan = stored_plan(folder)
    shown = plan["dry_run"]["files"][SCRIPT_FILE]
    assert Recorded.sbatched == [shown.encode()]  # byte for byte what the dry run showed
    assert (folder / "submission.sh").read_bytes() == shown.encode()
    assert "#SBATCH --gpus-per-node=2" in shown  # the cluster's form, asked once for the dry run
    task, = plan["plan"]["tasks"]
    assert task["experiment_id"] == exp_id and task["command"] == plan["dry_run"]["commands"][0]
    assert task["gpus_per_node"] == 2 and task["run_dir"].startswith(plan["dry_run"]["work_dir"])


def test_a_sweep_renders_one_array_script_and_sbatch_reads_it(monkeypatch, capsys, tmp_path, renders):
    run_cli(monkeypatch, capsys, tmp_path, "sweep", CONFIG, "--backend", "slurm", "--nproc", "2", "--grid",
            "optimizer.lr=0.01,0.02,0.04", "--detach")
    assert len(renders) == 1
    folder, = (tmp_path / "home" / "slurm").iterdir()
    plan = stored_plan(folder)
    assert folder.name.startswith("array-") and len(plan["plan"]["tasks"]) == 3
    assert Recorded.sbatched == [plan["dry_run"]["files"][SCRIPT_FILE].encode()]
    assert "#SBATCH --array=0-2%3" in Recorded.sbatched[0].decode()
    assert [t["command"] for t in plan["plan"]["tasks"]] == plan["dry_run"]["commands"]


def spec(tmp_path: Path, gpus: int = 0) -> JobSpec:
    return JobSpec(id="0123abcd", name="x", config="/c.yaml", work_dir=str(tmp_path / "w"), cwd=str(tmp_path),
                   backend="slurm", resources=Resources(nproc=max(gpus, 1), gpus=gpus))


def test_submit_executes_the_dry_run_it_is_given(tmp_path, renders):
    b = Recorded(tmp_path, SlurmDefaults(), python="/py", repo_root="/repo")
    s = spec(tmp_path)
    dry = b.dryrun(s)
    handle = b.submit(s, dry)
    assert len(renders) == 1 and handle.job_id == "41"
    assert Recorded.sbatched == [dict(dry.files)[SCRIPT_FILE].encode()]
    assert stored_plan(tmp_path / "slurm" / s.id) == {"dry_run": dry.to_json(), "plan": dict(dry.plan or {})}
    b.submit(s)  # a resume without a dry run at hand: one render of its own
    assert len(renders) == 2 and (tmp_path / "slurm" / f"{s.id}.41").is_dir()


def test_a_dry_run_made_without_the_cluster_is_checked_at_submit(tmp_path, renders, monkeypatch):
    """--gres was assumed while slurmctld did not answer: submit asks again; a cluster that takes GPUs another
    way gets a new plan (the only second render), no cluster is the one line."""
    b = Recorded(tmp_path, SlurmDefaults(), python="/py", repo_root="/repo")
    monkeypatch.setattr(Recorded, "config", None)
    dry = b.dryrun(spec(tmp_path, gpus=2))
    assert "#SBATCH --gres=gpu:2" in dict(dry.files)[SCRIPT_FILE]
    with pytest.raises(LauncherError, match="^no Slurm cluster reachable"):
        b.submit(spec(tmp_path, gpus=2), dry)
    assert not (tmp_path / "slurm" / "0123abcd").exists() and not Recorded.sbatched
    b = Recorded(tmp_path, SlurmDefaults(), python="/py", repo_root="/repo")
    monkeypatch.setattr(Recorded, "config", CONS_TRES)
    b.submit(spec(tmp_path, gpus=2), dry)
    assert len(renders) == 2 and "#SBATCH --gpus-per-node=2" in Recorded.sbatched[0].decode()
    assert stored_plan(tmp_path / "slurm" / "0123abcd")["dry_run"]["files"][SCRIPT_FILE] == \
        Recorded.sbatched[0].decode()
