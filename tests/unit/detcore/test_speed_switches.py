"""The opt-in speed switches do what they say: ``model.channels_last``, ``optimizer.foreach``/``fused``
and ``compile`` (backbone and neck through torch.compile), each giving the same numbers as without."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter

from detcore.config import load_config
from detcore.engine.compile_backbone import CompileSettings, compile_backbone, compile_settings
from detcore.engine.optim import build_optimizer
from detcore.engine.trainer import Trainer
from detcore.errors import ConfigError
from detcore.models import build_detector

ROOT = Path(__file__).resolve().parents[3]
SHAPES = ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml"
FAST = ["data.samples_per_gpu=2", "auto_scale_lr.enable=false", "data.workers_per_gpu=0", "log_config.interval=1",
        "checkpoint_config.interval=2"]
COUNTER = CompileCounter()
torch._dynamo.register_backend(COUNTER, name="detcore_test_counter")  # a backend that counts compiled frames


def _batch(seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 128, 128, generator=g) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 5.0, 120.0, 40.0]]),
                "labels": torch.tensor([1, 3])} for _ in range(2)]
    return images, targets


def _losses(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # the RPN and RoI samplers draw at random
    return model(*_batch(seed))


def _model_cfg(*overrides: str) -> dict:
    return load_config(SHAPES, list(overrides))["model"]


def test_channels_last_converts_the_model_and_trains_to_the_same_losses() -> None:
    plain = build_detector(_model_cfg()).train()
    nhwc = build_detector(_model_cfg("model.channels_last=true")).train()
    nhwc.load_state_dict(plain.state_dict())
    convs = [m.weight for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    features = nhwc.backbone(torch.rand(2, 3, 128, 128))  # a plain NCHW batch, as the model's transform makes it
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in features.values())
    ours, theirs = _losses(nhwc), _losses(plain)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=key)
    sum(ours.values()).backward()
    sum(theirs.values()).backward()
    for (name, a), b in zip(nhwc.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=name)
    # its checkpoint loads into a plain model and gives the same numbers
    reloaded = build_detector(_model_cfg()).train()
    reloaded.load_state_dict(nhwc.state_dict())
    torch.testing.assert_close(_losses(reloaded, 1), _losses(nhwc, 1), rtol=1e-4, atol=1e-5)


def test_channels_last_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="model.channels_last must be true or false, got 'maybe'"):
        load_config(SHAPES, ["model.channels_last=maybe"])
    with pytest.raises(ConfigError, match="model.channels_last must be true or false"):
        build_detector({**_model_cfg(), "channels_last": 1})


@pytest.mark.parametrize("flag", ["foreach", "fused"])
def test_foreach_and_fused_optimizers_reach_torch_and_step_as_the_plain_loop(flag: str) -> None:
    torch.manual_seed(0)
    model = build_detector(_model_cfg()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sgd = {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4}
    stepped = {}
    for setting in ({}, {flag: True}):
        model.load_state_dict(before)
        opt = build_optimizer(model, {**sgd, **setting})
        assert opt.defaults[flag] is (True if setting else None)  # None: torch's per-device default
        for seed in (0, 1):  # two steps: the momentum buffers count too
            opt.zero_grad()
            sum(_losses(model, seed).values()).backward()
            opt.step()
        stepped[bool(setting)] = {k: v.clone() for k, v in model.state_dict().items()}
    for key, value in stepped[True].items():
        torch.testing.assert_close(value, stepped[False][key], rtol=1e-5, atol=1e-6, msg=key)


def test_foreach_and_fused_together_is_one_config_error() -> None:
    model = build_detector(_model_cfg())
    with pytest.raises(ConfigError, match="optimizer.foreach and optimizer.fused are both true"):
        build_optimizer(model, {"type": "SGD", "lr": 0.01, "foreach": True, "fused": True})
    with pytest.raises(ConfigError, match="optimizer.foreach and optimizer.fused are both true"):  # when it loads
        load_config(SHAPES, ["optimizer.foreach=true", "optimizer.fused=true"])
    with pytest.raises(ConfigError, match="optimizer.fused must be true, false or null, got 'sometimes'"):
        load_config(SHAPES, ["optimizer.fused=sometimes"])


def test_compile_settings_follow_mmengine_and_name_bad_keys() -> None:
    assert compile_settings(None) == CompileSettings(enabled=False)
    assert compile_settings(True) == CompileSettings(enabled=True)
    assert compile_settings({"mode": "max-autotune"}) == CompileSettings(enabled=True, mode="max-autotune")
    assert compile_settings({"enabled": False, "dynamic": True}).enabled is False
    for value, message in [({"mode": "fast"}, "compile.mode must be one of default"),
                           ({"dynamc": True}, r"compile: unknown option\(s\) \['dynamc'\]"),
                           ({"fullgraph": "yes"}, "compile.fullgraph must be true or false"),
                           ("inductor", "compile must be true, false or a mapping")]:
        with pytest.raises(ConfigError, match=message):
            compile_settings(value)
    with pytest.raises(ConfigError, match="compile.mode must be one of"):  # checked when the config loads
        load_config(SHAPES, ["+compile.mode=fast"])
    with pytest.raises(ConfigError, match="'inductr' is not a torch.compile backend; known: .*inductor"):
        compile_backbone(build_detector(_model_cfg()), {"backend": "inductr"}, torch.device("cpu"))


def test_compile_runs_the_backbone_through_the_compiler_with_unchanged_keys() -> None:
    model = build_detector(_model_cfg()).train()
    keys = list(model.state_dict())
    eager = _losses(model)
    COUNTER.clear()
    assert compile_backbone(model, {"backend": "detcore_test_counter"}, torch.device("cpu")) is True
    compiled = _losses(model)
    assert COUNTER.frame_count == 1 and COUNTER.op_count > 10  # the backbone and neck, as one graph
    assert list(model.state_dict()) == keys  # checkpoints keep their names (no _orig_mod.)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], msg=key)
    assert compile_backbone(model, {"enabled": False}, torch.device("cpu")) is False


def test_inductor_backbone_equals_eager_forward_and_backward() -> None:
    """The real compiler (inductor, C++ on the CPU) on the shapes backbone and neck."""
    torch.manual_seed(0)
    model = build_detector(_model_cfg()).train()
    x = torch.rand(2, 3, 128, 128)
    eager = model.backbone(x)
    sum(f.square().mean() for f in eager.values()).backward()
    eager_grads = {n: p.grad.clone() for n, p in model.backbone.named_parameters()}
    model.zero_grad()
    assert compile_backbone(model, True, torch.device("cpu")) is True
    compiled = model.backbone(x)
    sum(f.square().mean() for f in compiled.values()).backward()
    for level in eager:
        torch.testing.assert_close(compiled[level], eager[level], rtol=1e-4, atol=1e-5)
    for name, p in model.backbone.named_parameters():
        torch.testing.assert_close(p.grad, eager_grads[name], rtol=1e-3, atol=1e-5, msg=name)


def test_compile_without_a_cpp_compiler_says_so_once_and_trains_eagerly(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/bin/g++",))
    model = build_detector(_model_cfg())
    with caplog.at_level(logging.WARNING):
        assert compile_backbone(model, True, torch.device("cpu")) is False
    lines = [r.getMessage() for r in caplog.records if "compile" in r.getMessage()]
    assert len(lines) == 1 and "inductor needs a C++ compiler on the CPU" in lines[0]
    assert "training the backbone without torch.compile" in lines[0]
    assert model.backbone._compiled_call_impl is None


def test_compile_without_python_headers_says_so_and_trains_eagerly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import sysconfig

    paths = {**sysconfig.get_paths(), "include": str(tmp_path)}  # an include folder without Python.h
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: paths)
    model = build_detector(_model_cfg())
    with caplog.at_level(logging.WARNING):
        assert compile_backbone(model, {"mode": "max-autotune"}, torch.device("cpu")) is False
    assert f"inductor needs Python's C headers on the CPU ({tmp_path}/Python.h is missing" in caplog.text


def test_trainer_trains_with_every_switch_and_saves_plain_checkpoints(tmp_path: Path) -> None:
    cfg = load_config(SHAPES, ["runner.max_iters=2", *FAST, "model.channels_last=true", "optimizer.foreach=true",
                               "+compile.backend=detcore_test_counter"])
    COUNTER.clear()
    trainer = Trainer(cfg, tmp_path, validate=False)
    assert trainer.compiled and trainer.optimizer.defaults["foreach"] is True and trainer.clip_foreach is True
    trainer.train()
    assert COUNTER.frame_count >= 1
    state = torch.load(tmp_path / "iter_2.pth", weights_only=True)["state_dict"]
    plain = build_detector(_model_cfg())
    plain.load_state_dict(state)  # same names; loads into a model without the switches
