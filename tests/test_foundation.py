"""The repository's foundation: CLI entry point, atomic writes, package boundaries."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from common import InputError, atomic_write_text
from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCIENCE = ["common", "chemspace", "models", "md", "analysis", "reference"]


def test_help_lists_stages(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "matscreen" in out and "chemspace" in out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("package", SCIENCE)
def test_science_packages_never_import_ray_or_mlflow(package):
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"ray", "mlflow", "orchestrator", "actors"}, f"{path} imports {name}"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    from common.atomic import atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_output_is_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="output directory"):
        atomic_write_text(blocker / "sub" / "out.txt", "x")
