"""``compile:``: run the detector's backbone and neck through ``torch.compile`` while training.

Only ``model.backbone`` (the body and its neck) is compiled: its input is one padded batch whose
shape changes only with the image sizes, while the detection heads work on data-dependent
shapes (proposals per image, sampled RoIs, boxes kept by NMS) that would make the compiler
recompile or break the graph at nearly every step. ``nn.Module.compile`` compiles the backbone
in place, so parameter names, checkpoints, DDP and evaluation are unchanged.

The setting is MMEngine's: ``compile: true`` or a mapping of ``torch.compile`` options
(``backend``, ``mode``, ``dynamic``, ``fullgraph``) plus ``enabled`` (true when a mapping is
given). Where the compiler cannot work (a Python torch.compile does not support, no C++ compiler
for inductor on the CPU, no Triton for inductor on a GPU) the run logs one warning saying why
and trains the backbone eagerly.
"""
from __future__ import annotations

import logging
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detcore.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used: config checks read compile_settings without it
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
KEYS = ("enabled", "backend", "mode", "dynamic", "fullgraph")


@dataclass(frozen=True)
class CompileSettings:
    """What the ``compile:`` config asks for (the arguments of ``torch.compile``)."""

    enabled: bool = False
    backend: str = "inductor"
    mode: str = "default"
    dynamic: bool | None = None  # None: torch's automatic dynamic shapes (recompile once a size changes)
    fullgraph: bool = False


def compile_settings(value: Any) -> CompileSettings:
    """Parse the ``compile:`` config value (absent/null, a bool, or a mapping of :data:`KEYS`)."""
    if value is None or isinstance(value, bool):
        return CompileSettings(enabled=bool(value))
    if not isinstance(value, dict):
        raise ConfigError(f"compile must be true, false or a mapping of {', '.join(KEYS)}, got {value!r:.100}")
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise ConfigError(f"compile: unknown option(s) {unknown}; allowed: {', '.join(KEYS)}")
    settings = CompileSettings(**{"enabled": True, **value})
    for key in ("enabled", "fullgraph"):
        if not isinstance(getattr(settings, key), bool):
            raise ConfigError(f"compile.{key} must be true or false, got {getattr(settings, key)!r:.100}")
    if settings.dynamic is not None and not isinstance(settings.dynamic, bool):
        raise ConfigError(f"compile.dynamic must be true, false or null (automatic), got {settings.dynamic!r:.100}")
    if settings.mode not in MODES:
        raise ConfigError(f"compile.mode must be one of {', '.join(MODES)}, got {settings.mode!r:.100}")
    if not isinstance(settings.backend, str):
        raise ConfigError(f"compile.backend must be a torch.compile backend name (e.g. inductor), "
                          f"got {settings.backend!r:.100}")
    return settings


def compiler_unavailable(backend: str, device: torch.device) -> str | None:
    """Why ``torch.compile`` with ``backend`` cannot run on ``device`` here, or None when it can.

    Cheap checks only (no compilation): a Python version dynamo does not support; for inductor,
    a C++ compiler and Python's headers on the CPU, Triton on a GPU. A compiler that is present
    but fails on the generated code still fails at the first step, with torch's own error. Raises :class:`ConfigError` for a backend name
    torch does not know.
    """
    import torch
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return f"torch {torch.__version__} has no torch.compile support on this Python or platform"
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ConfigError(f"compile.backend {backend!r} is not a torch.compile backend; known: {', '.join(known)}")
    if backend != "inductor":
        return None
    if device.type == "cpu":
        from torch._inductor import cpp_builder

        try:
            cpp_builder.get_cpp_compiler()
        except Exception as exc:  # InvalidCxxCompiler, or an OS error running a broken one
            return f"inductor needs a C++ compiler on the CPU ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
        if not headers.is_file():  # its generated C++ modules include it (slim images often lack it)
            return f"inductor needs Python's C headers on the CPU ({headers} is missing; install python3-dev)"
        return None
    from torch.utils._triton import has_triton

    return None if has_triton() else f"inductor needs Triton on {device.type} (pip install triton)"


def compile_backbone(model: nn.Module, value: Any, device: torch.device) -> bool:
    """Compile ``model.backbone`` in place as the ``compile:`` config ``value`` asks; True when it
    was compiled, False when the setting is off or the compiler is unavailable (logged)."""
    from torch import nn

    settings = compile_settings(value)
    if not settings.enabled:
        return False
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ConfigError(f"compile: {type(model).__name__} has no backbone module to compile; "
                          f"set compile: false for this model")
    reason = compiler_unavailable(settings.backend, device)
    if reason:
        logger.warning("compile: %s; training the backbone without torch.compile", reason)
        return False
    backbone.compile(backend=settings.backend, mode=None if settings.mode == "default" else settings.mode,
                     dynamic=settings.dynamic, fullgraph=settings.fullgraph)
    logger.info("compile: backbone and neck compiled with torch.compile (backend %s, mode %s, dynamic %s); "
                "the first iterations include compilation", settings.backend, settings.mode,
                "auto" if settings.dynamic is None else settings.dynamic)
    return True
