"""The DCGAN prior: network contract, sampling through the shared inferer, no likelihood, adversarial trainer."""

from __future__ import annotations

import pytest
import torch

from brainvq_monai.engines import DCGANTrainer, GeneratedCodesEvaluator, prior_evaluator, prior_trainer
from brainvq_monai.inferers import AutoregressivePriorInferer
from brainvq_monai.metrics import CodeMapDivergence, jensen_shannon_bits
from brainvq_monai.networks.nets import DCGANPrior, TransformerPrior, build_prior
from brainvq_monai.utils.errors import BrainVQInputError

K, D = 16, 8


def tiny_dcgan(spatial_dims: int = 2, latent=(8, 8), num_classes: int | None = 2, **kwargs) -> DCGANPrior:
    torch.manual_seed(0)
    args = {"noise_dim": 8, "generator_channels": (16, 8), "discriminator_channels": (8, 16), **kwargs}
    net = build_prior("dcgan", spatial_dims, K, latent, num_classes, dcgan={"embedding_dim": D, **args})
    net.set_codebook(torch.randn(K, D) * 5 + 3)
    return net


def code_batches(n: int = 16, latent=(8, 8), batch_size: int = 8, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, K, (n, *latent), generator=gen)
    codes[..., 0] = 0  # some structure: a background column
    labels = torch.arange(n) % 2
    return [{"codes": codes[i : i + batch_size], "label": labels[i : i + batch_size]} for i in range(0, n, batch_size)]


@pytest.mark.parametrize("spatial_dims,latent", [(2, (8, 8)), (2, (5, 7)), (3, (4, 6, 5))])
def test_generator_maps_noise_to_code_logits_of_any_latent_shape(spatial_dims, latent):
    net = tiny_dcgan(spatial_dims, latent)
    logits = net(net.noise(3), torch.tensor([0, 1, 1]))
    assert logits.shape == (3, K, *latent)
    embeddings = net.embed_logits(logits)
    assert embeddings.shape == (3, D, *latent)
    # straight-through: the forward pass holds exact codebook vectors, and gradients reach the logits
    flat = embeddings.movedim(1, -1).reshape(-1, D)
    assert (flat[:, None] - net.codebook[None]).abs().sum(-1).min(dim=1).values.max() < 1e-5
    embeddings.sum().backward()
    assert net.generator.head.weight.grad is not None and net.generator.head.weight.grad.abs().sum() > 0
    assert net.discriminate(embeddings.detach(), torch.tensor([0, 1, 1])).shape == (3,)


def test_codebook_is_standardised_and_checked():
    net = tiny_dcgan()
    assert torch.allclose(net.codebook.mean(0), torch.zeros(D), atol=1e-5)
    assert torch.allclose(net.codebook.std(0), torch.ones(D), atol=1e-4)
    with pytest.raises(BrainVQInputError, match="autoencoder.*codebook"):
        net.set_codebook(torch.randn(K, D + 1))


def test_sampling_through_the_inferer_is_seeded_class_conditional_and_one_pass():
    net = tiny_dcgan()
    inferer = AutoregressivePriorInferer()
    labels = torch.tensor([0, 0, 1, 1])
    a = inferer.sample_codes(net, 4, class_labels=labels, generator=3)
    b = inferer.sample_codes(net, 4, class_labels=labels, generator=3)
    assert a.shape == (4, 8, 8) and a.dtype == torch.long and torch.equal(a, b)
    assert 0 <= int(a.min()) and int(a.max()) < K
    greedy = inferer.sample_codes(net, 4, class_labels=labels, temperature=0, generator=3)
    logits = net.sample_logits(4, labels, torch.Generator().manual_seed(3))
    assert torch.equal(greedy, logits.argmax(1))
    # class conditioning changes the maps drawn from the same noise
    assert not torch.equal(net.sample_logits(2, torch.tensor([0, 0]), torch.Generator().manual_seed(1)),
                           net.sample_logits(2, torch.tensor([1, 1]), torch.Generator().manual_seed(1)))  # fmt: skip
    with pytest.raises(ValueError, match="spatial_shape"):
        inferer.sample_codes(net, 2, latent_shape=(4, 4), class_labels=torch.tensor([0, 1]))
    assert net.generator(net.noise(2)).shape == (2, K, 8, 8)  # no class given: the mean class embedding


def test_ema_generator_samples_once_updated():
    net = tiny_dcgan()
    assert net.sampling_generator() is net.generator
    with torch.no_grad():
        for p in net.generator.parameters():
            p.add_(1.0)
    net.update_ema()
    assert net.sampling_generator() is net.generator_ema and int(net.ema_updates) == 1
    # first update: decay min(0.999, 1/10) -> the average moved 90% of the way
    for avg, new in zip(net.generator_ema.parameters(), net.generator.parameters()):
        assert not avg.requires_grad
        assert torch.allclose(avg, new, atol=0.2)
    assert tiny_dcgan(ema_decay=None).generator_ema is None


def test_no_likelihood_is_one_clear_error():
    net = tiny_dcgan()
    inferer = AutoregressivePriorInferer()
    codes = torch.zeros(2, 8, 8, dtype=torch.long)
    for call in (
        lambda: inferer.get_likelihood(codes, None, net),
        lambda: inferer.get_anomaly_map(torch.rand(2, 1, 32, 32), object(), net),
        lambda: inferer.heal(torch.rand(2, 1, 32, 32), object(), net, 0.5),
    ):
        with pytest.raises(BrainVQInputError, match="prior:.*no.*likelihood|has none"):
            call()


def test_bad_settings_are_one_line_errors():
    with pytest.raises(BrainVQInputError, match="dcgan#generator_channels"):
        build_prior("dcgan", 2, K, (8, 8), 2, dcgan={"embedding_dim": D, "generator_channels": []})
    with pytest.raises(BrainVQInputError, match="dcgan#ema_decay"):
        build_prior("dcgan", 2, K, (8, 8), 2, dcgan={"embedding_dim": D, "ema_decay": 1.5})
    with pytest.raises(BrainVQInputError, match="prior: must be one of pixelcnn, transformer, dcgan"):
        build_prior("gan", 2, K, (8, 8), 2)


def _trainer(net, batches, **kwargs) -> DCGANTrainer:
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    return DCGANTrainer("cpu", 1, batches, net, optimizer, epoch_length=len(batches), **kwargs)


def test_each_step_moves_only_its_own_network():
    net = tiny_dcgan()
    trainer = _trainer(net, code_batches())
    trainer.state.device = torch.device("cpu")
    g0 = [p.detach().clone() for p in net.generator.parameters()]
    d0 = [p.detach().clone() for p in net.discriminator.parameters()]
    codes = code_batches()[0]["codes"]
    labels = torch.tensor([0, 1] * 4)
    trainer._discriminator_step(net.embed_codes(codes), labels)
    assert all(torch.equal(a, b) for a, b in zip(g0, net.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, net.discriminator.parameters()))
    d1 = [p.detach().clone() for p in net.discriminator.parameters()]
    trainer.state.output = {}
    trainer._generator_step(8, labels)
    assert all(torch.equal(a, b) for a, b in zip(d1, net.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g0, net.generator.parameters()))
    assert all(p.requires_grad for p in net.discriminator.parameters())  # unfrozen again
    assert int(net.ema_updates) == 1


def test_trainer_runs_and_reports_both_losses_and_discriminator_probabilities():
    net = tiny_dcgan()
    outputs = []
    trainer = prior_trainer(
        network=net, device="cpu", max_epochs=2, train_data_loader=code_batches(),
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999)),
        adversarial={"d_steps": 2, "grad_clip_norm": None},
    )  # fmt: skip
    assert isinstance(trainer, DCGANTrainer) and trainer.d_steps == 2
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    assert len(outputs) == 4 and int(net.ema_updates) == 4
    for out in outputs:
        assert {"loss", "g_loss", "d_loss", "d_real", "d_fake"} <= set(out)
        assert 0 <= float(out["d_real"]) <= 1 and 0 <= float(out["d_fake"]) <= 1
        assert torch.isfinite(out["g_loss"]) and torch.isfinite(out["d_loss"])


def test_trainer_refuses_what_it_cannot_train():
    batches = code_batches()
    transformer = TransformerPrior(2, K, (8, 8), 2, attn_layers_dim=8, attn_layers_depth=1, attn_layers_heads=1)
    with pytest.raises(BrainVQInputError, match="network: DCGANTrainer trains a DCGANPrior"):
        _trainer(transformer, batches)
    with pytest.raises(BrainVQInputError, match="d_steps"):
        _trainer(tiny_dcgan(), batches, d_steps=0)
    bare = build_prior("dcgan", 2, K, (8, 8), 2, dcgan={"embedding_dim": D, "noise_dim": 4})
    with pytest.raises(BrainVQInputError, match="autoencoder: the DCGAN prior needs the VQ-VAE's codebook"):
        _trainer(bare, batches)


def test_validation_compares_generated_with_real_codes():
    from brainvq_monai.engines import prior_additional_metrics, prior_key_metric

    net = tiny_dcgan()
    evaluator = prior_evaluator(
        network=net, device="cpu", val_data_loader=code_batches(), seed=5,
        key_val_metric=prior_key_metric(net, "val"), additional_metrics=prior_additional_metrics(net, "val", 16.0),
    )  # fmt: skip
    assert isinstance(evaluator, GeneratedCodesEvaluator)
    evaluator.run()
    first = dict(evaluator.state.metrics)
    assert set(first) == {"val_code_js", "val_generated_codes_used"}
    assert 0 < first["val_code_js"] <= 1 and 1 <= first["val_generated_codes_used"] <= K
    evaluator.run()  # the same seeded noise at every validation
    assert evaluator.state.metrics == first


def test_code_map_divergence_sees_codes_and_where_they_are():
    a = torch.randint(0, K, (20, 8, 8), generator=torch.Generator().manual_seed(0))
    metric = CodeMapDivergence(K, regions=4)
    metric.update((a, a))
    assert metric.compute() == pytest.approx(0.0, abs=1e-12)
    metric.reset()
    metric.update((torch.zeros(4, 8, 8, dtype=torch.long), torch.ones(4, 8, 8, dtype=torch.long)))
    assert metric.compute() == pytest.approx(1.0)
    # the same codes moved to other places: one global histogram cannot tell, the regions can
    left = torch.zeros(4, 8, 8, dtype=torch.long)
    left[..., 4:] = 1
    right = 1 - left
    metric.reset()
    metric.update((left, right))
    assert metric.compute() == pytest.approx(1.0)
    whole = CodeMapDivergence(K, regions=1)
    whole.update((left, right))
    assert whole.compute() == pytest.approx(0.0, abs=1e-12)
    assert float(jensen_shannon_bits(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]))) == pytest.approx(
        0.3113, abs=1e-3
    )


@pytest.mark.slow
@pytest.mark.parametrize("dims", [2])
def test_bundle_trains_evaluates_and_samples_the_dcgan_prior(dims, tmp_path, demo_cohort, capsys):
    """``train_prior.json --prior dcgan`` (the 2D bundle through ``python -m monai.bundle run``), then the test
    workflow and sampling with the same configs as the other priors; TensorBoard gets both losses and D(real)/D(fake).
    The 3D bundle has the same overlays (tested byte-identical); a DCGAN on 3D codes trains through the same trainer in
    ``tests/test_compare.py`` (``compare --run`` on the 3D bundle run)."""
    import json

    from bundle_helpers import run_cli, run_workflow, tiny
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def over(workflow: str) -> dict:
        return {**tiny(dims, workflow, tmp_path, demo_cohort, prior="dcgan"), "max_epochs": 2}

    run_workflow(dims, "train_vqvae", over("train_vqvae"))
    if dims == 2:
        run_cli(dims, "train_prior", over("train_prior"))  # the command line a user runs, with --prior dcgan
    else:
        run_workflow(dims, "train_prior", over("train_prior"))
    run_workflow(dims, "evaluate", over("evaluate"))
    run_workflow(dims, "inference", over("inference"))
    runs = tmp_path / "runs"
    prior = json.loads((runs / "metrics.json").read_text())["prior"]
    assert prior["prior"] == "dcgan" and prior["likelihood"].startswith("none")
    assert set(prior["metrics"]) == {"test_code_js", "test_generated_codes_used"}
    assert sorted(p.name for p in (runs / "samples").glob("sample_*"))  # sampled without data
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("generator_ema.") for k in state) and "codebook" in state
    events = EventAccumulator(str(runs / "tensorboard" / "prior_dcgan"))
    events.Reload()
    assert {"g_loss", "d_loss", "d_real", "d_fake", "val_code_js"} <= set(events.Tags()["scalars"])
    assert "prior_samples" in events.Tags()["images"]
    if dims == 2:  # an exported DCGAN bundle declares a noise input, and the zoo's shape check passes
        from monai.bundle import verify_net_in_out

        from brainvq_monai.bundle.export import export_bundle

        exported = tmp_path / "exported"
        export_bundle(tmp_path, exported)
        meta = json.loads((exported / "configs" / "metadata.json").read_text())
        noise = meta["network_data_format"]["inputs"]["image"]
        assert noise["type"] == "noise" and noise["num_channels"] == 8 and noise["spatial_shape"] == []
        verify_net_in_out(
            net_id="network_def", meta_file=str(exported / "configs" / "metadata.json"),
            config_file=str(exported / "configs" / "inference.json"), device="cpu",
        )  # fmt: skip
    if dims == 2:  # the anomaly command needs a likelihood: one line, exit status 2, before any work
        from brainvq_monai.cli import main

        assert main(["anomaly", "--run", str(tmp_path), "--out", str(tmp_path / "anomaly")]) == 2
        assert not (tmp_path / "anomaly").exists()
        assert "anomaly maps need a likelihood" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dcgan_trains_under_bf16_and_samples_on_cuda():
    net = tiny_dcgan().cuda()
    batches = [{k: v.cuda() for k, v in b.items()} for b in code_batches()]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999), fused=True)
    trainer = DCGANTrainer("cuda", 2, batches, net, optimizer, amp=True, epoch_length=len(batches))
    trainer.run()
    assert torch.isfinite(trainer.state.output["g_loss"]) and torch.isfinite(trainer.state.output["d_loss"])
    codes = AutoregressivePriorInferer().sample_codes(
        net, 4, class_labels=torch.tensor([0, 1, 0, 1]).cuda(), generator=0
    )
    assert codes.is_cuda and codes.shape == (4, 8, 8) and int(codes.max()) < K


def test_a_gan_keeps_its_latest_weights_and_trains_its_whole_budget():
    from types import SimpleNamespace

    from brainvq_monai.engines import key_metric_score, prior_metric_cmp_fn

    gan = tiny_dcgan()
    transformer = TransformerPrior(2, K, (8, 8), 2, attn_layers_dim=8, attn_layers_depth=1, attn_layers_heads=1)
    assert prior_metric_cmp_fn(gan)(0.9, 0.1) is True  # a worse code JS still replaces the kept weights
    assert prior_metric_cmp_fn(transformer)(0.9, 0.1) is False and prior_metric_cmp_fn(transformer)(0.1, 0.9)

    def evaluator(network, epoch, value, name):
        return SimpleNamespace(
            network=network, state=SimpleNamespace(epoch=epoch, metrics={name: value}, key_metric_name=name)
        )

    assert key_metric_score(evaluator(transformer, 3, 2.5, "val_nll")) == -2.5
    scores = [key_metric_score(evaluator(gan, e, 0.5, "val_code_js")) for e in (1, 2, 3)]
    assert scores == sorted(scores) and len(set(scores)) == 3  # always improving: early stopping never fires
