"""The job's files are reached through one typed layout each: ``detcore.contract.WorkDir`` / ``RunDir`` (the
work dir and the run directory of a launch) and ``launcher.runtime.job_folder.JobFolder`` (the launcher's job
folder). A module that spells one of their file names again, or builds a rank log's name by hand, fails here:
a renamed file would otherwise be missed in one place, as it was before these layouts existed."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from detcore import contract
from launcher.runtime.job_folder import JobFolder

ROOT = Path(__file__).resolve().parents[2]
OWNERS = {ROOT / "detcore" / "contract.py", ROOT / "launcher" / "runtime" / "job_folder.py"}
NAMES = {contract.EVENTS_FILE, contract.OUTCOME_FILE, contract.OWNER_FILE, contract.CONFIG_FILE, contract.METRICS_FILE,
         contract.TEST_METRICS_FILE, contract.TRAIN_LOG_FILE, contract.LAST_CHECKPOINT_FILE, "agent.log",
         *JobFolder.MONITOR_FILES, "supervisor.log", "driver.log", "manifest.json"}
WORDS = {JobFolder.CANCEL}  # also a command's name: a finding only as a path (``folder / "cancel"``)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose may name the files)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def spelled(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` for each string in code (not a docstring) that is a layout's file name, or an
    f-string that builds ``rank{R}.log``."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    in_path = {id(n.right) for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value in NAMES - WORDS or (node.value in WORDS and id(node) in in_path):
                found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            text = "".join(str(p) for p in parts)
            if "rank{}.log" in text and not any(" " in str(p) for p in parts):  # a path, not a message
                found.append((node.lineno, text))
    return sorted(found)


def test_the_check_finds_a_spelled_name_and_a_hand_built_rank_log():
    source = ('p = work / "last_checkpoint"\nq = f"rank{r}.log"\ndef f():\n    """names last_checkpoint"""\n'
              'c = folder / "cancel"\nparser.add_parser("cancel")\n')
    assert spelled(source) == [(1, "last_checkpoint"), (2, "rank{}.log"), (5, "cancel")]
    assert spelled('"""config.yaml"""\nhelp = f"append to LOG_DIR/rank{R}.log, every attempt"\n') == []


@pytest.mark.parametrize("package", ["detcore", "launcher"])
def test_no_module_spells_a_file_of_the_job_layouts(package):
    offenders = [f"{path.relative_to(ROOT)}:{line}: {text!r}"
                 for path in sorted((ROOT / package).rglob("*.py")) if path not in OWNERS
                 for line, text in spelled(path.read_text())]
    assert offenders == [], "use detcore.contract.WorkDir/RunDir or launcher.runtime.job_folder.JobFolder:\n" + \
        "\n".join(offenders)
