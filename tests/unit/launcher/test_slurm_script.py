"""Rendered sbatch scripts against reviewed golden files, and the rules for Slurm options and defaults.

Regenerate the golden files after a reviewed change with ``UPDATE_GOLDEN=1 pytest tests/unit/launcher/test_slurm_script.py``.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from launcher.backends import slurm
from launcher.backends.slurm import SlurmBackend
from launcher.backends.slurm.script import SlurmOptions, SlurmDefaults, defaults_paths, load_defaults
from launcher.errors import LauncherError
from launcher.spec import JobSpec, Mode, Resources, SlotPool

GOLDEN = Path(__file__).parent / "golden"
HOME = Path("/home/alice/.local/share/detlaunch")


def backend(home: Path = HOME, **defaults) -> SlurmBackend:
    return SlurmBackend(home, SlurmDefaults(**defaults), python="/opt/conda/bin/python",
                        repo_root="/home/alice/detlaunch")


def spec(exp_id: str = "0123abcd", name: str = "frcnn", resources: Resources = Resources(nproc=2),
         options: SlurmOptions | None = None, cwd: str = "/home/alice/proj", work_dir: str | None = None,
         **kw) -> JobSpec:
    return JobSpec(id=exp_id, name=name, config=f"{cwd}/configs/frcnn.yaml",
                   work_dir=work_dir or f"{cwd}/work_dirs/{name}-{exp_id}", cwd=cwd, resources=resources,
                   backend="slurm", backend_options=options, overrides=("runner.max_iters=40",), **kw)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing; run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from the reviewed golden file (UPDATE_GOLDEN=1 after review)"


def sbatch_values(script: str) -> dict[str, str | bool]:
    """What sbatch reads from the #SBATCH lines (it strips shell quoting like the shell would)."""
    out: dict[str, str | bool] = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            words = shlex.split(line[len("#SBATCH "):])
            assert len(words) == 1, line
            key, sep, value = words[0].removeprefix("--").partition("=")
            out[key] = value if sep else True
    return out


def script_of(b: SlurmBackend, specs) -> str:
    dry = b.dryrun_array(specs) if len(specs) > 1 else b.dryrun(specs[0])
    files = dict(dry.files)
    assert list(files) == ["sbatch script submission.sh"]
    text = files["sbatch script submission.sh"]
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)  # valid shell
    return text


def test_one_node_cpu_job_with_cluster_defaults():
    b = backend(partition="debug", account="detlaunch", qos="normal", time_min=60)
    text = script_of(b, [spec(resources=Resources(nproc=2))])
    check_golden("slurm_1node_cpu.sbatch", text)
    v = sbatch_values(text)
    assert v["ntasks-per-node"] == "2" and v["nodes"] == "1" and "gpus-per-node" not in v
    assert v["partition"] == "debug" and v["account"] == "detlaunch" and v["time"] == "60"
    assert v["signal"] == "USR2@120" and v["requeue"] is True and v["chdir"] == "/home/alice/proj"
    assert v["comment"] == "detlaunch:0123abcd"


def test_two_node_gpu_job_command_line_over_defaults():
    opts = SlurmOptions(partition="gpu", qos="high", exclude="gpu[01-02]", signal_delay_s=300, max_timeouts=5)
    b = backend(partition="debug", account="vision", time_min=60, cpus_per_task=4, mem_gb=200,
                gpu_request="gpus-per-node")
    s = spec(exp_id="89abcdef", name="frcnn-r50", options=opts,
             resources=Resources(nproc=4, gpus=4, nodes=2, cpus_per_task=10, mem_gb=480, time_min=1440))
    text = script_of(b, [s])
    check_golden("slurm_2node_gpu.sbatch", text)
    v = sbatch_values(text)
    assert (v["nodes"], v["ntasks-per-node"], v["gpus-per-node"]) == ("2", "4", "4")
    assert (v["partition"], v["account"], v["qos"], v["time"]) == ("gpu", "vision", "high", "1440")
    assert (v["cpus-per-task"], v["mem"], v["signal"]) == ("10", "480GB", "USR2@300")
    assert "gres" not in v and "mem-per-gpu" not in v  # one GPU request, one memory request
    assert "--cpus-per-task=10" in text.splitlines()[-1]  # srun is told too (Slurm 22.05-23.02 do not inherit it)
    dry = b.dryrun(s)
    assert dict(dry.env)["WORLD_SIZE"] == "8" and "CUDA_VISIBLE_DEVICES" in dict(dry.env)
    assert any("at most 5 time-limit requeues" in n for n in dry.notes)


def test_array_sweep_is_one_script_with_parallelism():
    specs = [spec(exp_id=i, name=f"frcnn-lr={lr}", resources=Resources(nproc=1), slots=SlotPool("s", 2))
             for i, lr in (("00000001", "0.01"), ("00000002", "0.02"), ("00000003", "0.04"))]
    text = script_of(backend(partition="debug", time_min=30), specs)
    check_golden("slurm_array_sweep.sbatch", text)
    v = sbatch_values(text)
    assert v["array"] == "0-2%2" and v["job-name"] == "frcnn"
    assert v["output"] == f"{HOME}/slurm/array-00000001/%A_%a_0_log.out"
    assert v["comment"] == "detlaunch:array-00000001"
    dry = backend().dryrun_array(specs)
    assert [c[c.index("--work-dir") + 1] for c in dry.commands] == [s.work_dir for s in specs]
    opts = SlurmOptions(array_parallelism=3)
    wide = [spec(exp_id=s.id, name=s.name, resources=s.resources, options=opts, slots=s.slots) for s in specs]
    assert sbatch_values(script_of(backend(), wide))["array"] == "0-2%3"


def test_shell_metacharacters_are_quoted():
    home = Path("/tmp/it's a $HOME")
    cwd = "/tmp/my proj;rm -rf ~"
    work = "/tmp/out dir/$(touch x)/`id`/it's"
    opts = SlurmOptions(constraint="[a100|h100]&ib", account="a b",
                   extra=(("mail-user", "me@x.org; echo pwned"), ("exclusive", "")))
    s = spec(exp_id="0badc0de", name="x=1+y.2", options=opts, cwd=cwd, work_dir=work)
    b = backend(home=home)
    text = script_of(b, [s])
    check_golden("slurm_metacharacters.sbatch", text)
    v = sbatch_values(text)
    assert v["chdir"] == cwd and v["constraint"] == "[a100|h100]&ib" and v["account"] == "a b"
    assert v["mail-user"] == "me@x.org; echo pwned" and v["exclusive"] is True
    assert v["output"] == f"{home}/slurm/0badc0de/%j_0_log.out"
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    words = shlex.split(srun)
    assert words[-1] == f"{home}/slurm/0badc0de"
    assert words[words.index("--output") + 1] == f"{home}/slurm/0badc0de/%j_%t_log.out"
    pythonpath = next(line for line in text.splitlines() if line.startswith("export PYTHONPATH="))
    assert pythonpath == "export PYTHONPATH=/home/alice/detlaunch${PYTHONPATH:+:$PYTHONPATH}"
    command = b.dryrun(s).commands[0]
    assert command[command.index("--work-dir") + 1] == work
    assert shlex.split(shlex.join(command)) == list(command)


@pytest.mark.parametrize("make, message", [
    (lambda: spec(work_dir="/tmp/a\nb"), "line break"),
    (lambda: spec(cwd="/tmp/a\nrm -rf /"), "line break"),
    (lambda: spec(options=SlurmOptions(extra=(("time", "10"),))), "use --time"),
    (lambda: spec(options=SlurmOptions(extra=(("array", "0-3"),))), "launcher sweep"),
    (lambda: spec(options=SlurmOptions(partition="a\nb")), "line break"),
    (lambda: spec(resources=Resources(nproc=1, time_min=2)), "lower --signal-delay"),
])
def test_requests_an_sbatch_script_cannot_carry_are_refused(make, message):
    with pytest.raises(LauncherError, match=message):
        backend().dryrun(make())


def test_percent_in_job_folder_and_mixed_arrays_are_refused():
    with pytest.raises(LauncherError, match="'%'"):
        backend(home=Path("/tmp/100%")).dryrun(spec())
    with pytest.raises(LauncherError, match="same resources"):
        backend().dryrun_array([spec(exp_id="00000001"), spec(exp_id="00000002", resources=Resources(nproc=4))])


def test_test_jobs_do_not_ask_for_stop_signals():
    s = spec(mode=Mode.TEST, checkpoint="/home/alice/proj/model.pth")
    assert "DETCORE_STOP_SIGNALS" not in dict(backend().dryrun(s).env)


def test_options_from_the_command_line(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--nproc", type=int)
    slurm.add_arguments(parser.add_argument_group("slurm"))
    args = parser.parse_args(["--partition", "gpu", "--slurm-qos", "high", "--gpus-per-node", "4",
                              "--slurm-option", "mail-type=END", "--slurm-option=--exclusive",
                              "--signal-delay", "200", "--array-parallelism", "3"])
    opts = slurm.options_from_args(args)
    assert opts == SlurmOptions(partition="gpu", qos="high", signal_delay_s=200, array_parallelism=3,
                           extra=(("mail-type", "END"), ("exclusive", "")))
    assert slurm.resources_from_args(args, Resources()) == Resources(nproc=4, gpus=4)
    args = parser.parse_args(["--tasks-per-node", "3"])
    assert slurm.resources_from_args(args, Resources()) == Resources(nproc=3)
    with pytest.raises(LauncherError, match="only one"):
        slurm.resources_from_args(parser.parse_args(["--gpus-per-node", "2", "--nproc", "2"]), Resources())
    with pytest.raises(LauncherError, match="use --partition"):
        slurm.options_from_args(parser.parse_args(["--slurm-option", "partition=x"]))
    with pytest.raises(LauncherError, match="KEY=VALUE"):
        slurm.options_from_args(parser.parse_args(["--slurm-option", "=x"]))
    # the options survive the store's JSON round trip (tuples come back as lists)
    assert SlurmOptions(**{"extra": [["mail-type", "END"]]}) == SlurmOptions(extra=(("mail-type", "END"),))


def test_defaults_file(tmp_path):
    (tmp_path / "launcher.yaml").write_text(
        "ray: {address: auto}\nslurm:\n  partition: debug\n  account: detlaunch\n  time_min: 60\n  qos:\n"
        "  setup: [module load cuda/12.4]\n  options: {mail-type: END, exclusive: true}\n")
    d = load_defaults(defaults_paths(tmp_path, {"LAUNCHER_HOME": str(tmp_path)}))
    assert (d.partition, d.account, d.time_min, d.qos) == ("debug", "detlaunch", 60, None)
    assert d.setup == ("module load cuda/12.4",) and d.options == (("mail-type", "END"), ("exclusive", ""))
    text = script_of(SlurmBackend(tmp_path, d, python="/py", repo_root="/r"), [spec()])
    assert "\nmodule load cuda/12.4\n" in text and "#SBATCH --exclusive\n" in text
    assert load_defaults([tmp_path / "missing.yaml"]) == SlurmDefaults()
    (tmp_path / "launcher.yaml").write_text("slurm:\n  partion: gpu\n")
    with pytest.raises(LauncherError, match="did you mean 'partition'"):
        load_defaults([tmp_path / "launcher.yaml"])
    (tmp_path / "launcher.yaml").write_text("slurm:\n  time_min: an hour\n")
    with pytest.raises(LauncherError, match="time_min must be an integer"):
        load_defaults([tmp_path / "launcher.yaml"])
    # with LAUNCHER_HOME set, only that home's file counts; otherwise ~/.config/detlaunch comes first
    assert defaults_paths(tmp_path, {"LAUNCHER_HOME": "x"}) == [tmp_path / "launcher.yaml"]
    assert defaults_paths(tmp_path, {"XDG_CONFIG_HOME": "/cfg"}) == [Path("/cfg/detlaunch/launcher.yaml"),
                                                                   tmp_path / "launcher.yaml"]


def test_example_defaults_file_is_valid():
    example = Path(__file__).resolve().parents[3] / "cluster" / "slurm" / "launcher.yaml.example"
    d = load_defaults([example])
    assert d.partition == "debug" and d.time_min == 60


def test_golden_files_are_what_submitit_renders():
    """Every golden script is submitit's template: parameters sorted, srun line, submitit runner."""
    for path in sorted(GOLDEN.glob("slurm_*.sbatch")):
        text = path.read_text()
        keys = [m.group(1) for m in re.finditer(r"^#SBATCH --([a-z-]+)", text, re.M)]
        assert keys == sorted(keys), path.name
        assert "-u -m submitit.core._submit" in text and "export SUBMITIT_EXECUTOR=slurm" in text, path.name
