"""Tests of BrainVQVAE (MONAI VQVAE interface + robust codebook) and ReconstructionWrapper (bundle check, export)."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import VQVAE

from brainvq_monai.networks.layers.quantizer import RobustEMAQuantizer
from brainvq_monai.networks.nets.vqvae import BrainVQVAE, ReconstructionWrapper
from brainvq_monai.utils.errors import BrainVQInputError

K = 16


def _config(spatial_dims: int) -> dict:
    return {
        "spatial_dims": spatial_dims,
        "in_channels": 1,
        "out_channels": 1,
        "channels": (8, 16),
        "num_res_layers": 1,
        "num_res_channels": (8, 16),
        "downsample_parameters": ((2, 4, 1, 1), (2, 4, 1, 1)),
        "upsample_parameters": ((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
        "num_embeddings": K,
        "embedding_dim": 4,
    }


@pytest.mark.parametrize("spatial_dims,size", [(2, 32), (3, 16)])
def test_shapes_and_interface(spatial_dims, size):
    torch.manual_seed(0)
    net = BrainVQVAE(**_config(spatial_dims))
    image_shape = (size,) * spatial_dims
    latent = net.latent_shape(image_shape)
    assert latent == (size // 4,) * spatial_dims
    x = torch.rand(2, 1, *image_shape)
    assert tuple(net.encode(x).shape[2:]) == latent

    recon, loss = net(x)
    assert recon.shape == x.shape and loss.ndim == 0 and torch.isfinite(loss)
    assert bool(net.ema_quantizer.initialized)  # data init on the first training batch

    recon, loss, indices = net.forward_with_indices(x)
    assert recon.shape == x.shape and loss.ndim == 0
    assert indices.shape == (2, *latent) and indices.dtype == torch.long
    assert indices.min() >= 0 and indices.max() < K
    assert net.ema_quantizer.last_codes_used.item() == indices.unique().numel()

    net.eval()
    with torch.no_grad():
        recon_eval, _, idx_eval = net.forward_with_indices(x)
        assert torch.equal(net.index_quantize(x), idx_eval)
        decoded = net.decode_samples(idx_eval)
        assert torch.allclose(decoded, recon_eval, atol=1e-5)
        stage2 = net.encode_stage_2_inputs(x)
        assert stage2.shape == (2, 4, *latent)
        assert net.decode_stage_2_outputs(stage2).shape == x.shape


def test_latent_shape():
    net = BrainVQVAE(**_config(2))
    assert net.latent_shape((128, 128)) == (32, 32)
    assert net.latent_shape([96, 64]) == (24, 16)
    odd = BrainVQVAE(**{**_config(3), "downsample_parameters": ((2, 3, 1, 1), (1, 3, 1, 1))})
    assert odd.latent_shape((15, 16, 17)) == (8, 8, 9)
    assert tuple(odd.encode(torch.zeros(1, 1, 15, 16, 17)).shape[2:]) == (8, 8, 9)
    with pytest.raises(BrainVQInputError, match="image_shape"):
        net.latent_shape((32, 32, 32))
    with pytest.raises(BrainVQInputError, match="image_shape"):
        net.latent_shape((1, 1))


def test_defaults_and_bad_settings():
    net = BrainVQVAE(spatial_dims=2, in_channels=1, out_channels=1)
    q = net.ema_quantizer
    assert isinstance(q, RobustEMAQuantizer) and q.decay == 0.99 and q.init == "kmeans"
    with pytest.raises(BrainVQInputError, match="init"):
        BrainVQVAE(**_config(2), init="random")
    with pytest.raises(BrainVQInputError):
        BrainVQVAE(**{**_config(2), "num_res_channels": (8, 16, 32)})


def test_monai_checkpoint_loads(monkeypatch):
    """A MONAI VQVAE state dict loads strictly into BrainVQVAE and decodes identically."""
    torch.manual_seed(0)
    monai_net = VQVAE(**_config(2))
    x = torch.rand(2, 1, 32, 32)
    monai_net(x)  # a training step: non-trivial EMA buffers
    monai_net.eval()
    ours = BrainVQVAE(**_config(2)).eval()
    ours.load_state_dict(monai_net.state_dict())  # strict
    assert bool(ours.ema_quantizer.initialized) and int(ours.ema_quantizer.num_updates) == 0
    with torch.no_grad():
        codes = torch.randint(0, K, (2, 8, 8))
        assert torch.equal(ours.decode_samples(codes), monai_net.decode_samples(codes))
        recon_ours, loss_ours = ours(x)
        recon_monai, loss_monai = monai_net(x)
        assert torch.allclose(recon_ours, recon_monai, atol=1e-6) and torch.allclose(loss_ours, loss_monai)
    # a training step on the loaded model keeps the loaded codebook (no data re-init)
    ours.train()
    init_calls = []
    monkeypatch.setattr(ours.ema_quantizer, "_data_init", lambda flat: init_calls.append(flat))
    ours(x)
    assert not init_calls and int(ours.ema_quantizer.num_updates) == 1
    # and our own checkpoints round-trip with the extra buffers
    again = BrainVQVAE(**_config(2))
    again.load_state_dict(ours.state_dict())
    assert int(again.ema_quantizer.num_updates) == 1


def test_no_codebook_change_in_eval_or_index_quantize():
    torch.manual_seed(0)
    net = BrainVQVAE(**_config(2))
    x = torch.rand(2, 1, 32, 32)
    buffers = {k: v.clone() for k, v in net.quantizer.state_dict().items()}

    def unchanged() -> bool:
        return all(torch.equal(v, net.quantizer.state_dict()[k]) for k, v in buffers.items())

    net.index_quantize(x)  # train mode: MONAI would update here
    assert unchanged()
    net.eval()
    net(x)
    net.forward_with_indices(x)
    assert unchanged()
    net.train()
    net(x)
    assert not unchanged()


def test_autocast_bf16():
    torch.manual_seed(0)
    net = BrainVQVAE(**_config(2))
    x = torch.rand(2, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recon, loss, indices = net.forward_with_indices(x)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(recon).all()
    assert net.ema_quantizer.embedding.weight.dtype == torch.float32
    assert indices.max() < K
    (recon.float().mean() + loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.encoder.parameters() if p.grad is not None)


def test_reconstruction_wrapper_verify_net_in_out(tmp_path):
    from monai.bundle import verify_net_in_out

    config = {
        "network_def": {
            "_target_": "brainvq_monai.networks.nets.vqvae.ReconstructionWrapper",
            "network": {"_target_": "brainvq_monai.networks.nets.vqvae.BrainVQVAE", **_config(2)},
        }
    }
    io = {"num_channels": 1, "spatial_shape": [32, 32], "dtype": "float32"}
    meta = {"network_data_format": {"inputs": {"image": io}, "outputs": {"pred": io}}}
    (tmp_path / "inference.json").write_text(json.dumps(config))
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(tmp_path / "metadata.json"),
        config_file=str(tmp_path / "inference.json"),
        device="cpu",
    )
    wrapper = ReconstructionWrapper(BrainVQVAE(**_config(2))).eval()
    x = torch.rand(1, 1, 32, 32)
    out = wrapper(x)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == x.dtype


def test_reconstruction_wrapper_torchscript_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = BrainVQVAE(**_config(2))
    net(torch.rand(2, 1, 32, 32))  # initialise the codebook from data
    wrapper = ReconstructionWrapper(net).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, x)
    path = tmp_path / "vqvae_recon.ts"
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path))
    other = torch.rand(2, 1, 32, 32)  # different values and batch size than the trace input
    with torch.no_grad():
        expected = wrapper(other)
        got = loaded(other)
    assert got.shape == other.shape
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(expected, wrapper(x).expand_as(expected), atol=1e-3)
