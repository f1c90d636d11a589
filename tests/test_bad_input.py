"""Bad input through ``python -m monai.bundle run``: every case of issue 11 ends with exit status 2 (1 for a run that
fails for another reason), a last stderr line ``brainvq: error: <file or config ID>: <reason>`` naming the culprit,
no traceback anywhere (unless ``BRAINVQ_DEBUG=1``), never status 134, and the data folder unchanged.

Most cases run in forked children of one warmed-up interpreter (``tests/bundle_forkserver.py``, the same
``monai.bundle.__main__`` as ``python -m monai.bundle``); three also run as fresh subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from bundle_helpers import ForkServer, cli_args, subprocess_env, tiny
from conftest import REPO

pytestmark = pytest.mark.slow


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def setup(demo_cohort, tmp_path_factory):
    """The data (checksummed), a valid datalist, VQ-VAE checkpoints (matching, other codebook, damaged) and the
    fork server."""
    from brainvq_monai.data.datalist import build_datalist, write_datalist
    from brainvq_monai.networks.nets import BrainVQVAE

    root = tmp_path_factory.mktemp("bad_input")
    before = _checksums(demo_cohort)
    datalist = build_datalist("adni", demo_cohort, seed=0)
    write_datalist(datalist, root / "datalist.json")

    def vqvae(num_embeddings: int) -> dict:
        torch.manual_seed(0)
        net = BrainVQVAE(
            2, 1, 1, channels=(8, 16), num_res_channels=(8, 16), num_res_layers=1, num_embeddings=num_embeddings,
            embedding_dim=8, downsample_parameters=((2, 4, 1, 1),) * 2, upsample_parameters=((2, 4, 1, 1, 0),) * 2,
        )  # fmt: skip
        return {"model": net.state_dict()}

    torch.save(vqvae(16), root / "good_vqvae.pt")
    torch.save(vqvae(32), root / "other_vqvae.pt")
    good = (root / "good_vqvae.pt").read_bytes()
    (root / "truncated_vqvae.pt").write_bytes(good[: len(good) // 2])
    (root / "empty_vqvae.pt").write_bytes(b"")
    (root / "random_vqvae.pt").write_bytes(bytes(range(256)) * 16)
    server = ForkServer(root)
    yield {"root": root, "data": demo_cohort, "datalist": datalist, "server": server}
    server.close()
    assert _checksums(demo_cohort) == before  # the data folder was never written


def _case(setup, name: str, config: str = "train_vqvae.json", dims: int = 2, **overrides) -> tuple[list[str], Path]:
    run = setup["root"] / name
    (run / "models").mkdir(parents=True)
    over = {**tiny(dims, config, run, setup["data"]), **overrides}
    if dims == 2 and "datalist" not in overrides:
        over["datalist"] = str(setup["root"] / "datalist.json")
    return cli_args(dims, config, over), run


def _datalist(setup, name: str, content) -> str:
    path = setup["root"] / f"{name}.json"
    path.write_text(json.dumps(content))
    return str(path)


def _cases(setup) -> list[tuple[str, str, dict, int, str]]:
    """(name, config, overrides, exit status, expected last line after "brainvq: error: ")."""
    root, data, dl = setup["root"], setup["data"], setup["datalist"]
    only_nc = {**dl, "training": [it for it in dl["training"] if it["label"] == 0]}
    bad_label = {**dl, "validation": [{**dl["validation"][0], "label": 5}]}
    (root / "data_empty").mkdir(exist_ok=True)
    (root / "data_wrong").mkdir(exist_ok=True)
    (root / "data_wrong" / "notes.txt").write_text("not images\n")
    return [
        ("amp", "train_vqvae.json", {"amp": "flase"}, 2, "amp: must be true or false, got 'flase'"),
        ("resume_value", "train_vqvae.json", {"resume": "maybe"}, 2, "resume: must be true or false, got 'maybe'"),
        (
            "spatial_size",
            "train_vqvae.json",
            {"spatial_size": [30, 30]},
            2,
            "spatial_size: [30, 30]: 30 does not pass the VQ-VAE's 2 downsamplings of autoencoder_def (total stride 4) "
            "and back unchanged; nearest valid sizes: 28 or 32",
        ),
        ("batch_size", "train_vqvae.json", {"batch_size": 0}, 2, "batch_size: must be >= 1, got 0"),
        ("inferer", "train_vqvae.json", {"train#inferer#_target_": "SimpleInferer"}, 2, "inferer: VQVAETrainer needs a brainvq_monai.inferers.VQVAEInferer (or a subclass), got monai.inferers.inferer.SimpleInferer"),
        ("data_format", "train_vqvae.json", {"data_format": "dicom"}, 2, "data_format: must be one of oasis, adni, nifti, got 'dicom'"),
        ("datalist_list", "train_vqvae.json", {"datalist": _datalist(setup, "list", [])}, 2, "{datalist}: expected a JSON object with 'training', 'validation' and 'test' lists, got an empty list"),
        ("datalist_keys", "train_vqvae.json", {"datalist": _datalist(setup, "keys", {"validation": []})}, 2, "{datalist}: has no 'training' list (keys: validation)"),
        ("no_validation", "train_vqvae.json", {"datalist": _datalist(setup, "noval", {**dl, "validation": []})}, 2, "{datalist}: the 'validation' split is empty, but training validates every epoch to choose the best checkpoint, which is never written without it"),
        ("classes", "train_prior.json", {"datalist": _datalist(setup, "only_nc", only_nc)}, 2, "{datalist}: class 1 (AD) has no training items, so a conditional prior cannot learn it; fix the datalist or set conditional false"),
        ("labels", "train_vqvae.json", {"datalist": _datalist(setup, "bad_label", bad_label)}, 2, "{datalist}: 'validation' item 0 ({image}) has label 5, but 'labels' lists 2 classes {{0: 'NC', 1: 'AD'}}"),
        ("missing_dir", "train_vqvae.json", {"dataset_dir": str(root / "nowhere"), "datalist": str(root / "missing_dir" / "dl.json")}, 2, "{root}/nowhere: dataset_dir does not exist; expected an ADNI folder (AD_NC/{{train,test}}/{{AD,NC}}/<patient>_<slice>.jpeg) for data_format 'adni'; make demo data with `brainvq demo-data --out {root}/nowhere` (or pass --create_demo_data true)"),
        ("empty_dir", "train_vqvae.json", {"dataset_dir": str(root / "data_empty"), "datalist": str(root / "empty_dir.json")}, 2, "{root}/data_empty: dataset_dir is empty;"),
        ("wrong_dir", "train_vqvae.json", {"dataset_dir": str(root / "data_wrong"), "datalist": str(root / "wrong_dir.json")}, 2, "{root}/data_wrong: not an adni layout: expected AD_NC/{{train,test}}/{{AD,NC}}/<patientid>_<slice>.jpeg (found: notes.txt)"),
        ("inside_data", "train_vqvae.json", {"output_dir": str(data / "runs")}, 2, f"output_dir: {data}/runs is inside dataset_dir {data}; the data folder is never written"),
        ("no_last", "train_vqvae.json", {"resume": "True"}, 2, "{run}/models/model_autoencoder_last.pt: no last checkpoint to resume from (resume is true);"),
        ("mismatch", "train_prior.json", {"autoencoder_ckpt": str(root / "other_vqvae.pt")}, 2, "{root}/other_vqvae.pt: tensor 'quantizer.quantizer.embedding.weight' has shape [32, 8] in the checkpoint but [16, 8] in the network built from the config: set num_embeddings as in the run that wrote it"),
        ("truncated", "train_prior.json", {"autoencoder_ckpt": str(root / "truncated_vqvae.pt")}, 2, "{root}/truncated_vqvae.pt: is not a readable checkpoint: truncated or damaged"),
        ("empty_ckpt", "inference.json", {"prior_ckpt": str(root / "empty_vqvae.pt")}, 2, "{root}/empty_vqvae.pt: is empty (0 bytes): not a readable checkpoint"),
        ("random_ckpt", "evaluate.json", {"autoencoder_ckpt": str(root / "random_vqvae.pt")}, 2, "{root}/random_vqvae.pt: is not a readable checkpoint: not a file written by torch.save (4096 bytes)"),
        ("failed_run", "train_vqvae.json", {"learning_rate": -1.0}, 1, "the run failed: ValueError: Invalid learning rate: -1.0"),
    ]  # fmt: skip


def _check(rc: int, stdout: str, stderr: str, status: int, expected: str, name: str) -> None:
    line = _last_line(stderr)
    assert rc == status and rc != 134, f"{name}: exit {rc}\n{stderr[-3000:]}"
    assert line.startswith(f"brainvq: error: {expected}"), f"{name}: {line!r}"
    assert "Traceback" not in stdout + stderr, f"{name}: traceback printed"
    assert "weights_only=False" not in stdout + stderr


def test_bad_input_matrix(setup):
    for name, config, overrides, status, expected in _cases(setup):
        args, run = _case(setup, name, config, **overrides)
        expected = expected.format(
            root=setup["root"],
            run=run,
            datalist=overrides.get("datalist", ""),
            image=setup["datalist"]["validation"][0]["image"],
        )
        rc, stdout, stderr = setup["server"].run(args)
        _check(rc, stdout, stderr, status, expected, name)
        assert not (setup["data"] / "runs").exists()


def test_3d_bundle_refuses_2d_data(setup):
    args, _ = _case(setup, "3d_format", dims=3, data_format="adni")
    rc, stdout, stderr = setup["server"].run(args)
    _check(rc, stdout, stderr, 2, "data_format: the 3D bundle trains on volumes: it must be 'nifti', got 'adni'", "3d")


def test_debug_switch_shows_the_traceback(setup):
    args, _ = _case(setup, "debug", amp="flase")
    rc, _, stderr = setup["server"].run(args, env={"BRAINVQ_DEBUG": "1"})
    assert (
        rc == 2
        and "Traceback" in stderr
        and _last_line(stderr) == "brainvq: error: amp: must be true or false, got 'flase'"
    )


@pytest.mark.parametrize("name", ["amp", "truncated", "failed_run"])
def test_fresh_interpreter(setup, name):
    """The same cases through a genuine ``python -m monai.bundle run`` process."""
    case = next(c for c in _cases(setup) if c[0] == name)
    _, config, overrides, status, expected = case
    args, run = _case(setup, f"fresh_{name}", config, **overrides)
    expected = expected.format(root=setup["root"], run=run, datalist="", image="")
    proc = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(), cwd=str(REPO), timeout=600)
    _check(proc.returncode, proc.stdout, proc.stderr, status, expected, name)
    shutil.rmtree(run, ignore_errors=True)
