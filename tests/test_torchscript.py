"""TorchScript scripting (``monai.bundle ckpt_export``'s default) of the VQ-VAE and the priors: save, load, same outputs.

Every network here scripts with ``torch.jit.script`` (nothing needs tracing). The priors also take the model zoo's
``torch.rand(1, 1, *S)`` verification input: a channel-first float code map, rounded and clamped to ``[0, K)``.
"""

from __future__ import annotations

import pytest
import torch

from brainvq_monai.networks.nets import BlockTransformerPrior, GatedPixelCNN, TransformerPrior, build_prior
from brainvq_monai.utils.errors import BrainVQInputError

K = 16
TRANSFORMER = {"attn_layers_dim": 16, "attn_layers_depth": 1, "attn_layers_heads": 2}


def _script_roundtrip(net: torch.nn.Module, path) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of ``net`` in eval mode, saved to and loaded back from ``path``."""
    torch.jit.save(torch.jit.script(net.eval()), str(path))
    return torch.jit.load(str(path))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_vqvae_scripts(tiny_vqvae, spatial_dims, tmp_path):
    net = tiny_vqvae(spatial_dims)
    loaded = _script_roundtrip(net, tmp_path / "vqvae.ts")
    x = torch.rand((2, 1) + (16,) * spatial_dims, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for expected, got in ((net(x), loaded(x)), (net(x, return_indices=True), loaded(x, True))):
            assert isinstance(got, tuple) and len(got) == len(expected)
            for e, g in zip(expected, got, strict=True):
                torch.testing.assert_close(g, e, rtol=0, atol=0)


def _prior(kind: str, shape: tuple[int, ...]) -> torch.nn.Module:
    """A seeded tiny class-conditional prior (2 classes) over ``shape`` code maps with ``K`` codes."""
    torch.manual_seed(0)
    if kind == "pixelcnn":
        return build_prior("pixelcnn", len(shape), K, shape, 2, pixelcnn={"channels": 8, "num_layers": 2})
    transformer = {**TRANSFORMER, "block_size": 2} if kind == "block" else TRANSFORMER
    return build_prior("transformer", len(shape), K, shape, 2, transformer=transformer)


@pytest.mark.parametrize(
    ("kind", "shape", "cls"),
    [
        ("pixelcnn", (8, 8), GatedPixelCNN),
        ("transformer", (8, 8), TransformerPrior),
        ("transformer", (4, 4, 4), TransformerPrior),
        ("block", (8, 8), BlockTransformerPrior),
        ("block", (4, 4, 4), BlockTransformerPrior),
    ],
)
def test_prior_scripts_and_takes_the_zoo_input(kind, shape, cls, tmp_path):
    net = _prior(kind, shape)
    assert type(net) is cls
    loaded = _script_roundtrip(net, tmp_path / "prior.ts")
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, K, (2, *shape), generator=gen)
    as_float = torch.rand((2, 1, *shape), generator=gen) * (K + 4) - 2  # some values round outside [0, K)
    labels = torch.tensor([1, 0])
    with torch.no_grad():
        # the zoo's input means the rounded, clamped codes
        torch.testing.assert_close(net(as_float), net(as_float.round().clamp(0, K - 1).long()[:, 0]), rtol=0, atol=0)
        for args in ((codes,), (as_float,), (codes, labels), (as_float, labels), (codes[:, None].int(),)):
            expected = net(*args)
            assert expected.shape == (2, K, *shape)
            torch.testing.assert_close(loaded(*args), expected, rtol=0, atol=0)
    two_channels = torch.zeros((2, 2, *shape))
    with pytest.raises(BrainVQInputError, match=r"codes: .*\[2, 2, "):
        net(two_channels)
    with pytest.raises(torch.jit.Error, match="BrainVQInputError"):  # the scripted network names it too
        loaded(two_channels)
