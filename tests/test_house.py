"""The house rules that a reader relies on: imports point down, one home per concept."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _loaded(modules: list[str]) -> set[str]:
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_md_builds_on_the_kernel_not_on_analysis():
    loaded = _loaded(["md.runner", "md.monitors", "md.trajectory", "md.formats", "md.protocol"])
    assert not {m for m in loaded if m == "analysis" or m.startswith("analysis.")}


def test_science_packages_never_import_ray_or_mlflow():
    loaded = _loaded(["chemspace", "reference.candidates", "reference.oracles", "models", "md.runner",
                      "analysis.verdicts", "analysis.transport", "common.trajectory"])
    assert not {m for m in loaded if m.split(".")[0] in ("ray", "mlflow")}


def test_the_demo_spec_exists_once():
    demo = ROOT / "campaigns" / "demo.yaml"
    assert demo.is_symlink() and demo.resolve() == (ROOT / "orchestrator" / "campaign_demo.yaml").resolve()
    assert not (ROOT / "orchestrator" / "campaign" / "configs.py").exists()


def _import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, anywhere in the file (function-level too)."""
    import ast

    graph = {}
    for path in sorted((ROOT / package).glob("*.py")):
        name = f"{package}.{path.stem}" if path.stem != "__init__" else package
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package + "."):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith(package + ".")}
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles_in_the_science_packages():
    for package in ("common", "chemspace", "models", "md", "analysis", "reference"):
        assert _cycles({k: v for k, v in _import_graph(package).items() if k != package}) == [], package
