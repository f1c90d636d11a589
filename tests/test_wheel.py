"""The wheel ships both bundles; an installed wheel finds them (`brainvq bundle-path`, `brainvq init-bundle`).

The slow tests build the wheel from a copy of the source tree (so no ``build/`` or ``*.egg-info`` is left in the
repository), with run outputs planted in the copy's bundles to check that they stay out, and install it
non-editable into a fresh virtualenv; the others check :func:`default_bundle_root` and ``init-bundle`` in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from brainvq_monai.bundle import utils as bundle_utils
from brainvq_monai.bundle.utils import BUNDLE_NAMES, default_bundle_root
from brainvq_monai.cli import main
from brainvq_monai.utils.errors import BrainVQInputError

REPO = Path(__file__).resolve().parents[1]
# what building a wheel needs (setup.cfg reads README.md; setup.py maps bundles/)
SOURCE_ITEMS = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "LICENSE", "brainvq_monai", "bundles")
# run outputs a checkout's bundle may hold (.gitignore): planted in the copy, must not reach the wheel
PLANTED = ("runs/metrics.json", "data/demo/demo_cohort.json", "models/vqvae.pt", "configs/stray.pt")


def _repo_bundles() -> list[str]:
    return sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/metadata.json"))


def _clean_env() -> dict[str, str]:
    """The environment without this checkout on the path: the venv's own copy must be the one imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built (``pip wheel --no-build-isolation``) from a copy of the source tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    bundles = REPO / "bundles"

    def skip(folder: str, names: list[str]) -> set[str]:  # caches, and the checkout's own run outputs
        outputs = ("runs", "data") if Path(folder).parent == bundles else ()
        return {n for n in names if n in ("__pycache__", *outputs) or n.endswith((".pyc", ".pt", ".ts"))}

    for item in SOURCE_ITEMS:
        path = REPO / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=skip)
        else:
            shutil.copy2(path, src / item)
    for name in BUNDLE_NAMES:
        for planted in PLANTED:
            (src / "bundles" / name / planted).parent.mkdir(parents=True, exist_ok=True)
            (src / "bundles" / name / planted).write_text("{}")
    repo_before = sorted(p.name for p in REPO.iterdir())
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    _run(cmd, cwd=src, timeout=300)
    assert sorted(p.name for p in REPO.iterdir()) == repo_before  # no build/ or *.egg-info in the repository
    (found,) = out.glob("brainvq_monai-*.whl")
    return found


def test_repo_bundles_are_the_shipped_ones():
    assert sorted(BUNDLE_NAMES) == _repo_bundles()


@pytest.mark.slow
def test_wheel_ships_the_bundles_and_no_run_outputs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("brainvq_monai/_bundles/")}
    assert "brainvq_monai/schemas/meta_schema.json" in names
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "brainvq_monai").rglob("*.py")}
    assert not sorted(modules - names), "modules missing from the wheel"
    for name in BUNDLE_NAMES:
        prefix = f"brainvq_monai/_bundles/{name}/"
        bundle = REPO / "bundles" / name
        expected = {"configs/metadata.json", "docs/README.md", "LICENSE"}
        expected |= {f"configs/{p.name}" for p in bundle.glob("configs/*.json")}
        expected |= {f"configs/{p.name}" for p in bundle.glob("configs/*.conf")}
        expected |= {p.relative_to(bundle).as_posix() for p in (bundle / "docs").rglob("*") if p.is_file()}
        if (bundle / "large_files.yml").is_file():
            expected.add("large_files.yml")
        missing = sorted(e for e in expected if prefix + e not in names)
        assert not missing, f"{name}: not in the wheel: {missing}"
    leaked = sorted(n for n in shipped if n.endswith((".pt", ".ts")) or "/runs/" in n or "/data/" in n)
    assert not leaked, f"run outputs in the wheel: {leaked}"
    assert {n.split("/")[2] for n in shipped} == set(BUNDLE_NAMES)


@pytest.mark.slow
def test_installed_wheel_finds_and_copies_the_bundles(wheel, tmp_path):
    """Non-editable install into a fresh venv; run from outside the repository, with the venv's copy imported."""
    venv = tmp_path / "venv"
    # the venv sees torch, monai, ... and pip through the system site-packages; no pip of its own is installed
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp_path)
    python, brainvq = venv / "bin" / "python", venv / "bin" / "brainvq"
    # --ignore-installed: install into the venv even though brainvq_monai is installed (editable) outside it
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--ignore-installed"]
    _run([*install, str(wheel)], cwd=tmp_path, timeout=300)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    package = Path(_run([str(python), "-c", purelib], cwd=tmp_path).stdout.strip()).resolve() / "brainvq_monai"
    imported = _run([str(python), "-c", "import brainvq_monai; print(brainvq_monai.__file__)"], cwd=tmp_path)
    assert Path(imported.stdout.strip()).resolve() == package / "__init__.py", "the venv's copy is not imported"

    printed = Path(_run([str(brainvq), "bundle-path", "brain_vqvae_2d"], cwd=tmp_path).stdout.strip())
    assert printed.resolve() == package / "_bundles" / "brain_vqvae_2d"
    assert (printed / "configs" / "metadata.json").is_file()

    dest = tmp_path / "my_bundle"
    out = _run([str(brainvq), "init-bundle", "brain_vqvae_3d", str(dest)], cwd=tmp_path).stdout
    assert (dest / "configs" / "metadata.json").is_file() and (dest / "docs" / "README.md").is_file()
    assert "python -m monai.bundle run --config_file" in out and str(dest / "docs" / "README.md") in out
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    prefix = "brainvq_monai/_bundles/brain_vqvae_3d/"
    assert copied == sorted(n[len(prefix) :] for n in zipfile.ZipFile(wheel).namelist() if n.startswith(prefix))

    # the copy is self-contained: its configs resolve every path from bundle_root "." (the folder run from)
    common = json.loads((dest / "configs" / "common.json").read_text())
    assert common["bundle_root"] == "."


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_default_bundle_root_finds_each_bundle(name):
    root = Path(default_bundle_root(name))
    assert root.is_absolute() and root.name == name and (root / "configs" / "metadata.json").is_file()


def test_default_bundle_root_unknown_name():
    with pytest.raises(BrainVQInputError) as err:
        default_bundle_root("brain_vqvae_4d")
    assert err.value.where == "brain_vqvae_4d"
    assert all(name in err.value.reason for name in BUNDLE_NAMES)


def test_default_bundle_root_missing_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_utils, "_bundle_folders", lambda: [tmp_path / "nowhere"])
    with pytest.raises(BrainVQInputError, match="bundle folder not found"):
        default_bundle_root("brain_vqvae_2d")


def test_bundle_path_command(capsys):
    assert main(["bundle-path", "brain_vqvae_3d"]) == 0
    assert capsys.readouterr().out.strip() == default_bundle_root("brain_vqvae_3d")
    assert main(["bundle-path", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "brain_vqvae_2d" in err


def test_init_bundle_refuses_a_non_empty_or_file_dir(tmp_path, capsys):
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    assert main(["init-bundle", "brain_vqvae_2d", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err and str(dest) in err
    assert [p.name for p in dest.iterdir()] == ["notes.txt"] and (dest / "notes.txt").read_text() == "mine"
    assert main(["init-bundle", "brain_vqvae_2d", str(dest / "notes.txt")]) == 2
    assert "is a file" in capsys.readouterr().err and (dest / "notes.txt").read_text() == "mine"
    assert main(["init-bundle", "brain_vqvae_9d", str(tmp_path / "new")]) == 2
    assert "unknown bundle" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_init_bundle_copies_without_run_outputs(tmp_path, monkeypatch, capsys):
    source = tmp_path / "bundle"
    for rel in ("configs/metadata.json", "configs/common.json", "docs/README.md", "LICENSE", *PLANTED):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text("{}")
    monkeypatch.setattr(bundle_utils, "default_bundle_root", lambda name: str(source))
    dest = tmp_path / "empty"
    dest.mkdir()  # an existing empty folder is fine
    assert main(["init-bundle", "brain_vqvae_2d", str(dest)]) == 0
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert copied == ["LICENSE", "configs/common.json", "configs/metadata.json", "docs/README.md"]
    out = capsys.readouterr().out
    assert (
        f"cd {dest} && python -m monai.bundle run --config_file \"['configs/common.json','configs/train_vqvae.json']\""
        in out
    )
    assert str(dest / "docs" / "README.md") in out
    assert main(["init-bundle", "brain_vqvae_2d", str(source / "inside")]) == 2  # never into the bundle itself
