"""Every backend package exposes the module-level interface generic commands call, with no hasattr tests."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from launcher.backends import BACKENDS, backend_module
from launcher.backends.protocol import Backend
from launcher.cli import build_parser
from launcher.spec import Resources


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_module_has_the_whole_interface(name: str, tmp_path) -> None:
    module = backend_module(name)
    assert dataclasses.is_dataclass(module.Options)
    args = build_parser("submit").parse_args(["submit", "cfg.yaml", "--backend", name])
    assert isinstance(module.options_from_args(args), module.Options)
    # no option given: the generic resources come back unchanged
    assert module.resources_from_args(args, Resources(nproc=2)) == Resources(nproc=2)
    assert isinstance(module.create(tmp_path), Backend)
    group = argparse.ArgumentParser().add_argument_group(name)
    module.add_arguments(group)


def test_only_the_backends_that_span_nodes_say_so() -> None:
    assert {name for name, entry in BACKENDS.items() if entry.multi_node} == {"slurm", "ray"}
