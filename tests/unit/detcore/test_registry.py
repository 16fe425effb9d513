from __future__ import annotations

import pytest

from detcore.errors import RegistryError
from detcore.registry import DETECTORS, Registry


def test_unknown_name_lists_closest_and_custom_imports() -> None:
    import detcore.models  # noqa: F401  (registers built-ins)

    with pytest.raises(RegistryError) as info:
        DETECTORS.build({"type": "FasterRCN", "num_classes": 1})
    msg = str(info.value)
    assert "unknown detector type 'FasterRCN'" in msg
    assert "did you mean 'FasterRCNN'" in msg
    assert "custom_imports" in msg


def test_duplicate_registration_is_an_error_unless_forced() -> None:
    reg = Registry("thing")

    @reg.register()
    def Widget() -> int:
        return 1

    def other() -> int:
        return 2

    with pytest.raises(RegistryError, match="'Widget' is already registered"):
        reg.add(other, name="Widget")
    reg.add(other, name="Widget", force=True)
    assert reg.build({"type": "Widget"}) == 2
    assert reg.origin("Widget").endswith("other")


def test_build_needs_a_type_and_reports_bad_arguments() -> None:
    reg = Registry("thing")
    reg.add(lambda size=1: size, name="Box")
    with pytest.raises(RegistryError, match="must be a mapping with a 'type' key"):
        reg.build({"size": 3})
    with pytest.raises(RegistryError, match="thing type 'Box'.*unexpected keyword"):
        reg.build({"type": "Box", "colour": "red"})
