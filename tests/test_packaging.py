"""One installable `ahdi` package: import names, shipped data, and the built wheel.

The wheel test builds the wheel, installs it (not editable) with its
dependencies into a fresh virtual environment, and runs `ahdi` from a
folder that holds a `train.py` and a `pipeline/` package of its own, as a
user's project folder might.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("ahdi_kernels", "pipeline", "train", "tests", "benchmarks", "docs")
BARE_NAMES = ("pipeline", "train", "ahdi_kernels")


def _python_files() -> list[Path]:
    return sorted(p for folder in SOURCE_FOLDERS for p in (REPO / folder).rglob("*.py"))


def _bare_imports(path: Path) -> list[str]:
    """``'LINE: module'`` for every import of a bare folder name in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names
                  if name.split(".")[0] in BARE_NAMES]
    return found


def test_no_module_imports_the_bare_folder_names():
    bad = [f"{path.relative_to(REPO)}:{hit}" for path in _python_files()
           for hit in _bare_imports(path)]
    assert not bad, "import the ahdi.* names instead:\n" + "\n".join(bad)


def test_the_bare_import_check_catches_one(tmp_path):
    # The check above must be able to fail.
    sample = tmp_path / "x.py"
    sample.write_text("import os\nfrom pipeline.store import open_store\n"
                      "import train.cli\nfrom ahdi.train import cli\n")
    assert _bare_imports(sample) == ["2: pipeline.store", "3: train.cli"]


def test_the_registry_and_grids_ship_inside_the_package():
    import ahdi.pipeline

    package = Path(ahdi.pipeline.__file__).parent
    shipped = package / "datasets.yaml"
    assert shipped.is_file()
    # In a checkout the shipped registry is the top-level file people edit.
    assert shipped.read_bytes() == (REPO / "datasets.yaml").read_bytes()
    assert sorted(p.name for p in (package / "grids").glob("*.yaml"))


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.mark.slow
def test_wheel_installs_and_runs_from_a_foreign_folder(tmp_path):
    """Build the wheel, install it non-editable in a fresh venv, run ahdi elsewhere."""
    # Built from a copy, so the build leaves nothing in the checkout.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".hypothesis", "*.zarr", "ahdi-demo", "out"))
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(dist), str(src)],
        capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(dist.glob("ahdi-*.whl"))
    assert len(wheels) == 1, wheels

    import zipfile
    names = zipfile.ZipFile(wheels[0]).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"ahdi"}, f"the wheel installs other top-level names: {sorted(tops)}"
    assert "ahdi/pipeline/datasets.yaml" in names
    assert "ahdi/pipeline/grids/table3_patch.yaml" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(_venv_python(venv)), "-m", "pip", "install", "-q", str(wheels[0])],
        capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr

    # A user's project folder with names that used to shadow ours.
    work = tmp_path / "project"
    (work / "pipeline").mkdir(parents=True)
    (work / "pipeline" / "__init__.py").write_text("raise ImportError('the user pipeline')\n")
    (work / "train.py").write_text("raise ImportError('the user train.py')\n")
    ahdi = venv / "bin" / "ahdi"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AHDI_DATASETS")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ahdi), *args], capture_output=True, text=True, cwd=work,
                              env=env, timeout=300)

    version = run("--version")
    assert version.returncode == 0, version.stderr
    assert "ahdi, version" in version.stdout

    missing = tmp_path / "no-such-UNBC"
    unbc = run("convert", "unbc", "--root", str(missing), "-o", "x.zarr")
    assert unbc.returncode == 1, unbc.stdout + unbc.stderr
    assert "root folder of dataset 'unbc' (from --root) does not exist" in unbc.stderr, \
        unbc.stderr
    assert "known datasets: samples" not in unbc.stderr

    grids = run("ablate", "--help")
    assert "table3_patch" in grids.stdout, grids.stdout

    # A tiny conversion of a generated clip.
    script = textwrap.dedent(f"""
        import cv2, numpy as np
        w = cv2.VideoWriter({str(work / 'clip.mp4')!r}, cv2.VideoWriter_fourcc(*'mp4v'),
                            25.0, (48, 32))
        for t in range(12):
            f = np.full((32, 48, 3), 40, np.uint8)
            f[8:20, 2 + 2 * t:14 + 2 * t] = 250
            w.write(f)
        w.release()
    """)
    made = subprocess.run([str(_venv_python(venv)), "-c", script], capture_output=True,
                          text=True, cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    tiny = run("convert", "clip.mp4", "-o", "tiny.zarr", "--size", "32", "--crop", "center",
               "--patch", "3", "-q")
    assert tiny.returncode == 0, tiny.stdout + tiny.stderr
    inspect = run("inspect", "tiny.zarr", "--json")
    assert inspect.returncode == 0, inspect.stderr
    assert '"done": 1' in inspect.stdout, inspect.stdout


def test_the_cluster_extra_gives_a_working_dashboard():
    """`pip install "ahdi[cluster]"` (docs/cluster.md) brings what the dashboard needs."""
    import tomllib
    import urllib.request

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(req.startswith("bokeh") for req in extras["cluster"])
    pytest.importorskip("bokeh")
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster):
        port = cluster.scheduler.http_server.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=30) as page:
            html = page.read().decode()
    assert "needs bokeh" not in html
    assert "<!DOCTYPE html>" in html


# --------------------------------------------------------------------------
# Dependencies flow one way (docs/architecture.md).
# --------------------------------------------------------------------------
PACKAGES = {"ahdi_kernels": "ahdi.kernels", "pipeline": "ahdi.pipeline", "train": "ahdi.train"}
ORCHESTRATION = ("ahdi.pipeline.cli", "ahdi.pipeline.ablate", "ahdi.pipeline.ablation_tables")


def _imports_of(path: Path, module: str) -> set[str]:
    """Every module ``module`` (at ``path``) imports, anywhere in the file, absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            # `from ahdi.pipeline import store` imports the module ahdi.pipeline.store
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _our_modules() -> dict[str, set[str]]:
    graph = {}
    for folder, name in PACKAGES.items():
        for path in sorted((REPO / folder).glob("*.py")):
            module = f"{name}.{path.stem}" if path.stem != "__init__" else name
            graph[module] = _imports_of(path, module)
    return graph


def _known(names: set[str], graph: dict) -> set[str]:
    return {n for n in names if n in graph}


def test_dependencies_flow_one_way():
    graph = _our_modules()
    problems = []
    for module, imports in graph.items():
        ours = _known(imports, graph)
        if module.startswith("ahdi.kernels"):
            bad = {m for m in ours if not m.startswith("ahdi.kernels")}
            bad |= {m for m in imports if m.split(".")[0] in ("dask", "zarr", "click", "torch",
                                                              "distributed", "yaml")}
            problems += [f"{module} imports {m} (kernels import nothing of ours)" for m in bad]
        if module.startswith("ahdi.train"):
            # The trainer reads stores through the store's public API only.
            allowed = {"ahdi.pipeline.store", "ahdi.pipeline.errors", "ahdi.pipeline.figures",
                       "ahdi.pipeline.files"}
            bad = {m for m in ours if m.startswith("ahdi.pipeline") and m not in allowed
                   and m != "ahdi.pipeline"}
            problems += [f"{module} imports {m}" for m in bad]
        if module.startswith("ahdi.pipeline") and module not in ORCHESTRATION:
            # Only the orchestration (the CLI and ablate, which converts and
            # trains) may reach into the trainer.
            bad = {m for m in ours if m.startswith("ahdi.train")}
            problems += [f"{module} imports {m} (only cli and ablate may)" for m in bad]
    assert not problems, "\n".join(sorted(problems))


def test_the_dependency_check_can_fail(tmp_path):
    bad = tmp_path / "pooling.py"
    bad.write_text("from ahdi.pipeline import store\nfrom ..train import engine\n")
    assert {"ahdi.pipeline.store", "ahdi.train.engine"} <= _imports_of(bad, "ahdi.kernels.pooling")
