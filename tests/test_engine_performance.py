"""Performance options of the trainers and networks: in-place compile, block-wise checkpointing, fused optimizers."""

from __future__ import annotations

import pytest
import torch

from brainvq_monai.apps.benchmark.timing import saved_activation_bytes
from brainvq_monai.engines import VQVAETrainer
from brainvq_monai.engines.utils import compile_network


def test_compile_network_in_place_keeps_checkpoint_keys_and_outputs(tiny_vqvae):
    net = tiny_vqvae(init="none").eval()
    keys = list(net.state_dict())
    x = torch.rand(2, 1, 16, 16)
    expected = net(x)[0]
    assert compile_network(net, backend="eager") is net
    # BrainVQVAE names its encoder and decoder; the quantizer (host-side state) stays eager
    assert net.encoder._compiled_call_impl is not None and net.decoder._compiled_call_impl is not None
    assert net.quantizer._compiled_call_impl is None
    assert list(net.state_dict()) == keys  # no "_orig_mod." prefix, unlike torch.compile(net)
    torch.testing.assert_close(net(x)[0], expected)


def test_vqvae_trainer_compile_option_trains_and_saves_plain_keys(tiny_vqvae):
    net = tiny_vqvae(init="none")
    keys = set(net.state_dict())
    data = [{"image": torch.rand(1, 16, 16)} for _ in range(4)]
    trainer = VQVAETrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=torch.utils.data.DataLoader(data, batch_size=2),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3, fused=True),
        compile=True,
        compile_kwargs={"backend": "eager"},
    )
    before = net.encoder.blocks[0].conv.weight.detach().clone()
    trainer.run()
    assert trainer.compiled and net.encoder._compiled_call_impl is not None
    assert trainer.state.iteration == 2 and torch.isfinite(trainer.state.output["loss"])
    assert not torch.equal(before, net.encoder.blocks[0].conv.weight)
    assert set(net.state_dict()) == keys


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_blockwise_checkpointing_same_gradients_less_saved_memory(tiny_vqvae, spatial_dims):
    size = (32,) * spatial_dims
    plain = tiny_vqvae(spatial_dims, init="none")
    ckpt = tiny_vqvae(spatial_dims, init="none", use_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, *size)
    saved, grads = [], []
    for net in (plain, ckpt):
        net.eval()  # the codebook stays fixed, so both see identical forward passes
        with saved_activation_bytes() as counter:
            recon, quant_loss = net(x)
            (recon.abs().mean() + quant_loss).backward()
        saved.append(counter["bytes"])
        grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])
    assert saved[1] < 0.6 * saved[0]  # only block outputs are kept
    with torch.no_grad():  # no checkpointing (and no recomputation) without gradients
        torch.testing.assert_close(ckpt(x)[0], plain(x)[0])


def test_prior_trainer_compiles_the_transformer_in_place():
    from brainvq_monai.data.codes import CodesDataset, codes_dataloader
    from brainvq_monai.engines import PriorTrainer
    from brainvq_monai.networks.nets import TransformerPrior

    torch.manual_seed(0)
    prior = TransformerPrior(2, 8, (3, 3), attn_layers_dim=8, attn_layers_depth=1, attn_layers_heads=2)
    keys = list(prior.state_dict())
    data = CodesDataset({"codes": torch.randint(0, 8, (4, 3, 3)), "labels": None, "subjects": None})
    trainer = PriorTrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=codes_dataloader(data, batch_size=2),
        network=prior,
        optimizer=torch.optim.AdamW(prior.parameters(), 1e-2, fused=True),
        compile=True,
        compile_kwargs={"backend": "eager"},
    )
    trainer.run()
    assert prior.transformer._compiled_call_impl is not None and prior._compiled_call_impl is None
    assert list(prior.state_dict()) == keys and torch.isfinite(trainer.state.output["loss"])


def test_loss_tensorboard_handler_writes_every_iteration_with_few_fetches(tmp_path, monkeypatch):
    from ignite.engine import Engine
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from brainvq_monai.handlers import LossTensorBoardHandler

    def step(engine, batch):
        i = engine.state.iteration
        return {"loss": torch.tensor(float(i)), "recon_loss": torch.tensor(0.5 * i), "pred": torch.zeros(2, 2)}

    engine = Engine(step)
    writer = SummaryWriter(str(tmp_path))
    handler = LossTensorBoardHandler(writer, flush_every=4)
    handler.attach(engine)
    fetches = []
    real_stack = torch.stack
    monkeypatch.setattr(torch, "stack", lambda *a, **k: fetches.append(1) or real_stack(*a, **k))
    engine.run(range(5), max_epochs=2)  # 10 iterations: flushes at 4, 5 (epoch end), 9, 10 (epoch end)
    monkeypatch.undo()
    writer.close()
    assert len(fetches) == 4
    acc = EventAccumulator(str(tmp_path)).Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "recon_loss"}  # non-loss and non-scalar outputs are skipped
    loss = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert loss == [(i, float(i)) for i in range(1, 11)]
    assert [e.value for e in acc.Scalars("recon_loss")] == [0.5 * i for i in range(1, 11)]
    with pytest.raises(ValueError, match="flush_every"):
        LossTensorBoardHandler(writer, flush_every=0)


@pytest.mark.parametrize("prior_kind", ["pixelcnn", "transformer"])
@pytest.mark.parametrize("num_classes", [None, 2])
def test_every_trainable_prior_parameter_gets_a_gradient(prior_kind, num_classes):
    """DistributedDataParallel (multi_gpu_train.json) fails on trainable parameters that receive no gradient."""
    from brainvq_monai.networks.nets import build_prior

    prior = build_prior(
        prior_kind,
        2,
        8,
        (4, 4),
        num_classes,
        pixelcnn={"channels": 8, "num_layers": 3, "kernel_size": 3},
        transformer={"attn_layers_dim": 8, "attn_layers_depth": 2, "attn_layers_heads": 2},
    )
    labels = torch.tensor([0, 1]) if num_classes else None
    prior(torch.randint(0, 8, (2, 4, 4)), labels).sum().backward()
    assert [n for n, p in prior.named_parameters() if p.requires_grad and p.grad is None] == []


def test_prior_trainer_checks_cached_codes_once_and_priors_skip_the_per_step_sync_check(monkeypatch):
    from brainvq_monai.data.codes import CodesDataset, codes_dataloader
    from brainvq_monai.engines import PriorTrainer
    from brainvq_monai.networks.nets import TransformerPrior
    from brainvq_monai.utils.errors import BrainVQInputError

    prior = TransformerPrior(2, 8, (2, 2), num_classes=2, attn_layers_dim=8, attn_layers_depth=1, attn_layers_heads=2)
    opt = torch.optim.AdamW(prior.parameters())

    def trainer(codes, labels):
        data = CodesDataset({"codes": codes, "labels": labels, "subjects": None})
        return PriorTrainer("cpu", 1, codes_dataloader(data, 2), prior, opt)

    with pytest.raises(BrainVQInputError, match=r"codes span \[8, 8\] but the prior has 8 codes"):
        trainer(torch.full((4, 2, 2), 8), torch.zeros(4))
    with pytest.raises(BrainVQInputError, match="label"):
        trainer(torch.zeros(4, 2, 2), torch.tensor([0, 1, 2, 0]))
    trainer(torch.randint(0, 8, (4, 2, 2)), torch.tensor([0, 1, 1, 0])).run()
    # sampling / likelihood calls (and every CPU call) still check per call
    with pytest.raises(ValueError, match="values must lie"):
        prior.eval()(torch.full((1, 2, 2), 9), torch.tensor([0]))
    # in training mode a CUDA tensor is not read back (no host sync per step)
    fake_cuda = torch.full((3,), 99)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert prior.train().values_in_range(fake_cuda, 8) and not prior.eval().values_in_range(fake_cuda, 8)


def test_training_prepare_batch_augments_on_the_device_with_a_seed_per_rank(monkeypatch):
    from brainvq_monai.bundle import training_prepare_batch
    from brainvq_monai.engines.utils import prepare_images

    assert training_prepare_batch(False, 0) is prepare_images
    batch = {"image": torch.full((4, 1, 16, 16), 0.5)}
    a, _ = training_prepare_batch(True, 0)(batch, "cpu")
    b, _ = training_prepare_batch(True, 0)(batch, "cpu")
    assert torch.equal(a, b) and not torch.equal(a, batch["image"])  # augmented, reproducibly
    assert torch.equal(batch["image"], torch.full((4, 1, 16, 16), 0.5))  # the loader's batch is untouched
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    c, _ = training_prepare_batch(True, 0)(batch, "cpu")
    assert not torch.equal(a, c)  # rank 1 draws other augmentations than rank 0
