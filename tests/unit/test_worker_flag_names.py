"""A worker flag is spelled once: in ``detcore.contract.WorkerArgs``'s table. The launcher builds the worker's argv
with ``WorkerArgs.to_argv`` and offers the mirrored ``submit`` flags through ``WorkerArgs.add_submit_arguments``;
detcore's ``train``/``test`` parsers take them from ``WorkerArgs.add_arguments``. A module that spells such a flag
as a string again (an argv built by hand, a parser option added twice) fails here, as ``--amp`` once had to be
added in seven places."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from detcore.contract import WorkerArgs

ROOT = Path(__file__).resolve().parents[2]
FLAGS = {flag["option"] for _, flag in WorkerArgs.flags() if flag["option"]}
# The launcher's own options that share a worker flag's name but not its meaning (``--resume auto|never|PATH``, the
# experiment's ``--work-dir``, the config overrides, a test job's metrics, an export's file): each may be an
# ``add_argument`` option of the launcher's command line, nowhere else.
LAUNCHER_OWN = {"--resume", "--work-dir", "--cfg-options", "--eval", "--out"}
# detcore commands other than the worker (``detcore infer``, ``demo``, ``analyze``, ...) have options of their own.
WORKER_TOOLS = {ROOT / "detcore" / "tools" / "train.py", ROOT / "detcore" / "tools" / "test.py"}


def spelled(source: str, allowed_options: set[str] = frozenset()) -> list[tuple[int, str]]:
    """``(line, flag)`` for each string constant that is a worker flag, except an ``add_argument`` option in
    ``allowed_options``."""
    tree = ast.parse(source)
    options = {id(arg) for node in ast.walk(tree) if isinstance(node, ast.Call)
               and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument" for arg in node.args}
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in FLAGS
                  and not (id(node) in options and node.value in allowed_options))


def test_the_check_finds_a_hand_built_argv_and_a_second_parser_option():
    source = ('args = ["train", c, "--amp"]\np.add_argument("--no-validate", action="store_true")\n'
              'p.add_argument("--resume", metavar="auto|never|PATH")\nmsg = f"--seed: {x}"\n')
    assert spelled(source) == [(1, "--amp"), (2, "--no-validate"), (3, "--resume")]
    assert spelled(source, LAUNCHER_OWN) == [(1, "--amp"), (2, "--no-validate")]


def test_every_worker_flag_is_a_launcher_option_or_the_launchers_own():
    assert {"--amp", "--deterministic", "--load-from", "--no-validate", "--seed"} <= FLAGS
    assert LAUNCHER_OWN <= FLAGS  # else the exemption is stale: drop the name


@pytest.mark.parametrize("package", ["launcher", "detcore"])
def test_no_worker_or_launcher_module_spells_a_worker_flag(package):
    paths = sorted((ROOT / package).rglob("*.py")) if package == "launcher" else sorted(WORKER_TOOLS)
    offenders = [f"{path.relative_to(ROOT)}:{line}: {flag!r}" for path in paths
                 for line, flag in spelled(path.read_text(), LAUNCHER_OWN if package == "launcher" else set())]
    assert offenders == [], "build the worker's argv with WorkerArgs.to_argv and add its flags with " \
                            "WorkerArgs.add_arguments / add_submit_arguments:\n" + "\n".join(offenders)
