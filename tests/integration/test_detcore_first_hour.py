"""``detcore``'s first hour on a real 2-iteration run: the console output, TensorBoard hparams and
validation images, ``detcore analyze confusion`` and ``detcore browse``."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from detcore.apis.palette import class_color
from detcore.apis.visualize import GAP_PX
from tests.integration.helpers import SHAPES, detcore, final_val

pytestmark = pytest.mark.slow

OPTIONS = ("optimizer.lr=0.01", "runner.max_iters=2", "evaluation.interval=1", "log_config.interval=1",
           "checkpoint_config.interval=2")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Two iterations, evaluated after each (so the second ETA includes a timed evaluation)."""
    work = tmp_path_factory.mktemp("first-hour")
    proc = detcore("train", str(SHAPES), "--work-dir", str(work), "--cfg-options", *OPTIONS)
    return work, proc.stderr


def test_train_prints_eta_progress_metrics_once_and_a_closing_summary(run: tuple[Path, str]) -> None:
    work, log = run
    lines = re.findall(r"^\d\d:\d\d:\d\d (iter (\d)/2 .* eta (estimating|\d+:\d\d:\d\d)( \+ eval)?)$", log, re.M)
    # one iteration cannot be told from warm-up; the second ETA is the timed evaluation still to come
    assert [(i, eta if eta == "estimating" else "h:mm:ss", untimed) for _, i, eta, untimed in lines] == [
        ("1", "estimating", ""), ("2", "h:mm:ss", "")], log
    assert all(len(line) < 120 for line in log.splitlines() if " iter " in line and "/2 " in line), log
    assert "malloc:" not in log and "heartbeats to" not in log  # internal lines are DEBUG
    assert "evaluation 100/100 batches" in log  # progress as log lines: stderr is not a terminal here
    assert log.count("evaluation: bbox_AP=") == 2  # once per evaluation, and nowhere else
    assert "final metrics" not in log and "COCO bbox metrics" not in log
    summary = log[log.index("done: 2 iterations in "):]
    assert f"work dir:        {work}" in summary
    assert f"last checkpoint: {work / 'iter_2.pth'}" in summary
    assert re.search(rf"best checkpoint: {re.escape(str(work / 'best_bbox_AP.pth'))} \(bbox_AP=[\d.]+ at iter 2\)",
                     summary), summary


def test_tensorboard_holds_hparams_in_the_run_itself_and_gt_next_to_predictions(run: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    work, _ = run
    assert [p.name for p in (work / "tb").iterdir() if p.is_dir()] == []  # no add_hparams sub-run folder
    acc = EventAccumulator(str(work / "tb"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    assert set(content) == {metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hparams = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in start.hparams.items()}
    assert hparams == {"optimizer.lr": 0.01, "runner.max_iters": 2, "evaluation.interval": 1,
                       "log_config.interval": 1, "checkpoint_config.interval": 2}
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"train/loss", "val/bbox_AP", "val/bbox_AP50"} <= metrics
    assert metrics <= set(acc.Tags()["scalars"])  # the HParams tab reads these scalars from the same run
    # 128x128 shapes hold no large objects: pycocotools says APl/ARl -1, kept in metrics.jsonl, not plotted
    assert final_val(work)["bbox_APl"] == -1 and "val/bbox_APl" not in acc.Tags()["scalars"]
    constant = [t for t in acc.Tags()["scalars"] if {e.value for e in acc.Scalars(t)} == {-1.0}]
    assert constant == [], constant
    image = acc.Images(acc.Tags()["images"][0])[-1]
    # ground truth | predictions, each 128x128 image drawn at 512x512, under a header line
    assert image.width == 2 * 512 + GAP_PX and 512 + 16 <= image.height <= 512 + 48


def test_analyze_confusion_writes_a_png_and_counts_every_box(run: tuple[Path, str], tmp_path: Path) -> None:
    from detcore.data import ensure_shapes

    work, _ = run
    out = tmp_path / "confusion.png"
    proc = detcore("analyze", "confusion", str(SHAPES), str(work / "iter_2.pth"), "--out", str(out),
                   "--score-thr", "1.0", "--json")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["classes"] == ["rectangle", "ellipse", "triangle", "background"]
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 200
    gt = json.loads((ensure_shapes(None, num_train=400, num_val=100, size=128, seed=0)
                     / "annotations/instances_val.json").read_text())
    per_class = [sum(a["category_id"] == c["id"] for a in gt["annotations"]) for c in gt["categories"]]
    # no detection scores 1.0: every ground-truth box is missed (background column), nothing else counts
    assert doc["matrix"] == [[0, 0, 0, per_class[0]], [0, 0, 0, per_class[1]], [0, 0, 0, per_class[2]],
                             [0, 0, 0, 0]]


def test_browse_draws_ground_truth_after_the_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "browse"
    detcore("browse", str(SHAPES), "--out-dir", str(out), "--split", "val", "--limit", "3")
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    for path in pngs:
        with Image.open(path) as png:
            assert png.size == (512, 512)  # the 128x128 images drawn readable
            colours = {rgb for _, rgb in png.convert("RGB").getcolors(512 * 512)}
            assert colours & {class_color(c) for c in (1, 2, 3)}  # ground-truth boxes in their class colours
