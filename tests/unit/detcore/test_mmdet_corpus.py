"""Every config of MMDetection 2.28.2's own tree imports, or fails with one line; none is run.

The tree (about 666 files) is fetched by `.ci/fetch_mmdet_configs.sh` (run by `.ci/run`) into
`.cache/mmdet/configs`. Parse and map only: no network is built here (the four 1x networks are
compared in test_mmdet_import.py).
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from detcore.config import validate_config
from detcore.errors import ConfigError
from detcore.mmdet_import import import_config

ROOT = Path(__file__).resolve().parents[3]
TREE = ROOT / ".cache/mmdet/configs"
_watching: list[str] = []


def _audit(event: str, args: tuple) -> None:
    """Record code execution and imports while a config is being read (audit hooks stay installed)."""
    if _watching and event in ("exec", "import", "os.system", "subprocess.Popen", "open") and (
            event != "open" or str(args[0]).endswith(".pth")):
        _watching.append(f"{event} {str(args[0])[:80]}")


sys.addaudithook(_audit)


def test_every_mmdetection_config_imports_or_fails_with_one_line() -> None:
    if not TREE.is_dir():
        pytest.fail(f"{TREE} is missing: fetch MMDetection's config tree with `bash .ci/fetch_mmdet_configs.sh` "
                    f"(pip download mmdet==2.28.2 --no-deps, unpacked to .cache/mmdet/configs)")
    files = sorted(p for p in TREE.rglob("*.py") if "_base_" not in p.parts)
    assert len(files) > 600, f"only {len(files)} configs in {TREE}; rerun .ci/fetch_mmdet_configs.sh"
    import detcore.mmdet_import.data_map  # noqa: F401 - imported before watching, so imports are the config's
    outcome: Counter = Counter()
    ran: list[str] = []
    for path in files:
        _watching[:] = ["watching"]
        try:
            imported = import_config(path)
            outcome["imported"] += 1
            assert imported.config["model"]["type"] in ("FasterRCNN", "MaskRCNN", "CascadeRCNN", "RetinaNet", "FCOS")
            validate_config(imported.config)  # the checks load_config runs on every config
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(str(TREE)), (path, message)  # one line naming the file
            outcome["refused: " + ("architecture" if "architecture detcore does not have" in message
                                   else "code" if "is code" in message else "other")] += 1
        finally:
            ran.extend(f"{path.name}: {e}" for e in _watching[1:])
            _watching.clear()
    assert not ran, ran[:5]
    print(dict(outcome))
    # Every Faster/Mask R-CNN, RetinaNet and FCOS config on a plain ResNet + FPN imports.
    assert outcome["imported"] >= 100, outcome
    assert outcome["refused: architecture"] >= 300, outcome
