"""The pieces added to find and fix what limits quality: time budget, losses, sampling truncation, realism and
class-fidelity statistics, feature-net reconstruction head, bf16 detection, demo cohort spacing, ablation records."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events

from brainvq_monai.apps.ablation import AblationRow, cumulative_settings, render_ablation
from brainvq_monai.apps.demo import demo_precision, vqvae_architecture
from brainvq_monai.handlers import TimeBudgetHandler, ValidationHandler
from brainvq_monai.inferers.sampling import draw_tokens
from brainvq_monai.losses import ReconstructionLoss
from brainvq_monai.metrics import classification_accuracy, classifier_two_sample_test, cluster_bootstrap_ci, roc_auc
from brainvq_monai.networks.nets import BrainFeatureNet, CausalTransformer
from brainvq_monai.utils import cpu_bf16_units
from brainvq_monai.utils.errors import BrainVQInputError


# ------------------------------------------------------------------------------------------------ time budget
def _run_with_budget(
    monkeypatch, budget, max_epochs=50, seconds_per_iteration=1.0, first_epoch_extra=0.0, resume_at_epoch=0
):
    clock = {"t": 0.0}
    monkeypatch.setattr("brainvq_monai.handlers.budget.time.perf_counter", lambda: clock["t"])

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)

    def step(engine, batch):
        clock["t"] += seconds_per_iteration + (first_epoch_extra if engine.state.epoch == 1 else 0.0)
        opt.step()

    engine = Engine(step)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched.step())
    TimeBudgetHandler(budget, sched).attach(engine)
    if resume_at_epoch:  # as TrainingCheckpointHandler restores a run before the trainer starts
        engine.load_state_dict({"iteration": 2 * resume_at_epoch, "epoch_length": 2, "max_epochs": max_epochs})
    engine.run(range(2), max_epochs=max_epochs)  # 2 iterations per epoch
    return engine, sched, opt


def test_time_budget_ends_at_the_last_whole_epoch_and_anneals_the_lr(monkeypatch):
    engine, sched, opt = _run_with_budget(monkeypatch, budget=21.0)
    assert engine.state.epoch == 10  # 2 s per epoch: 10 whole epochs fit in 21 s
    assert sched.T_max == 10
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # the cosine reached its end


def test_time_budget_discounts_a_slow_first_epoch_and_never_exceeds_max_epochs(monkeypatch):
    engine, _, _ = _run_with_budget(monkeypatch, budget=21.0, first_epoch_extra=4.0)  # epoch 1 takes 10 s
    assert engine.state.epoch == 6  # 10 s + 5 more epochs of 2 s
    engine, sched, _ = _run_with_budget(monkeypatch, budget=1000.0, max_epochs=7)
    assert engine.state.epoch == 7 and sched.T_max == 7  # the budget never raises the configured maximum


def test_time_budget_of_a_resumed_run_counts_from_where_it_resumed(monkeypatch):
    engine, sched, opt = _run_with_budget(monkeypatch, budget=21.0, resume_at_epoch=4)
    assert engine.state.epoch == 14  # each session has its own budget: 10 more epochs of 2 s after epoch 4
    assert sched.T_max == 14


def test_no_budget_is_a_no_op_and_bad_budgets_are_named(monkeypatch):
    engine, sched, _ = _run_with_budget(monkeypatch, budget=None, max_epochs=4)
    assert engine.state.epoch == 4 and sched.T_max == 4
    with pytest.raises(BrainVQInputError, match="time_budget_s"):
        TimeBudgetHandler(-1)
    with pytest.raises(BrainVQInputError, match="time_budget_s"):
        TimeBudgetHandler("10")  # type: ignore[arg-type]
    with pytest.raises(BrainVQInputError, match="time_budget_clock"):
        TimeBudgetHandler(10, clock="cpu")


def test_handlers_for_rank_keeps_training_decisions_and_drops_writers(tmp_path):
    from ignite.handlers import ProgressBar
    from monai.handlers import LrScheduleHandler, StatsHandler, TensorBoardStatsHandler

    from brainvq_monai.handlers import LossTensorBoardHandler, NullSummaryWriter, handlers_for_rank

    sched = torch.optim.lr_scheduler.StepLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), 1)
    budget = TimeBudgetHandler(10)
    validate = ValidationHandler(interval=2, validator=None)
    keep = [LrScheduleHandler(sched, print_lr=False), budget, validate]
    writers = [StatsHandler(), TensorBoardStatsHandler(summary_writer=NullSummaryWriter()), ProgressBar(),
               LossTensorBoardHandler(summary_writer=NullSummaryWriter())]  # fmt: skip
    handlers = [keep[0], writers[0], budget, writers[1], validate, writers[2], writers[3]]
    assert handlers_for_rank(handlers, rank=0) == handlers
    assert handlers_for_rank(handlers, rank=1) == keep  # same order, whatever the positions
    assert handlers_for_rank(handlers) == handlers  # no process group: rank 0


# ------------------------------------------------------------------------------------------------ losses / sampling
def test_reconstruction_loss_terms():
    image = torch.rand(2, 1, 32, 32)
    blurred = torch.nn.functional.avg_pool2d(image, 5, 1, 2)
    l1 = ReconstructionLoss(2)
    both = ReconstructionLoss(2, l1_weight=1.0, ssim_weight=0.5)
    assert l1(image, image).item() == pytest.approx(0.0, abs=1e-7)
    assert both(image, image).item() == pytest.approx(0.0, abs=1e-5)
    assert l1(blurred, image).item() == pytest.approx((blurred - image).abs().mean().item(), rel=1e-6)
    assert both(blurred, image).item() > l1(blurred, image).item()  # blur costs structure
    assert ReconstructionLoss(3, ssim_weight=1.0)(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)) > 0
    with pytest.raises(BrainVQInputError, match="weights"):
        ReconstructionLoss(2, l1_weight=0.0, ssim_weight=0.0)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    drawn = {int(draw_tokens(logits, top_p=0.7, generator=gen)) for _ in range(200)}
    assert drawn == {0, 1}  # 0.5 + 0.3 >= 0.7
    assert {int(draw_tokens(logits, top_p=0.4, generator=gen)) for _ in range(50)} == {0}
    assert len({int(draw_tokens(logits, top_p=1.0, generator=gen)) for _ in range(400)}) == 4
    with pytest.raises(ValueError, match="top_p"):
        draw_tokens(logits, top_p=0.0)


def test_residual_dropout_keeps_the_state_dict_and_is_off_in_eval():
    torch.manual_seed(0)
    plain = CausalTransformer(10, 8, 16, 2, 2)
    torch.manual_seed(0)
    drop = CausalTransformer(10, 8, 16, 2, 2, dropout_rate=0.3)
    assert plain.state_dict().keys() == drop.state_dict().keys()
    x = torch.randint(0, 10, (2, 8))
    drop.eval(), plain.eval()
    assert torch.allclose(drop(x), plain(x))
    drop.train()
    assert not torch.allclose(drop(x), drop(x))


# ------------------------------------------------------------------------------------------------ statistics
def test_cluster_bootstrap_is_wider_with_few_clusters():
    values = torch.tensor([1.0] * 10 + [0.0] * 10)
    narrow = cluster_bootstrap_ci(values, [str(i) for i in range(20)], seed=0)
    wide = cluster_bootstrap_ci(values, ["a"] * 10 + ["b"] * 10, seed=0)  # two subjects: all or nothing
    assert wide[0] == 0.0 and wide[1] == 1.0
    assert 0.2 < narrow[0] < 0.5 < narrow[1] < 0.8
    with pytest.raises(BrainVQInputError, match="clusters"):
        cluster_bootstrap_ci(values, ["a"])


def test_classification_accuracy_overall_and_per_class():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    out = classification_accuracy(logits, torch.tensor([0, 1, 1, 1]), ["s1", "s1", "s2", "s3"], {0: "NC", 1: "AD"})
    assert out["accuracy"] == 0.5 and out["num_clusters"] == 3
    assert out["per_class"]["NC"]["accuracy"] == 1.0
    assert out["per_class"]["AD"]["accuracy"] == pytest.approx(1 / 3)


def test_roc_auc_known_answers():
    assert roc_auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert roc_auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == 0.5
    assert math.isnan(roc_auc(torch.tensor([0.5]), torch.tensor([1])))


def test_two_sample_test_tells_stripes_from_smooth_images_but_not_real_from_real():
    gen = torch.Generator().manual_seed(0)

    def smooth(n):
        return torch.nn.functional.avg_pool2d(torch.rand(n, 1, 32, 32, generator=gen), 7, 1, 3)

    stripes = smooth(40)
    stripes[..., ::4] = 1.0

    def make():
        return BrainFeatureNet(2, 1, num_classes=2, feature_dim=16, channels=(8, 16))

    fake = classifier_two_sample_test(smooth(40), stripes[:20], smooth(40), stripes[20:], make, epochs=8)
    real = classifier_two_sample_test(smooth(40), smooth(20), smooth(40), smooth(20), make, epochs=8)
    assert fake["auc"] > 0.95
    assert abs(real["auc"] - 0.5) < 0.3


def test_feature_net_reconstruction_head():
    net = BrainFeatureNet(2, 1, 2, feature_dim=16, channels=(8, 16), image_size=(32, 24))
    assert net.reconstruct(torch.rand(3, 1, 32, 24)).shape == (3, 1, 32, 24)
    assert net.config()["image_size"] == [32, 24]
    with pytest.raises(BrainVQInputError, match="image_size"):
        BrainFeatureNet(2, 1, 2, channels=(8, 16), image_size=(30, 24))
    with pytest.raises(BrainVQInputError, match="reconstruction"):
        BrainFeatureNet(2, 1, 2, channels=(8, 16)).reconstruct(torch.rand(1, 1, 32, 32))


# ------------------------------------------------------------------------------------------------ settings
def test_bf16_detection_respects_the_onednn_isa_limit(monkeypatch):
    monkeypatch.setattr("brainvq_monai.utils.environment._cpu_flags", lambda: {"amx_bf16", "avx512_bf16"})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu_bf16_units()["usable"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_bf16_units()["usable"]
    monkeypatch.setattr("brainvq_monai.utils.environment._cpu_flags", lambda: {"avx2"})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert not cpu_bf16_units()["usable"]
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert demo_precision("auto")["amp"] is False
    assert demo_precision("on")["amp"] is True and demo_precision(False)["amp"] is False
    with pytest.raises(BrainVQInputError, match="amp"):
        demo_precision("maybe")


def test_vqvae_architecture_from_strides():
    arch = vqvae_architecture({"vqvae_channels": [48], "vqvae_res_layers": 1, "vqvae_strides": [2]})
    assert arch["downsample_parameters"] == [[2, 4, 1, 1]] and arch["upsample_parameters"] == [[2, 4, 1, 1, 0]]
    arch = vqvae_architecture({"vqvae_channels": [32, 64], "vqvae_res_layers": 2, "vqvae_strides": [2, 1]})
    assert arch["downsample_parameters"][1] == [1, 3, 1, 1]
    with pytest.raises(BrainVQInputError, match="vqvae_strides"):
        vqvae_architecture({"vqvae_channels": [32], "vqvae_res_layers": 1, "vqvae_strides": [4]})


def test_demo_cohort_slice_spacing(tmp_path):
    import json

    from brainvq_monai.data.demo import make_demo_cohort

    summary = make_demo_cohort(tmp_path / "c", subjects=2, seed=1, slices_per_subject=3, slice_spacing=4, workers=1)
    assert summary.slice_spacing == 4 and "4 mm apart" in str(summary)
    meta = json.loads((tmp_path / "c" / "demo_cohort.json").read_text())
    for p in meta["participants"]:
        slices = p["adni"]["slices"]
        assert len(slices) == 3 and slices[1] - slices[0] == 4 and slices[2] - slices[1] == 4
    with pytest.raises(BrainVQInputError, match="slice_spacing"):
        make_demo_cohort(tmp_path / "d", subjects=2, slices_per_subject=3, slice_spacing=0)
    with pytest.raises(BrainVQInputError, match="do not fit"):
        make_demo_cohort(tmp_path / "e", subjects=2, slices_per_subject=100, slice_spacing=5)


# ------------------------------------------------------------------------------------------------ ablation record
def test_ablation_rows_accumulate_and_render():
    rows = (
        AblationRow("a", "base"),
        AblationRow("b", "more codes", {"num_embeddings": 256}),
        AblationRow("c", "dropout", {"transformer": {"dropout_rate": 0.1}}),
        AblationRow("d", "cooler sampling", {"temperature": 0.9}, stage="sampling"),
    )
    base = {"num_embeddings": 64, "transformer": {"attn_layers_dim": 64, "dropout_rate": 0.0}, "temperature": 1.0}
    s = cumulative_settings(rows, base)
    assert s[0]["num_embeddings"] == 64 and s[1]["num_embeddings"] == 256 and s[3]["num_embeddings"] == 256
    assert s[2]["transformer"] == {"attn_layers_dim": 64, "dropout_rate": 0.1}  # nested settings merge
    assert s[3]["temperature"] == 0.9 and s[2]["temperature"] == 1.0
    with pytest.raises(BrainVQInputError, match="stage"):
        cumulative_settings((AblationRow("x", "bad", stage="later"),), base)
    figures = {
        "change": "base",
        "epochs": {"vqvae": 10, "prior": 5},
        "reconstruction": {"ssim_brain": 0.9, "psnr_brain": 26.0, "codes_used": 60.0, "num_embeddings": 64},
        "prior": {"val_nll": {"min": 1.5, "min_epoch": 4, "final": 1.6}},
        "generation": {
            "fid": 2.0,
            "fid_floor": 1.0,
            "fid_ratio": 2.0,
            "diversity": {"generated": 0.7, "real_test": 0.8},
        },
        "c2st": {"auc": 0.7, "floor_auc": 0.5},
        "class_fidelity": {"samples_accuracy": 0.8, "real_test_accuracy": 0.85},
    }
    text = render_ablation({"order": ["a"], "rows": {"a": figures}}, grids={"a": "grids/a.png"})
    assert "| 0 | `a`: base | 10 / 5 | 0.900 | 26.00 | 60 / 64 | 1.500 (4) / 1.600 | 2.00 / 1.00 (2.0x)" in text
    assert "0.700 (0.500)" in text and "![a](grids/a.png)" in text


def test_bundle_row_follows_the_bundle_configs():
    from brainvq_monai.apps.ablation import ABLATION_ROWS, bundle_row
    from brainvq_monai.bundle.layout import read_bundle_config
    from brainvq_monai.bundle.utils import default_bundle_root

    vq = read_bundle_config(default_bundle_root("brain_vqvae_2d"), "train_vqvae")
    pr = read_bundle_config(default_bundle_root("brain_vqvae_2d"), "train_prior")
    row = bundle_row(120)
    settings = cumulative_settings((*ABLATION_ROWS, row))[-1]
    assert (
        settings["spatial_size"] == vq["spatial_size"]
        and settings["vqvae_channels"] == vq["autoencoder_def"]["channels"]
    )
    assert (
        settings["learning_rate_prior"] == pr.get_parsed_content("learning_rate") == 5e-4
        and settings["vqvae_budget_s"] == 120
    )
    for k, v in pr["prior_def"]["transformer"].items():
        if not str(v).startswith(("@", "$")):
            assert settings["transformer"][k] == v, k
    # the cohort is the base row's, not the bundle's
    base = cumulative_settings(ABLATION_ROWS)[[r.key for r in ABLATION_ROWS].index(row.base)]
    assert (settings["subjects"], settings["slices_per_subject"]) == (base["subjects"], base["slices_per_subject"])


def test_perceptual_term_needs_its_network_and_sees_blur():
    from brainvq_monai.losses import perceptual_distance

    torch.manual_seed(0)
    net = BrainFeatureNet(2, 1, 4, feature_dim=16, channels=(8, 16)).eval()
    image = torch.rand(2, 1, 32, 32)
    blurred = torch.nn.functional.avg_pool2d(image, 5, 1, 2)
    assert perceptual_distance(net, image, image).item() == pytest.approx(0.0, abs=1e-6)
    assert perceptual_distance(net, blurred, image).item() > 0.01
    loss = ReconstructionLoss(2, perceptual_weight=1.0, perceptual_network=net)
    assert not any(p.requires_grad for p in net.parameters())  # frozen
    recon = blurred.clone().requires_grad_(True)
    loss(recon, image).backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    with pytest.raises(BrainVQInputError, match="perceptual_network"):
        ReconstructionLoss(2, perceptual_weight=1.0)


def test_perceptual_network_is_trained_once_and_cached(tmp_path):
    from brainvq_monai.bundle import perceptual_network

    items = [{"image": i} for i in range(6)]

    def transform(item):
        g = torch.Generator().manual_seed(item["image"])
        return {"image": torch.rand(1, 32, 32, generator=g)}

    net = perceptual_network(items, transform, tmp_path / "p.pt", epochs=2)
    assert (tmp_path / "p.pt").is_file() and not net.training
    again = perceptual_network(items, transform, tmp_path / "p.pt", epochs=2)
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_validation_handler_validates_the_last_epoch_once():
    from brainvq_monai.handlers import ValidationHandler

    class Validator:
        def __init__(self):
            self.epochs = []

        def run(self, epoch):
            self.epochs.append(epoch)

    for max_epochs, expected in ((3, [3]), (10, [4, 8, 10]), (8, [4, 8])):
        engine = Engine(lambda e, b: None)
        handler = ValidationHandler(4)
        handler.validator = Validator()  # duck-typed: MONAI's check is only in __init__ / set_validator
        handler.attach(engine)
        engine.run(range(2), max_epochs=max_epochs)
        assert handler.validator.epochs == expected, max_epochs


def test_prior_rows_reuse_only_the_vqvae_of_their_base(tmp_path):
    from brainvq_monai.apps.ablation import _prepare_reuse_row, _trained_base

    src = tmp_path / "base"
    for name in ("models/model_autoencoder.pt", "models/model_autoencoder_last.pt", "models/feature_net.pt", "models/model.pt",
                 "codes/train.pt", "tensorboard/vqvae/events", "tensorboard/prior_transformer/events", "data/x.png",
                 "datalist_adni.json", "generation_metrics.json"):  # fmt: skip
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(name)
    dst = tmp_path / "row"
    _prepare_reuse_row(src, dst, vqvae_only=True)
    models = sorted(f.name for f in (dst / "models").iterdir())
    assert models == [
        "feature_net.pt",
        "model_autoencoder.pt",
        "model_autoencoder_last.pt",
    ]  # the prior is trained again
    assert (dst / "codes" / "train.pt").is_file() and (dst / "tensorboard" / "vqvae" / "events").is_file()
    assert not (dst / "tensorboard" / "prior_transformer").exists() and not (dst / "generation_metrics.json").exists()
    assert (dst / "datalist_adni.json").is_file() and (dst / "data" / "x.png").is_file()
    _prepare_reuse_row(src, dst)  # a sampling row: every trained model
    assert (dst / "models" / "model.pt").is_file()
    rows = (AblationRow("a", "base"), AblationRow("b", "prior", stage="prior"), AblationRow("c", "t", stage="sampling"),
            AblationRow("d", "t2", stage="sampling"))  # fmt: skip
    assert _trained_base(rows, 1) == "a" and _trained_base(rows, 2) == "b" and _trained_base(rows, 3) == "b"
