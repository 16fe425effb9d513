"""The launcher passes weights names through untouched (the job fetches them), checks them by name without torch,
and shows the weights a run started from (the worker's ``weights`` fact) in ``launcher status``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcore.config_check import ConfigProblems
from detcore.contract import WorkerArgs, run_dir
from detcore.facts import append_fact, parse_fact
from launcher.jobs import SubmitRequest, build_spec
from launcher.store.reconcile import weights_fact
from launcher.runtime.command import worker_args
from launcher.spec import JobSpec, JobState, Resources
from launcher.views.status_text import status_lines
from launcher.store import ExperimentStore, experiment_from_spec

ROOT = Path(__file__).resolve().parents[3]
SHAPES = "configs/shapes/faster_rcnn_tiny_shapes.yaml"


def spec_for(**kw):
    return build_spec(SubmitRequest(config=SHAPES, **kw), cwd=str(ROOT), exp_id="0123abcd")


def test_names_reach_the_worker_as_given() -> None:
    spec = spec_for(worker=WorkerArgs(load_from="torchvision://fasterrcnn_resnet50_fpn"))
    args = worker_args(spec)
    assert args[args.index("--load-from") + 1] == "torchvision://fasterrcnn_resnet50_fpn"
    test = spec_for(checkpoint="FasterRCNN_ResNet50_FPN_Weights.COCO_V1")
    assert worker_args(test)[:3] == ("test", str(ROOT / SHAPES), "FasterRCNN_ResNet50_FPN_Weights.COCO_V1")


@pytest.mark.parametrize("load_from, words", [
    ("torchvision://fasterrcnn_resnet50_fp", "did you mean 'torchvision://fasterrcnn_resnet50_fpn'"),
    ("torchvision://retinanet_resnet50_fpn", "holds a RetinaNet but the config builds a FasterRCNN"),
    ("torchvision://resnet50", "holds ImageNet weights of a backbone, not a detector"),
])
def test_wrong_names_are_refused_before_anything_exists(load_from: str, words: str) -> None:
    with pytest.raises(ConfigProblems) as err:
        spec_for(worker=WorkerArgs(load_from=load_from))
    assert len(err.value.problems) == 1 and words in err.value.problems[0]


def test_status_shows_the_weights_fact(tmp_path: Path) -> None:
    spec = JobSpec(id="0000abcd", name="j", config="/c.yaml", work_dir=str(tmp_path), cwd="/",
                   resources=Resources(nproc=1), run_id="r1")
    store = ExperimentStore(tmp_path / "home")
    store.insert(experiment_from_spec(spec, JobState.RUNNING))
    exp = store.get(spec.id)
    assert weights_fact(exp) is None
    record = {"key": "model.backbone.weights", "given": "torchvision://resnet50",
              "weights": "ResNet50_Weights.IMAGENET1K_V1", "file": "/cache/resnet50-0676ba61.pth", "sha256": "ab" * 32,
              "url": "https://download.pytorch.org/models/resnet50-0676ba61.pth"}
    append_fact(run_dir(tmp_path, "r1"), parse_fact({"event": "weights", "rank": 0, "weights": [record]}))
    assert weights_fact(exp) == [record]
    lines = status_lines(exp, weights=weights_fact(exp))
    assert ("weights: model.backbone.weights: ResNet50_Weights.IMAGENET1K_V1 (/cache/resnet50-0676ba61.pth, "
            "sha256 abababababababab)") in lines
    json.dumps(weights_fact(exp))
    store.close()


def test_a_remote_submit_warns_about_names_not_in_this_nodes_cache(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec_for(worker=WorkerArgs(load_from="torchvision://fasterrcnn_resnet50_fpn"), backend="slurm")
    (warning,) = [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    assert ("load_from" in warning or "--load-from" in warning) and "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in warning
    assert "detcore model download FasterRCNN_ResNet50_FPN_Weights.COCO_V1" in warning
    caplog.clear()
    # local: the job downloads it with a progress line
    spec_for(worker=WorkerArgs(load_from="torchvision://fasterrcnn_resnet50_fpn"))
    assert not [r for r in caplog.records if "cache" in r.getMessage()]
