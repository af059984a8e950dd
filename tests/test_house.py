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
    loaded = _loaded(["md.runner", "md.monitors", "md.trajectory", "common.formats", "md.protocol"])
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


def test_one_closest_pair_rule_for_the_judge_and_candidate_generation_checked_against_ase():
    """The judge's fusion evidence and candidate generation's too-short check read the same rule
    (``common.geometry``), and it agrees with ASE's neighbour list."""
    import numpy as np
    from ase.build import bulk
    from ase.data import covalent_radii
    from ase.neighborlist import neighbor_list
    from pymatgen.io.ase import AseAtomsAdaptor

    from analysis.verdicts import min_distance_ratios
    from common.geometry import closest_pair
    from reference.candidates import too_short_distances

    atoms = bulk("NaCl", "rocksalt", a=5.64).repeat(2)
    atoms.positions[0] += [0.9, 0.9, 0.0]                     # one Na pushed towards its Cl neighbours
    i, j, d = neighbor_list("ijd", atoms, 3.0)
    ratio = d / (covalent_radii[atoms.numbers[i]] + covalent_radii[atoms.numbers[j]])
    k = int(np.argmin(ratio))
    got = closest_pair(atoms.numbers, atoms.positions, atoms.cell[:])
    assert abs(got[0] - ratio[k]) < 1e-12
    assert abs(got[1] - d[k]) < 1e-12 and set(got[2].split("-")) == {"Na", "Cl"}
    (judged,) = min_distance_ratios(atoms.positions[None], atoms.cell[:][None], atoms.numbers)
    assert judged == got[:3]
    structure = AseAtomsAdaptor.get_structure(atoms)
    assert too_short_distances(structure, factor=ratio[k] + 0.01).startswith(f"too-short distance {got[2]} {d[k]:.2f} Å")
    assert too_short_distances(structure, factor=ratio[k] - 0.01) == ""


def test_every_step_of_the_table_is_routed_to_a_role_and_round_trips_through_the_ledger():
    """The step table names each step's request and result: every request is run by exactly one role
    method, and every result read back from the ledger's JSON is the same value."""
    import dataclasses
    import inspect
    import json

    from actors import requests as rq
    from actors.roles import ROUTES, _Role
    from orchestrator.campaign.steps import STEPS

    requests = {c for _, c in inspect.getmembers(rq, inspect.isclass)
                if issubclass(c, rq.Request) and c is not rq.Request}
    assert requests == set(ROUTES)                                   # no request without a role, and back
    for req, (role, method) in ROUTES.items():
        assert issubclass(role, _Role) and getattr(role, method.__name__) is method
        params = [p for p in inspect.signature(method).parameters if p != "_ray_trace_ctx"]  # Ray's tracing hook
        assert params == ["self", "req"]                                 # one typed request each
        assert hasattr(req.result, "to_dict") and hasattr(req.result, "from_dict")
    for step in STEPS.values():
        assert set(step.request) <= requests and hasattr(step.result, "from_dict"), step.name
        assert step.key.split(":")[0] in ("candidates", "ref", "prod") or step.key.startswith(step.name)
    examples = [rq.Runs([]), rq.Frames([[1, 2], []]), rq.Transport({"species": "Li"}, ["a.png"]),
                rq.Errors([0.1], [0.2], [0.05], {"trust_lo_eV_A": 0.1}, force_mae_meV_A=12.0)]
    for value in examples:
        again = type(value).from_dict(json.loads(json.dumps(value.to_dict())))
        assert dataclasses.asdict(again) == dataclasses.asdict(value)


def test_the_driver_ends_a_candidate_in_one_place_and_calls_no_actor_by_name():
    import ast

    driver = (ROOT / "orchestrator" / "campaign" / "driver.py").read_text()
    calls = [n for n in ast.walk(ast.parse(driver)) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "_finish"]
    assert len(calls) == 1
    for path in (ROOT / "orchestrator" / "campaign").glob("*.py"):
        text = path.read_text()
        assert "getattr(actor" not in text and ".call(\"" not in text, path.name    # requests, not method names


def test_one_reader_and_one_format_vocabulary_for_every_foreign_file(tmp_path):
    """Trajectories (analyze, a user's reference), the store's AIMD import and training data are read by
    common.formats: the short names and ASE's names mean the same format everywhere, and the errors agree."""
    import numpy as np
    import pytest
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from common.errors import InputError
    from common.formats import ALIASES, detect_format, read_checked, read_labelled
    from models.data import read_frames as training_frames
    from reference.aimd_import import read_labelled_frames

    for short, name in ALIASES.items():
        assert detect_format(tmp_path / "x", short) == detect_format(tmp_path / "x", short.upper()) == name
    frames = []
    for k in range(3):
        a = Atoms("LiS", positions=[[0, 0, 0], [1.5 + 0.1 * k, 1.5, 1.5]], cell=np.eye(3) * 4.0, pbc=True)
        a.calc = SinglePointCalculator(a, energy=-1.0 - k, forces=np.full((2, 3), 0.1 * k))
        a.info["oracle"] = "lj"
        frames.append(a)
    write(tmp_path / "run.extxyz", frames, format="extxyz")
    assert len(read_checked(tmp_path / "run.extxyz")[0]) == len(read_labelled(tmp_path / "run.extxyz")[0]) == 3
    assert len(read_labelled_frames(tmp_path / "run.extxyz", fmt="extxyz")) == len(training_frames(
        tmp_path / "run.extxyz")) == 3
    write(tmp_path / "XDATCAR", [f.copy() for f in frames], format="vasp-xdatcar")     # positions only
    assert len(read_checked(tmp_path / "XDATCAR", fmt="xdatcar")[0]) == 3
    for read in (read_labelled, training_frames, read_labelled_frames):
        with pytest.raises(InputError, match="XDATCAR|positions only|no energy"):
            read(tmp_path / "XDATCAR")
    (tmp_path / "empty.extxyz").write_text("")
    for read in (read_checked, read_labelled, training_frames, read_labelled_frames):
        with pytest.raises(InputError, match="is empty"):
            read(tmp_path / "empty.extxyz")
