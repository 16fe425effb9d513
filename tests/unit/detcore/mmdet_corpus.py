"""Import every config of an MMDetection config tree; none may run code, crash or refuse in more than one line.

Shared by the 2.x and 3.x corpus tests. The trees are fetched by `.ci/fetch_mmdet_configs.sh`
(run by `.ci/run`) into `.cache/`. Parse and map only: no network is built here (the four 1x
networks are compared in test_mmdet_import.py).
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from detcore.config import validate_config
from detcore.config_values import value_problems
from detcore.errors import ConfigError
from detcore.mmdet_import import import_config

ROOT = Path(__file__).resolve().parents[3]
FAMILIES = ("FasterRCNN", "MaskRCNN", "CascadeRCNN", "RetinaNet", "FCOS")
_watching: list[str] = []


def _audit(event: str, args: tuple) -> None:
    """Record code execution and imports while a config is being read (audit hooks stay installed)."""
    if _watching and event in ("exec", "import", "os.system", "subprocess.Popen", "open") and (
            event != "open" or str(args[0]).endswith(".pth")):
        _watching.append(f"{event} {str(args[0])[:80]}")


sys.addaudithook(_audit)


def import_tree(tree: Path, version: str, min_files: int) -> Counter:
    """Import every non-``_base_`` config under ``tree``; the outcome counts (imported, refused by kind)."""
    if not tree.is_dir():
        pytest.fail(f"{tree} is missing: fetch MMDetection's config trees with `bash .ci/fetch_mmdet_configs.sh` "
                    f"(pip download mmdet=={version} --no-deps, unpacked to {tree.relative_to(ROOT)})")
    files = sorted(p for p in tree.rglob("*.py") if "_base_" not in p.parts)
    assert len(files) > min_files, f"only {len(files)} configs in {tree}; rerun .ci/fetch_mmdet_configs.sh"
    import detcore.mmdet_import.data_map  # noqa: F401 - imported before watching, so imports are the config's
    outcome: Counter = Counter()
    ran: list[str] = []
    for path in files:
        _watching[:] = ["watching"]
        try:
            imported = import_config(path)
            outcome["imported"] += 1
            assert imported.config["model"]["type"] in FAMILIES
            assert value_problems(imported.config) == [], path  # no real config is past a bound
            validate_config(imported.config)  # the checks load_config runs on every config
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(str(tree)), (path, message)  # one line naming the file
            outcome["refused: " + ("architecture" if "architecture detcore does not have" in message
                                   else "code" if "is code" in message else "other")] += 1
        finally:
            ran.extend(f"{path.name}: {e}" for e in _watching[1:])
            _watching.clear()
    assert not ran, ran[:5]
    print(dict(outcome))
    return outcome
