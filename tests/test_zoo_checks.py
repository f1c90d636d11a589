"""The MONAI model zoo's bundle verification (``ci/verify_bundle.py`` and its unit-test style), offline and in our own
code, over both source bundles and over a bundle exported from a tiny run:

* directory: ``configs/metadata.json``, ``LICENSE``, ``configs/inference.json``, ``models/model.pt`` (source
  bundles ship no weights: as the zoo's CI does for new bundles, random "fake" weights of ``network_def`` are
  written into a copy first), ``large_files.yml`` with an md5 per weight file for a bundle that ships weights;
* metadata against the schema kept in the repo (``brainvq_monai/schemas/meta_schema.json``), version and changelog,
  satisfiable ``required_packages_version``;
* data shape of ``network_def`` (the prior: codes in, logits out) and of the autoencoder (``reconstruction_def``
  with ``autoencoder_data_format``) through ``monai.bundle.verify_net_in_out``;
* export with the zoo's default ``ckpt_export`` (TorchScript scripting) for both weight files, the TorchScript
  modules equal to eager;
* every workflow through ``ConfigWorkflow`` with ``check_properties`` after ``initialize`` and a one-epoch run of
  every training workflow (tiny settings);
* an inference run from the exported bundle: ``python -m monai.bundle run --config_file configs/inference.json``
  from inside the folder, with no data anywhere near it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bundle_helpers import BUNDLES, run_workflow, subprocess_env, tiny
from conftest import REPO
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from brainvq_monai.bundle.export import export_bundle
from brainvq_monai.bundle.layout import AUTOENCODER_WEIGHTS, PRIOR_WEIGHTS, WORKFLOWS, config_files

pytestmark = pytest.mark.slow

SCHEMA = REPO / "brainvq_monai" / "schemas" / "meta_schema.json"
NECESSARY = ("configs/metadata.json", "LICENSE")
PREFERRED = ("models/model.pt", "configs/inference.json")


def _copy_bundle(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("runs", "data", "*.pt", "*.ts", "__pycache__"))
    return dest


def _inference_configs(bundle: Path) -> list[str]:
    """The zoo reads one inference file; a source bundle's inference is its layered list."""
    common = bundle / "configs" / "common.json"
    if common.is_file() and "autoencoder_def" not in json.loads((bundle / "configs" / "inference.json").read_text()):
        return config_files(bundle, "inference")
    return [str(bundle / "configs" / "inference.json")]


def _produce_fake_weights(bundle: Path) -> None:
    """``ci/verify_bundle.py::_produce_fake_weights``: random weights of ``network_def`` (and of the autoencoder)."""
    parser = ConfigParser()
    parser.read_config(_inference_configs(bundle))
    parser["bundle_root"] = str(bundle)
    (bundle / "models").mkdir(exist_ok=True)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / PRIOR_WEIGHTS)
    torch.save(parser.get_parsed_content("autoencoder_def").state_dict(), bundle / "models" / AUTOENCODER_WEIGHTS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, demo_cohort) -> Path:
    """A tiny run of the 2D bundle trained in place in a copy of it, exported with ``export_bundle``."""
    work = tmp_path_factory.mktemp("zoo")
    run = _copy_bundle(BUNDLES[2], work / "trained_2d")
    for workflow in ("train_vqvae", "train_prior", "evaluate"):
        over = tiny(2, workflow, run, demo_cohort)
        run_workflow(2, workflow, {**over, "bundle_root": str(run)})
    export_bundle(run, work / "exported")
    return work / "exported"


@pytest.fixture(params=["2d", "3d", "exported"])
def bundle(request, tmp_path) -> Path:
    """The bundle under verification, as the zoo's CI sees it (a source bundle gets fake weights in a copy)."""
    if request.param == "exported":
        return request.getfixturevalue("exported")
    copy = _copy_bundle(BUNDLES[int(request.param[0])], tmp_path / f"brain_vqvae_{request.param}")
    _produce_fake_weights(copy)
    return copy


def test_directory(bundle):
    for name in (*NECESSARY, *PREFERRED):
        assert (bundle / name).is_file(), f"{bundle.name}: necessary file {name} is missing"
    assert (bundle / "docs" / "data_license.txt").is_file() and (bundle / "docs" / "README.md").is_file()
    if bundle.name == "exported":  # a bundle that ships weights lists them for download, with their md5
        text = (bundle / "large_files.yml").read_text()
        for weights in (PRIOR_WEIGHTS, AUTOENCODER_WEIGHTS):
            digest = hashlib.md5((bundle / "models" / weights).read_bytes()).hexdigest()
            assert f'path: "models/{weights}"' in text and f'hash_val: "{digest}"' in text


def test_metadata_schema_version_and_packages(bundle, tmp_path):
    meta_file = bundle / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta_file), filepath=str(SCHEMA))
    meta = json.loads(meta_file.read_text())
    assert meta["version"] in meta["changelog"], "the version must have a changelog entry"
    versions = [tuple(int(x) for x in v.split(".")) for v in meta["changelog"]]
    assert tuple(int(x) for x in meta["version"].split(".")) == max(versions), "version is not the newest"
    # satisfiable: our own version is this package's, and every pin lies in the ranges this package requires
    from packaging.requirements import Requirement

    import brainvq_monai

    required = meta["required_packages_version"]
    assert required["brainvq_monai"] == brainvq_monai.__version__
    install_requires = (REPO / "setup.cfg").read_text().split("install_requires =")[1].split("\n\n")[0]
    ranges = {Requirement(r.strip()).name: Requirement(r.strip()) for r in install_requires.splitlines() if r.strip()}
    for name, version in required.items():
        if name in ranges:
            assert version in ranges[name].specifier, f"{name}=={version} is outside {ranges[name]}"
    assert meta["network_data_format"]["inputs"]["image"]["format"] == "indices"
    assert "autoencoder_data_format" in meta and "supported_apps" in meta
    # the schema is not a rubber stamp: metadata without "task" fails
    del meta["task"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="task"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))


def test_data_shape_of_network_def_and_autoencoder(bundle):
    meta = str(bundle / "configs" / "metadata.json")
    configs = _inference_configs(bundle)
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=configs, bundle_root=str(bundle), device="cpu")
    autoencoder_format = json.loads(Path(meta).read_text())["autoencoder_data_format"]
    verify_net_in_out(
        net_id="reconstruction_def",
        meta_file=meta,
        config_file=configs,
        bundle_root=str(bundle),
        device="cpu",
        **{"_meta_#network_data_format": autoencoder_format},
    )


def test_torchscript_export_by_scripting(bundle, tmp_path):
    """The zoo's default ``ckpt_export`` (scripting) of both weight files; the modules compute what eager does."""
    meta = str(bundle / "configs" / "metadata.json")
    configs = _inference_configs(bundle)
    parser = ConfigParser()
    parser.read_config(configs)
    parser["bundle_root"] = str(bundle)
    for net_id, weights in (("network_def", PRIOR_WEIGHTS), ("autoencoder_def", AUTOENCODER_WEIGHTS)):
        ts = tmp_path / f"{net_id}.ts"
        ckpt_export(
            net_id=net_id,
            filepath=str(ts),
            ckpt_file=str(bundle / "models" / weights),
            meta_file=meta,
            config_file=configs,
            bundle_root=str(bundle),
        )
        scripted = torch.jit.load(str(ts))
        eager = parser.get_parsed_content(net_id, lazy=False)
        eager.load_state_dict(torch.load(bundle / "models" / weights, weights_only=True))
        eager.eval()
        if net_id == "network_def":
            shape = parser.get_parsed_content("latent_shape")
            x = torch.randint(0, int(parser.get_parsed_content("num_embeddings")), (2, *shape))
            labels = torch.tensor([0, 1]) if eager.num_classes else None
            with torch.no_grad():
                torch.testing.assert_close(scripted(x, labels), eager(x, labels))
                torch.testing.assert_close(scripted(x[:, None].float(), labels), eager(x, labels))
        else:
            size = parser.get_parsed_content("spatial_size")
            x = torch.rand(1, 1, *size)
            with torch.no_grad():
                torch.testing.assert_close(scripted(x)[0], eager(x)[0])


@pytest.mark.parametrize(("dims", "data_format"), [(2, "adni"), (3, "nifti")])
def test_every_workflow_checks_its_properties_and_runs(dims, data_format, bundle_run, demo_cohort):
    """``ConfigWorkflow`` + ``check_properties`` after ``initialize`` (train / infer types), one epoch of each
    training workflow, then evaluation and sampling (the session's bundle run: ``run_workflow`` checks the
    properties of each), and anomaly scoring on what they trained."""
    root = bundle_run(dims, data_format)
    run_workflow(dims, "anomaly", {**tiny(dims, "anomaly", root, demo_cohort), "data_format": data_format})
    assert json.loads((root / "runs" / "run_settings.json").read_text())["settings"]["spatial_dims"] == dims
    metrics = json.loads((root / "runs" / "metrics.json").read_text())
    assert {"reconstruction", "prior"} <= set(metrics)
    suffix = ".png" if dims == 2 else ".nii.gz"
    samples = sorted((root / "runs" / "samples").glob(f"*{suffix}"))
    assert len(samples) == 4  # 2 per class
    assert (root / "runs" / "anomaly" / "scores.csv").is_file()
    if dims == 3:  # generated volumes on the centred RAS grid of pixdim, not an identity affine
        import nibabel as nib

        img = nib.load(str(samples[0]))
        assert img.shape == (16, 16, 16) and abs(img.affine[0, 0] - 8.0) < 1e-6 and img.affine[0, 3] != 0


def test_inference_from_the_exported_bundle_needs_no_data(exported, tmp_path):
    """From inside a copy of the exported folder, with no dataset anywhere: the zoo's single-file command."""
    copy = shutil.copytree(exported, tmp_path / "published")
    assert not (copy / "data").exists() and not (copy / "runs").exists()
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    args += ["--num_samples", "3", "--seed", "5"]
    proc = subprocess.run(args, cwd=copy, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    samples = sorted((copy / "runs" / "samples").glob("*.png"))
    assert [p.name for p in samples] == [f"sample_{c}_{i:04d}.png" for c in ("AD", "NC") for i in range(3)]
    record = json.loads((copy / "runs" / "samples" / "samples.json").read_text())
    assert record["seed"] == 5 and len(record["files"]) == 6
    common = json.loads((copy / "configs" / "common.json").read_text())
    assert common["bundle_root"] == "." and common["spatial_size"] == [32, 32]  # the run's settings, baked in
    assert common["prior_def"]["transformer"]["attn_layers_dim"] == 16


def test_the_3d_bundle_differs_from_the_2d_one_only_in_values():
    """One structure: the workflow overlays are the same files, ``common.json`` has the same IDs (values differ)."""
    configs = {dims: BUNDLES[dims] / "configs" for dims in (2, 3)}
    names = {dims: sorted(p.name for p in configs[dims].iterdir()) for dims in (2, 3)}
    assert names[2] == names[3]
    for overlay in (*WORKFLOWS.values(), "multi_gpu_train.json", "logging.conf"):
        assert (configs[2] / overlay).read_text() == (configs[3] / overlay).read_text(), overlay
    common = {dims: json.loads((configs[dims] / "common.json").read_text()) for dims in (2, 3)}
    assert list(common[2]) == list(common[3])
    assert common[2]["spatial_dims"] == 2 and common[3]["spatial_dims"] == 3
    # no config reaches into private attributes or picks list items by position
    for path in configs[2].glob("*.json"):
        text = path.read_text()
        assert "._" not in text.replace("_meta_", "") and "[:" not in text, path.name


def test_export_bundle_refusals_are_one_line(exported, tmp_path, capsys):
    from brainvq_monai.cli import main

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("user file")
    run = exported.parent / "trained_2d"
    assert main(["export-bundle", "--run", str(run), "--out", str(tmp_path / "busy")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "busy" / "mine.txt").read_text() == "user file"  # nothing written
    assert main(["export-bundle", "--run", str(tmp_path), "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run_settings.json" in err[0] and not (tmp_path / "new").exists()
