"""The MONAI bundles: properties, offline checks, and every config run for one tiny epoch on CPU, both through
``monai.bundle.ConfigWorkflow`` (in process) and through ``python -m monai.bundle run`` (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from bundle_helpers import BUNDLES, run_cli, run_workflow, subprocess_env, tiny
from conftest import REPO
from monai.bundle import ConfigWorkflow

from brainvq_monai.bundle.layout import config_files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_2d(tmp_path_factory, demo_cohort):
    """The 2D bundle's configs run in process: VQ-VAE, both priors, evaluation, sampling."""
    root = tmp_path_factory.mktemp("bundle2d")
    run_workflow(2, "train_vqvae.json", tiny(2, "train_vqvae.json", root, demo_cohort))
    pixelcnn = {**tiny(2, "train_prior.json", root, demo_cohort, "pixelcnn"), "prior_ckpt": str(root / "pixelcnn.pt")}
    run_workflow(2, "train_prior.json", pixelcnn)  # a second prior of the same bundle: its own weights file
    run_workflow(2, "train_prior.json", tiny(2, "train_prior.json", root, demo_cohort, "transformer"))
    run_workflow(2, "evaluate.json", tiny(2, "evaluate.json", root, demo_cohort))
    run_workflow(2, "inference.json", {**tiny(2, "inference.json", root, demo_cohort), "class_label": 1})
    return root


def test_2d_workflow_outputs(trained_2d):
    root = trained_2d
    models = {p.name for p in (root / "models").iterdir()}
    assert {"model_autoencoder.pt", "model_autoencoder_last.pt", "model.pt", "model_last.pt"} <= models
    assert (root / "pixelcnn.pt").is_file()
    last = torch.load(root / "models" / "model_autoencoder_last.pt", weights_only=True)
    assert {"model", "optimizer", "trainer", "lr_scheduler"} <= set(last)
    metrics = json.loads((root / "runs" / "metrics.json").read_text())
    rec, prior = metrics["reconstruction"]["metrics"], metrics["prior"]["metrics"]
    for key in ("test_ssim", "test_psnr", "test_mae", "test_mse", "test_ms_ssim", "test_perplexity", "test_codes_used"):
        assert key in rec and rec[key] == rec[key]  # present and not NaN
    assert 1 <= rec["test_codes_used"] <= 16 and 1.0 <= rec["test_perplexity"] <= 16.0
    assert 0 < prior["test_nll"] < 10 and prior["test_bits_per_dim"] > 0
    assert metrics["reconstruction"]["split"] == "test" and metrics["reconstruction"]["num_images"] > 0
    ssim_rows = (root / "runs" / "test_ssim_raw.csv").read_text().strip().splitlines()
    assert len(ssim_rows) == metrics["reconstruction"]["num_images"] + 1  # header + one row per test image
    samples = sorted((root / "runs" / "samples").glob("*.png"))
    assert len(samples) == 2 and all("_AD_" in p.name for p in samples)  # class_label=1 is AD


def test_2d_tensorboard_logs(trained_2d):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    vq = EventAccumulator(str(trained_2d / "runs" / "tensorboard" / "vqvae"), size_guidance={"images": 0}).Reload()
    tags = vq.Tags()
    assert {"loss", "recon_loss", "quant_loss", "lr", "val_ssim", "val_psnr", "val_codes_used"} <= set(tags["scalars"])
    assert "reconstruction" in tags["images"] and "codebook/usage" in tags["histograms"]
    assert (trained_2d / "runs" / "tensorboard" / "vqvae" / "projector_config.pbtxt").is_file()
    prior = EventAccumulator(str(trained_2d / "runs" / "tensorboard" / "prior_transformer")).Reload()
    assert {"loss", "val_nll", "lr"} <= set(prior.Tags()["scalars"]) and "prior_samples" in prior.Tags()["images"]


def test_adversarial_term_from_the_config(demo_cohort, tmp_path):
    over = tiny(2, "train_vqvae.json", tmp_path, demo_cohort)
    over.update({"adversarial_weight": 0.1, "discriminator_def#channels": 4, "discriminator_def#num_layers_d": 1})
    workflow = run_workflow(2, "train_vqvae.json", over)
    output = workflow.parser.get_parsed_content("train#trainer").state.output
    assert "discriminator_loss" in output and "generator_loss" in output
    last = torch.load(tmp_path / "models" / "model_autoencoder_last.pt", weights_only=True)
    assert {"discriminator", "discriminator_optimizer"} <= set(last)


def test_resume_from_last_checkpoint(trained_2d, demo_cohort):
    over = tiny(2, "train_vqvae.json", trained_2d, demo_cohort)
    first = torch.load(trained_2d / "models" / "model_autoencoder_last.pt", weights_only=True)["trainer"]
    run_workflow(2, "train_vqvae.json", {**over, "resume": True, "max_epochs": 2})
    second = torch.load(trained_2d / "models" / "model_autoencoder_last.pt", weights_only=True)["trainer"]
    # ignite keeps the iteration count: the resumed run continued from epoch 1 and ran exactly one more epoch
    assert first["max_epochs"] == 1 and second["max_epochs"] == 2
    assert first["iteration"] == first["epoch_length"] and second["iteration"] == 2 * first["iteration"]


def test_every_config_through_monai_bundle_run(demo_cohort, tmp_path):
    """`python -m monai.bundle run` for every workflow of the 2D bundle, in pipeline order, with overrides (the 3D
    bundle has the same overlays, run in process by tests/test_zoo_checks.py and through the CLI by the
    fault-injection and bad-input tests)."""
    for config in ("train_vqvae.json", "train_prior.json", "evaluate.json", "inference.json"):
        run_cli(2, config, tiny(2, config, tmp_path, demo_cohort))
    metrics = json.loads((tmp_path / "runs" / "metrics.json").read_text())
    assert {"reconstruction", "prior"} <= set(metrics)
    assert len(list((tmp_path / "runs" / "samples").glob("*.png"))) == 4  # 2 per class (NC, AD)


def test_prior_without_a_trained_vqvae_is_one_line(demo_cohort, tmp_path):
    """The prior workflow before ``train_vqvae``: one line naming the missing checkpoint (3D bundle)."""
    from brainvq_monai.cli import find_brainvq_error

    with pytest.raises(Exception) as err:  # noqa: PT011 - MONAI wraps it; the cause is checked below
        run_workflow(3, "train_prior.json", tiny(3, "train_prior.json", tmp_path, demo_cohort))
    assert "model_autoencoder.pt: VQ-VAE checkpoint not found" in str(find_brainvq_error(err.value))


def test_pixelcnn_refuses_3d(demo_cohort, tmp_path):
    from brainvq_monai.cli import find_brainvq_error

    over = tiny(3, "train_prior.json", tmp_path, demo_cohort) | {"prior": "pixelcnn"}
    cfg = BUNDLES[3] / "configs"
    workflow = ConfigWorkflow(
        config_files(BUNDLES[3], "train_prior"), str(cfg / "metadata.json"), False, workflow_type=None, **over
    )
    with pytest.raises(Exception) as err:  # noqa: PT011 - MONAI wraps it; the cause is checked below
        workflow.initialize()  # records the networks it trains: builds network_def
        workflow.parser.get_parsed_content("network_def")
    cause = find_brainvq_error(err.value)
    assert cause is not None and "GatedPixelCNN is 2D only" in str(cause)


def test_torchrun_gloo_two_ranks_identical_codebook(demo_cohort, tmp_path):
    """`torchrun --nproc_per_node=2 -m monai.bundle run` with multi_gpu_train.json, on CPU (gloo)."""
    check = tmp_path / "save_codebook.json"
    check.write_text(
        json.dumps(
            {
                "finalize": [
                    "$torch.save(brainvq_monai.networks.nets.codebook_embeddings(@network_def).detach().cpu().clone(), "
                    "@ckpt_dir + '/codebook_rank' + str(torch.distributed.get_rank()) + '.pt')",
                    "$torch.save(@train#trainer.state.iteration, "
                    "@ckpt_dir + '/iteration_rank' + str(torch.distributed.get_rank()) + '.pt')",
                    "$torch.distributed.destroy_process_group()",
                ]
            }
        )
    )

    def torchrun_two_ranks(config: str, extra: dict | None = None) -> None:
        files = json.dumps([*config_files(BUNDLES[2], config, multi_gpu=True), str(check)])
        over = {**tiny(2, config, tmp_path, demo_cohort), "batch_size": 4, **(extra or {})}
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
        args += ["monai.bundle", "run", "--config_file", files]
        for k, v in over.items():
            args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
        proc = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(), cwd=str(REPO), timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    torchrun_two_ranks("train_vqvae.json")
    a = torch.load(tmp_path / "models" / "codebook_rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "models" / "codebook_rank1.pt", weights_only=True)
    assert torch.equal(a, b)
    assert (tmp_path / "models" / "model_autoencoder_last.pt").is_file()  # rank 0 saved the checkpoint

    # --resume true with one more epoch: every rank loads the last checkpoint (rank 0 alone writes it), so both
    # continue at epoch 2 in step (a rank that started afresh would run two epochs and leave its peer waiting)
    epoch_length = torch.load(tmp_path / "models" / "model_autoencoder_last.pt", weights_only=True)["meta"][
        "epoch_length"
    ]
    torchrun_two_ranks("train_vqvae.json", {"resume": "true", "max_epochs": 2})
    its = [torch.load(tmp_path / "models" / f"iteration_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert its == [2 * epoch_length] * 2
    assert torch.load(tmp_path / "models" / "model_autoencoder_last.pt", weights_only=True)["meta"]["epoch"] == 2
    a = torch.load(tmp_path / "models" / "codebook_rank0.pt", weights_only=True)
    assert torch.equal(a, torch.load(tmp_path / "models" / "codebook_rank1.pt", weights_only=True))

    # the prior on the same ranks: codes_dataloader batches the DistributedSampler's shard, DDP keeps weights equal
    check.write_text(
        json.dumps(
            {
                "finalize": [
                    "$torch.save({k: v.detach().cpu().clone() for k, v in @network_def.state_dict().items()}, "
                    "@ckpt_dir + '/prior_rank' + str(torch.distributed.get_rank()) + '.pt')",
                    "$torch.save(len(@train#dataloader), @ckpt_dir + '/batches_rank' "
                    "+ str(torch.distributed.get_rank()) + '.pt')",
                    "$torch.distributed.destroy_process_group()",
                ]
            }
        )
    )
    # two epochs under a time budget: the ranks agree on the (slowest rank's) elapsed time, so they cap alike
    torchrun_two_ranks("train_prior.json", {"time_budget_s": 3600, "max_epochs": 2})
    p0 = torch.load(tmp_path / "models" / "prior_rank0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "models" / "prior_rank1.pt", weights_only=True)
    assert p0.keys() == p1.keys() and all(torch.equal(p0[k], p1[k]) for k in p0)
    n_train = len(json.loads((tmp_path / "runs" / "datalist_adni.json").read_text())["training"])
    batches = torch.load(tmp_path / "models" / "batches_rank0.pt", weights_only=True)
    assert (
        batches == torch.load(tmp_path / "models" / "batches_rank1.pt", weights_only=True) == -(-n_train // 2) // 4
    )  # half each
