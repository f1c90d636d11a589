"""TransformerPrior and its KV-cached decoder over MONAI DecoderOnlyTransformer weights."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch
from monai.inferers import VQVAETransformerInferer
from monai.networks.nets import DecoderOnlyTransformer
from monai.utils import Ordering

from brainvq_monai.inferers.sampling import sample_codes
from brainvq_monai.networks.nets.causal_transformer import CausalTransformer
from brainvq_monai.networks.nets.kv_cache import TransformerKVCacheDecoder
from brainvq_monai.networks.nets.transformer_prior import TransformerPrior, make_sequence_ordering
from brainvq_monai.utils.errors import BrainVQInputError

K = 7
SMALL = {"attn_layers_dim": 16, "attn_layers_depth": 2, "attn_layers_heads": 4}


def _prior(shape, num_classes=None, ordering_type="raster_scan", seed=0, **kw) -> TransformerPrior:
    torch.manual_seed(seed)
    cfg = {**SMALL, **kw}
    return TransformerPrior(
        len(shape), K, shape, num_classes, ordering_type=ordering_type, ordering_seed=3, **cfg
    ).eval()


def _codes(batch, shape, seed=1):
    return torch.randint(0, K, (batch, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4)])
@pytest.mark.parametrize("num_classes", [None, 2])
def test_shapes_and_tokens(shape, num_classes):
    prior = _prior(shape, num_classes)
    assert prior.transformer.max_seq_len == torch.Size(shape).numel() + 1
    assert prior.transformer.num_tokens == K + 1 + (num_classes or 0)
    labels = None if num_classes is None else torch.tensor([1, 0])
    logits = prior(_codes(2, shape), labels)
    assert logits.shape == (2, K, *shape)
    assert torch.isfinite(logits).all()
    assert prior.start_tokens(2).tolist() == [K, K]
    if num_classes:
        assert prior.start_tokens(2, labels).tolist() == [K + 2, K + 1]
        # class-specific start tokens change the logits
        assert not torch.allclose(prior(_codes(2, shape), torch.tensor([0, 0])), prior(_codes(2, shape), labels))


def test_bad_inputs():
    prior = _prior((3, 4))
    with pytest.raises(BrainVQInputError, match="spatial_shape"):
        prior.generation_order((4, 4))
    with pytest.raises(BrainVQInputError, match="codes"):
        prior(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(BrainVQInputError, match="codes"):
        prior(torch.full((1, 3, 4), K))
    with pytest.raises(ValueError, match="class_labels"):
        prior(_codes(1, (3, 4)), torch.tensor([0]))
    with pytest.raises(BrainVQInputError, match="ordering_type"):
        _prior((3, 4), ordering_type="zigzag")


@pytest.mark.parametrize(
    "shape,ordering_type", [((3, 4), "raster_scan"), ((3, 4), "s_curve"), ((3, 4), "random"), ((2, 2, 3), "s_curve")]
)
def test_causality_by_gradients(shape, ordering_type):
    """d logits[p] / d embedding(code q) is zero iff q is not generated before p (and non-zero otherwise)."""
    prior = _prior(shape, ordering_type=ordering_type)
    order = prior.generation_order(shape)
    n = order.numel()
    assert sorted(order.tolist()) == list(range(n))
    if ordering_type != "raster_scan":
        assert order.tolist() != list(range(n))
    rank = torch.argsort(order)
    captured = {}

    def hook(module, inputs, output):
        output.retain_grad()
        captured["emb"] = output

    handle = prior.transformer.token_embeddings.register_forward_hook(hook)
    try:
        logits = prior(_codes(1, shape)).flatten(2)[0]  # (K, N) in row-major positions
    finally:
        handle.remove()
    emb = captured["emb"]
    for p in range(n):
        emb.grad = None
        logits[:, p].sum().backward(retain_graph=True)
        per_input = emb.grad[0].abs().sum(-1)  # (N,): input 0 = start token, input s + 1 = s-th generated code
        per_code = torch.zeros(n)
        per_code[order[:-1]] = per_input[1:]  # the last generated code is never an input
        earlier = rank < rank[p]
        assert per_input[0] > 0  # the start token is always seen
        assert (per_code[~earlier] == 0).all(), f"position {p} sees a code not generated before it"
        assert (per_code[earlier] > 0).all(), f"position {p} misses an earlier code"


@pytest.mark.parametrize(
    "shape,num_classes,ordering_type",
    [((4, 5), None, "raster_scan"), ((4, 5), 3, "s_curve"), ((2, 3, 4), None, "random"), ((2, 3, 4), 2, "raster_scan")],
)
def test_cached_decoder_matches_full_forward(shape, num_classes, ordering_type):
    prior = _prior(shape, num_classes, ordering_type)
    codes = _codes(3, shape)
    labels = None if num_classes is None else torch.tensor([0, num_classes - 1, 1])
    full = prior(codes, labels).flatten(2)
    decoder = prior.incremental_decoder(3, shape, labels)
    assert isinstance(decoder, TransformerKVCacheDecoder) and not decoder.cuda_graph_active
    flat = codes.reshape(3, -1)
    for t, pos in enumerate(prior.generation_order(shape).tolist()):
        step = decoder.step(flat, t)
        assert step.shape == (3, K)
        torch.testing.assert_close(step, full[:, :, pos], atol=1e-5, rtol=1e-5)
    # restarting at t=0 reuses the decoder; gaps are refused
    torch.testing.assert_close(decoder.step(flat, 0), full[:, :, prior.generation_order(shape)[0]], atol=1e-5, rtol=0)
    with pytest.raises(BrainVQInputError, match="consecutive"):
        decoder.step(flat, 2)


@pytest.mark.parametrize("use_combined_linear", [True, False])
def test_monai_state_dict_and_from_monai(use_combined_linear):
    shape = (3, 4)
    torch.manual_seed(5)
    monai_tf = DecoderOnlyTransformer(
        num_tokens=K + 1,
        max_seq_len=13,
        attn_layers_dim=16,
        attn_layers_depth=2,
        attn_layers_heads=4,
        use_combined_linear=use_combined_linear,
    ).eval()
    codes = _codes(2, shape)
    ordering = Ordering("raster_scan", spatial_dims=2, dimensions=(1, *shape))
    # MONAI's own training forward defines the convention: BOS = K, sequence shifted right by one
    vq = SimpleNamespace(num_embeddings=K, index_quantize=lambda images: codes)  # the inferer needs only these
    monai_logits = VQVAETransformerInferer()(torch.zeros(2, 1, 6, 8), vq, monai_tf, ordering)

    if use_combined_linear is False:  # TransformerPrior builds MONAI's default layout: the state dict loads as is
        prior = _prior(shape)
        prior.transformer.load_state_dict(monai_tf.state_dict())  # strict, MONAI's causal_mask keys dropped
        torch.testing.assert_close(prior.sequence_logits(codes), monai_logits, atol=1e-5, rtol=1e-5)
    before = {k: v.clone() for k, v in monai_tf.state_dict().items()}
    prior = TransformerPrior.from_monai(monai_tf, shape, ordering_type="raster_scan")
    # converted: a CausalTransformer with copied weights, the MONAI module untouched
    assert isinstance(prior.transformer, CausalTransformer) and prior.transformer is not monai_tf
    assert prior.num_embeddings == K and not prior.transformer.training
    assert all(torch.equal(monai_tf.state_dict()[k], v) for k, v in before.items())
    assert prior.transformer.blocks[0].attn.use_combined_linear is use_combined_linear
    # a CausalTransformer is used as is
    assert TransformerPrior.from_monai(prior.transformer, shape).transformer is prior.transformer
    torch.testing.assert_close(prior.sequence_logits(codes), monai_logits, atol=1e-5, rtol=1e-5)
    logits = prior(codes).flatten(2)
    decoder = prior.incremental_decoder(2, shape)
    for t in range(12):
        torch.testing.assert_close(decoder.step(codes.reshape(2, -1), t), logits[:, :, t], atol=1e-5, rtol=1e-5)


def test_from_monai_checks_and_explicit_ordering():
    tf = DecoderOnlyTransformer(
        num_tokens=K + 3, max_seq_len=12, attn_layers_dim=8, attn_layers_depth=1, attn_layers_heads=2
    )
    with pytest.raises(BrainVQInputError, match="max_seq_len"):
        TransformerPrior.from_monai(tf, (4, 4))
    ordering = Ordering("random", spatial_dims=2, dimensions=(1, 3, 4))
    prior = TransformerPrior.from_monai(tf, (3, 4), num_classes=2, sequence_ordering=ordering)
    assert prior.num_embeddings == K and prior.num_classes == 2
    assert prior.generation_order((3, 4)).tolist() == ordering.get_sequence_ordering().tolist()
    with pytest.raises(BrainVQInputError, match="permutation"):
        TransformerPrior.from_monai(tf, (3, 4), sequence_ordering=[0] * 12)
    xattn = DecoderOnlyTransformer(K + 1, 13, 8, 1, 2, with_cross_attention=True)
    with pytest.raises(BrainVQInputError, match="cross-attention"):
        TransformerPrior.from_monai(xattn, (3, 4))


def test_random_ordering_saved_in_state_dict():
    shape = (3, 4)
    a = _prior(shape, ordering_type="random")
    assert torch.equal(a.sequence_ordering, make_sequence_ordering("random", shape, 3))
    b = TransformerPrior(2, K, shape, ordering_type="random", ordering_seed=11, **SMALL).eval()
    assert not torch.equal(a.sequence_ordering, b.sequence_ordering)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(b.generation_order(shape), a.generation_order(shape))
    codes = _codes(2, shape)
    torch.testing.assert_close(b(codes), a(codes), atol=0, rtol=0)
    bad = a.state_dict()
    bad["sequence_ordering"] = torch.zeros(12, dtype=torch.long)
    with pytest.raises(BrainVQInputError, match="permutation"):
        b.load_state_dict(bad)


@pytest.mark.parametrize(
    "shape,num_classes,ordering_type,temperature,top_k",
    [((4, 4), None, "raster_scan", 1.0, None), ((4, 4), 2, "s_curve", 0.7, 3), ((2, 2, 3), None, "random", 1.3, None)],
)
def test_sample_codes_cached_equals_naive(shape, num_classes, ordering_type, temperature, top_k):
    prior = _prior(shape, num_classes, ordering_type)
    labels = None if num_classes is None else torch.tensor([0, 1, 1])
    out = [
        sample_codes(
            prior, 3, shape, labels, temperature, top_k, torch.Generator().manual_seed(42), use_cache=use_cache
        )
        for use_cache in (True, False)
    ]
    assert out[0].shape == (3, *shape) and out[0].dtype == torch.long
    assert torch.equal(out[0], out[1])
    assert 0 <= out[0].min() and out[0].max() < K
    other = sample_codes(prior, 3, shape, labels, temperature, top_k, torch.Generator().manual_seed(7))
    assert not torch.equal(other, out[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_matches_eager_cache():
    shape = (4, 6)
    prior = _prior(shape, num_classes=2, ordering_type="s_curve").cuda()
    codes = _codes(3, shape).cuda()
    labels = torch.tensor([0, 1, 0], device="cuda")
    full = prior(codes, labels).flatten(2)
    eager = prior.incremental_decoder(3, shape, labels, use_cuda_graph=False)
    graph = prior.incremental_decoder(3, shape, labels, use_cuda_graph=True)
    flat = codes.reshape(3, -1)
    for t, pos in enumerate(prior.generation_order(shape).tolist()):
        a, b = eager.step(flat, t), graph.step(flat, t)
        assert graph.cuda_graph_active
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b, full[:, :, pos], atol=1e-4, rtol=1e-4)
    prior.use_cuda_graph = True
    gens = [torch.Generator(device="cuda").manual_seed(0) for _ in range(2)]
    fast = sample_codes(prior, 3, shape, labels, generator=gens[0])
    naive = sample_codes(prior, 3, shape, labels, generator=gens[1], use_cache=False)
    assert torch.equal(fast, naive)


def test_cuda_graph_request_falls_back_on_cpu():
    prior = _prior((3, 3))
    decoder = prior.incremental_decoder(2, (3, 3), use_cuda_graph=True)
    assert not decoder.use_cuda_graph and not decoder.cuda_graph_active
    codes = _codes(2, (3, 3))
    torch.testing.assert_close(decoder.step(codes.reshape(2, -1), 0), prior(codes)[:, :, 0, 0], atol=1e-5, rtol=1e-5)


def test_checkpointing_prior_matches_and_decoder_exact():
    shape = (3, 4)
    prior = _prior(shape, num_classes=2, use_checkpointing=True)
    reference = _prior(shape, num_classes=2)  # same seed, same weights
    assert prior.transformer.use_checkpointing and not reference.transformer.use_checkpointing
    codes, labels = _codes(2, shape), torch.tensor([1, 0])
    grads = []
    for model in (prior.train(), reference.train()):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(codes, labels), codes).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "transformer.to_logits.weight" in grads[0]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], atol=1e-6, rtol=1e-5)
    prior.eval()
    full = prior(codes, labels)
    decoder = prior.incremental_decoder(2, shape, labels)
    for t in range(12):
        torch.testing.assert_close(
            decoder.step(codes.reshape(2, -1), t), full.flatten(2)[:, :, t], atol=1e-5, rtol=1e-5
        )


def test_no_causal_mask_and_old_checkpoint_loads():
    shape = (3, 4)
    prior = _prior(shape)
    assert isinstance(prior.transformer, CausalTransformer)
    assert not [k for k in prior.state_dict() if "causal_mask" in k]
    assert not [name for name, _ in prior.named_buffers() if "causal_mask" in name]
    # an old TransformerPrior checkpoint (MONAI transformer inside, with its n x n masks) loads strictly
    old = dict(prior.state_dict())
    for i in range(SMALL["attn_layers_depth"]):
        old[f"transformer.blocks.{i}.attn.causal_mask"] = torch.tril(torch.ones(13, 13)).view(1, 1, 13, 13)
    fresh = _prior(shape, seed=9)
    codes = _codes(2, shape)
    assert not torch.allclose(fresh(codes), prior(codes))
    fresh.load_state_dict(old, strict=True)
    torch.testing.assert_close(fresh(codes), prior(codes), atol=0, rtol=0)
    assert "transformer.blocks.0.attn.causal_mask" in old  # the caller's dict is not modified
    with pytest.raises(TypeError):
        TransformerPrior(2, K, shape, use_flash_attention=True)  # replaced by use_checkpointing
