"""Tests of RobustEMAQuantizer: API parity with MONAI, update rules, init, restarts, fp32 math, collapse, DDP."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.networks.layers.vector_quantizer import EMAQuantizer

from brainvq_monai.networks.layers.quantizer import RobustEMAQuantizer, RobustVectorQuantizer, codebook_perplexity
from brainvq_monai.utils.errors import BrainVQInputError


def _codebook_state(q: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in q.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _mixture(num_clusters: int, dim: int, offset: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num_clusters, dim, generator=gen) + offset


def _mixture_batch(centers: torch.Tensor, gen: torch.Generator, batch: int = 2, size: int = 16) -> torch.Tensor:
    """Encoder-like outputs [B, D, size, size] drawn from well-separated Gaussian clusters."""
    idx = torch.randint(centers.shape[0], (batch * size * size,), generator=gen)
    v = centers[idx] + 0.1 * torch.randn(idx.numel(), centers.shape[1], generator=gen)
    return v.view(batch, size, size, -1).permute(0, 3, 1, 2).contiguous()


def test_codebook_perplexity():
    assert codebook_perplexity(torch.ones(8)).item() == pytest.approx(8.0, rel=1e-6)
    assert codebook_perplexity(torch.tensor([0, 5, 0, 0])).item() == pytest.approx(1.0)
    assert codebook_perplexity(torch.tensor([1, 1, 0, 0])).item() == pytest.approx(2.0, rel=1e-6)
    assert codebook_perplexity(torch.zeros(4)).item() == 0.0
    batched = codebook_perplexity(torch.tensor([[3.0, 3.0, 3.0], [1.0, 0.0, 0.0]]))
    assert batched.shape == (2,) and torch.allclose(batched, torch.tensor([3.0, 1.0]))


def test_defaults_and_bad_settings():
    q = RobustEMAQuantizer(spatial_dims=2, num_embeddings=8, embedding_dim=4)
    assert isinstance(q, EMAQuantizer)
    assert q.decay == 0.99 and q.commitment_cost == 0.25 and q.epsilon == 1e-5 and q.init == "kmeans"
    assert not bool(q.initialized) and "initialized" in q.state_dict() and "num_updates" in q.state_dict()
    for kwargs in ({"init": "bogus"}, {"embedding_init": "xavier"}, {"spatial_dims": 1}, {"decay": 1.0}):
        args = {"spatial_dims": 2, "num_embeddings": 8, "embedding_dim": 4, **kwargs}
        with pytest.raises(BrainVQInputError, match=next(iter(kwargs))):
            RobustEMAQuantizer(**args)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_matches_monai_in_eval(spatial_dims):
    """Same outputs, same order and same state-dict names as MONAI's EMAQuantizer (eval mode, same codebook)."""
    torch.manual_seed(0)
    monai_q = EMAQuantizer(spatial_dims, num_embeddings=16, embedding_dim=4).eval()
    ours = RobustEMAQuantizer(spatial_dims, num_embeddings=16, embedding_dim=4).eval()
    ours.load_state_dict(monai_q.state_dict())  # strict: MONAI checkpoints load, extra buffers are filled
    assert bool(ours.initialized) and int(ours.num_updates) == 0
    x = torch.randn(2, 4, *([6] * spatial_dims), requires_grad=True)
    q_m, loss_m, idx_m = monai_q(x)
    q_o, loss_o, idx_o = ours(x)
    assert q_o.shape == x.shape and idx_o.shape == (2, *([6] * spatial_dims)) and loss_o.ndim == 0
    assert torch.equal(idx_o, idx_m)
    assert torch.allclose(q_o, q_m, atol=1e-6) and torch.allclose(loss_o, loss_m)
    assert torch.equal(ours.embed(idx_o), monai_q.embed(idx_m))
    q_o.sum().backward()  # straight-through estimator
    assert torch.allclose(x.grad, torch.ones_like(x))
    assert ours.last_codes_used.item() == idx_o.unique().numel()
    assert ours.last_counts.sum().item() == idx_o.numel()
    flat, onehot, idx_q = ours.quantize(x)
    assert flat.shape == (idx_o.numel(), 4) and onehot.shape == (idx_o.numel(), 16) and torch.equal(idx_q, idx_o)


def test_codebook_updates_only_in_training():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8) + 3.0
    q = RobustEMAQuantizer(2, num_embeddings=16, embedding_dim=4, seed=0)
    before = _codebook_state(q)
    q.eval()
    q(x)
    assert _same_state(before, _codebook_state(q)), "eval mode changed the codebook"
    q.train()
    q.freeze_codebook = True
    q(x)
    assert _same_state(before, _codebook_state(q)), "freeze_codebook did not freeze"
    wrapper = RobustVectorQuantizer(q)
    q.freeze_codebook = False
    idx = wrapper.quantize(x)  # MONAI's wrapper.quantize runs forward (updates); ours must not
    assert idx.shape == (2, 8, 8) and _same_state(before, _codebook_state(q))
    with torch.no_grad():  # documented: train mode updates whether or not grad is enabled
        wrapper(x)
    after = _codebook_state(q)
    assert not torch.equal(before["embedding.weight"], after["embedding.weight"])
    assert bool(after["initialized"]) and int(after["num_updates"]) == 1
    assert wrapper.perplexity.item() > 1.0


def test_data_init_once_and_persisted(monkeypatch):
    torch.manual_seed(0)
    centers = _mixture(8, 4, offset=5.0, seed=1)
    gen = torch.Generator().manual_seed(2)
    q = RobustEMAQuantizer(2, num_embeddings=8, embedding_dim=4, seed=0, restart_every=0)
    calls = []
    original = q._data_init
    monkeypatch.setattr(q, "_data_init", lambda flat: (calls.append(1), original(flat)))
    q(_mixture_batch(centers, gen))
    q(_mixture_batch(centers, gen))
    assert len(calls) == 1 and bool(q.initialized)
    # k-means init put every code on a cluster centre (far from the N(0, 1) random codebook)
    dist_to_centre = torch.cdist(q.embedding.weight, centers).min(dim=1).values
    assert dist_to_centre.max().item() < 0.2
    # EMA state is consistent with the codebook (embedding == ema_w / smoothed cluster size)
    cs = q.ema_cluster_size
    n = cs.sum()
    smoothed = (cs + q.epsilon) / (n + q.num_embeddings * q.epsilon) * n
    assert torch.allclose(q.ema_w / smoothed[:, None], q.embedding.weight, atol=1e-5)
    assert cs.sum().item() == pytest.approx(2 * 16 * 16, rel=1e-3)

    loaded = RobustEMAQuantizer(2, num_embeddings=8, embedding_dim=4, seed=0)
    loaded.load_state_dict(q.state_dict())
    assert bool(loaded.initialized)
    calls_loaded = []
    original_loaded = loaded._data_init
    monkeypatch.setattr(loaded, "_data_init", lambda flat: (calls_loaded.append(1), original_loaded(flat)))
    loaded(_mixture_batch(centers + 100.0, gen))  # very different data: a re-init would move codes by ~100
    assert not calls_loaded
    # EMA moves the one code that takes the new data a little; a re-init would put codes on the new clusters
    assert torch.cdist(loaded.embedding.weight, centers + 100.0).min().item() > 50.0
    moved = (loaded.embedding.weight - q.embedding.weight).abs().amax(dim=1) > 1e-4
    assert moved.sum().item() <= 2


@pytest.mark.parametrize("init", ["kmeans", "sample"])
def test_data_init_with_fewer_vectors_than_codes(init):
    torch.manual_seed(0)
    q = RobustEMAQuantizer(2, num_embeddings=32, embedding_dim=4, init=init, seed=0)
    x = torch.randn(1, 4, 3, 3) + 5.0  # 9 vectors for 32 codes
    quantized, loss, idx = q(x)
    w = q.embedding.weight
    assert torch.isfinite(w).all() and torch.isfinite(loss) and bool(q.initialized)
    assert (w - 5.0).abs().max().item() < 6.0  # every code was taken from the data (+ noise)
    assert idx.unique().numel() >= 7


def test_dead_code_restart():
    torch.manual_seed(0)
    q = RobustEMAQuantizer(2, num_embeddings=32, embedding_dim=4, init="none", restart_every=1, seed=0)
    x = torch.randn(2, 4, 8, 8) * 0.5 + 10.0  # far from the N(0, 1) codebook: nearly every code is dead
    q(x)
    assert q.last_restarted >= 28
    w = q.embedding.weight
    near_data = (w - 10.0).abs().max(dim=1).values < 3.0
    assert near_data.sum().item() >= 31
    cs = q.ema_cluster_size
    n = cs.sum()
    smoothed = (cs + q.epsilon) / (n + q.num_embeddings * q.epsilon) * n
    assert torch.allclose(q.ema_w / smoothed[:, None], w, atol=1e-5)
    restarted_cs = cs[cs == 1.0]
    assert restarted_cs.numel() >= 28  # re-seeded codes got cluster size max(threshold, 1)
    q(x)
    _, _, idx = q.eval()(x)
    assert idx.unique().numel() >= 16


def test_abandoned_codes_restart_before_their_ema_decays():
    """Encoder drift: codes fitted at init lose all their data. Their EMA cluster size stays far above the threshold
    for hundreds of updates (decay 0.99), so restarts must look at recent assignments, not at the EMA."""
    gen = torch.Generator().manual_seed(0)
    wide = _mixture(32, 4, offset=0.0, seed=1) * 4.0
    q = RobustEMAQuantizer(2, num_embeddings=32, embedding_dim=4, restart_every=5, seed=0).train()
    q(_mixture_batch(wide, gen))  # k-means init on 32 clusters: every code gets ~16 vectors
    narrow = wide[:2]  # the encoder now only produces 2 of them
    for _ in range(8):  # updates 2..9 (the check at update 5 still saw the init batch's assignments)
        q(_mixture_batch(narrow, gen))
    assert (q.ema_cluster_size > q.dead_code_threshold).sum() >= 28  # the EMA still calls almost all codes alive
    q(_mixture_batch(narrow, gen))  # update 10: restart check over updates 6..10, all on the narrow data
    assert q.last_restarted >= 28
    _, _, idx = q(_mixture_batch(narrow, gen))
    assert idx.unique().numel() > 2  # restarted codes sit on the current data and share it


def test_toy_collapse_monai_vs_ours():
    """64 well-separated clusters offset from the origin: MONAI's quantizer collapses, ours uses (nearly) all codes.

    Measured (cluster seeds 0-2, 20 steps of 256 vectors): MONAI decay 0.5 used 4-8 codes, decay 0.99 1 code;
    ours 64/64 (k-means init + restarts); restarts alone (init="none") 59-63.
    """
    num_codes, dim = 64, 8
    centers = _mixture(num_codes, dim, offset=3.0, seed=0)

    def codes_used(quantizer: torch.nn.Module) -> int:
        gen = torch.Generator().manual_seed(100)
        for _ in range(20):
            quantizer(_mixture_batch(centers, gen, batch=1))
        quantizer.eval()
        _, _, idx = quantizer(_mixture_batch(centers, gen, batch=4))
        return idx.unique().numel()

    torch.manual_seed(0)
    monai_used = codes_used(EMAQuantizer(2, num_codes, dim, decay=0.5))  # MONAI VQVAE's default decay
    torch.manual_seed(0)
    monai99_used = codes_used(EMAQuantizer(2, num_codes, dim, decay=0.99))
    torch.manual_seed(0)
    ours_used = codes_used(RobustEMAQuantizer(2, num_codes, dim, seed=0))
    torch.manual_seed(0)
    restart_only = codes_used(RobustEMAQuantizer(2, num_codes, dim, init="none", seed=0))
    assert monai_used <= num_codes // 4 and monai99_used <= num_codes // 4
    assert ours_used >= 61
    assert restart_only >= 48  # restarts alone already recover most codes


def test_fp32_under_autocast():
    torch.manual_seed(0)
    q = RobustEMAQuantizer(2, num_embeddings=16, embedding_dim=4, seed=0, restart_every=1)
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)
    img = torch.randn(2, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = conv(img)
        assert z.dtype == torch.bfloat16
        quantized, loss, idx = q(z)
    assert quantized.dtype == torch.bfloat16 and loss.dtype == torch.float32 and torch.isfinite(loss)
    for name in ("embedding.weight", "ema_w", "ema_cluster_size"):
        t = q.state_dict()[name]
        assert t.dtype == torch.float32 and torch.isfinite(t).all(), name
    q.eval()
    _, _, idx_ref = q(z.float())
    _, _, idx_amp = q(z)
    assert torch.equal(idx_ref, idx_amp)  # distances computed from the same fp32 values
    loss.backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


# ---------------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # identical random codebooks on every rank
        kwargs = {"spatial_dims": 2, "num_embeddings": 16, "embedding_dim": 4, "restart_every": 2}
        synced = RobustEMAQuantizer(**kwargs, dead_code_threshold=8.0)
        local = RobustEMAQuantizer(**kwargs, dead_code_threshold=8.0, ddp_sync=False)
        local.load_state_dict(synced.state_dict())
        torch.manual_seed(1000 + rank)  # global RNG now differs across ranks (seed=None draws from it)
        gen = torch.Generator().manual_seed(rank)
        restarted = []
        for step in range(5):  # ends on a plain EMA step (restarts at 2 and 4 re-broadcast everything)
            # different data per rank, drifting over time so that codes die and get restarted
            x = torch.randn(2, 4, 8, 8, generator=gen) * (1.0 + rank) + 3.0 * rank + step
            synced(x)
            local(x)
            restarted.append(synced.last_restarted)
        torch.save(
            {"synced": synced.state_dict(), "local": local.state_dict(), "restarted": restarted},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_ddp_codebook_identical_across_ranks(tmp_path):
    world = 2
    # fork (where available) avoids re-importing torch/MONAI in every child; spawn elsewhere
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    args = (world, str(tmp_path / "pg_init"), str(tmp_path))
    mp.start_processes(_ddp_worker, args=args, nprocs=world, join=True, start_method=method)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    assert sum(states[0]["restarted"]) > 0, "the scenario must exercise dead-code restarts"
    assert states[0]["restarted"] == states[1]["restarted"]
    for name in ("embedding.weight", "ema_w", "ema_cluster_size", "initialized", "num_updates"):
        assert torch.equal(states[0]["synced"][name], states[1]["synced"][name]), name
    assert bool(states[0]["synced"]["initialized"]) and int(states[0]["synced"]["num_updates"]) == 5
    # control: without ddp_sync the same data gives different codebooks per rank
    assert not torch.equal(states[0]["local"]["embedding.weight"], states[1]["local"]["embedding.weight"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_fp16_init_and_restart():
    torch.manual_seed(0)
    q = RobustEMAQuantizer(3, num_embeddings=64, embedding_dim=8, restart_every=1, dead_code_threshold=2.0).cuda()
    for seed in (None, 0):
        q.seed = seed
        x = torch.randn(2, 8, 4, 4, 4, device="cuda") + 3.0
        with torch.autocast("cuda", dtype=torch.float16):
            quantized, loss, idx = q(x.half())
        assert quantized.dtype == torch.float16 and loss.dtype == torch.float32 and torch.isfinite(loss)
        assert idx.device.type == "cuda" and idx.max().item() < 64
    assert q.embedding.weight.dtype == torch.float32 and torch.isfinite(q.embedding.weight).all()
    assert bool(q.initialized) and int(q.num_updates) == 2
