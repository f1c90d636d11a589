"""AutoregressivePriorInferer: sampling, likelihood and dataset encoding for both priors."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_vqvae
from monai.networks.nets import VQVAE
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from brainvq_monai.data.codes import load_codes, save_codes
from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer
from brainvq_monai.networks.nets.transformer_prior import TransformerPrior
from brainvq_monai.utils.errors import BrainVQInputError

K = 8
IMAGE = (8, 8)
LATENT = (4, 4)


def _vqvae(spatial_dims: int = 2) -> VQVAE:
    """MONAI's VQVAE, one stride-2 level, K codes of dim 3."""
    return make_tiny_vqvae(spatial_dims, VQVAE, levels=1, num_embeddings=K, embedding_dim=3)


def _transformer(shape=LATENT, num_classes=None, ordering_type="s_curve") -> TransformerPrior:
    torch.manual_seed(1)
    return TransformerPrior(
        len(shape),
        K,
        shape,
        num_classes,
        attn_layers_dim=16,
        attn_layers_depth=2,
        attn_layers_heads=2,
        ordering_type=ordering_type,
        ordering_seed=0,
    )


def _pixelcnn(num_classes=None):
    gated = pytest.importorskip("brainvq_monai.networks.nets.gated_pixelcnn")
    torch.manual_seed(2)
    return gated.GatedPixelCNN(
        spatial_dims=2, num_embeddings=K, num_classes=num_classes, channels=8, num_layers=2, kernel_size=3
    )


PRIORS = {"transformer": _transformer, "pixelcnn": _pixelcnn}


def _images(n=3, seed=3):
    return torch.rand(n, 1, *IMAGE, generator=torch.Generator().manual_seed(seed))


def _hand_nll(prior, codes: torch.Tensor, labels=None) -> torch.Tensor:
    """-log p(code) at every position, one position at a time, independently of ``prior.forward``'s bookkeeping."""
    flat = codes.reshape(codes.shape[0], -1)
    order = prior.generation_order(codes.shape[1:]).tolist()
    nll = torch.zeros(flat.shape, dtype=torch.float32)
    with torch.no_grad():
        for t, pos in enumerate(order):
            if isinstance(prior, TransformerPrior):  # raw MONAI transformer on the prefix [start, c_0 .. c_{t-1}]
                start = prior.start_tokens(codes.shape[0], labels)[:, None]
                tokens = torch.cat([start, flat[:, order[:t]]], dim=1)
                logits = prior.transformer(tokens)[:, -1, :K]
            else:  # full forward with every not-yet-generated code scrambled: the logits must not care
                scrambled = flat.clone()
                later = torch.tensor(order[t:], dtype=torch.long)
                scrambled[:, later] = torch.randint(0, K, (flat.shape[0], len(later)))
                logits = prior(scrambled.view_as(codes), labels).flatten(2)[:, :, pos]
            nll[:, pos] = -F.log_softmax(logits, dim=-1).gather(1, flat[:, pos : pos + 1])[:, 0]
    return nll.view_as(codes.float())


@pytest.mark.parametrize("kind", ["transformer", "pixelcnn"])
@pytest.mark.parametrize("num_classes", [None, 2])
def test_call_and_likelihood_equal_hand_computed_nll(kind, num_classes):
    prior = PRIORS[kind](num_classes=num_classes).eval()
    inferer = AutoregressivePriorInferer()
    codes = torch.randint(0, K, (3, *LATENT), generator=torch.Generator().manual_seed(4))
    labels = None if num_classes is None else torch.tensor([1, 0, 1])
    logits = inferer(codes, prior, class_labels=labels)
    assert logits.shape == (3, K, *LATENT)
    nll = inferer.get_likelihood(codes, None, prior, class_labels=labels)
    assert nll.shape == (3, *LATENT) and (nll > 0).all()
    expected = _hand_nll(prior, codes, labels)
    torch.testing.assert_close(nll, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nll.sum(), expected.sum(), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(F.cross_entropy(logits, codes, reduction="none"), nll, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", ["transformer", "pixelcnn"])
def test_sample_shapes_determinism_and_exactness(kind):
    prior, vqvae = PRIORS[kind](), _vqvae()
    inferer = AutoregressivePriorInferer()
    images = inferer.sample(vqvae, prior, 3, latent_shape=LATENT, generator=5, temperature=0.9, top_k=5)
    assert images.shape == (3, 1, *IMAGE)
    again = inferer.sample(
        vqvae, prior, 3, latent_shape=LATENT, generator=torch.Generator().manual_seed(5), temperature=0.9, top_k=5
    )
    torch.testing.assert_close(images, again, atol=0, rtol=0)
    fast = inferer.sample_codes(prior, 3, LATENT, generator=6)
    naive = inferer.sample_codes(prior, 3, LATENT, generator=6, use_cache=False)
    assert fast.shape == (3, *LATENT) and torch.equal(fast, naive)
    assert prior.training  # the inferer restores the mode it found


def test_latent_shape_defaults_and_checks():
    inferer = AutoregressivePriorInferer()
    assert inferer.sample_codes(_transformer(), 2, generator=0).shape == (2, *LATENT)
    with pytest.raises(BrainVQInputError, match="latent_shape"):
        inferer.sample_codes(_transformer(), 2, latent_shape=(4, 4, 4))
    with pytest.raises(BrainVQInputError, match="latent_shape"):
        inferer.sample_codes(_pixelcnn(), 2)


def test_transformer_3d_sample():
    vqvae = _vqvae(spatial_dims=3)
    prior = _transformer(shape=(2, 2, 2), ordering_type="random")
    images = AutoregressivePriorInferer().sample(vqvae, prior, 2, generator=0)
    assert images.shape == (2, 1, 4, 4, 4)


def test_get_likelihood_images_keeps_codebook_and_modes():
    vqvae, prior = _vqvae(), _transformer()
    vqvae.train()
    codebook = vqvae.quantizer.quantizer.embedding.weight.clone()
    inferer = AutoregressivePriorInferer()
    images = _images()
    nll = inferer.get_likelihood(images, vqvae, prior)
    assert nll.shape == (3, *LATENT)
    # MONAI's EMA quantizer would have moved its codebook in train mode; the inferer always quantizes in eval
    torch.testing.assert_close(vqvae.quantizer.quantizer.embedding.weight, codebook, atol=0, rtol=0)
    assert vqvae.training and prior.training
    codes = vqvae.eval().index_quantize(images)
    torch.testing.assert_close(nll, inferer.get_likelihood(codes, None, prior), atol=0, rtol=0)
    up = inferer.get_likelihood(images, vqvae, prior, resample_latent_likelihoods=True)
    assert up.shape == (3, 1, *IMAGE)
    torch.testing.assert_close(up[:, 0, ::2, ::2], nll, atol=0, rtol=0)  # nearest upsampling by 2
    bil = inferer.get_likelihood(
        images, vqvae, prior, resample_latent_likelihoods=True, resample_interpolation_mode="bilinear"
    )
    assert bil.shape == (3, 1, *IMAGE)
    with pytest.raises(BrainVQInputError, match="resample_interpolation_mode"):
        inferer.get_likelihood(images, vqvae, prior, resample_latent_likelihoods=True, resample_interpolation_mode="x")
    with pytest.raises(BrainVQInputError, match="inputs"):
        inferer.get_likelihood(images, None, prior)


def test_encode_dataset_save_and_load(tmp_path):
    vqvae, inferer = _vqvae(), AutoregressivePriorInferer()
    images = _images(5)
    expected = vqvae.eval().index_quantize(images)
    labels = torch.tensor([0, 1, 1, 0, 1])
    items = [{"image": images[i], "label": int(labels[i]), "subject": f"sub-{i:02d}"} for i in range(5)]
    vqvae.train()
    out = inferer.encode_dataset(vqvae, DataLoader(items, batch_size=2), verbose=False)
    assert vqvae.training
    assert out["codes"].shape == (5, *LATENT) and out["codes"].dtype == torch.long
    assert torch.equal(out["codes"], expected)
    assert torch.equal(out["labels"], labels)
    assert out["subjects"] == [f"sub-{i:02d}" for i in range(5)]
    # unbatched dicts without labels, and (image, label) tuples from a TensorDataset
    plain = inferer.encode_dataset(vqvae, [{"image": images[i]} for i in range(5)], verbose=False)
    assert torch.equal(plain["codes"], expected) and plain["labels"] is None
    assert plain["subjects"] == ["0", "1", "2", "3", "4"]
    tuples = inferer.encode_dataset(vqvae, DataLoader(TensorDataset(images, labels), batch_size=3), verbose=False)
    assert torch.equal(tuples["codes"], expected) and torch.equal(tuples["labels"], labels)

    path = tmp_path / "codes" / "train.pt"
    save_codes(out, path)
    loaded = load_codes(path)
    assert torch.equal(loaded["codes"], out["codes"]) and torch.equal(loaded["labels"], out["labels"])
    assert loaded["subjects"] == out["subjects"]
    assert AutoregressivePriorInferer.load_codes(path)["subjects"] == out["subjects"]
    with pytest.raises(BrainVQInputError, match="not found"):
        load_codes(tmp_path / "missing.pt")
    torch.save({"codes": torch.zeros(2, 4)}, tmp_path / "bad.pt")
    with pytest.raises(BrainVQInputError, match="bad.pt"):
        load_codes(tmp_path / "bad.pt")
    with pytest.raises(BrainVQInputError, match="label"):
        inferer.encode_dataset(vqvae, [{"image": images[:2], "label": torch.tensor([0, 1, 1])}], verbose=False)
