"""The linear scaling rule as a table: config + world size -> LR and schedule changes; applied once, from the
original values, whatever config (configured or already scaled) it is given."""
from __future__ import annotations

import copy

import pytest

from detcore.config import parse_override
from detcore.errors import ConfigError
from detcore.engine.scaling import (ScaledSchedule, apply_schedule, format_value, original_config, scale_config,
                                    scale_for_world, split_batch_size)

ITER = {
    "optimizer": {"lr": 0.02},
    "runner": {"type": "IterBasedRunner", "max_iters": 300},
    "lr_config": {"policy": "step", "step": [240, 280], "warmup": "linear", "warmup_iters": 50},
    "checkpoint_config": {"interval": 100},
    "evaluation": {"interval": 300},
}
EPOCH = {
    "optimizer": {"lr": 0.02},
    "runner": {"type": "EpochBasedRunner", "max_epochs": 12},
    "lr_config": {"policy": "step", "step": [8, 11], "warmup": "linear", "warmup_iters": 500},
    "checkpoint_config": {"interval": 1},
    "evaluation": {"interval": 1},
}


def cfg(base: dict, **auto) -> dict:
    return {**base, "auto_scale_lr": auto} if auto else dict(base)


# (config, world size, samples per GPU, expected lr, expected {key: new value} besides optimizer.lr)
TABLE = [
    ("off", cfg(ITER), 2, 2, None, {}),
    ("disabled", cfg(ITER, enable=False, base_batch_size=16), 8, 2, None, {}),
    ("lr only, smaller", cfg(ITER, enable=True, base_batch_size=16), 2, 2, 0.005, {}),
    ("lr only, larger", cfg(ITER, enable=True, base_batch_size=4, scale_schedule=False), 4, 2, 0.04, {}),
    ("same batch", cfg(ITER, enable=True, base_batch_size=4, scale_schedule=True), 2, 2, 0.02, {}),
    ("iter schedule, x2", cfg(ITER, enable=True, base_batch_size=4, scale_schedule=True), 2, 4, 0.04,
     {"runner.max_iters": 150, "lr_config.step": (120, 140), "checkpoint_config.interval": 50,
      "evaluation.interval": 150, "lr_config.warmup_iters": 25}),
    ("iter schedule, x0.25", cfg(ITER, enable=True, base_batch_size=16, scale_schedule=True), 2, 2, 0.005,
     {"runner.max_iters": 1200, "lr_config.step": (960, 1120), "checkpoint_config.interval": 400,
      "evaluation.interval": 1200, "lr_config.warmup_iters": 200}),
    ("epoch schedule keeps epochs", cfg(EPOCH, enable=True, base_batch_size=16, scale_schedule=True), 8, 4, 0.04,
     {"lr_config.warmup_iters": 250}),
    ("epoch, no schedule scaling", cfg(EPOCH, enable=True, base_batch_size=16, scale_schedule=False), 8, 4, 0.04, {}),
]


@pytest.mark.parametrize("label,config,world,per_gpu,lr,changes", TABLE, ids=[row[0] for row in TABLE])
def test_scaling_table(label, config, world, per_gpu, lr, changes):
    before = copy.deepcopy(config)
    s = scale_for_world(config, world, per_gpu)
    assert s.total_batch == world * per_gpu
    assert s.enabled is (lr is not None) and s.base_lr == 0.02
    assert s.lr == pytest.approx(lr if lr is not None else 0.02)  # off: the configured LR is the one trained at
    got = {c.key: c.new for c in s.changes if c.key != "optimizer.lr"}
    assert got == changes
    # applied the way the worker applies it: the scaled config, with the decision recorded
    out = apply_schedule(config, s)
    assert out["optimizer"]["lr"] == pytest.approx(s.lr)
    assert out["_scaling"]["total_batch"] == world * per_gpu and out["_scaling"]["lr"] == pytest.approx(s.lr)
    for key, value in changes.items():
        node = out
        for part in key.split("."):
            node = node[part]
        assert (tuple(node) if isinstance(node, list) else node) == value
    assert config == before  # never mutated


def test_rounding_never_reaches_zero_and_off_stays_off():
    c = {**ITER, "checkpoint_config": {"interval": 0}, "runner": {"type": "IterBasedRunner", "max_iters": 3},
         "auto_scale_lr": {"enable": True, "base_batch_size": 2, "scale_schedule": True}}
    s = scale_for_world(c, 8, 2)
    new = {ch.key: ch.new for ch in s.changes}
    assert new["runner.max_iters"] == 1
    assert "checkpoint_config.interval" not in new  # 0 means off and stays 0


def test_user_errors_name_the_key():
    with pytest.raises(ConfigError, match="base_batch_size"):
        scale_for_world({**ITER, "auto_scale_lr": {"enable": True}}, 2, 2)
    with pytest.raises(ConfigError, match="optimizer.lr"):
        scale_for_world({"auto_scale_lr": {"enable": True, "base_batch_size": 4}}, 2, 2)
    with pytest.raises(ConfigError, match="world size"):
        scale_for_world(ITER, 0, 2)
    with pytest.raises(ConfigError, match="samples_per_gpu"):
        scale_for_world(ITER, 2, 0)


@pytest.mark.parametrize("value", [0.02, 5e-05, 1e20, 3, True, None, [1, 2], (0.5, 1e-7), {"a": 1, "b": 2.5e-9}])
def test_format_value_round_trips_through_detcore_overrides(value):
    _, parsed, _ = parse_override(f"k={format_value(value)}")
    expected = list(value) if isinstance(value, tuple) else value
    assert parsed == expected


def test_schedule_round_trips_as_dict():
    s = scale_for_world(cfg(ITER, enable=True, base_batch_size=4, scale_schedule=True), 2, 4)
    assert ScaledSchedule.from_dict(s.to_dict()) == s
    assert "lr 0.02 -> 0.04" in s.describe() and "runner.max_iters 300 -> 150" in s.describe()


SHAPES_LIKE = {**ITER, "data": {"samples_per_gpu": 2},
               "auto_scale_lr": {"enable": True, "base_batch_size": 4, "scale_schedule": True}}


@pytest.mark.parametrize("first,second", [(1, 2), (2, 1), (4, 4), (1, 8)])
def test_scaling_an_already_scaled_config_starts_from_the_original_values(first, second):
    """A resume at another world size (or a config.yaml saved by a run) is scaled exactly once."""
    before = copy.deepcopy(SHAPES_LIKE)
    once, s1 = scale_config(SHAPES_LIKE, first)
    twice, s2 = scale_config(once, second)
    direct, s3 = scale_config(SHAPES_LIKE, second)
    assert twice == direct and s2 == s3
    assert s2.base_lr == 0.02 and s2.lr == pytest.approx(0.02 * second * 2 / 4)
    assert twice["runner"]["max_iters"] == round(300 * 4 / (second * 2))
    assert original_config(twice) == SHAPES_LIKE
    assert SHAPES_LIKE == before


def test_an_override_of_a_scaled_key_wins_over_the_recorded_original():
    scaled, _ = scale_config(SHAPES_LIKE, 2)  # total 4 = base: lr stays 0.02; at world 4 it would double
    scaled = {**scaled, "optimizer": {"lr": 0.05}}  # the user changed the LR of a saved config
    again, s = scale_config(scaled, 4)
    assert s.base_lr == 0.05 and again["optimizer"]["lr"] == pytest.approx(0.1)


def test_the_training_batch_is_the_train_splits_own_when_it_sets_one():
    """MMDetection 3.x configs set the batch per loader (train_dataloader.batch_size); a split's own
    samples_per_gpu is what its loader uses, so it is what the LR is scaled by."""
    config = {**cfg(ITER, enable=True, base_batch_size=16),
              "data": {"samples_per_gpu": 2, "train": {"samples_per_gpu": 8}, "val": {"samples_per_gpu": 3}}}
    assert split_batch_size(config, "train") == 8 and split_batch_size(config, "val") == 3
    assert split_batch_size(config, "test") == 1  # no test split: data.test_samples_per_gpu's default
    scaled, s = scale_config(config, 2)
    assert (s.samples_per_gpu, s.total_batch, s.lr) == (8, 16, 0.02)
    plain = {**config, "data": {"samples_per_gpu": 2}}
    assert scale_config(plain, 2)[1].lr == pytest.approx(0.005)
    assert split_batch_size({}, "train") == 2
