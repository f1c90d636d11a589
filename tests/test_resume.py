"""Resuming training runs of the bundles in process (``ConfigWorkflow``): what the last checkpoint holds, extending a
finished run (cosine LR re-targeted, best checkpoint kept), nothing-to-do, refusals, boolean overrides as strings."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from bundle_helpers import run_workflow, tiny

from brainvq_monai.utils.errors import find_brainvq_error
from brainvq_monai.utils.io import atomic_torch_save, load_torch_file

pytestmark = pytest.mark.slow


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.pt"))}


def _error_of(call) -> str:
    with pytest.raises(Exception) as err:  # noqa: PT011 - MONAI's config parser wraps it; the cause is checked
        call()
    cause = find_brainvq_error(err.value)
    assert cause is not None, err.value
    return str(cause)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, demo_cohort):
    """A finished 2-epoch VQ-VAE run of the 2D bundle (checkpoints written by the new handlers)."""
    root = tmp_path_factory.mktemp("resume2d")
    run_workflow(2, "train_vqvae.json", {**tiny(2, "train_vqvae.json", root, demo_cohort), "max_epochs": 2})
    return root


def test_last_checkpoint_holds_everything_and_loads_with_weights_only(two_epochs):
    last = load_torch_file(two_epochs / "models" / "model_autoencoder_last.pt")  # weights_only=True
    assert {
        "model",
        "optimizer",
        "lr_scheduler",
        "trainer",
        "buffers",
        "validator",
        "early_stop",
        "rng",
        "meta",
    } <= set(last)
    assert last["meta"]["epoch"] == 2 and last["meta"]["epoch_complete"] and last["meta"]["reason"] == "completed"
    assert last["trainer"]["iteration"] == 2 * last["trainer"]["epoch_length"]
    assert "quantizer.quantizer.recent_counts" in last["buffers"]["model"]  # non-persistent, needed to resume exactly
    assert {"torch", "numpy", "python", "transforms", "stateful"} <= set(last["rng"]["now"])
    assert "augment" in last["rng"]["now"]["stateful"]["prepare_batch"]  # the on-device augmentation's generator
    assert last["validator"]["key_metric_name"] == "val_ssim" and last["validator"]["best_metric_epoch"] >= 1
    best = load_torch_file(two_epochs / "models" / "model_autoencoder.pt")
    assert set(best) == set(last["model"])  # a plain state dict (the zoo's models/model*.pt), no wrapper keys
    if last["validator"]["best_metric_epoch"] == 2:  # the best epoch is the last one: the same weights
        assert all(torch.equal(best[k], last["model"][k]) for k in best)


def test_resume_without_last_checkpoint_is_an_error(demo_cohort, tmp_path):
    over = {**tiny(2, "train_vqvae.json", tmp_path, demo_cohort), "resume": "true"}
    msg = _error_of(lambda: run_workflow(2, "train_vqvae.json", over))
    assert (
        msg.startswith(str(tmp_path / "models" / "model_autoencoder_last.pt"))
        and "no last checkpoint to resume from" in msg
    )
    assert not (tmp_path / "models" / "model_autoencoder.pt").exists()  # not a fresh start


def test_extending_a_finished_run(two_epochs, demo_cohort, tmp_path):
    """2 -> 4 epochs: the cosine schedule is re-targeted to T_max=4 (as if configured for 4 epochs), and a best
    metric that later epochs cannot beat keeps the best checkpoint untouched."""
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    shutil.copytree(two_epochs / "models", tmp_path / "models")
    shutil.copytree(two_epochs / "runs", tmp_path / "runs")
    last_file = tmp_path / "models" / "model_autoencoder_last.pt"
    last = load_torch_file(last_file)
    last["validator"]["best_metric"] = 1.0  # a perfect SSIM at epoch 2: no later epoch may replace vqvae.pt
    last["validator"]["best_metric_epoch"] = 2
    atomic_torch_save(last, last_file)
    best_before = _digest(tmp_path / "models")["model_autoencoder.pt"]
    over = {**tiny(2, "train_vqvae.json", tmp_path, demo_cohort), "resume": True, "max_epochs": 4}
    run_workflow(2, "train_vqvae.json", over)
    after = load_torch_file(last_file)
    assert after["meta"]["epoch"] == 4 and after["lr_scheduler"]["T_max"] == 4
    assert after["validator"]["best_metric"] == 1.0 and after["validator"]["best_metric_epoch"] == 2
    assert _digest(tmp_path / "models")["model_autoencoder.pt"] == best_before
    base = 2e-4  # the config's learning_rate
    lrs = {
        e.step: e.value
        for e in EventAccumulator(str(tmp_path / "runs" / "tensorboard" / "vqvae")).Reload().Scalars("lr")
    }
    for epoch in (3, 4):  # logged after each epoch's step: the rate of the next epoch, on the 4-epoch cosine
        assert lrs[epoch] == pytest.approx(base * (1 + math.cos(math.pi * epoch / 4)) / 2, rel=1e-5, abs=1e-12)


def test_resuming_a_finished_run_does_nothing(two_epochs, demo_cohort, tmp_path):
    import shutil

    shutil.copytree(two_epochs / "models", tmp_path / "models")
    before = _digest(tmp_path / "models")
    over = {**tiny(2, "train_vqvae.json", tmp_path, demo_cohort), "resume": "True", "max_epochs": 2}
    workflow = run_workflow(2, "train_vqvae.json", over)
    assert workflow.parser.get_parsed_content("train#trainer").state.iteration == 0  # no step was taken
    assert _digest(tmp_path / "models") == before
    over["max_epochs"] = 1
    msg = _error_of(lambda: run_workflow(2, "train_vqvae.json", over))
    assert msg.startswith("max_epochs: is 1 but") and "already holds 2 epochs" in msg


def test_resume_refuses_other_settings(two_epochs, demo_cohort, tmp_path):
    import shutil

    shutil.copytree(two_epochs / "models", tmp_path / "models")
    base = {**tiny(2, "train_vqvae.json", tmp_path, demo_cohort), "resume": True, "max_epochs": 3}
    last = str(tmp_path / "models" / "model_autoencoder_last.pt")
    msg = _error_of(lambda: run_workflow(2, "train_vqvae.json", {**base, "autoencoder_def#channels": [8, 32]}))
    assert msg.startswith(last) and "in the checkpoint but" in msg and "set autoencoder_def#channels" in msg
    adv = {**base, "adversarial_weight": 0.1, "discriminator_def#channels": 4, "discriminator_def#num_layers_d": 1}
    msg = _error_of(lambda: run_workflow(2, "train_vqvae.json", adv))
    assert msg.startswith(last) and "no 'discriminator' state" in msg and "adversarial_weight" in msg
    (tmp_path / "models" / "model_autoencoder_last.pt").write_bytes(b"")
    msg = _error_of(lambda: run_workflow(2, "train_vqvae.json", base))
    assert msg == f"{last}: is empty (0 bytes): not a readable training checkpoint"


def test_boolean_overrides_as_strings(demo_cohort, tmp_path):
    """What MONAI's command line passes for --amp false etc.: strings, parsed, never truthy."""
    over = {
        **tiny(2, "train_vqvae.json", tmp_path, demo_cohort),
        "amp": "false",
        "compile": "False",
        "channels_last": "FALSE",
        "augment_on_device": "false",
        "resume": "false",
        "create_demo_data": "false",
    }
    workflow = run_workflow(2, "train_vqvae.json", over)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.use_amp is False and trainer.compiled is False and trainer.channels_last is False
    from brainvq_monai.engines.utils import prepare_images

    assert trainer.prepare_batch is prepare_images  # no on-device augmentation
    assert any(
        "RandAffine" in type(t).__name__ for t in workflow.parser.get_parsed_content("train#preprocessing").transforms
    )
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    assert evaluator.use_amp is False and evaluator.channels_last is False
    msg = _error_of(lambda: run_workflow(2, "train_vqvae.json", {**over, "amp": "flase"}))
    assert msg == "amp: must be true or false, got 'flase'"
    assert torch.load(tmp_path / "models" / "model_autoencoder_last.pt", weights_only=True)["meta"]["epoch"] == 1
