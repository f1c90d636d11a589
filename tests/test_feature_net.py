"""The in-house feature network: shapes in 2D and 3D, training, versioned save / load."""

from __future__ import annotations

import pytest
import torch

from brainvq_monai.engines.feature_trainer import train_feature_net
from brainvq_monai.networks.nets.feature_net import (
    FEATURE_NET_VERSION,
    BrainFeatureNet,
    flip_task,
    items_hash,
    load_feature_net,
    save_feature_net,
)
from brainvq_monai.utils.errors import BrainVQInputError


@pytest.mark.parametrize("spatial_dims,size", [(2, (32, 32)), (3, (16, 16, 16))])
def test_shapes(spatial_dims, size):
    net = BrainFeatureNet(spatial_dims, num_classes=3, feature_dim=24, channels=(4, 8)).eval()
    x = torch.rand(2, 1, *size)
    logits, pos = net(x)
    assert logits.shape == (2, 3) and pos.shape == (2,) and ((pos >= 0) & (pos <= 1)).all()
    assert net.features(x).shape == (2, 24)


def _toy(n: int = 48, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class 1 has a bright square, the square's row encodes the 'slice position'."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 1, size, size, generator=g)
    labels = torch.arange(n) % 2
    pos = torch.rand(n, generator=g)
    for i in range(n):
        r = int(pos[i] * (size - 8))
        x[i, 0, r : r + 8, 4:12] += 0.3 + 0.5 * labels[i]
    return x.clamp(0, 1), labels, pos


def test_training_reduces_loss_and_learns_the_labels():
    x, y, p = _toy()
    net, hist = train_feature_net(x, y, p, epochs=15, batch_size=16, channels=(8, 16), feature_dim=16, lr=1e-2)
    assert hist["loss"][-1] < 0.6 * hist["loss"][0]
    assert not net.training and not any(q.requires_grad for q in net.parameters())
    xt, yt, _ = _toy(seed=1)
    with torch.no_grad():
        acc = (net(xt)[0].argmax(1) == yt).float().mean()
    assert acc > 0.8


def test_self_supervised_flip_task_without_labels():
    x, _, _ = _toy(n=8)
    flipped, target = flip_task(x, torch.Generator().manual_seed(0))
    for i, t in enumerate(target.tolist()):
        dims = [d for bit, d in ((1, 2), (2, 3)) if t & bit]
        assert torch.equal(flipped[i], torch.flip(x[i : i + 1], dims)[0] if dims else x[i])
    net, hist = train_feature_net(x, epochs=1, batch_size=8, channels=(4,), feature_dim=8)
    assert net.num_classes == 4 and hist["task"].startswith("flip") and not hist["position"]


def test_save_load_round_trip_with_version_and_hash(tmp_path):
    net = BrainFeatureNet(2, num_classes=2, feature_dim=8, channels=(4, 8)).eval()
    items = [{"image": "a.png", "label": 0, "slice": 3}, {"image": "b.png", "label": 1, "slice": 4}]
    h = items_hash(items, {"seed": 0})
    assert h != items_hash(items[:1], {"seed": 0}) and h != items_hash(items, {"seed": 1})
    path = tmp_path / "models" / "feature_net.pt"
    save_feature_net(net, path, h, {"epochs": 1})
    loaded, info = load_feature_net(path, h)
    assert info["version"] == FEATURE_NET_VERSION and info["data_hash"] == h and info["meta"] == {"epochs": 1}
    x = torch.rand(3, 1, 16, 16)
    assert torch.equal(loaded.features(x), net.features(x))
    with pytest.raises(BrainVQInputError, match="other data"):
        load_feature_net(path, "0" * 64)
    saved = torch.load(path, weights_only=True)
    saved["version"] = "brainvq-featnet-0"
    torch.save(saved, path)
    with pytest.raises(BrainVQInputError, match="version"):
        load_feature_net(path)
    with pytest.raises(BrainVQInputError, match="not found"):
        load_feature_net(tmp_path / "nope.pt")


def test_feature_net_trains_through_a_monai_engine_and_its_inferer(monkeypatch):
    """No training loop outside engines/: every forward of the feature net's training goes through the engine's
    inferer (a ``monai.engines.SupervisedTrainer``)."""
    from monai.engines import SupervisedTrainer
    from monai.inferers import SimpleInferer

    from brainvq_monai.engines.feature_trainer import FeatureNetTrainer

    assert issubclass(FeatureNetTrainer, SupervisedTrainer)
    calls = []
    original = SimpleInferer.__call__

    def counting(self, inputs, network, *args, **kwargs):
        calls.append(inputs.shape[0])
        return original(self, inputs, network, *args, **kwargs)

    monkeypatch.setattr(SimpleInferer, "__call__", counting)
    x = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    _, hist = train_feature_net(x, epochs=2, batch_size=4, channels=(4,), feature_dim=8)
    assert len(calls) == 2 * 3 and sum(calls) == 2 * 10 and len(hist["loss"]) == 2
