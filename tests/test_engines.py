"""Engines, metrics and handlers on tiny random data (no bundle configs)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from ignite.engine import Engine, Events
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator

from brainvq_monai.data.codes import CodesDataset
from brainvq_monai.engines import PriorEvaluator, PriorTrainer, VQVAEEvaluator, VQVAETrainer, lower_is_better
from brainvq_monai.handlers import MetricsJSONWriter, MultiScaleSSIMHandler, SSIMHandler
from brainvq_monai.metrics import CodebookPerplexity, CodesUsed, PriorNLL, histogram_perplexity, multiscale_ssim_metric
from brainvq_monai.networks.nets import GatedPixelCNN


def _images(n: int = 8) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(1, 16, 16, generator=gen), "label": i % 2} for i in range(n)]


def test_vqvae_trainer_with_adversarial_term_updates_both_networks(tiny_vqvae):
    net = tiny_vqvae()
    disc = PatchDiscriminator(spatial_dims=2, num_layers_d=1, channels=4, in_channels=1, out_channels=1)
    before = [p.detach().clone() for p in disc.parameters()]
    loader = torch.utils.data.DataLoader(_images(), batch_size=4)
    trainer = VQVAETrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        discriminator=disc,
        discriminator_optimizer=torch.optim.Adam(disc.parameters(), 1e-3),
        adversarial_loss=PatchAdversarialLoss(criterion="least_squares"),
        adversarial_weight=0.1,
        grad_clip_norm=1.0,
    )
    trainer.run()
    out = trainer.state.output
    assert {"loss", "recon_loss", "quant_loss", "generator_loss", "discriminator_loss", "indices"} <= set(out)
    assert out["indices"].shape == (4, 4, 4) and out["pred"].shape == (4, 1, 16, 16)
    assert math.isfinite(float(out["loss"])) and float(out["discriminator_loss"]) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters()))
    with pytest.raises(ValueError, match="discriminator"):
        VQVAETrainer("cpu", 1, loader, net, torch.optim.Adam(net.parameters()), discriminator=disc)


def test_vqvae_evaluator_metrics_and_frozen_codebook(tiny_vqvae):
    net = tiny_vqvae()
    net.train()
    net(torch.rand(4, 1, 16, 16))  # data init
    codebook = net.ema_quantizer.embedding.weight.detach().clone()
    loader = torch.utils.data.DataLoader(_images(), batch_size=4)
    evaluator = VQVAEEvaluator(
        "cpu",
        loader,
        net,
        key_val_metric={"ssim": SSIMHandler(spatial_dims=2, kernel_size=3)},
        additional_metrics={
            "ms_ssim": MultiScaleSSIMHandler(2, 16, kernel_size=3),
            "used": CodesUsed(8),
            "ppl": CodebookPerplexity(8),
        },
    )
    evaluator.run()
    m = evaluator.state.metrics
    assert -1 <= m["ssim"] <= 1 and 1 <= m["used"] <= 8 and 1 <= m["ppl"] <= m["used"] + 1e-6
    assert torch.equal(codebook, net.ema_quantizer.embedding.weight)  # eval never moves the codebook
    assert float(evaluator.state.output["pred"].min()) >= 0 and float(evaluator.state.output["pred"].max()) <= 1


def test_prior_trainer_and_evaluator_learn_a_constant_map():
    codes = torch.zeros(16, 4, 4, dtype=torch.long)
    codes[8:] = 3  # class 1 maps are all 3, class 0 all 0
    data = CodesDataset({"codes": codes, "labels": torch.tensor([0] * 8 + [1] * 8), "subjects": None})
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
    torch.manual_seed(0)
    prior = GatedPixelCNN(2, num_embeddings=4, num_classes=2, channels=8, num_layers=2, kernel_size=3)
    trainer = PriorTrainer("cpu", 30, loader, prior, torch.optim.Adam(prior.parameters(), 1e-2))
    trainer.run()
    evaluator = PriorEvaluator(
        "cpu",
        torch.utils.data.DataLoader(data, batch_size=8),
        prior,
        key_val_metric={"nll": PriorNLL()},
        additional_metrics={"bpd": PriorNLL("bits_per_dim", dims_per_token=16)},
        metric_cmp_fn=lower_is_better,
    )
    evaluator.run()
    nll = evaluator.state.metrics["nll"]
    assert nll < 0.2 * math.log(4)  # far below the uniform prior: the class label determines the map
    assert evaluator.state.metrics["bpd"] == pytest.approx(nll / math.log(2) / 16)
    assert evaluator.state.best_metric == pytest.approx(nll)  # lower_is_better accepted the first value


def test_codebook_metrics_known_answers():
    m = CodesUsed(4, output_transform=lambda x: x)
    p = CodebookPerplexity(4, output_transform=lambda x: x)
    engine = Engine(lambda e, b: b)
    m.attach(engine, "used")
    p.attach(engine, "ppl")
    engine.run([torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2])], max_epochs=1)  # usage 2, 2, 2, 0 over the epoch
    assert engine.state.metrics["used"] == 3 and engine.state.metrics["ppl"] == pytest.approx(3.0)
    assert float(histogram_perplexity(torch.tensor([5.0, 0, 0]))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="code indices"):
        m.update(torch.tensor([4]))


def test_multiscale_ssim_scales_valid_for_small_images():
    assert len(multiscale_ssim_metric(2, 64).weights) == 4 and len(multiscale_ssim_metric(2, 128).weights) == 5
    x = torch.rand(2, 1, 64, 64)
    assert float(multiscale_ssim_metric(2, 64)(x, x).mean()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="too small"):
        multiscale_ssim_metric(2, 8)


def test_metrics_json_writer_merges_sections(tmp_path):
    path = tmp_path / "m" / "metrics.json"
    for section, value in (("reconstruction", 0.9), ("prior", 1.5)):
        engine = Engine(lambda e, b: None)
        MetricsJSONWriter(path, section, extra={"split": "test"}).attach(engine)
        engine.add_event_handler(Events.STARTED, lambda e, v=value: e.state.metrics.update(score=torch.tensor(v)))
        engine.run([0], max_epochs=1)
    data = json.loads(path.read_text())
    assert data["reconstruction"]["metrics"]["score"] == pytest.approx(0.9)
    assert data["prior"]["metrics"]["score"] == pytest.approx(1.5) and data["prior"]["split"] == "test"


def test_prior_engines_pass_labels_through_wrappers():
    """Under DDP/DataParallel the prior is wrapped: class labels must still reach a conditional prior."""
    seen = []
    prior = GatedPixelCNN(2, num_embeddings=4, num_classes=2, channels=4, num_layers=1, kernel_size=3)
    prior.register_forward_hook(lambda m, args, out: seen.append(args[1]))
    data = CodesDataset({"codes": torch.zeros(4, 3, 3, dtype=torch.long), "labels": torch.tensor([0, 1, 0, 1])})
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    wrapped = torch.nn.DataParallel(prior)
    PriorTrainer("cpu", 1, loader, wrapped, torch.optim.SGD(prior.parameters(), 0.1)).run()
    PriorEvaluator("cpu", loader, wrapped).run()
    assert len(seen) == 2 and all(torch.equal(s, torch.tensor([0, 1, 0, 1])) for s in seen)


def test_vqvae_inferer_updates_a_monai_codebook_once_per_step(tiny_vqvae):
    from monai.networks.nets import VQVAE

    from brainvq_monai.inferers import VQVAEInferer

    a = tiny_vqvae(cls=VQVAE).train()
    b = tiny_vqvae(cls=VQVAE).train()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 1, 16, 16)
    recon, loss, idx = VQVAEInferer()(x, a)
    ref_recon, ref_loss = b(x)  # MONAI's own forward: one EMA update
    torch.testing.assert_close(a.quantizer.quantizer.ema_cluster_size, b.quantizer.quantizer.ema_cluster_size)
    torch.testing.assert_close(recon, ref_recon)
    torch.testing.assert_close(loss, ref_loss)
    assert idx.shape == (2, 4, 4)
