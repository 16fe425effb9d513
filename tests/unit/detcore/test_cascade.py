"""Cascade (Mask) R-CNN: stages built as configured, trained with per-stage losses, averaged at test time."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.detection import FasterRCNN

from detcore.apis import inference_detector, init_detector
from detcore.checkpoint import load_weights, make_meta, save_checkpoint
from detcore.config import dump_config, load_config
from detcore.config_check import config_problems
from detcore.errors import CheckpointError, ConfigError
from detcore.evaluation.metrics import predicts_masks
from detcore.models import build_detector

ROOT = Path(__file__).resolve().parents[3]
CASCADE = ROOT / "configs/shapes/cascade_rcnn_tiny_shapes.yaml"
CASCADE_MASK = ROOT / "configs/shapes/cascade_mask_rcnn_tiny_shapes.yaml"
TINY = {"num_classes": 2, "backbone": {"type": "TinyNet", "channels": [8, 16, 32, 32], "norm": "gn"},
        "neck": {"type": "FPN", "out_channels": 32}, "min_size": 128, "max_size": 128}


def tiny(arch: str = "CascadeRCNN", mask: bool = False, **roi) -> torch.nn.Module:
    torch.manual_seed(0)
    roi = {"representation_size": 64, **({"mask_layers": [16, 16]} if mask else {}), **roi}
    return build_detector({"type": arch, **TINY, "roi_head": roi})


def targets(masks: bool = False) -> list[dict]:
    t = {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 50.0]]), "labels": torch.tensor([1, 2])}
    if masks:
        t["masks"] = torch.zeros(2, 128, 128, dtype=torch.uint8)
        t["masks"][0, 12:70, 10:60] = 1
        t["masks"][1, 20:50, 70:120] = 1
    return [t]


def images(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 128, 128, generator=g)]


@pytest.mark.parametrize("config", [CASCADE, CASCADE_MASK])
def test_the_shipped_tiny_configs_build_three_stages_as_configured(config: Path) -> None:
    model = build_detector(load_config(config)["model"])
    assert isinstance(model, FasterRCNN) and model.arch == "CascadeRCNN"
    stages = model.roi_heads.stages
    assert [s.proposal_matcher.high_threshold for s in stages] == [0.5, 0.6, 0.7]
    assert [s.proposal_matcher.low_threshold for s in stages] == [0.5, 0.6, 0.7]
    assert [s.box_coder.weights for s in stages] == [(10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)]
    assert model.roi_heads.stage_loss_weights == [1.0, 0.5, 0.25]
    assert all(s.box_predictor.bbox_pred.out_features == 4 for s in stages)  # class-agnostic, as MMDetection's
    assert len({id(s.box_head) for s in stages}) == 3  # each stage has its own head
    assert model.roi_heads.has_mask() == (config == CASCADE_MASK) == predicts_masks(load_config(config)["model"])


def test_stages_sampler_and_predictor_can_be_set_per_stage() -> None:
    model = tiny(batch_size_per_image=64, stage_loss_weights=[1, 2], stages=[
        {"fg_iou_thresh": 0.55, "bg_iou_thresh": 0.4, "bbox_reg_weights": [5, 5, 2, 2]},
        {"fg_iou_thresh": 0.75, "bg_iou_thresh": 0.75, "bbox_reg_weights": [40, 40, 20, 20],
         "batch_size_per_image": 32, "box_predictor": {"type": "FastRCNNPredictor"}}])
    first, second = model.roi_heads.stages
    assert (first.proposal_matcher.high_threshold, first.proposal_matcher.low_threshold) == (0.55, 0.4)
    assert second.box_coder.weights == (40, 40, 20, 20) and model.roi_heads.stage_loss_weights == [1.0, 2.0]
    assert first.fg_bg_sampler.batch_size_per_image == 64 and second.fg_bg_sampler.batch_size_per_image == 32
    assert first.box_predictor.bbox_pred.out_features == 4 and second.box_predictor.bbox_pred.out_features == 12
    model.train()
    losses = model(images(), targets())  # a class-specific stage trains as well
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    assert {"boxes", "labels", "scores"} == set(model(images())[0])


def test_a_training_step_has_finite_weighted_losses_for_every_stage_and_reaches_every_head() -> None:
    model = tiny(mask=True).train()
    losses = model(images(), targets(masks=True))
    stage_terms = {f"s{k}.{name}" for k in range(3) for name in ("loss_classifier", "loss_box_reg")}
    assert set(losses) == stage_terms | {"loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    for k, stage in enumerate(model.roi_heads.stages):
        for part in (stage.box_head.fc6, stage.box_predictor.cls_score, stage.box_predictor.bbox_pred):
            assert part.weight.grad is not None and part.weight.grad.abs().sum() > 0, f"stage {k}: {part}"
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0

    # the stage weights scale each stage's losses: the same step with weights 1, 1, 1
    equal = tiny(mask=True, stage_loss_weights=[1, 1, 1]).train()
    equal.load_state_dict(model.state_dict())
    torch.manual_seed(3)
    weighted = model(images(), targets(masks=True))
    torch.manual_seed(3)
    plain = equal(images(), targets(masks=True))
    for k, w in enumerate((1.0, 0.5, 0.25)):
        for name in ("loss_classifier", "loss_box_reg"):
            torch.testing.assert_close(weighted[f"s{k}.{name}"], w * plain[f"s{k}.{name}"])


def test_a_later_stage_does_not_train_the_earlier_ones() -> None:
    """Each stage refines the previous stage's boxes detached: its loss reaches the backbone, not stage 0."""
    model = tiny().train()
    losses = model(images(), targets())
    (losses["s1.loss_classifier"] + losses["s1.loss_box_reg"]).backward()
    first = model.roi_heads.stages[0]
    assert all(p.grad is None for p in (*first.box_head.parameters(), *first.box_predictor.parameters()))
    assert model.roi_heads.stages[1].box_predictor.bbox_pred.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.fpn.parameters())


def test_test_time_scores_average_the_stages_and_boxes_are_the_last_stages() -> None:
    """Stages 0 and 1 do not move boxes, stage 2 shifts them right by 0.1 width; the class logits are
    constant per stage, so every detection's score is softmax(mean of the stages' logits)."""
    model = tiny(score_thresh=0.01, detections_per_img=1000).eval()
    biases = ([0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 3.0])
    with torch.no_grad():
        for stage, bias in zip(model.roi_heads.stages, biases):
            stage.box_predictor.cls_score.weight.zero_()
            stage.box_predictor.cls_score.bias.copy_(torch.tensor(bias))
            stage.box_predictor.bbox_pred.weight.zero_()
            stage.box_predictor.bbox_pred.bias.zero_()
        model.roi_heads.stages[2].box_predictor.bbox_pred.bias[0] = 3.0  # dx = 3 / 30
    mean = torch.softmax(torch.tensor(biases).mean(0), 0)  # MMDetection averages logits, not probabilities
    proposals, *stages = model.refinements(images())
    torch.testing.assert_close(stages[1][0], proposals[0])
    width = stages[1][0][:, 2] - stages[1][0][:, 0]
    moved = stages[2][0][:, 0] - stages[1][0][:, 0]
    inside = stages[1][0][:, 2] + 0.1 * width < 127  # boxes that are not clipped at the right edge
    torch.testing.assert_close(moved[inside], 0.1 * width[inside], atol=1e-3, rtol=1e-3)
    out = model(images())[0]
    assert set(out["labels"].tolist()) == {1, 2}
    for label in (1, 2):
        torch.testing.assert_close(out["scores"][out["labels"] == label], mean[label].expand(
            int((out["labels"] == label).sum())), atol=1e-5, rtol=1e-5)
    final = stages[2][0]
    assert all(((final - box).abs().sum(1) < 1e-3).any() for box in out["boxes"])


@pytest.mark.parametrize("mask", [False, True])
def test_inference_output_is_that_of_faster_and_mask_rcnn(mask: bool) -> None:
    ours = tiny(mask=mask).eval()
    theirs = tiny("MaskRCNN" if mask else "FasterRCNN", mask=mask, score_thresh=0.0).eval()
    batch = [torch.rand(3, 128, 128), torch.rand(3, 96, 112)]
    with torch.no_grad():
        a, b = ours(batch), theirs(batch)
    assert len(a) == 2
    for out, ref, img in zip(a, b, batch):
        assert set(out) == set(ref) == {"boxes", "labels", "scores", *(["masks"] if mask else [])}
        for key in out:
            assert out[key].dtype == ref[key].dtype and out[key].shape[1:] == ref[key].shape[1:], key
        assert len(out["boxes"]) > 0 and out["labels"].min() >= 1 and out["labels"].max() <= 2
        assert out["boxes"][:, 2].max() <= img.shape[2] and out["boxes"][:, 3].max() <= img.shape[1]
        if mask:
            assert out["masks"].shape[-2:] == img.shape[-2:]


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = tiny(mask=True).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sum(model(images(), targets(masks=True)).values()).backward()
    opt.step()
    meta = make_meta(config_text="model: {}\n", classes=["a", "b"], arch=model.arch, epoch=0, iteration=1)
    path = save_checkpoint(tmp_path / "c.pth", model, meta)
    other = tiny(mask=True)
    report = load_weights(other, path)
    assert not report.skipped and not report.missing
    model.eval(), other.eval()
    with torch.no_grad():
        a, b = model(images(2)), other(images(2))
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.equal(a[0][key], b[0][key]), key
    # a Faster R-CNN checkpoint is another architecture: refused by name, not loaded half-way
    faster = tiny("FasterRCNN")
    with pytest.raises(CheckpointError, match="CascadeRCNN"):
        load_weights(faster, path)


def test_inference_api_from_a_checkpoint_alone(tmp_path: Path) -> None:
    """init_detector(None, checkpoint) rebuilds the cascade from the checkpoint's config; inference_detector
    returns what it returns for Mask R-CNN."""
    model_cfg = {"type": "CascadeRCNN", **TINY, "roi_head": {"representation_size": 64, "mask_layers": [16, 16],
                                                              "score_thresh": 0.0}}
    torch.manual_seed(0)
    model = build_detector(model_cfg)
    meta = make_meta(config_text=dump_config({"model": model_cfg, "classes": ["cat", "dog"]}), classes=["cat", "dog"],
                     arch="CascadeRCNN")
    path = save_checkpoint(tmp_path / "c.pth", model, meta)
    loaded = init_detector(None, path)
    result = inference_detector(loaded, np.zeros((80, 120, 3), dtype=np.uint8) + 127)
    assert set(result) == {"boxes", "scores", "labels", "class_names", "masks"}
    assert result["boxes"].shape[1] == 4 and result["masks"].shape[1:] == (80, 120) and result["masks"].dtype == bool
    assert set(result["class_names"]) <= {"cat", "dog"} and len(result["class_names"]) == len(result["labels"]) > 0


@pytest.mark.parametrize("roi, words", [
    ({"fg_iou_thresh": 0.5}, ["model.roi_head (CascadeRCNN): unknown option(s) ['fg_iou_thresh']", "roi_head.stages"]),
    ({"stages": [{"fg_iou_thresh": 0.5, "iou": 1}], "stage_loss_weights": [1]},
     ["model.roi_head.stages[0]: unknown option(s) ['iou']"]),
    ({"stages": [{"fg_iou_thresh": 0.5, "bg_iou_thresh": 0.6}], "stage_loss_weights": [1]},
     ["model.roi_head.stages[0]", "bg_iou_thresh 0.6"]),
    ({"stages": [{"bbox_reg_weights": [10, 10, 5]}], "stage_loss_weights": [1]},
     ["model.roi_head.stages[0].bbox_reg_weights", "4 numbers"]),
    ({"stages": [{}, {}], "stage_loss_weights": [1, 0.5, 0.25]}, ["stage_loss_weights", "one weight per stage (2)"]),
    ({"stages": [{}, {}]}, ["stage_loss_weights: missing", "one weight per stage (2)"]),
    ({"stages": []}, ["model.roi_head.stages: expected a list"]),
    ({"stage_loss_weights": [1, "a", 1]}, ["model.roi_head.stage_loss_weights[1]"]),
])
def test_bad_stage_settings_are_one_line_naming_the_key(roi: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        tiny(**roi)
    for word in words:
        assert word in str(exc.value), str(exc.value)


def test_segm_needs_the_mask_variant() -> None:
    mask = config_problems(load_config(CASCADE_MASK, import_custom=False), test=True, eval_metrics=["bbox", "segm"])
    assert mask == []
    box = config_problems(load_config(CASCADE, import_custom=False), test=True, eval_metrics=["segm"])
    assert len(box) == 1 and "segm needs a detector that predicts masks" in box[0] and "CascadeRCNN" in box[0]
    assert not predicts_masks(copy.deepcopy(load_config(CASCADE)["model"]))
