"""CausalTransformer: MONAI's DecoderOnlyTransformer maths and weights layout, without n x n buffers."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

import pytest
import torch
from monai.inferers import VQVAETransformerInferer
from monai.networks.nets import DecoderOnlyTransformer
from monai.utils import Ordering
from torch import nn
from torch.nn import functional as F

from brainvq_monai.apps.benchmark.timing import saved_activation_bytes
from brainvq_monai.networks.nets.causal_transformer import CausalTransformer
from brainvq_monai.networks.nets.kv_cache import TransformerKVCacheDecoder
from brainvq_monai.utils.errors import BrainVQInputError

V, N = 11, 40
CFG = {"num_tokens": V, "max_seq_len": N, "attn_layers_dim": 32, "attn_layers_depth": 3, "attn_layers_heads": 4}


def _pair(seed=0, **kw) -> tuple[DecoderOnlyTransformer, CausalTransformer]:
    """A MONAI transformer and ours built from the same seed (hence the same weights)."""
    cfg = {**CFG, **kw}
    use_checkpointing = cfg.pop("use_checkpointing", False)
    torch.manual_seed(seed)
    monai_tf = DecoderOnlyTransformer(**cfg)
    torch.manual_seed(seed)
    ours = CausalTransformer(**cfg, use_checkpointing=use_checkpointing)
    return monai_tf, ours


def _tokens(batch=2, length=N, seed=1):
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x).transpose(1, 2), x)
    loss.backward()
    return loss.detach(), _grads(model)


@pytest.mark.parametrize(
    "kw", [{}, {"use_combined_linear": True}, {"include_fc": False, "embedding_dropout_rate": 0.1}]
)
def test_matches_monai_forward_and_grads(kw):
    monai_tf, ours = _pair(**kw)
    monai_sd, ours_sd = monai_tf.state_dict(), ours.state_dict()
    masks = {k for k in monai_sd if k.endswith(".attn.causal_mask")}
    assert len(masks) == CFG["attn_layers_depth"]
    assert set(ours_sd) == set(monai_sd) - masks  # identical keys minus the masks
    for key, value in ours_sd.items():  # same seed -> same creation order -> identical initial weights
        assert torch.equal(value, monai_sd[key]), key
    x = _tokens()
    monai_tf.eval(), ours.eval()
    out = ours(x)
    assert out.shape == (2, N, V)
    assert (out - monai_tf(x)).abs().max() < 1e-5
    assert (ours(x[:, :17]) - monai_tf(x[:, :17])).abs().max() < 1e-5  # shorter sequences too
    # causality: changing the last token changes only the last position's logits
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % V
    torch.testing.assert_close(ours(y)[:, :-1], out[:, :-1], atol=0, rtol=0)
    if not kw.get("embedding_dropout_rate"):
        monai_tf.train(), ours.train()
        (loss_m, grads_m), (loss_o, grads_o) = _step(monai_tf, x), _step(ours, x)
        torch.testing.assert_close(loss_o, loss_m, atol=1e-5, rtol=1e-5)
        assert grads_o.keys() == grads_m.keys()
        for name, grad in grads_o.items():
            torch.testing.assert_close(grad, grads_m[name], atol=1e-5, rtol=1e-4)


def test_no_nxn_buffer_and_long_construction_is_cheap():
    _, ours = _pair()
    assert list(ours.named_buffers()) == []
    assert not [k for k in ours.state_dict() if "causal_mask" in k]
    start = time.perf_counter()
    long = CausalTransformer(num_tokens=257, max_seq_len=20_000, attn_layers_dim=32, attn_layers_depth=24,
                             attn_layers_heads=4)  # fmt: skip
    elapsed = time.perf_counter() - start
    buffer_bytes = sum(b.numel() * b.element_size() for b in long.buffers())
    state_bytes = sum(v.numel() * v.element_size() for v in long.state_dict().values())
    param_bytes = sum(p.numel() * p.element_size() for p in long.parameters())
    assert buffer_bytes == 0 and state_bytes == param_bytes  # MONAI's masks would be 24 * 4 * 20,000**2 = 38 GB
    assert state_bytes < 20e6
    assert elapsed < 5.0
    assert long.blocks[0].attn.causal and long.blocks[0].attn.use_flash_attention


def test_monai_state_dict_loads_strict_also_nested():
    monai_tf, _ = _pair(seed=0)
    _, other = _pair(seed=3)
    x = _tokens()
    assert not torch.allclose(other.eval()(x), monai_tf.eval()(x))
    result = other.load_state_dict(monai_tf.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert (other(x) - monai_tf(x)).abs().max() < 1e-5
    # nested under a prefix (as inside TransformerPrior), with masks of another length: dropped by prefix
    wrapper_m = nn.ModuleDict({"transformer": monai_tf})
    wrapper_o = nn.ModuleDict({"transformer": _pair(seed=4)[1]})
    state = wrapper_m.state_dict()
    assert "transformer.blocks.0.attn.causal_mask" in state
    wrapper_o.load_state_dict(state, strict=True)
    assert "transformer.blocks.0.attn.causal_mask" in state  # the caller's dict is left alone
    assert (wrapper_o["transformer"].eval()(x) - monai_tf(x)).abs().max() < 1e-5
    # a genuinely unexpected key still fails a strict load
    state["transformer.blocks.0.attn.bogus"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="bogus"):
        wrapper_o.load_state_dict(state, strict=True)


@pytest.mark.parametrize("use_flash_attention", [False, True])
def test_from_monai_and_to_monai_round_trip(use_flash_attention):
    monai_tf, _ = _pair(seed=5, use_combined_linear=True, embedding_dropout_rate=0.2)
    monai_tf.eval()
    before = {k: v.clone() for k, v in monai_tf.state_dict().items()}
    ours = CausalTransformer.from_monai(monai_tf, use_checkpointing=True)
    assert isinstance(ours, DecoderOnlyTransformer) and ours.use_checkpointing and not ours.training
    assert ours.use_combined_linear and ours.embedding_dropout_rate == 0.2 and ours.attn_layers_depth == 3
    for key, value in ours.state_dict().items():
        assert torch.equal(value, monai_tf.state_dict()[key]) and value.data_ptr() != before[key].data_ptr()
    with torch.no_grad():  # a copy: changing ours leaves MONAI's module as it was
        ours.to_logits.weight.add_(1.0)
    assert all(torch.equal(monai_tf.state_dict()[k], v) for k, v in before.items())
    back = ours.to_monai(use_flash_attention=use_flash_attention)
    assert type(back) is DecoderOnlyTransformer and not back.training
    assert back.blocks[0].attn.use_flash_attention is use_flash_attention
    assert back.blocks[0].attn.causal_mask.shape == (1, 1, N, N)
    x = _tokens()
    assert (back(x) - ours(x)).abs().max() < 1e-5
    assert torch.equal(back.to_logits.weight, ours.to_logits.weight)
    with pytest.raises(TypeError):
        CausalTransformer.from_monai(nn.Linear(2, 2))  # type: ignore[arg-type]


def test_cross_attention_refused():
    with pytest.raises(BrainVQInputError, match="with_cross_attention"):
        CausalTransformer(**{**CFG, "with_cross_attention": True})
    xattn = DecoderOnlyTransformer(V, 8, 16, 1, 2, with_cross_attention=True)
    with pytest.raises(BrainVQInputError, match="cross-attention"):
        CausalTransformer.from_monai(xattn)
    with pytest.raises(BrainVQInputError, match="divisible"):
        CausalTransformer(V, 8, 30, 1, 4)


def test_checkpointing_same_loss_grads_and_fewer_saved_bytes():
    _, plain = _pair(seed=2)
    _, ckpt = _pair(seed=2, use_checkpointing=True)
    x = _tokens(batch=3)
    plain.train(), ckpt.train()
    (loss_p, grads_p), (loss_c, grads_c) = _step(plain, x), _step(ckpt, x)
    torch.testing.assert_close(loss_c, loss_p, atol=0, rtol=0)
    assert grads_c.keys() == grads_p.keys() and "blocks.0.attn.to_q.weight" in grads_c
    for name, grad in grads_c.items():
        torch.testing.assert_close(grad, grads_p[name], atol=1e-6, rtol=1e-5)
    counts = []
    for model in (plain, ckpt):
        with saved_activation_bytes() as saved:
            model(x).sum()
        counts.append(saved["bytes"])
    assert 0 < counts[1] < counts[0] / 2
    # eval / no-grad forward does not checkpoint and gives the same output
    ckpt.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(ckpt(x), plain(x), atol=0, rtol=0)


def test_fewer_saved_bytes_than_monai_without_flash():
    monai_tf, ours = _pair(max_seq_len=256)
    x = _tokens(batch=1, length=256)
    counts = []
    for model in (monai_tf.train(), ours.train()):
        with saved_activation_bytes() as saved:
            model(x).sum()
        counts.append(saved["bytes"])
    heads_nn_bytes = CFG["attn_layers_heads"] * 256 * 256 * 4 * CFG["attn_layers_depth"]
    assert counts[0] - counts[1] > heads_nn_bytes  # MONAI keeps at least one n x n matrix per head and block


def test_works_with_monai_inferer_and_kv_cache():
    shape, k = (3, 4), V - 1  # K codes + BOS = V tokens
    monai_tf, ours = _pair(max_seq_len=13)
    monai_tf.eval(), ours.eval()
    codes = torch.randint(0, k, (2, *shape), generator=torch.Generator().manual_seed(0))
    ordering = Ordering("raster_scan", spatial_dims=2, dimensions=(1, *shape))
    vq = SimpleNamespace(num_embeddings=k, index_quantize=lambda images: codes, decode_samples=lambda z: z)
    inferer = VQVAETransformerInferer()
    logits = inferer(torch.zeros(2, 1, 6, 8), vq, ours, ordering)
    assert logits.shape == (2, 12, V)
    assert (logits - inferer(torch.zeros(2, 1, 6, 8), vq, monai_tf, ordering)).abs().max() < 1e-5
    samples = []
    for model in (ours, monai_tf):
        torch.manual_seed(7)
        samples.append(inferer.sample(shape, torch.full((2, 1), k), vq, model, ordering, verbose=False))
    assert samples[0].shape == (2, *shape) and samples[0].max() < k
    assert torch.equal(samples[0], samples[1])
    # the KV-cached decoder reads the same modules
    seq = torch.cat([torch.full((2, 1), k), codes.reshape(2, -1)[:, :-1]], dim=1)
    full = ours(seq)
    decoder = TransformerKVCacheDecoder(ours, list(range(12)), torch.full((2,), k))
    for t in range(12):
        torch.testing.assert_close(decoder.step(codes.reshape(2, -1), t), full[:, t], atol=1e-5, rtol=1e-5)


def test_state_dict_smaller_than_monai():
    monai_tf, ours = _pair(max_seq_len=512)
    sizes = []
    for model in (monai_tf, ours):
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        sizes.append(buffer.tell())
    assert sizes[0] - sizes[1] >= CFG["attn_layers_depth"] * 512 * 512 * 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_checkpointed_matches_fp32():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    n = 1024
    cfg = {**CFG, "max_seq_len": n, "attn_layers_dim": 64, "num_tokens": 33}
    model = CausalTransformer(**cfg, use_checkpointing=True).cuda().train()
    x = torch.randint(0, 33, (2, n), device="cuda")
    runs = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        model.zero_grad(set_to_none=True)
        torch.cuda.reset_peak_memory_stats()
        # bf16: only the O(n)-memory kernels are allowed (raises if SDPA would fall back to the n x n math path)
        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
        with sdpa_kernel(backends if bf16 else [*backends, SDPBackend.MATH]):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
                loss = F.cross_entropy(logits.float().transpose(1, 2), x)
            loss.backward()
        assert (logits.dtype == torch.bfloat16) is bf16
        runs[name] = (logits.float().detach(), loss.detach(), _grads(model))
    (logits32, loss32, grads32), (logits16, loss16, grads16) = runs["fp32"], runs["bf16"]
    assert torch.isfinite(logits16).all()
    torch.testing.assert_close(loss16, loss32, atol=2e-2, rtol=2e-2)
    assert (logits16 - logits32).abs().max() < 0.1
    flat32 = torch.cat([g.flatten() for g in grads32.values()])
    flat16 = torch.cat([grads16[k].float().flatten() for k in grads32])
    assert F.cosine_similarity(flat16, flat32, dim=0) > 0.99
    # checkpointing lowers the peak memory of a training step on CUDA
    peaks = []
    for use_ckpt in (False, True):
        model.use_checkpointing = use_ckpt
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float().transpose(1, 2), x)
        loss.backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated())
    assert peaks[1] < peaks[0]
