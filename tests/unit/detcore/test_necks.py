"""Both neck contracts: a neck written as the MMDetection guide writes it (``@NECKS.register_module()``,
``in_channels``/``out_channels``/``num_outs``, a tuple in and out) builds and trains unchanged with ``num_outs``
levels, and detcore's FPN takes MMDetection's FPN arguments."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from detcore.config import load_config
from detcore.errors import ConfigError
from detcore.models import build_detector
from detcore.tools.cli import main as detcore_main

ROOT = Path(__file__).resolve().parents[3]
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"
FAST = ["data.samples_per_gpu=2", "auto_scale_lr.enable=false", "data.workers_per_gpu=0", "log_config.interval=1",
        "data.train.num_train=8", "data.train.num_val=4"]
GUIDE_NECK = '''
    import torch.nn as nn
    import torch.nn.functional as F

    from detcore.registry import NECKS


    @NECKS.register_module()
    class GuideShapedNeck(nn.Module):

        def __init__(self,
                     in_channels,
                     out_channels,
                     num_outs,
                     start_level=0,
                     end_level=-1,
                     add_extra_convs=False):
            super().__init__()
            self.in_channels, self.num_outs = in_channels, num_outs
            self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)

        def forward(self, inputs):
            assert isinstance(inputs, tuple) and len(inputs) == len(self.in_channels)
            outs = [conv(x) for conv, x in zip(self.lateral, inputs)]
            while len(outs) < self.num_outs:
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            return tuple(outs)


    @NECKS.register_module()
    class ListReturningNeck(GuideShapedNeck):
        def forward(self, inputs):
            return {"0": inputs[0]}
'''


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user")
    (folder / "guide_shaped_neck.py").write_text(textwrap.dedent(GUIDE_NECK))
    return folder


def _opts(num_outs: int) -> list[str]:
    sizes = [[16 * 2 ** i] for i in range(num_outs)]
    return ["+custom_imports={imports: [guide_shaped_neck], allow_failed_imports: false}",
            f"model.neck={{_delete_: true, type: GuideShapedNeck, in_channels: [32, 64, 128], out_channels: 64, "
            f"num_outs: {num_outs}}}", f"model.anchor_generator.sizes={sizes}"]


@pytest.mark.parametrize("num_outs", [4, 5])
def test_a_guide_shaped_neck_builds_with_num_outs_levels_and_trains_a_step(
        user_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, num_outs: int) -> None:
    monkeypatch.chdir(user_dir)  # custom_imports finds user modules in the working directory
    cfg = load_config(SHAPES, _opts(num_outs))
    model = build_detector(cfg["model"])
    model.eval()
    with torch.no_grad():
        maps = model.backbone(torch.zeros(1, 3, 128, 128))
    assert list(maps) == [str(i) for i in range(num_outs)]  # every level feeds the RPN
    assert [m.shape[-1] for m in maps.values()] == [128 // 4 // 2 ** i for i in range(num_outs)]
    assert model.rpn.anchor_generator.num_anchors_per_location() == [3] * num_outs
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2"]  # RoIs pool the backbone's levels

    work = tmp_path / "work"
    assert detcore_main(["train", str(SHAPES), "--work-dir", str(work), "--no-validate", "--cfg-options",
                         *_opts(num_outs), "runner.max_iters=1", *FAST]) == 0
    ckpt = torch.load(work / "iter_1.pth", weights_only=True)
    assert "backbone.fpn.lateral.2.weight" in ckpt["state_dict"]  # the user's module, under torchvision's names
    losses = [line for line in (work / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert losses and "NaN" not in losses[0]


def test_neck_contract_mistakes_are_one_line(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(user_dir)
    opts = _opts(4)
    cases = [
        (opts[:1] + ["model.neck={_delete_: true, type: GuideShapedNeck, in_channels: [256, 512, 1024], "
                     "out_channels: 64, num_outs: 4}"],
         r"model.neck.in_channels=\[256, 512, 1024\] but the backbone returns maps of \[32, 64, 128\] channels; "
         r"set model.neck.in_channels=\[32, 64, 128\] or leave it out"),
        (opts[:1] + ["model.neck.type=GuideShapedNeck", "+model.neck.num_outs=4"],  # merged into the base's FPN
         r"GuideShapedNeck does not take extra_blocks .*if extra_blocks came from a _base_ config's FPN, write the "
         r"neck with _delete_: true"),
    ]
    for overrides, match in cases:
        with pytest.raises(ConfigError, match=match):
            build_detector(load_config(SHAPES, overrides)["model"])
    with pytest.raises(ConfigError, match=r"ListReturningNeck.forward returned dict; MMDetection's neck contract "
                                          r"returns a tuple"):
        build_detector(load_config(SHAPES, opts[:1] + ["model.neck={_delete_: true, type: ListReturningNeck, "
                                                       "out_channels: 64, num_outs: 4}"])["model"])


def test_a_neck_with_neither_contract_is_named() -> None:
    from detcore.registry import NECKS

    class NoChannels(torch.nn.Module):
        def __init__(self, out_channels: int = 8) -> None:
            super().__init__()

    NECKS.register_module(name="NoChannelsNeck", module=NoChannels, force=True)
    with pytest.raises(ConfigError, match=r"NoChannelsNeck's constructor takes neither in_channels .* nor "
                                          r"in_channels_list"):
        build_detector(load_config(SHAPES, ["model.neck={_delete_: true, type: NoChannelsNeck}"])["model"])


def test_a_subclass_passing_args_on_has_its_base_necks_contract() -> None:
    """``class MyFPN(FPN): def __init__(self, *args, **kwargs)`` is torchvision's contract, as its base's."""
    from detcore.models.necks import FPN
    from detcore.registry import NECKS

    class PassThroughFPN(FPN):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)

    NECKS.register_module(name="PassThroughFPN", module=PassThroughFPN, force=True)
    model = build_detector(load_config(SHAPES, ["model.neck.type=PassThroughFPN"])["model"])
    plain = build_detector(load_config(SHAPES)["model"])
    assert _neck_shapes(model) == _neck_shapes(plain)


def _neck_shapes(model: torch.nn.Module) -> dict:
    return {k: v.shape for k, v in model.backbone.fpn.state_dict().items()}


@pytest.mark.parametrize("mmdet_words,detcore_words", [
    # Faster R-CNN: four inputs, five outputs by max pool
    ({"in_channels": [256, 512, 1024, 2048], "out_channels": 256, "num_outs": 5}, {"extra_blocks": "pool"}),
    # RetinaNet: from C3, P6/P7 by convs on C5
    ({"in_channels": [256, 512, 1024, 2048], "out_channels": 256, "start_level": 1, "add_extra_convs": "on_input",
      "num_outs": 5, "relu_before_extra_convs": True}, {"extra_blocks": "p6p7", "p6p7_from": "c5"}),
])
def test_detcores_fpn_takes_mmdetections_arguments(mmdet_words: dict, detcore_words: dict) -> None:
    base = ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml"
    mmdet = build_detector(load_config(base, [f"model.neck={{_delete_: true, type: FPN, "
                                              f"{', '.join(f'{k}: {v}' for k, v in mmdet_words.items())}}}"])["model"],
                           backbone_weights=False)
    returned = [2, 3, 4] if "start_level" in mmdet_words else [1, 2, 3, 4]
    plain = build_detector(load_config(base, [f"model.backbone.returned_layers={returned}", "model.neck={_delete_: "
                                              f"true, type: FPN, out_channels: 256, "
                                              f"{', '.join(f'{k}: {v}' for k, v in detcore_words.items())}}}"])["model"],
                           backbone_weights=False)
    assert _neck_shapes(mmdet) == _neck_shapes(plain)
    mmdet.eval()
    with torch.no_grad():
        assert len(mmdet.backbone(torch.zeros(1, 3, 128, 128))) == 5


def test_mmdetection_fpn_arguments_torchvision_cannot_build_are_one_line() -> None:
    base = ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml"
    for extra, match in (("num_outs: 7", r"num_outs=7 from 4 maps with add_extra_convs=False is not an FPN"),
                         ("num_outs: 5, end_level: 2", r"end_level=2: detcore's FPN uses the body's maps up to the last"),
                         ("num_outs: 5, norm_cfg: {type: BN}", r"norm_cfg: detcore's FPN takes null or \{type: GN")):
        cfg = load_config(base, [f"model.neck={{_delete_: true, type: FPN, in_channels: [256, 512, 1024, 2048], "
                                 f"out_channels: 256, {extra}}}"])
        with pytest.raises(ConfigError, match=match):
            build_detector(cfg["model"], backbone_weights=False)
