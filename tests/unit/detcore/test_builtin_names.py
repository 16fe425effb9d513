"""The torch-free table of built-in names: equal to the imported registries, and enough to check a plain config."""
from __future__ import annotations

import json
import subprocess
import sys

from detcore.builtin_names import BUILTIN, HOOK_KEYS


NAMES = """
import inspect, json
from detcore import registry as R
from detcore.config_check import _register_builtin_types
from detcore.engine import hooks as H
from detcore.builtin_names import HOOK_KEYS
_register_builtin_types()
print(json.dumps({"names": {r.name: sorted(r._entries) for r in vars(R).values() if isinstance(r, R.Registry)},
                  "hooks": {s: [p for p in inspect.signature(getattr(H, h).__init__).parameters if p != "self"]
                            for s, (h, _) in HOOK_KEYS.items()}}))
"""


def test_the_table_holds_exactly_what_the_registries_and_hooks_hold_once_imported() -> None:
    # a fresh process: this one may hold test modules registered by other tests
    out = subprocess.run([sys.executable, "-c", NAMES], capture_output=True, text=True, check=True, timeout=120)
    real = json.loads(out.stdout.strip().splitlines()[-1])
    assert {name: set(names) for name, names in real["names"].items()} == {k: set(v) for k, v in BUILTIN.items()}, \
        "update detcore/builtin_names.py: the registries hold other names"
    assert real["hooks"] == {section: list(keys) for section, (_, keys) in HOOK_KEYS.items()}, \
        "update HOOK_KEYS in detcore/builtin_names.py: a hook's keyword arguments changed"


CHECK = """
import json, sys
from detcore.config import load_config
from detcore.config_check import config_problems
cfg = load_config(sys.argv[1])
for key, value in json.loads(sys.argv[2]).items():  # dotted key -> value, set as a user's YAML would
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value
problems = config_problems(cfg)
print(json.dumps({"problems": problems, "torch": "torch" in sys.modules}))
"""


def _check(**values: object) -> dict:
    changes = json.dumps({key.replace("__", "."): value for key, value in values.items()})
    out = subprocess.run([sys.executable, "-c", CHECK, "configs/shapes/faster_rcnn_tiny_shapes.yaml", changes],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_config_of_builtin_types_is_checked_without_importing_torch() -> None:
    assert _check() == {"problems": [], "torch": False}
    hook = _check(log_config__intervall=5)  # the hook keys are in the table too
    assert not hook["torch"] and any("log_config: unknown key(s) intervall" in p for p in hook["problems"])


def test_an_unknown_name_takes_the_full_check_with_its_suggestion() -> None:
    result = _check(model__neck__type="FPNN")
    assert result["torch"]
    assert any(p.startswith("model.neck.type:") and "'FPN'" in p for p in result["problems"]), result["problems"]


def test_weights_names_are_checked_by_name_without_torch() -> None:
    assert _check(load_from="torchvision://fasterrcnn_resnet50_fpn") == {"problems": [], "torch": False}
    typo = _check(load_from="torchvision://fasterrcnn_resnet50_fp")
    assert not typo["torch"]
    assert any(p.startswith("load_from: unknown weights name") and
               "did you mean 'torchvision://fasterrcnn_resnet50_fpn'" in p for p in typo["problems"])
