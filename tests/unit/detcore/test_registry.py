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


def test_register_module_takes_mmdetections_forms() -> None:
    reg = Registry("neck")

    @reg.register_module()
    class Bare:
        pass

    @reg.register_module
    class NoParentheses:
        pass

    @reg.register_module(name=["Named", "Alias"])
    class Listed:
        pass

    class Later:
        pass

    assert reg.register_module(module=Later) is Later
    assert reg.register_module(name="LaterToo", module=Later) is Later
    assert sorted(reg) == ["Alias", "Bare", "Later", "LaterToo", "Named", "NoParentheses"]
    assert reg.get("Alias") is reg.get("Named") is Listed and reg.get("NoParentheses") is NoParentheses

    class Other:
        pass

    with pytest.raises(RegistryError, match="'Bare' is already registered by .*pass force=True"):
        reg.register_module(name="Bare", module=Other)
    reg.register_module(name="Bare", force=True, module=Other)
    assert reg.get("Bare") is Other
    for bad, match in (({"name": ""}, "name must be a non-empty string"), ({"name": ["A", 3]}, "name must be"),
                       ({"force": "yes"}, "force=.... must be true or false")):
        with pytest.raises(RegistryError, match=match):
            reg.register_module(**bad, module=Other)


def test_the_registries_are_where_mmdetection_users_look_for_them() -> None:
    from detcore import models
    from detcore import registry

    assert models.NECKS is registry.NECKS and models.BACKBONES is registry.BACKBONES
    assert models.DETECTORS is registry.DETECTORS and models.HEADS is registry.HEADS
