from __future__ import annotations

from pathlib import Path

import pytest

from detcore.config import apply_overrides, load_config, merge
from detcore.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_list_of_bases_merge_in_order_then_child(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "model: {type: A, depth: 50, neck: {out: 256}}\nlr: 0.1\n")
    write(tmp_path / "b.yaml", "model: {depth: 18}\nextra: [1, 2]\n")
    child = write(tmp_path / "sub/c.yaml", "_base_: [../a.yaml, ../b.yaml]\nmodel: {neck: {levels: 5}}\nextra: [3]\n")
    cfg = load_config(child)
    assert cfg["model"] == {"type": "A", "depth": 18, "neck": {"out": 256, "levels": 5}}
    assert cfg["extra"] == [3]  # lists replace
    assert cfg["lr"] == 0.1


def test_delete_replaces_base_dict(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "optimizer: {type: SGD, lr: 0.02, momentum: 0.9}\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\noptimizer: {_delete_: true, type: AdamW, lr: 0.001}\n")
    assert load_config(child)["optimizer"] == {"type": "AdamW", "lr": 0.001}


def test_merge_does_not_mutate_inputs() -> None:
    base, child = {"a": {"b": 1}}, {"a": {"c": 2}}
    out = merge(base, child)
    assert out == {"a": {"b": 1, "c": 2}} and base == {"a": {"b": 1}} and child == {"a": {"c": 2}}


def test_overrides_parse_yaml_values_and_lists() -> None:
    cfg = {"model": {"roi_head": {"num_classes": 80}}, "data": {"samples_per_gpu": 2}, "classes": None,
           "pipeline": [{"type": "Resize", "size": 800}]}
    out = apply_overrides(cfg, ["model.roi_head.num_classes=1", "data.samples_per_gpu=4", "classes=[balloon]",
                                "pipeline.0.size=640", "+model.new_key=true"])
    assert out["model"]["roi_head"]["num_classes"] == 1
    assert out["data"]["samples_per_gpu"] == 4
    assert out["classes"] == ["balloon"]
    assert out["pipeline"][0]["size"] == 640
    assert out["model"]["new_key"] is True
    assert cfg["data"]["samples_per_gpu"] == 2


def test_unknown_override_key_names_closest() -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        apply_overrides({"optimizer": {"lr": 0.1}}, ["optimizer.lrr=0.2"])


def test_cycle_and_missing_base_name_the_chain(tmp_path: Path) -> None:
    write(tmp_path / "x.yaml", "_base_: y.yaml\n")
    write(tmp_path / "y.yaml", "_base_: x.yaml\n")
    with pytest.raises(ConfigError, match="cyclic _base_ chain: .*x.yaml -> .*y.yaml -> .*x.yaml"):
        load_config(tmp_path / "x.yaml")
    write(tmp_path / "m.yaml", "_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match="nope.yaml.*not found"):
        load_config(tmp_path / "m.yaml")


def test_invalid_yaml_and_python_tags_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", "model: {type: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML at line"):
        load_config(tmp_path / "bad.yaml")
    write(tmp_path / "evil.yaml", "model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "evil.yaml")


def test_value_types_are_checked(tmp_path: Path) -> None:
    write(tmp_path / "c.yaml", "data: {samples_per_gpu: 0}\n")
    with pytest.raises(ConfigError, match="data.samples_per_gpu must be a positive integer, got 0"):
        load_config(tmp_path / "c.yaml")
    write(tmp_path / "d.yaml", "optimizer: {type: SGD, lr: fast}\n")
    with pytest.raises(ConfigError, match="optimizer.lr must be a positive number"):
        load_config(tmp_path / "d.yaml")


def test_custom_imports_missing_module(tmp_path: Path) -> None:
    write(tmp_path / "c.yaml", "custom_imports: {imports: [no_such_module_xyz], allow_failed_imports: false}\n")
    with pytest.raises(ConfigError, match="custom_imports: cannot import 'no_such_module_xyz'"):
        load_config(tmp_path / "c.yaml")
    write(tmp_path / "ok.yaml", "custom_imports: {imports: [no_such_module_xyz], allow_failed_imports: true}\n")
    load_config(tmp_path / "ok.yaml")


def test_shipped_configs_resolve() -> None:
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        if "_base_" in path.parts:
            continue
        cfg = load_config(path, import_custom=False)
        assert "model" in cfg and "data" in cfg, path


def test_1x_schedule_is_mmdetections() -> None:
    cfg = load_config(ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml")
    assert cfg["optimizer"] == {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0001}
    assert cfg["runner"] == {"type": "EpochBasedRunner", "max_epochs": 12}
    assert cfg["lr_config"]["step"] == [8, 11] and cfg["lr_config"]["warmup_iters"] == 500
    assert cfg["auto_scale_lr"]["enable"] is True and cfg["auto_scale_lr"]["base_batch_size"] == 16
