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


def test_dict_override_merges_into_the_dict_it_overrides(tmp_path: Path) -> None:
    child = write(tmp_path / "c.yaml", "model: {neck: {type: FPN, out_channels: 256}}\n"
                                       "pipeline: [{type: Resize, scale: [1333, 800]}, {type: Flip}]\n")
    cfg = load_config(child, ["model.neck={out_channels: 128}", "pipeline.0={scale: [640, 480]}"])
    assert cfg["model"]["neck"] == {"type": "FPN", "out_channels": 128}
    assert cfg["pipeline"][0] == {"type": "Resize", "scale": [640, 480]}
    cfg = load_config(child, ["model.neck={_delete_: true, type: PAFPN}"])
    assert cfg["model"]["neck"] == {"type": "PAFPN"}


def test_delete_never_reaches_the_resolved_config(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "a: {x: {y: 1}, l: [{k: 1}]}\n")
    child = write(tmp_path / "c.yaml", "_base_: b.yaml\na: {x: {_delete_: false, z: 2}, l: [{_delete_: true, k: 2}],"
                                       " new: {_delete_: true, n: 1}}\n")
    cfg = load_config(child, ["+a.o={_delete_: true, p: [{_delete_: true}]}"])
    assert "_delete_" not in str({k: v for k, v in cfg.items() if k != "filename"})
    assert cfg["a"] == {"x": {"y": 1, "z": 2}, "l": [{"k": 2}], "new": {"n": 1}, "o": {"p": [{}]}}


def test_symlinked_config_finds_bases_beside_the_link(tmp_path: Path) -> None:
    write(tmp_path / "real/c.yaml", "_base_: b.yaml\n")
    write(tmp_path / "real/b.yaml", "who: target\n")
    write(tmp_path / "link/b.yaml", "who: link\n")
    (tmp_path / "link/c.yaml").symlink_to(tmp_path / "real/c.yaml")
    assert load_config(tmp_path / "link/c.yaml")["who"] == "link"
    assert load_config(tmp_path / "real/c.yaml")["who"] == "target"


@pytest.mark.parametrize("text,value", [("1e-4", 1e-4), ("2e-2", 0.02), ("5.e-3", 0.005), ("1E+2", 100.0),
                                        ("-.5e1", -5.0), ("3", 3), ("'1e-4'", "1e-4"), ("2024-01-01", "2024-01-01")])
def test_numbers_as_users_write_them(tmp_path: Path, text: str, value) -> None:
    cfg = load_config(write(tmp_path / "c.yaml", f"optimizer: {{lr: 0.1}}\nv: {text}\n"), [f"optimizer.lr={text}"]
                      if isinstance(value, float) and value > 0 else [])
    assert cfg["v"] == value and type(cfg["v"]) is type(value)
    if isinstance(value, float) and value > 0:
        assert cfg["optimizer"]["lr"] == value


def test_dump_round_trips_and_saved_config_loads_again(tmp_path: Path) -> None:
    from detcore.config import config_from_text, dump_config

    cfg = load_config(write(tmp_path / "c.yaml", "a: '1e-4'\nb: 1e-4\nc: '2024-01-01'\n"))
    text = dump_config(cfg)
    assert text.startswith(f"# resolved from {tmp_path / 'c.yaml'}\n")
    assert config_from_text(text) == {k: v for k, v in cfg.items() if k != "filename"}
    again = load_config(write(tmp_path / "saved.yaml", text))
    assert again["a"] == "1e-4" and again["b"] == 1e-4


@pytest.mark.parametrize("text,match", [
    ("optimizer: {lr: .nan}\n", "optimizer.lr must be a positive number, got nan"),
    ("optimizer: {lr: 0.1, weight_decay: '1e-4'}\n", "optimizer.weight_decay must be a number >= 0, got '1e-4'"),
    ("optimizer: {lr: 0.1, momentum: 2}\n", "optimizer.momentum must be a number in \\[0, 1\\], got 2"),
    ("optimizer: {lr: 0.1, betas: [0.9]}\n", "optimizer.betas must be two numbers"),
    ("optimizer_config: {grad_clip: {max_norm: -1}}\n", "grad_clip.max_norm must be a positive number"),
    ("filename: x.yaml\n", "'filename' is reserved"),
    ("custom_imports: 5\n", "custom_imports: got 5"),
    ("custom_imports: {imports: [3]}\n", "custom_imports: got"),
])
def test_values_are_checked_at_load(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path / "c.yaml", text))


@pytest.mark.parametrize("override,match", [("a=[1,2", "invalid YAML"), ("filename=x", "reserved"),
                                            ("a={b: 1", "invalid YAML")])
def test_malformed_override_is_an_error(tmp_path: Path, override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path / "c.yaml", "a: 1\n"), [override])


def test_hostile_files_are_refused(tmp_path: Path) -> None:
    import os

    from detcore.config_yaml import MAX_CONFIG_BYTES

    cases = {"dev": "_base_: /dev/zero\n", "big": "a: 1\n" + "#" * MAX_CONFIG_BYTES + "\n",
             "deep": "a: " + "[" * 100 + "]" * 100 + "\n", "deeper": "a: " + "[" * 20000 + "]" * 20000 + "\n",
             "rec": "a: &x [*x]\n", "set": "a: !!set {x, y}\n", "bin": "a: !!binary aGk=\n",
             "bomb": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
                 f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))}
    expected = {"dev": "not a regular file", "big": "larger than", "deep": "nested deeper than 64",
                "deeper": "nested too deeply", "rec": "recursive alias", "set": "!!set", "bin": "!!binary",
                "bomb": "more than 100000 values"}
    for name, text in cases.items():
        with pytest.raises(ConfigError, match=expected[name]):
            load_config(write(tmp_path / f"{name}.yaml", text))
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(ConfigError, match="fifo.yaml: is not a regular file"):
        load_config(write(tmp_path / "f.yaml", "_base_: fifo.yaml\n"))
    (tmp_path / "latin.yaml").write_bytes("a: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin.yaml: not UTF-8"):
        load_config(tmp_path / "latin.yaml")


def test_a_diamond_of_repeated_bases_is_bounded(tmp_path: Path) -> None:
    write(tmp_path / "leaf.yaml", "a: 1\n")
    for level in range(1, 6):  # 10**5 loads of leaf.yaml if nothing stopped it
        below = "leaf.yaml" if level == 1 else f"l{level - 1}.yaml"
        write(tmp_path / f"l{level}.yaml", f"_base_: [{', '.join([below] * 10)}]\n")
    with pytest.raises(ConfigError, match="loads more than 256 files"):
        load_config(tmp_path / "l5.yaml")
    assert load_config(tmp_path / "l2.yaml")["a"] == 1  # 111 files: fine


def test_a_line_break_in_the_config_path_cannot_add_yaml(tmp_path: Path) -> None:
    from detcore.config import config_from_text, dump_config

    cfg = load_config(write(tmp_path / "c\nmodel: evil\n.yaml", "model: {type: A}\n"))
    assert config_from_text(dump_config(cfg)) == {"model": {"type": "A"}}
