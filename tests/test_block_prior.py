"""BlockTransformerPrior: block layout, causality, exact incremental decoding, factory and training."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from brainvq_monai.inferers.sampling import sample_codes, token_nll
from brainvq_monai.networks.nets import BlockTransformerPrior, build_prior
from brainvq_monai.networks.nets.block_prior import from_blocks, to_blocks
from brainvq_monai.utils.errors import BrainVQInputError

K = 5
SMALL = {"attn_layers_dim": 16, "attn_layers_depth": 2, "attn_layers_heads": 2}


def _prior(shape, num_classes=None, seed=0, **kw) -> BlockTransformerPrior:
    torch.manual_seed(seed)
    return BlockTransformerPrior(len(shape), K, shape, num_classes, **{**SMALL, **kw}).eval()


def _codes(batch, shape, seed=1):
    return torch.randint(0, K, (batch, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(4, 6), (2, 4, 4)])
def test_block_layout_round_trip_and_order(shape):
    x = torch.arange(2 * torch.Size(shape).numel()).view(2, *shape)
    blocks = to_blocks(x, 2, len(shape))
    assert blocks.shape == (2, torch.Size(shape).numel() // 2 ** len(shape), 2 ** len(shape))
    assert torch.equal(from_blocks(blocks, 2, shape), x)
    # the first block is the top-left 2 x 2 (x 2) corner, in raster order
    corner = x[0][tuple(slice(0, 2) for _ in shape)].reshape(-1)
    assert torch.equal(blocks[0, 0], corner)
    order = _prior(shape).generation_order(shape)
    assert torch.equal(torch.sort(order).values, torch.arange(torch.Size(shape).numel()))
    assert torch.equal(order[: 2 ** len(shape)], corner)


@pytest.mark.parametrize("shape", [(4, 6), (2, 4, 4)])
def test_logits_are_causal_in_generation_order(shape):
    prior = _prior(shape, num_classes=2)
    codes, labels = _codes(3, shape), torch.tensor([0, 1, 1])
    logits = prior(codes, labels).flatten(2)
    assert logits.shape == (3, K, torch.Size(shape).numel())
    order = prior.generation_order(shape)
    for k in (0, 3, 5, order.numel() - 2):
        changed = codes.clone().view(3, -1)
        changed[:, order[k]] = (changed[:, order[k]] + 1) % K
        new = prior(changed.view(3, *shape), labels).flatten(2)
        assert torch.allclose(new[..., order[: k + 1]], logits[..., order[: k + 1]], atol=1e-5)  # the past is blind
        assert not torch.allclose(new[..., order[k + 1 :]], logits[..., order[k + 1 :]], atol=1e-5)  # the future sees


@pytest.mark.parametrize("shape", [(4, 4), (2, 2, 4)])
@pytest.mark.parametrize("num_classes", [None, 2])
def test_incremental_decoder_matches_forward_and_sampling_is_exact(shape, num_classes):
    prior = _prior(shape, num_classes, depth_layers=2)
    labels = None if num_classes is None else torch.tensor([1, 0])
    codes = _codes(2, shape)
    full = prior(codes, labels).flatten(2)
    order = prior.generation_order(shape)
    decoder = prior.incremental_decoder(2, shape, labels)
    for t in range(order.numel()):
        assert torch.allclose(decoder.step(codes.view(2, -1), t), full[..., order[t]], atol=1e-5)
    fast = sample_codes(prior, 2, shape, labels, generator=torch.Generator().manual_seed(4))
    naive = sample_codes(prior, 2, shape, labels, generator=torch.Generator().manual_seed(4), use_cache=False)
    assert torch.equal(fast, naive)


def test_class_conditioning_changes_every_logit_block():
    prior = _prior((4, 4), num_classes=2)
    codes = _codes(1, (4, 4))
    a, b = prior(codes, torch.tensor([0])), prior(codes, torch.tensor([1]))
    assert not torch.allclose(a[..., 0, 0], b[..., 0, 0])  # even the first code sees the class


def test_bad_inputs_are_named():
    with pytest.raises(BrainVQInputError, match="block_size"):
        BlockTransformerPrior(2, K, (5, 4), **SMALL)
    prior = _prior((4, 4))
    with pytest.raises(BrainVQInputError, match="codes"):
        prior(torch.zeros(1, 4, 6, dtype=torch.long))
    with pytest.raises(BrainVQInputError, match="codes"):
        prior(torch.full((1, 4, 4), K))
    with pytest.raises(BrainVQInputError, match="spatial_shape"):
        prior.generation_order((8, 8))


def test_factory_builds_it_from_the_transformer_options():
    args = {**SMALL, "block_size": 2, "depth_layers": 1, "dropout_rate": 0.1}
    prior = build_prior("transformer", 2, K, (4, 4), 2, transformer=args)
    assert isinstance(prior, BlockTransformerPrior) and prior.block_codes == 4
    plain = build_prior("transformer", 2, K, (4, 4), 2, transformer={**SMALL, "block_size": 1, "depth_layers": 3})
    assert type(plain).__name__ == "TransformerPrior"
    raster = build_prior("transformer", 2, K, (4, 4), 2, transformer={**args, "ordering_type": "raster_scan"})
    assert isinstance(raster, BlockTransformerPrior)  # raster over blocks: the block prior's own order
    with pytest.raises(BrainVQInputError, match="ordering_type"):
        build_prior("transformer", 2, K, (4, 4), transformer={**args, "ordering_type": "s_curve"})


def test_a_few_steps_fit_a_repeated_map():
    """The whole model trains: the NLL of one repeated code map drops well below log(K)."""
    prior = _prior((4, 4), num_classes=2, dropout_rate=0.1).train()
    codes, labels = _codes(4, (4, 4)), torch.tensor([0, 1, 0, 1])
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(prior(codes, labels), codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    prior.eval()
    nll = token_nll(prior, codes, labels).mean().item()
    assert nll < 0.5 * torch.log(torch.tensor(float(K))).item()
    assert all(p.grad is not None for p in prior.parameters() if p.requires_grad)  # no unused parameters (DDP)


def test_anomaly_map_and_healing_work_on_block_priors():
    """The anomaly tools only need per-token NLLs and the incremental decoder, which the block prior provides."""
    from brainvq_monai.inferers import AutoregressivePriorInferer
    from brainvq_monai.networks.nets import BrainVQVAE

    torch.manual_seed(0)
    levels = {"downsample_parameters": [[2, 4, 1, 1]] * 2, "upsample_parameters": [[2, 4, 1, 1, 0]] * 2}
    vqvae = BrainVQVAE(2, 1, 1, channels=[8, 16], num_res_channels=[8, 16], num_res_layers=1, num_embeddings=K,
                       embedding_dim=8, **levels).eval()  # fmt: skip
    prior = _prior((8, 8), num_classes=2).eval()
    inferer, images, labels = AutoregressivePriorInferer(), torch.rand(2, 1, 32, 32), torch.tensor([0, 1])
    nll_map = inferer.get_anomaly_map(images, vqvae, prior, labels)
    assert nll_map.shape == (2, 1, 32, 32) and bool((nll_map >= 0).all())
    kept = inferer.heal(images, vqvae, prior, 0.0, labels, generator=0)
    assert not kept.resampled.any() and torch.equal(kept.codes, kept.original_codes)
    every = inferer.heal(images, vqvae, prior, 1.0, labels, generator=0)
    assert torch.equal(every.codes, inferer.sample_codes(prior, 2, (8, 8), class_labels=labels, generator=0))


def test_the_2d_bundle_configs_agree_on_the_block_prior():
    """Train, evaluate, sample and anomaly workflows must build the same prior, or checkpoints would not load."""
    from brainvq_monai.bundle.layout import read_bundle_config
    from brainvq_monai.bundle.utils import default_bundle_root

    args = {}
    for name in ("train_prior", "evaluate", "inference", "anomaly"):
        parser = read_bundle_config(default_bundle_root("brain_vqvae_2d"), name)
        prior_def = parser["prior_def"]["transformer"]
        args[name] = {k: v for k, v in prior_def.items() if k != "use_checkpointing"}
    assert all(a == args["train_prior"] for a in args.values()), args
    prior = build_prior("transformer", 2, 256, (32, 32), 2, transformer=args["train_prior"])
    assert isinstance(prior, BlockTransformerPrior) and prior.num_blocks == 256
