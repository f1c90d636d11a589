"""Networks get back the train/eval mode they were in: the inferer and the TensorBoard handlers use MONAI's
``eval_mode``; ``get_likelihood`` and ``anomaly_map`` are one NLL map."""

from __future__ import annotations

import itertools

import pytest
import torch
from ignite.engine import Engine

from brainvq_monai.handlers import PriorSampleGridHandler
from brainvq_monai.inferers.anomaly import anomaly_map
from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer
from brainvq_monai.networks.nets.transformer_prior import TransformerPrior

LATENT = (2, 2)  # the tiny VQ-VAE halves 8 x 8 images twice


class _Writer:
    """The part of ``SummaryWriter`` the handler uses, recording what it is given."""

    def __init__(self) -> None:
        self.images: list[tuple[str, torch.Tensor]] = []

    def add_image(self, tag, image, step, dataformats="CHW") -> None:
        self.images.append((tag, torch.as_tensor(image)))

    def add_text(self, tag, text, step) -> None:
        pass

    def flush(self) -> None:
        pass


def _prior(num_classes: int | None = 2) -> TransformerPrior:
    torch.manual_seed(2)
    return TransformerPrior(2, 8, LATENT, num_classes, attn_layers_dim=8, attn_layers_depth=1, attn_layers_heads=2)


def _set(network: torch.nn.Module, training: bool) -> torch.nn.Module:
    return network.train(training)


@pytest.mark.parametrize("prior_training,vqvae_training", list(itertools.product([True, False], repeat=2)))
def test_prior_sample_grid_handler_restores_both_modes(tiny_vqvae, prior_training, vqvae_training):
    vqvae, prior = _set(tiny_vqvae(), vqvae_training), _set(_prior(), prior_training)
    writer = _Writer()
    handler = PriorSampleGridHandler(writer, vqvae, prior, LATENT, samples_per_row=2, class_names=["NC", "AD"])
    engine = Engine(lambda e, b: None)
    engine.state.epoch = 1
    handler(engine)
    assert prior.training is prior_training and vqvae.training is vqvae_training
    assert [tag for tag, _ in writer.images] == ["prior_samples"]
    # the same grid as sampling in eval mode by hand: the handler samples in eval mode
    with torch.no_grad():
        grid_again = _Writer()
        PriorSampleGridHandler(grid_again, vqvae.eval(), prior.eval(), LATENT, samples_per_row=2)(engine)
    torch.testing.assert_close(writer.images[0][1], grid_again.images[0][1], atol=0, rtol=0)


@pytest.mark.parametrize("training", [True, False])
def test_inferer_restores_modes(tiny_vqvae, training):
    vqvae, prior = _set(tiny_vqvae(), training), _set(_prior(), training)
    inferer = AutoregressivePriorInferer()
    images = inferer.sample(vqvae, prior, 2, class_labels=torch.tensor([0, 1]), generator=0)
    inferer.get_likelihood(images, vqvae, prior, class_labels=torch.tensor([0, 1]))
    inferer.heal(images, vqvae, prior, 0.1, class_labels=torch.tensor([0, 1]), generator=0)
    inferer.encode_dataset(vqvae, [images], verbose=False)
    assert prior.training is training and vqvae.training is training


def test_get_likelihood_is_anomaly_map(tiny_vqvae):
    vqvae, prior = tiny_vqvae().eval(), _prior().eval()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 1])
    inferer = AutoregressivePriorInferer()
    latent = inferer.get_likelihood(images, vqvae, prior, labels)
    assert latent.shape == (3, *LATENT)
    torch.testing.assert_close(latent, anomaly_map(images, vqvae, prior, labels, upsample=False), atol=0, rtol=0)
    codes = vqvae.index_quantize(images)
    torch.testing.assert_close(latent, anomaly_map(codes, None, prior, labels, upsample=False), atol=0, rtol=0)
    for mode in ("nearest", "bilinear"):
        up = inferer.get_likelihood(images, vqvae, prior, labels, True, mode)
        torch.testing.assert_close(up, anomaly_map(images, vqvae, prior, labels, mode), atol=0, rtol=0)
        # what get_likelihood computed before it delegated
        expected = torch.nn.functional.interpolate(latent[:, None], size=(8, 8), mode=mode)
        torch.testing.assert_close(up, expected, atol=0, rtol=0)
