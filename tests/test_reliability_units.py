"""The building blocks of issue 11, in process: atomic writes, weights_only reads with one-line errors, boolean
parsing, settings and datalist checks, state-dict mismatch messages, random-state capture, exit codes."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from brainvq_monai.bundle.checks import check_datalist, check_settings, nearest_valid_sizes
from brainvq_monai.utils.errors import (
    BrainVQInputError,
    BrainVQInterrupted,
    error_line,
    exit_code_for,
)
from brainvq_monai.utils.io import atomic_torch_save, atomic_write_json, atomic_write_text, load_torch_file, temp_files
from brainvq_monai.utils.rng import capture_rng_state, restore_rng_state
from brainvq_monai.utils.settings import as_bool, as_int
from brainvq_monai.utils.state import load_state_dict_checked

DOWN = [[2, 4, 1, 1]] * 2
UP = [[2, 4, 1, 1, 0]] * 2


# ---------------------------------------------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_whole_files_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1} and not temp_files(target)
    # a writer that fails half-way leaves the previous file intact and no temporary file
    with pytest.raises(RuntimeError):

        def boom(f):
            f.write(b'{"a": 2, "b"')
            raise RuntimeError("disk on fire")

        from brainvq_monai.utils.io import atomic_write

        atomic_write(target, boom)
    assert json.loads(target.read_text()) == {"a": 1} and not temp_files(target)
    # a temporary file left by a killed writer (dead pid) is removed by the next write; a live writer's is kept
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "sub" / f".metrics.json.{int(dead.stdout)}.tmp"
    live = tmp_path / "sub" / f".metrics.json.{os.getppid()}.tmp"
    stale.write_text("partial")
    live.write_text("in progress")
    atomic_write_text(target, "{}\n")
    assert not stale.exists() and live.exists()
    with pytest.raises(BrainVQInputError, match="is a folder"):
        atomic_write_text(tmp_path, "x")


def test_atomic_torch_save_round_trip(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"model": {"w": torch.arange(3.0)}, "meta": {"epoch": 2}}, path)
    loaded = load_torch_file(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0)) and loaded["meta"] == {"epoch": 2}


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "random", "text", "numpy", "folder"])
def test_unreadable_checkpoints_are_one_line_naming_the_file(tmp_path, kind):
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(64, 64)}}, good)
    path = tmp_path / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "numpy":
        torch.save({"w": np.zeros(3)}, path)
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(BrainVQInputError) as err:
        load_torch_file(path, "checkpoint")
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg and "weights_only=False" not in msg
    expected = {
        "missing": "not found",
        "empty": "is empty",
        "truncated": "truncated",
        "random": "not a file written by torch.save",
        "text": "not a file written by torch.save",
        "numpy": "objects other than tensors",
        "folder": "is a folder",
    }[kind]
    assert expected in msg


# ---------------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("false", False), ("False", False), ("TRUE", True), (" true ", True)],
)
def test_as_bool_accepts_true_false_in_any_case(value, expected):
    assert as_bool(value, "amp") is expected


@pytest.mark.parametrize("value", ["no", "0", 0, 1, None, "flase", "", [True]])
def test_as_bool_refuses_anything_else(value):
    with pytest.raises(BrainVQInputError, match=r"^amp: must be true or false"):
        as_bool(value, "amp")


def test_as_int():
    assert (
        as_int("8", "batch_size", minimum=1) == 8
        and as_int(4.0, "n") == 4
        and as_int(None, "n", allow_none=True) is None
    )
    for bad in (0, "0", -3):
        with pytest.raises(BrainVQInputError, match="batch_size: must be >= 1"):
            as_int(bad, "batch_size", minimum=1)
    for bad in ("eight", 2.5, True, None):
        with pytest.raises(BrainVQInputError, match="batch_size: must be a whole number"):
            as_int(bad, "batch_size", minimum=1)


def test_spatial_size_is_checked_against_the_downsampling():
    assert nearest_valid_sizes(30, DOWN, UP) == [28, 32]
    assert check_settings(spatial_size=[32, 32], spatial_dims=2, downsample_parameters=DOWN, upsample_parameters=UP)
    with pytest.raises(BrainVQInputError, match=r"^spatial_size: \[30, 30\]: 30 .*nearest valid sizes: 28 or 32"):
        check_settings(spatial_size=[30, 30], spatial_dims=2, downsample_parameters=DOWN, upsample_parameters=UP)
    with pytest.raises(BrainVQInputError, match="spatial_size: must have 3 sizes"):
        check_settings(spatial_size=[32, 32], spatial_dims=3, downsample_parameters=DOWN, upsample_parameters=UP)


def test_check_settings_names_the_config_id(tmp_path):
    cases = [
        ({"booleans": {"resume": "maybe"}}, "resume: must be true or false"),
        ({"positive": {"batch_size": 0}}, "batch_size: must be >= 1"),
        ({"positive": {"train#trainer#max_epochs": "ten"}}, "train#trainer#max_epochs: must be a whole number"),
        ({"non_negative": {"num_workers": -1}}, "num_workers: must be >= 0"),
        ({"data_format": "dicom"}, "data_format: must be one of oasis, adni, nifti"),
        ({"data_format": "adni", "spatial_dims": 3}, "data_format: the 3D bundle trains on volumes"),
        (
            {"dataset_dir": tmp_path, "output_dirs": {"output_dir": tmp_path / "runs"}},
            "output_dir: .* is inside dataset_dir",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(BrainVQInputError, match=message):
            check_settings(**kwargs)


def _datalist() -> dict:
    item = {"image": "a.png", "subject": "s1", "label": 0}
    return {
        "labels": {"0": "NC", "1": "AD"},
        "training": [item, {**item, "subject": "s2", "label": 1}],
        "validation": [{**item, "subject": "s3"}],
        "test": [{**item, "subject": "s4"}],
    }


def test_check_datalist():
    assert check_datalist(_datalist(), "dl.json", splits=["training", "validation"], conditional="true")
    cases = [
        ({"validation": []}, "the 'validation' split is empty, but training validates every epoch"),
        ({"training": [{"subject": "s1"}]}, "'training' item 0 is not an object with an 'image'"),
        (
            {"test": [{"image": "b.png", "label": 2}]},
            "'test' item 0 \\(b.png\\) has label 2, but 'labels' lists 2 classes",
        ),
        ({"labels": {"0": "NC", "2": "AD"}}, "'labels' must number the classes 0..1"),
    ]
    for change, message in cases:
        with pytest.raises(BrainVQInputError, match=f"^dl.json: {message}"):
            check_datalist({**_datalist(), **change}, "dl.json", splits=["training", "validation"])
    only_nc = {**_datalist(), "training": [_datalist()["training"][0]]}
    with pytest.raises(BrainVQInputError, match="class 1 \\(AD\\) has no training items.*set conditional false"):
        check_datalist(only_nc, "dl.json", splits=["training"], conditional=True)
    assert check_datalist(only_nc, "dl.json", splits=["training"], conditional="false")


def test_ensure_datalist_errors_and_demo_only_on_request(tmp_path, monkeypatch):
    from brainvq_monai.bundle import ensure_datalist

    for content, message in [
        ([], "expected a JSON object with 'training', 'validation' and 'test' lists, got an empty list"),
        ({"validation": []}, "has no 'training' list"),
    ]:
        dl = tmp_path / "dl.json"
        dl.write_text(json.dumps(content))
        with pytest.raises(BrainVQInputError, match=message):
            ensure_datalist(dl, tmp_path / "data")
    missing = tmp_path / "nowhere"
    with pytest.raises(BrainVQInputError) as err:
        ensure_datalist(tmp_path / "new.json", missing, "adni")
    msg = str(err.value)
    assert msg.startswith(str(missing)) and "does not exist" in msg and f"brainvq demo-data --out {missing}" in msg
    assert not missing.exists()  # nothing was created
    (tmp_path / "empty").mkdir()
    with pytest.raises(BrainVQInputError, match="dataset_dir is empty; expected an ADNI folder"):
        ensure_datalist(tmp_path / "new.json", tmp_path / "empty", "adni")
    with pytest.raises(BrainVQInputError, match="create_demo_data: must be true or false"):
        ensure_datalist(tmp_path / "new.json", tmp_path / "empty", "adni", create_demo="yes")
    # asked for explicitly (the string MONAI's command line passes), the demo cohort is made there
    made = []
    monkeypatch.setattr("brainvq_monai.data.demo.make_demo_cohort", lambda out, **kw: made.append(out))
    with pytest.raises(BrainVQInputError):  # the stub made nothing, so the (empty) folder has no ADNI layout
        ensure_datalist(tmp_path / "new.json", tmp_path / "empty", "adni", create_demo="True")
    assert made == [tmp_path / "empty"]


# ---------------------------------------------------------------------------------------------------- mismatches
def test_checkpoint_network_mismatch_names_tensor_shapes_and_config_id(tiny_vqvae, tmp_path):
    from brainvq_monai.bundle import load_network
    from brainvq_monai.networks.nets import BrainVQVAE

    saved = tmp_path / "vqvae.pt"
    torch.save({"model": tiny_vqvae(2).state_dict()}, saved)
    other_codes = BrainVQVAE(
        2, 1, 1, channels=(4, 8), num_res_channels=(4, 8), num_res_layers=1, num_embeddings=16, embedding_dim=4,
        downsample_parameters=((2, 4, 1, 1),) * 2, upsample_parameters=((2, 4, 1, 1, 0),) * 2,
    )  # fmt: skip
    with pytest.raises(BrainVQInputError) as err:
        load_network(other_codes, saved, config_id="vqvae_def")
    msg = str(err.value)
    assert msg.startswith(str(saved)) and "[8, 4] in the checkpoint but [16, 4]" in msg and "set num_embeddings" in msg
    wider = BrainVQVAE(
        2, 1, 1, channels=(4, 16), num_res_channels=(4, 16), num_res_layers=1, num_embeddings=8, embedding_dim=4,
        downsample_parameters=((2, 4, 1, 1),) * 2, upsample_parameters=((2, 4, 1, 1, 0),) * 2,
    )  # fmt: skip
    with pytest.raises(BrainVQInputError, match=r"tensor 'encoder\.blocks\.2\.conv\.weight' .*set vqvae_def#channels"):
        load_network(wider, saved, config_id="vqvae_def")
    deeper = BrainVQVAE(
        2, 1, 1, channels=(4, 8), num_res_channels=(4, 8), num_res_layers=2, num_embeddings=8, embedding_dim=4,
        downsample_parameters=((2, 4, 1, 1),) * 2, upsample_parameters=((2, 4, 1, 1, 0),) * 2,
    )  # fmt: skip
    with pytest.raises(BrainVQInputError, match=r"the checkpoint has no tensor .*num_res_layers"):
        load_state_dict_checked(deeper, torch.load(saved, weights_only=True)["model"], saved, "vqvae_def")


# ---------------------------------------------------------------------------------------------------- random state
def test_rng_capture_restores_every_stream():
    from monai.transforms import Compose, RandFlip, RandGaussianNoise

    from brainvq_monai.transforms.batch import AugmentedPrepareBatch, RandBrainAugment

    pipeline = Compose([RandFlip(prob=0.5), RandGaussianNoise(prob=1.0)])
    pipeline.set_random_state(1)
    augment = AugmentedPrepareBatch(RandBrainAugment().set_random_state(3), lambda b, d, n: (b["image"], None))
    batch = {"image": torch.rand(2, 1, 16, 16)}
    augment(batch)  # creates the per-device generator

    def draw():
        return (
            torch.rand(3),
            np.random.rand(3),
            random.random(),
            pipeline(torch.ones(1, 4, 4)),
            augment(batch)[0],
        )

    state = capture_rng_state(pipeline, {"prepare_batch": augment})
    first = draw()
    restore_rng_state(state, pipeline, {"prepare_batch": augment})
    second = draw()
    for a, b in zip(first, second):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    third = draw()  # and the streams move on after a restore
    assert not np.array_equal(np.asarray(first[0]), np.asarray(third[0]))


def test_rng_state_loads_with_weights_only(tmp_path):
    from monai.transforms import Compose, RandFlip

    state = capture_rng_state(Compose([RandFlip(prob=0.5)]))
    atomic_torch_save(state, tmp_path / "rng.pt")
    assert torch.equal(load_torch_file(tmp_path / "rng.pt")["torch"], state["torch"])


# ---------------------------------------------------------------------------------------------------- schedules
def test_cosine_retarget_continues_as_if_configured_longer():
    from brainvq_monai.handlers.checkpoint import _retarget_cosine

    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # the finished run: LR at its minimum
    _retarget_cosine(sched, 8)
    assert opt.param_groups[0]["lr"] == pytest.approx((1 + math.cos(math.pi * 4 / 8)) / 2)
    lrs = []
    for _ in range(4):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    expected = [(1 + math.cos(math.pi * t / 8)) / 2 for t in range(5, 9)]
    assert lrs == pytest.approx(expected, abs=1e-9) and lrs[-1] == pytest.approx(0.0, abs=1e-9)


def test_checkpoint_handlers_run_on_every_rank(tmp_path):
    """Under torchrun every rank attaches the checkpoint handlers (all ranks load on resume; they write on rank 0)."""
    from ignite.engine import Engine
    from monai.handlers import StatsHandler

    from brainvq_monai.handlers import BestCheckpointSaver, TrainingCheckpointHandler, handlers_for_rank

    net = torch.nn.Linear(2, 2)
    last = TrainingCheckpointHandler(tmp_path / "last.pt", {"model": net, "trainer": Engine(lambda e, b: None)})
    best = BestCheckpointSaver(tmp_path / "best.pt", {"model": net})
    assert handlers_for_rank([StatsHandler(), last, best], rank=1) == [last, best]


# ---------------------------------------------------------------------------------------------------- exit codes
def test_exit_codes_and_error_lines():
    bad = BrainVQInputError("spatial_size", "must be even")
    try:
        try:
            raise bad
        except BrainVQInputError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression: \n$@x") from inner
    except RuntimeError as wrapped:
        assert exit_code_for(wrapped) == 2 and error_line(wrapped) == "spatial_size: must be even"
    assert exit_code_for(BrainVQInterrupted(15, "stopped")) == 143
    assert exit_code_for(KeyboardInterrupt()) == 130
    try:
        try:
            raise ValueError("Invalid learning rate: -1.0\nmore detail")
        except ValueError as inner:
            raise RuntimeError(
                "Failed to instantiate component 'torch.optim.Adam' with keywords: params,lr\n set '_mode_=debug'"
            ) from inner
    except RuntimeError as failed:
        line = error_line(failed)
        assert exit_code_for(failed) == 1 and "\n" not in line
        assert line == (
            "the run failed: ValueError: Invalid learning rate: -1.0 (while instantiating torch.optim.Adam with "
            "params, lr); set BRAINVQ_DEBUG=1 for the traceback"
        )
