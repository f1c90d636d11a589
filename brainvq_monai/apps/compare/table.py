"""Markdown tables of a head-to-head report (what ``brainvq compare`` prints and stores under ``table``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brainvq_monai.utils.format import fmt as _fmt

__all__ = ["format_table"]


def _secs(x: float) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def format_table(report: Mapping[str, Any]) -> str:
    """Markdown tables of a :func:`~brainvq_monai.apps.compare.run.run_compare` report.

    Args:
        report: the report.

    Returns:
        the tables: the run's settings, (a) the VQ-VAEs (unless compared on a run), (b) the priors and their
        generation metrics.
    """
    dev = report["device"]
    data = report["data"]
    source = (
        f"the run `{data['run']}` ({data['format']})"
        if "run" in data
        else f"demo cohort, {data['subjects']} subjects x {data['slices_per_subject']} slices"
    )
    lines = [
        f"mode `{report['mode']}`, {report['date']}, seed {report['seeds']['weights']}; device {dev['device']} "
        f"({dev['cpu']}, {dev['cpu_count']} cores, {dev['torch_threads']} torch threads"
        + (f", {dev['gpu']}" if "gpu" in dev else "")
        + "); "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"data: {source}, {'x'.join(map(str, data['spatial_size']))}, train {data['num_train']} / test "
        f"{data['num_test']} images (disjoint subjects); total {report['seconds_total']} s",
        "",
    ]
    if report["vqvae"]["models"]:
        lines += _vqvae_lines(report["vqvae"])
    else:
        lines += ["### (a) VQ-VAE: not run (`--run`: the priors are compared on the run's own VQ-VAE)"]
    return "\n".join([*lines, "", *_prior_lines(report["prior"])])


def _vqvae_lines(section: Mapping[str, Any]) -> list[str]:
    vs = section["settings"]
    lines = [
        f"### (a) VQ-VAE: ours vs MONAI `VQVAE` (tutorial config), {vs['steps']} steps x batch {vs['batch_size']}, "
        f"Adam lr {vs['lr']:g}, L1 + quantization loss",
        "",
        f"Channels ({', '.join(map(str, vs['channels']))}), res channels {vs['num_res_channels']}, "
        f"{vs['num_res_layers']} res layers, K = {vs['num_embeddings']}, D = {vs['embedding_dim']}"
        + (
            f" (**shrunk from the tutorial's ({', '.join(map(str, vs['tutorial_channels']))}) on both sides**)"
            if vs["channels_shrunk"]
            else " (the tutorial's sizes)"
        )
        + "; same encoder/decoder init and batches; only the quantizer differs.",
        "",
        "| model | quantizer | EMA decay | test SSIM | test PSNR (dB) | SSIM in brain | PSNR in brain (dB) "
        "| codes used | perplexity | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in section["models"].items():
        lines.append(
            f"| {name} | {m['quantizer']} | {m['decay']:g} | {_fmt(m['test_ssim'])} | {_fmt(m['test_psnr'], 2)} "
            f"| {_fmt(m.get('test_ssim_brain_mask'))} | {_fmt(m.get('test_psnr_brain_mask'), 2)} "
            f"| {m['codes_used']}/{m['num_embeddings']} | {_fmt(m['perplexity'], 1)} | {_secs(m['train_seconds'])} |"
        )
    return lines


def _prior_lines(section: Mapping[str, Any]) -> list[str]:
    ps = section["settings"]
    lines = [
        f"### (b) Priors on the same codes (latent {'x'.join(map(str, ps['latent_shape']))}, K = "
        f"{ps['num_embeddings']}), {ps['steps']} steps x batch {ps['batch_size']}, Adam lr {ps['lr']:g}"
        + (f" (DCGAN: {ps['dcgan_lr']:g}, betas 0.5/0.999)" if "dcgan" in section["models"] else "")
        + f", conditional on AD/NC; {ps['num_samples']} samples ({ps['samples_per_class']} per class). "
        "Code JS: divergence of the samples' code statistics from the test codes' (4x4 regions, bits, lower is "
        "better); the DCGAN has no likelihood, so no NLL.",
        "",
        "| prior | config | params (sampling net) | test NLL (nats/token) | code JS | sampling s | s/brain | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in section["models"].items():
        conf = ps[name]
        if name in ("transformer", "block_transformer"):
            desc = (
                f"dim {conf['attn_layers_dim']}, depth {conf['attn_layers_depth']}, {conf['attn_layers_heads']} heads"
                + (f", blocks of {conf['block_size']}^D codes" if name == "block_transformer" else "")
            )
        elif name == "dcgan":
            desc = f"G {conf['generator_channels']}, D {conf['discriminator_channels']}, noise {conf['noise_dim']}"
        else:
            desc = f"{conf['channels']} ch, {conf['num_layers']} layers, kernel {conf['kernel_size']}"
        sampling = m.get("sampling_params", m["num_params"])
        params = f"{m['num_params']:,}" + (f" ({sampling:,})" if sampling != m["num_params"] else "")
        nll = "— (no likelihood)" if m["test_nll"] is None else _fmt(m["test_nll"], 4)
        lines.append(
            f"| {name} | {desc} | {params} | {nll} | {_fmt(m.get('test_code_js'), 3)} "
            f"| {_fmt(m['sampling_seconds'], 2)} | {_fmt(m['seconds_per_sample'])} | {_secs(m['train_seconds'])} |"
        )
    return [*lines, "", *_generation_table(section["generation"])]


_GEN_ROWS = (
    ("fid", "FID (in-house features)"),
    ("kid", "KID"),
    ("precision", "precision (k=5)"),
    ("recall", "recall (k=5)"),
    ("density", "density"),
    ("coverage", "coverage"),
    ("ms_ssim_diversity", "diversity: mean pairwise MS-SSIM"),
    ("nn_ssim_to_train", "memorisation: mean NN-SSIM to train"),
)


def _ci(row: Mapping[str, Any], key: str) -> str:
    ci = row.get(f"{key}_ci")
    return f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""


def _generation_table(gen: Mapping[str, Any]) -> list[str]:
    """Markdown rows of the generation metrics: one column per prior, then the real-vs-real floor (and target)."""
    priors = [k for k, v in gen.items() if isinstance(v, Mapping) and "groups" in v]
    if not priors:
        return ["Generation metrics: no results."]
    first = gen[priors[0]]
    fn = gen.get("feature_net", {})
    out = [
        f"Generation metrics ({first['counts']['samples']} samples per prior vs {first['counts']['real_test']} test "
        f"images; features: `{fn.get('version')}` trained on the {fn.get('num_images')} training images only; "
        f"seed {first['seed']}; "
        + (
            f"{first['num_bootstrap']} bootstrap replicates for the 95% CIs of FID/PRDC"
            if first["num_bootstrap"]
            else "no bootstrap CIs for FID/PRDC in this mode (too slow on a CPU)"
        )
        + f", bootstrap CIs for diversity and memorisation; KID over {first['kid_subsets']} subsets, its std in the "
        "JSON). The real-vs-real floor scores as many training images as there "
        "are samples (per class: as many as that class has) against the test images in exactly the same way; "
        "diversity is matched against the test images' own value, memorisation against the test images' "
        "NN-SSIM to the training set.",
        "",
    ]
    for group in first["groups"]:
        n = first["groups"][group]["counts"]
        out += [
            f"**{'all classes' if group == 'all' else group}** ({n['samples']} samples, {n['real_test']} test, "
            f"floor {n['real_floor_subset']} training images)",
            "",
            "| metric | " + " | ".join(priors) + " | real-vs-real floor | real test | better |",
            "|---|" + "---:|" * (len(priors) + 2) + "---|",
        ]
        for key, label in _GEN_ROWS:
            rows = [gen[p]["groups"].get(group, {}).get("metrics", {}).get(key) for p in priors]
            if all(r is None for r in rows):
                continue
            ref = next(r for r in rows if r is not None)
            digits = 4 if key == "kid" else 3
            cells = ["—" if r is None else f"{_fmt(r['generated'], digits)}{_ci(r, 'generated')}" for r in rows]
            floor = f"{_fmt(ref.get('real_floor'), digits)}{_ci(ref, 'real_floor')}"
            real_test = _fmt(ref.get("real_test"), digits) if "real_test" in ref else "—"
            out.append(f"| {label} | " + " | ".join(cells) + f" | {floor} | {real_test} | {ref['better']} |")
        copies = [gen[p]["groups"][group]["memorisation"].get("copy_fraction") for p in priors]
        out.append(
            "| memorisation: fraction of samples closer to train than any test image | "
            + " | ".join(_fmt(c) for c in copies)
            + " | — | — | lower |"
        )
        out.append("")
    return out
