"""Tests of the Gated PixelCNN prior: shapes, causality, no blind spot, exact incremental decoding and sampling."""

from __future__ import annotations

import pytest
import torch

from brainvq_monai.inferers.sampling import sample_codes
from brainvq_monai.networks.nets.gated_pixelcnn import GatedPixelCNN

K = 11


def _net(num_classes: int | None = None, num_layers: int = 3, kernel_size: int = 5, **kwargs) -> GatedPixelCNN:
    torch.manual_seed(0)
    net = GatedPixelCNN(
        num_embeddings=K, num_classes=num_classes, channels=8, num_layers=num_layers, kernel_size=kernel_size, **kwargs
    )
    return net.eval()


def _gradient_support(net: GatedPixelCNN, height: int, width: int) -> torch.Tensor:
    """``(N, N)`` bool matrix: entry ``[i, j]`` is True where the logits at raster position ``i`` depend on input ``j``."""
    net = net.double()
    codes = torch.randint(0, K, (1, height, width))
    x_emb = net.embed(codes).detach().requires_grad_(True)
    logits = net.forward_embedded(x_emb).flatten(2)
    support = torch.zeros(height * width, height * width, dtype=torch.bool)
    for i in range(height * width):
        (grad,) = torch.autograd.grad(logits[0, :, i].sum(), x_emb, retain_graph=True)
        support[i] = grad[0].abs().sum(0).flatten() > 0
    return support


@pytest.mark.parametrize("shape", [(4, 4), (5, 7), (1, 4), (6, 1), (1, 1)])
@pytest.mark.parametrize("num_classes", [None, 2])
def test_output_shape(shape, num_classes):
    net = _net(num_classes)
    codes = torch.randint(0, K, (3, *shape))
    labels = None if num_classes is None else torch.tensor([0, 1, 1])
    assert net(codes, labels).shape == (3, K, *shape)
    assert torch.equal(net.generation_order(shape), torch.arange(shape[0] * shape[1]))


def test_causality_and_exact_receptive_field():
    """Position i depends on exactly the earlier pixels of its receptive field: no future, no blind spot."""
    height, width, num_layers, kernel_size = 7, 9, 2, 3
    reach = num_layers * (kernel_size // 2)  # rows above: [r - 1 - reach, r - 1] x [c - reach, c + reach]
    support = _gradient_support(_net(num_layers=num_layers, kernel_size=kernel_size), height, width)
    for i in range(height * width):
        r, c = divmod(i, width)
        expected = torch.zeros(height, width, dtype=torch.bool)
        expected[max(r - 1 - reach, 0) : r, max(c - reach, 0) : c + reach + 1] = True
        expected[r, max(c - reach, 0) : c] = True
        assert torch.equal(support[i], expected.flatten()), f"position {(r, c)}"
    # causality: nothing at or after position i (first row and first column included)
    assert not torch.triu(support).any()
    # the classic blind spot of masked PixelCNNs (above-right of the current pixel) is visible
    r, c = 4, 3
    for rr, cc in [(3, 4), (3, 5), (2, 5), (1, 5), (1, 1)]:
        assert support[r * width + c, rr * width + cc], (rr, cc)


def test_no_blind_spot_full_coverage():
    """With enough layers every earlier pixel of a small map influences every later position."""
    support = _gradient_support(_net(num_layers=5, kernel_size=3), 6, 6)
    assert torch.equal(support, torch.tril(torch.ones(36, 36, dtype=torch.bool), diagonal=-1))


def test_causality_conditional_non_square():
    net = _net(num_classes=2, num_layers=2).double()
    x_emb = net.embed(torch.randint(0, K, (2, 3, 5))).detach().requires_grad_(True)
    logits = net.forward_embedded(x_emb, torch.tensor([1, 0])).flatten(2)
    for i in range(15):
        (grad,) = torch.autograd.grad(logits[:, :, i].sum(), x_emb, retain_graph=True)
        grad = grad.abs().sum((0, 1)).flatten()
        assert grad[i:].eq(0).all() and (i == 0 or grad[:i].gt(0).any())


@pytest.mark.parametrize(
    "shape,num_classes,kernel_size",
    [((6, 6), None, 5), ((5, 7), 2, 3), ((1, 4), None, 5), ((6, 1), 2, 5), ((3, 10), 3, 7), ((8, 3), None, 3)],
)
def test_incremental_decoder_matches_forward(shape, num_classes, kernel_size):
    net = _net(num_classes, num_layers=4, kernel_size=kernel_size, embedding_dim=6, output_channels=12)
    batch, n = 3, shape[0] * shape[1]
    codes = torch.randint(0, K, (batch, *shape))
    labels = None if num_classes is None else torch.arange(batch) % num_classes
    with torch.no_grad():
        full = net(codes, labels).flatten(2)
        decoder = net.incremental_decoder(batch, shape, labels)
        steps = []
        for t in range(n):
            flat = codes.view(batch, n).clone()
            flat[:, t:] = torch.randint(0, K, (batch, n - t))  # not-yet-generated codes must not matter
            steps.append(decoder.step(flat, t))
    torch.testing.assert_close(torch.stack(steps, -1), full, atol=1e-5, rtol=0)


def test_incremental_decoder_avoids_full_forward(monkeypatch):
    net = _net()

    def _forbidden(*args, **kwargs):
        raise AssertionError("the fast path must not run the full network")

    monkeypatch.setattr(net, "forward_embedded", _forbidden)
    codes = sample_codes(net, 2, (4, 5), use_cache=True)
    assert codes.shape == (2, 4, 5)
    with pytest.raises(AssertionError):
        sample_codes(net, 2, (4, 5), use_cache=False)


@pytest.mark.parametrize("num_classes,temperature,top_k", [(None, 1.0, None), (2, 0.7, 4), (2, 0.0, None)])
def test_sampling_cache_equals_naive(num_classes, temperature, top_k):
    net = _net(num_classes)
    labels = None if num_classes is None else torch.tensor([0, 1, 1, 0])

    def sample(seed: int, use_cache: bool) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return sample_codes(net, 4, (5, 7), labels, temperature, top_k, generator=gen, use_cache=use_cache)

    fast, naive = sample(1, True), sample(1, False)
    assert fast.shape == (4, 5, 7) and fast.dtype == torch.long
    assert fast.min() >= 0 and fast.max() < K
    assert torch.equal(fast, naive)
    if temperature > 0:
        assert not torch.equal(fast, sample(2, True))
        assert torch.equal(sample(2, True), sample(2, False))


def test_class_conditioning():
    net = _net(num_classes=2)
    codes = torch.randint(0, K, (2, 4, 5))
    with torch.no_grad():
        out0 = net(codes, torch.tensor([0, 0]))
        out1 = net(codes, torch.tensor([1, 1]))
    assert (out0 - out1).abs().max() > 1e-4
    assert torch.allclose(net(codes, torch.tensor(1)), out1)  # a single label is broadcast
    with pytest.raises(ValueError, match="class_labels"):
        net(codes, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="class_labels"):
        net(codes, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="class_labels"):
        _net()(codes, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class_labels"):
        net.incremental_decoder(2, (4, 5), torch.tensor([0, 5]))


def test_invalid_settings():
    with pytest.raises(ValueError, match="GatedPixelCNN is 2D only; use TransformerPrior for 3D latents"):
        GatedPixelCNN(spatial_dims=3, num_embeddings=K)
    for kwargs in ({"kernel_size": 4}, {"kernel_size": 1}, {"num_layers": 0}, {"dropout": 1.0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            GatedPixelCNN(num_embeddings=K, **kwargs)
    with pytest.raises(ValueError, match="num_embeddings"):
        GatedPixelCNN()
    with pytest.raises(ValueError, match="spatial_shape"):
        _net().incremental_decoder(1, (4, 4, 4))
