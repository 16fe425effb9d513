"""The experiment manager on real experiments: one 2-point sweep of the tiny shapes config (local backend,
2 iterations each after the LR/schedule scaling) and a test job of its checkpoint, then list, compare,
export (read back with `csv`), plot (opened with Pillow), tag, note and rm --purge through the real CLI."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.launcher_cli import SHAPES, done, launcher, wait_until

# one worker x 2 images against the config's base batch of 4: the grid LR is halved, max_iters 1 -> 2
DATA = ["data.samples_per_gpu=2", "data.workers_per_gpu=0", "data.train.num_train=8", "data.train.num_val=4",
        "data.val.num_train=8", "data.val.num_val=4", "data.test.num_train=8", "data.test.num_val=4",
        "log_config.interval=1", "runner.max_iters=1", "checkpoint_config.interval=1"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("manager")
    home = root / "home"
    out = launcher(home, "sweep", SHAPES, "--grid", "optimizer.lr=0.01,0.02", "--nproc", "1", "--max-restarts", "0",
                   "--name", "mgr", "--cfg-options", *DATA, timeout=300).stdout
    ids = [line.split()[0] for line in out.splitlines()[:2]]  # then the closing table
    recs = [json.loads(launcher(home, "status", i, "--json").stdout) for i in ids]
    assert [r["state"] for r in recs] == ["succeeded", "succeeded"], [r["reason"] for r in recs]
    ckpt = Path(recs[1]["work_dir"]) / (Path(recs[1]["work_dir"]) / "last_checkpoint").read_text().strip()
    test_id = launcher(home, "submit", SHAPES, "--test", str(ckpt), "--eval", "bbox", "--nproc", "1", "--name",
                       "mgr-test", "--detach", "--cfg-options", *DATA).stdout.strip()
    return {"home": home, "ids": ids, "recs": recs, "test_id": test_id, "root": root}


def test_list_shows_the_grid_progress_and_both_lrs_and_sorts_limits_filters(sweep):
    home, (a, b) = sweep["home"], sweep["ids"]
    lines = launcher(home, "list", "--sweep", sweep["recs"][0]["sweep"]).stdout.splitlines()
    head = lines[0].split()
    assert head[:4] == ["ID", "NAME", "LR", "STATE"] and {"PROGRESS", "DURATION", "LOSS", "BEST", "AP"} <= set(head)
    assert head.count("LR") == 1 and "lr" not in head  # the grid's LR is the LR column
    row_a = next(line for line in lines if line.startswith(a))
    assert "mgr " in row_a and " 0.01 " in row_a and "2/2" in row_a and "0.01 (x0.5 0.005)" in row_a
    assert "mgr-lr=" not in row_a  # the grid value has its own column instead of a cut name
    assert launcher(home, "list", "--wide", "--sweep", sweep["recs"][0]["sweep"]).stdout.count("mgr-lr=0.0") == 2
    first = launcher(home, "list", "--sort", "-lr", "--limit", "1").stdout.splitlines()
    assert len(first) == 2 and first[1].startswith(b)
    assert launcher(home, "list", "--sort", "name", "--reverse", "--limit", "1",
                    "--json").stdout.count('"id"') == 1
    launcher(home, "tag", a, "baseline", "keep")
    tagged = launcher(home, "list", "--tag", "baseline").stdout.splitlines()
    assert len(tagged) == 2 and tagged[1].startswith(a) and "baseline,keep" in tagged[1]
    narrow = launcher(home, "list", COLUMNS="80").stdout.splitlines()
    assert max(map(len, narrow)) <= 80 and {"ID", "NAME", "STATE", "PROGRESS", "BEST"} <= set(narrow[0].split())
    assert len(narrow) == 4 and narrow[1].startswith(a) and "2/2" in narrow[1]
    bad = launcher(home, "list", "--sort", "colour", check=False)
    assert bad.returncode == 2 and "unknown key; choose one of" in bad.stderr
    status = launcher(home, "status", a).stdout
    assert "None" not in status and "{" not in status and "lr: 0.01 (x0.5 0.005)" in status
    assert "progress: iteration 2 of 2" in status and "restarts: 0" in status


def test_compare_lists_the_differing_keys_and_metrics_side_by_side(sweep):
    home, (a, b) = sweep["home"], sweep["ids"]
    data = json.loads(launcher(home, "compare", a, b, "--json").stdout)
    assert [e["id"] for e in data["experiments"]] == [a, b]
    assert data["config"] == {"optimizer.lr": [0.01, 0.02]}
    assert "loss" in data["final"] and all(isinstance(v, float) for v in data["final"]["loss"])
    assert "bbox_AP" in data["best"] and data["best"]["iter"] == [2, 2]
    text = launcher(home, "compare", a, b).stdout
    assert any(line.split()[:3] == ["optimizer.lr", "0.01", "0.02"] for line in text.splitlines())
    assert text.splitlines()[0].startswith(f"{a}  succeeded  mgr-lr=0.01") and re.search(rf"^KEY +{a} +{b}$", text, re.M)


def test_export_csv_reads_back_with_numbers(sweep):
    home, (a, b) = sweep["home"], sweep["ids"]
    out = sweep["root"] / "runs.csv"
    launcher(home, "export", a, b, "--format", "csv", "--out", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["id"] for r in rows] == [a, b] and [float(r["optimizer.lr"]) for r in rows] == [0.01, 0.02]
    assert [float(r["lr"]) for r in rows] == [0.005, 0.01] and all(float(r["final.loss"]) > 0 for r in rows)
    assert rows[0]["best.bbox_AP"] != "" and rows[0]["tags"] == "baseline,keep"
    records = json.loads(launcher(home, "export", a, b, "--format", "json").stdout)
    assert records[1]["optimizer.lr"] == 0.02 and isinstance(records[1]["final.loss"], float)
    assert set(records[0]) == set(rows[0])
    assert datetime.fromisoformat(rows[0]["created"]).timestamp() == int(sweep["recs"][0]["created"])


def test_plot_draws_the_sweep_in_one_png(sweep):
    home, ids = sweep["home"], sweep["ids"]
    png = sweep["root"] / "loss.png"
    proc = launcher(home, "plot", *ids, "--metric", "loss", "--out", str(png))
    assert "(4 points)" in proc.stderr
    with Image.open(png) as img:
        img.load()
        assert img.format == "PNG" and img.size[0] >= 400
    bad = launcher(home, "plot", *ids, "--metric", "bbox_mAP", "--out", str(png), check=False)
    assert bad.returncode == 2 and "choose one of" in bad.stderr and "bbox_AP" in bad.stderr


def test_a_test_job_records_its_ap(sweep):
    home, test_id = sweep["home"], sweep["test_id"]
    rec = wait_until(home, test_id, done, timeout=300)
    assert rec["state"] == "succeeded", rec["reason"]
    assert rec["last_ap"] is not None and rec["best_ap"] == rec["last_ap"] and "bbox_AP50" in rec["last_metrics"]
    line = next(x for x in launcher(home, "list").stdout.splitlines() if x.startswith(test_id))
    assert " test " in line and f"{rec['last_ap']:.3f}" in line


def test_note_rm_and_purge(sweep):
    home, (a, b), test_id = sweep["home"], sweep["ids"], sweep["test_id"]
    launcher(home, "note", a, "the", "baseline")
    assert "note: the baseline" in launcher(home, "status", a).stdout
    work_a, work_b = Path(sweep["recs"][0]["work_dir"]), Path(sweep["recs"][1]["work_dir"])
    refused = launcher(home, "rm", a, "--purge", check=False)  # no terminal and no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr and work_a.is_dir()
    assert json.loads(launcher(home, "status", a, "--json").stdout)["id"] == a  # nothing half-removed
    launcher(home, "rm", a, "--purge", "--yes")
    assert not work_a.exists() and work_b.is_dir()
    assert launcher(home, "status", a, check=False).returncode == 2
    launcher(home, "rm", b, test_id)  # without --purge the work dirs stay
    assert work_b.is_dir() and json.loads(launcher(home, "list", "--json").stdout) == []
