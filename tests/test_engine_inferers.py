"""The engines run every forward pass through ``engine.inferer``, as MONAI's ``SupervisedTrainer`` does: the default
inferer of each engine, a custom one given to it, a wrong one refused; the VQ-VAE inferer itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from monai.inferers import SimpleInferer
from monai.networks.nets import VQVAE

from brainvq_monai.data.codes import CodesDataset
from brainvq_monai.engines import PriorEvaluator, PriorTrainer, SamplingEvaluator, VQVAEEvaluator, VQVAETrainer
from brainvq_monai.inferers import AutoregressivePriorInferer, VQVAEInferer, VQVAEOutput
from brainvq_monai.networks.nets import GatedPixelCNN
from brainvq_monai.utils.errors import BrainVQInputError

REPO = Path(__file__).resolve().parents[1]


class CountingVQVAEInferer(VQVAEInferer):
    """Counts its calls and zeroes the reconstruction, so the engines' outputs show which inferer ran."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, inputs, network):  # type: ignore[override]
        self.calls += 1
        recon, quant_loss, indices = super().__call__(inputs, network)
        return recon * 0, quant_loss, indices


class CountingPriorInferer(AutoregressivePriorInferer):
    """Counts its calls and zeroes the logits (a uniform prior: the NLL of every token is ``log K``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.labels: list = []

    def __call__(self, inputs, network, class_labels=None, vqvae=None):  # type: ignore[override]
        self.calls += 1
        self.labels.append(class_labels)
        return super().__call__(inputs, network, class_labels, vqvae) * 0


def _images(n: int = 8) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(1, 16, 16, generator=gen), "label": i % 2} for i in range(n)]


def _codes() -> CodesDataset:
    codes = torch.randint(0, 4, (8, 3, 3), generator=torch.Generator().manual_seed(0))
    return CodesDataset({"codes": codes, "labels": torch.tensor([0, 1] * 4), "subjects": None})


def _prior() -> GatedPixelCNN:
    torch.manual_seed(0)
    return GatedPixelCNN(2, num_embeddings=4, num_classes=2, channels=4, num_layers=1, kernel_size=3)


def _vqvae_trainer(net, **kwargs) -> VQVAETrainer:
    loader = torch.utils.data.DataLoader(_images(), batch_size=4)
    return VQVAETrainer("cpu", 1, loader, net, torch.optim.Adam(net.parameters(), 1e-3), **kwargs)


def _vqvae_evaluator(net, **kwargs) -> VQVAEEvaluator:
    return VQVAEEvaluator("cpu", torch.utils.data.DataLoader(_images(), batch_size=4), net, **kwargs)


def _prior_trainer(prior, **kwargs) -> PriorTrainer:
    loader = torch.utils.data.DataLoader(_codes(), batch_size=4)
    return PriorTrainer("cpu", 1, loader, prior, torch.optim.SGD(prior.parameters(), 0.1), **kwargs)


def _prior_evaluator(prior, **kwargs) -> PriorEvaluator:
    return PriorEvaluator("cpu", torch.utils.data.DataLoader(_codes(), batch_size=4), prior, **kwargs)


@pytest.mark.parametrize("cls", ["BrainVQVAE", "VQVAE"])
def test_vqvae_inferer_is_one_forward_with_the_indices(tiny_vqvae, cls):
    net = tiny_vqvae() if cls == "BrainVQVAE" else tiny_vqvae(cls=VQVAE)
    ref = tiny_vqvae() if cls == "BrainVQVAE" else tiny_vqvae(cls=VQVAE)
    x = torch.rand(2, 1, 16, 16)
    torch.manual_seed(1)  # BrainVQVAE's first training forward initialises its codebook from the data
    out = VQVAEInferer()(x, net.train())
    torch.manual_seed(1)
    ref_recon, ref_loss = ref.train()(x)  # the network's own forward: one quantization (one EMA update)
    assert isinstance(out, VQVAEOutput) and out.indices.shape == (2, 4, 4) and out.indices.dtype == torch.long
    torch.testing.assert_close(out.reconstruction, ref_recon)
    torch.testing.assert_close(out.quantization_loss, ref_loss)
    torch.testing.assert_close(net.state_dict(), ref.state_dict())  # the same codebook update
    wrapped = VQVAEInferer()(x, torch.nn.DataParallel(net.eval()))
    plain = VQVAEInferer()(x, net)  # unwrapped: the same forward
    for a, b in zip(wrapped, plain):
        torch.testing.assert_close(a, b)
    with pytest.raises(BrainVQInputError, match="VQVAEInferer needs a BrainVQVAE or MONAI VQVAE"):
        VQVAEInferer()(x, torch.nn.Conv2d(1, 1, 1))


def test_engines_build_their_own_inferer_by_default(tiny_vqvae):
    net, prior = tiny_vqvae(), _prior()
    for engine in (_vqvae_trainer(net), _vqvae_evaluator(net)):
        assert type(engine.inferer) is VQVAEInferer
    for engine in (_prior_trainer(prior), _prior_evaluator(prior)):
        assert type(engine.inferer) is AutoregressivePriorInferer


def test_vqvae_trainer_calls_its_inferer_for_every_forward(tiny_vqvae):
    inferer = CountingVQVAEInferer()
    trainer = _vqvae_trainer(tiny_vqvae(), inferer=inferer)
    trainer.run()
    assert trainer.inferer is inferer and inferer.calls == 2  # 8 images, batches of 4
    out = trainer.state.output
    assert float(out["pred"].abs().max()) == 0  # the zeroed reconstruction of the custom inferer
    images = torch.stack([d["image"] for d in _images()[4:]])
    assert float(out["recon_loss"]) == pytest.approx(float(images.abs().mean()), rel=1e-5)


def test_vqvae_trainer_with_a_discriminator_calls_its_inferer(tiny_vqvae):
    from monai.losses import PatchAdversarialLoss
    from monai.networks.nets import PatchDiscriminator

    inferer = CountingVQVAEInferer()
    disc = PatchDiscriminator(spatial_dims=2, num_layers_d=1, channels=4, in_channels=1, out_channels=1)
    trainer = _vqvae_trainer(
        tiny_vqvae(),
        inferer=inferer,
        discriminator=disc,
        discriminator_optimizer=torch.optim.Adam(disc.parameters(), 1e-3),
        adversarial_loss=PatchAdversarialLoss(criterion="least_squares"),
        adversarial_weight=0.1,
    )
    trainer.run()
    assert inferer.calls == 2 and math.isfinite(float(trainer.state.output["discriminator_loss"]))


def test_vqvae_evaluator_calls_its_inferer_for_every_forward(tiny_vqvae):
    inferer = CountingVQVAEInferer()
    evaluator = _vqvae_evaluator(tiny_vqvae(), inferer=inferer, clip_range=None)
    evaluator.run()
    assert evaluator.inferer is inferer and inferer.calls == 2
    assert float(evaluator.state.output["pred"].abs().max()) == 0


def test_prior_trainer_calls_its_inferer_with_the_class_labels():
    inferer = CountingPriorInferer()
    trainer = _prior_trainer(_prior(), inferer=inferer)
    trainer.run()
    assert trainer.inferer is inferer and inferer.calls == 2
    assert all(torch.equal(labels, torch.tensor([0, 1, 0, 1])) for labels in inferer.labels)
    assert float(trainer.state.output["loss"]) == pytest.approx(math.log(4), rel=1e-6)  # the zeroed logits


def test_prior_evaluator_calls_its_inferer_with_the_class_labels():
    inferer = CountingPriorInferer()
    evaluator = _prior_evaluator(_prior(), inferer=inferer)
    evaluator.run()
    assert evaluator.inferer is inferer and inferer.calls == 2
    assert all(torch.equal(labels, torch.tensor([0, 1, 0, 1])) for labels in inferer.labels)
    torch.testing.assert_close(evaluator.state.output["nll"], torch.full((4, 3, 3), math.log(4)))


def test_a_wrong_inferer_is_one_line_naming_the_engine_and_the_expected_inferer(tiny_vqvae):
    net, prior = tiny_vqvae(), _prior()
    vq, ar = "brainvq_monai.inferers.VQVAEInferer", "brainvq_monai.inferers.AutoregressivePriorInferer"
    cases = [
        ("VQVAETrainer", vq, lambda i: _vqvae_trainer(net, inferer=i)),
        ("VQVAEEvaluator", vq, lambda i: _vqvae_evaluator(net, inferer=i)),
        ("PriorTrainer", ar, lambda i: _prior_trainer(prior, inferer=i)),
        ("PriorEvaluator", ar, lambda i: _prior_evaluator(prior, inferer=i)),
        ("SamplingEvaluator", ar, lambda i: SamplingEvaluator("cpu", [], prior, net, i)),
    ]
    for engine, expected, build in cases:
        with pytest.raises(BrainVQInputError) as err:
            build(SimpleInferer())
        message = str(err.value)
        assert "\n" not in message and message.startswith("inferer: ")
        assert engine in message and expected in message and "SimpleInferer" in message
    with pytest.raises(BrainVQInputError, match="VQVAETrainer needs a brainvq_monai.inferers.VQVAEInferer"):
        _vqvae_trainer(net, inferer=AutoregressivePriorInferer())  # the prior's inferer for the VQ-VAE
    with pytest.raises(BrainVQInputError, match="PriorTrainer needs a .*AutoregressivePriorInferer"):
        _prior_trainer(prior, inferer=VQVAEInferer())


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_bundle_configs_build_the_engines_inferers(dims):
    configs = REPO / "bundles" / f"brain_vqvae_{dims}" / "configs"
    vqvae, prior, evaluate = (
        json.loads((configs / f).read_text()) for f in ("train_vqvae.json", "train_prior.json", "evaluate.json")
    )
    targets = [vqvae["train"]["inferer"], vqvae["validate"]["inferer"], evaluate["inferer"]]
    assert all(t == {"_target_": "brainvq_monai.inferers.VQVAEInferer"} for t in targets)
    targets = [prior["train"]["inferer"], prior["validate"]["inferer"], evaluate["prior_inferer"]]
    assert all(t == {"_target_": "brainvq_monai.inferers.AutoregressivePriorInferer"} for t in targets)
