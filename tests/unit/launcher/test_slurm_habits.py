"""Slurm as its users write it: ``--gres gpu:N``, ``--time`` in Slurm's formats, ``-p/-A/-q/-t``, one GPU
request in the form the cluster takes (from recorded ``scontrol show config`` output), default CPUs and
memory for GPU jobs, MMDetection's ``slurm_train.sh`` variables, and a submit with no Slurm cluster.

The ``launcher submit`` runs here go through the real CLI; Slurm's answers are recorded output
(``recorded/``) fed through the backend's one subprocess seam or fake client scripts on ``PATH``.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from launcher import cli
from launcher.backends.slurm import SlurmBackend
from launcher.backends.slurm.gpus import GRES, GPUS_PER_NODE, Gres, choose_gpu_form, parse_gres, parse_scontrol_config
from launcher.backends.slurm.mmdet_env import mmdet_env_line
from launcher.errors import LauncherError
from launcher.walltime import parse_walltime

ROOT = Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs" / "examples" / "faster_rcnn_tiny_augfpn_shapes.yaml")
RECORDED = Path(__file__).parent / "recorded"
CONS_TRES = (RECORDED / "scontrol_show_config_cons_tres.txt").read_text()
CONS_RES = (RECORDED / "scontrol_show_config_cons_res.txt").read_text()
NO_SLURM_CONF = (RECORDED / "sbatch_no_slurm_conf.txt").read_text()


# ---- --time ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, minutes", [
    ("90", 90), ("90:00", 90), ("1:30:00", 90), ("0-1:30", 90), ("0-1:30:00", 90), ("2-0", 2880),
    ("1-12", 2160), ("4:00:00", 240), ("5:30", 6), ("0:01", 1), ("1-00:00:01", 1441)])
def test_slurm_time_formats(text, minutes):
    assert parse_walltime(text) == minutes


@pytest.mark.parametrize("text", ["1:2:3:4", "", "ninety", "1h", "-5", "UNLIMITED", "1-", "1:30:"])
def test_bad_time_is_one_line_naming_the_formats(text):
    with pytest.raises(LauncherError) as err:
        parse_walltime(text)
    assert "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS" in str(err.value) and "\n" not in str(err.value)


def test_zero_time_is_refused():
    with pytest.raises(LauncherError, match="at least one second"):
        parse_walltime("0:00")


# ---- --gres and the cluster's GPU form ---------------------------------------------------------

def test_gres_values():
    assert parse_gres("gpu:2") == Gres(2)
    assert parse_gres("gpu:a100:4") == Gres(4, "a100")
    assert parse_gres("gpu") == Gres(1)
    assert parse_gres("gpu:2,nvme:1") == Gres(2, None, ("nvme:1",))
    assert parse_gres("nvme:1") == Gres(0, None, ("nvme:1",))
    for bad in ("gpu:0", "gpu:2,gpu:1", "gpu:a:b:2", "gpu:2;rm -rf /"):
        with pytest.raises(LauncherError, match="--gres"):
            parse_gres(bad)


def test_recorded_scontrol_config_picks_the_form():
    tres = choose_gpu_form(parse_scontrol_config(CONS_TRES))
    assert tres.form == GPUS_PER_NODE and "SelectType=select/cons_tres" in tres.why
    res = choose_gpu_form(parse_scontrol_config(CONS_RES))
    assert res.form == GRES and "select/cons_res" in res.why and "needs select/cons_tres" in res.why
    none = choose_gpu_form({"SelectType": "select/cons_tres", "GresTypes": "(null)"})
    assert "no GPUs" in none.why


class Recorded(SlurmBackend):
    """The backend with ``scontrol show config`` answered from a recording; anything else is unexpected."""

    config = ""

    def _run(self, cmd):
        assert list(cmd) == ["scontrol", "show", "config"], cmd
        return self.config


def submit(monkeypatch, capsys, tmp_path, args, config_text=CONS_TRES, env=None):
    """``launcher submit ARGS`` with ``scontrol show config`` answering ``config_text``; (status, out, err)."""
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    for name in ("GPUS", "GPUS_PER_NODE", "CPUS_PER_TASK", "SRUN_ARGS", "PARTITION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(Recorded, "config", config_text)
    monkeypatch.setattr("launcher.backends.slurm.SlurmBackend", Recorded)
    monkeypatch.chdir(tmp_path)
    status = cli.main(["submit", CONFIG, "--backend", "slurm", *args])
    out, err = capsys.readouterr()
    return status, out, err


def sbatch_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith("#SBATCH")]


def srun_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith("srun "))


def gpu_lines(out: str) -> list[str]:
    return [line for line in sbatch_lines(out) if line.startswith(("#SBATCH --gres", "#SBATCH --gpus"))]


def test_gres_and_time_render_one_gpu_request_and_90_minutes(monkeypatch, capsys, tmp_path):
    status, out, err = submit(monkeypatch, capsys, tmp_path, ["--gres", "gpu:2", "--time", "1:30:00", "--dry-run"])
    assert status == 0, err
    assert gpu_lines(out) == ["#SBATCH --gpus-per-node=2"]
    assert "#SBATCH --time=90" in sbatch_lines(out)
    assert "#SBATCH --ntasks-per-node=2" in sbatch_lines(out)
    assert "because scontrol show config: SelectType=select/cons_tres" in out
    # a GPU task's CPUs and memory are asked and said; srun is told its CPUs
    assert "#SBATCH --cpus-per-task=5" in sbatch_lines(out) and "--cpus-per-task=5" in srun_line(out)
    assert "#SBATCH --mem-per-gpu=16GB" in sbatch_lines(out)
    assert "note: CPUs: 5 per task" in out and "note: memory: --mem-per-gpu=16GB" in out


def test_a_cluster_without_cons_tres_gets_gres_and_mem_per_node(monkeypatch, capsys, tmp_path):
    status, out, err = submit(monkeypatch, capsys, tmp_path, ["--gres", "gpu:v100:4", "-t", "2-00:00", "--dry-run"],
                              config_text=CONS_RES)
    assert status == 0, err
    assert gpu_lines(out) == ["#SBATCH --gres=gpu:v100:4"]
    assert "#SBATCH --mem=64GB" in sbatch_lines(out) and not any("mem-per-gpu" in x for x in sbatch_lines(out))
    assert "#SBATCH --time=2880" in sbatch_lines(out)
    assert "SelectType=select/cons_res; --gpus-per-node needs select/cons_tres" in out


def test_launcher_yaml_decides_the_gpu_form(monkeypatch, capsys, tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "launcher.yaml").write_text("slurm:\n  gpu_request: gres\n  mem_per_gpu_gb: 40\n")
    status, out, err = submit(monkeypatch, capsys, tmp_path, ["--gpus", "2", "--dry-run"], config_text="unused")
    assert status == 0, err
    assert gpu_lines(out) == ["#SBATCH --gres=gpu:2"] and "#SBATCH --mem=80GB" in sbatch_lines(out)
    assert "slurm.gpu_request is set in" in out and "slurm.mem_per_gpu_gb" in out
    (tmp_path / "home" / "launcher.yaml").write_text("slurm:\n  gpu_request: gpus\n")
    status, out, err = submit(monkeypatch, capsys, tmp_path, ["--gpus", "2", "--dry-run"])
    assert status == 2 and "slurm.gpu_request must be one of gpus-per-node, gres" in err


def test_slurm_option_gres_next_to_a_gpu_count(monkeypatch, capsys, tmp_path):
    status, out, err = submit(monkeypatch, capsys, tmp_path,
                              ["--gres", "gpu:2", "--slurm-option", "gres=gpu:4", "--dry-run"])
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "GPUs are asked once, with --gres gpu:4" in err
    # a GPU-less gres entry joins the one --gres line instead of a second one that would override it
    status, out, err = submit(monkeypatch, capsys, tmp_path,
                              ["--gres", "gpu:2", "--slurm-option", "gres=nvme:1", "--dry-run"], config_text=CONS_RES)
    assert status == 0, err
    assert gpu_lines(out) == ["#SBATCH --gres=gpu:2,nvme:1"]
    status, out, err = submit(monkeypatch, capsys, tmp_path, ["--gres", "gpu:2", "--gpus", "4", "--dry-run"])
    assert status == 2 and "pass the GPU count once" in err


def test_short_forms(monkeypatch, capsys, tmp_path):
    status, out, err = submit(monkeypatch, capsys, tmp_path,
                              ["-p", "gpu", "-A", "vision", "-q", "high", "-t", "45", "--dry-run"])
    assert status == 0, err
    lines = sbatch_lines(out)
    assert {"#SBATCH --partition=gpu", "#SBATCH --account=vision", "#SBATCH --qos=high",
            "#SBATCH --time=45"} <= set(lines)
    assert gpu_lines(out) == [] and not any("mem" in x for x in lines)  # a CPU job asks no GPU and no memory


def test_bad_time_on_the_command_line_is_one_line(monkeypatch, capsys, tmp_path):
    status, out, err = submit(monkeypatch, capsys, tmp_path, ["--time", "4h", "--dry-run"])
    assert status == 2 and len(err.strip().splitlines()) == 1 and "--time '4h'" in err


# ---- MMDetection's slurm_train.sh variables ------------------------------------------------------

def test_slurm_train_variables_are_named_with_their_flags(monkeypatch, capsys, tmp_path):
    env = {"GPUS": "16", "GPUS_PER_NODE": "8", "CPUS_PER_TASK": "5", "PARTITION": "gpu", "SRUN_ARGS": "--exclusive"}
    status, out, err = submit(monkeypatch, capsys, tmp_path, ["--dry-run"], env=env)
    assert status == 0
    lines = [line for line in err.splitlines() if "slurm_train.sh" in line]
    assert len(lines) == 1
    for hint in ("--gres gpu:8 --nodes 2", "--cpus-per-task 5", "-p gpu", "--slurm-option exclusive"):
        assert hint in lines[0]
    assert "#SBATCH --partition=gpu" not in out and gpu_lines(out) == []  # named, not honoured


def test_slurm_train_variables_with_their_flags_given_say_nothing():
    assert mmdet_env_line({"GPUS": "4", "PARTITION": "x"}, {"gpus", "partition"}) is None
    assert mmdet_env_line({}, set()) is None
    assert "GPUS=4 -> --gres gpu:4" in mmdet_env_line({"GPUS": "4"}, set())


# ---- no Slurm cluster --------------------------------------------------------------------------

def fake_clients(folder: Path, stderr: str) -> str:
    """sbatch/scontrol/sinfo that print ``stderr`` and fail, as Slurm's clients do without a slurm.conf."""
    folder.mkdir()
    (folder / "recorded.txt").write_text(stderr)
    for name in ("sbatch", "scontrol", "sinfo"):
        path = folder / name
        path.write_text(f"#!/bin/sh\nsed 's/^sbatch:/{name}:/' {shlex.quote(str(folder / 'recorded.txt'))} >&2\n"
                        f"exit 1\n")
        path.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def assert_no_cluster_line(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for name in ("no Slurm cluster reachable", "SLURM_CONF", "sinfo", "cluster/slurm/start.sh"):
        assert name in lines[0]


@pytest.mark.parametrize("gpus", [[], ["--gres", "gpu:1"]])
def test_no_slurm_conf_is_one_line_and_leaves_nothing(monkeypatch, capsys, tmp_path, gpus):
    monkeypatch.setenv("PATH", fake_clients(tmp_path / "bin", NO_SLURM_CONF))
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.chdir(tmp_path)
    status = cli.main(["submit", CONFIG, "--backend", "slurm", "--detach", *gpus])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert_no_cluster_line(err)
    assert "resolve_ctls_from_dns_srv" in err
    assert cli.main(["list", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"  # no experiment left pending
    assert not list((tmp_path / "home" / "slurm").glob("*")) if (tmp_path / "home" / "slurm").exists() else True
    assert not (tmp_path / "work_dirs").exists() or not any((tmp_path / "work_dirs").iterdir())


def test_missing_slurm_clients_is_the_same_line(monkeypatch, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    status = cli.main(["submit", CONFIG, "--backend", "slurm", "--detach"])
    err = capsys.readouterr().err
    assert status == 2
    assert_no_cluster_line(err)
    assert "sbatch not found on PATH" in err


def test_a_dry_run_without_a_cluster_says_it_assumed_gres(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", fake_clients(tmp_path / "bin", NO_SLURM_CONF))
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["submit", CONFIG, "--backend", "slurm", "--gres", "gpu:2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert gpu_lines(out) == ["#SBATCH --gres=gpu:2"]
    assert "`scontrol show config` failed" in out and "--gres works under every select plugin" in out


def test_resume_takes_slurm_time_formats_and_gres():
    import argparse

    from launcher.cli import commands
    from launcher.backends import slurm
    from launcher.spec import Resources

    args = argparse.Namespace(nproc=None, gpus=None, nodes=None, cpus_per_task=None, mem_gb=None, time="2-00:00",
                              slurm_gres="gpu:a100:4")
    new = commands._resume_resources(args, Resources(nproc=2, time_min=60), slurm)
    assert new == Resources(nproc=4, gpus=4, time_min=2880)
