"""Training a 2D slice network on labelled real cine MRI (ACDC): ``cardiotwin.segmentation.train_cine``.

Run: ``python -m cardiotwin.segmentation.train_cine --config configs/seg_cine_acdc.yaml --out RUN``
(``--resume`` continues from RUN/last.pt; ``--max-minutes`` re-aims the learning-rate decay), then
``... --out RUN --export models/heart_seg_cine_acdc --checkpoint step_N.pt`` writes the bundle (``--average step_M.pt
step_N.pt ...``: the uniform average of those checkpoints' weights). The patients come from the split file
(``configs/acdc_split.json``): "train" to learn from, "tuning" to choose checkpoints; the
"validation" patients are never read here (they are the benchmark, ``cardiotwin.bench.seg_cine``).

Each sample is one slice of an ED or ES stack with its two neighbours (``slicenet.neighbour_channels``),
drawn in the stack's voxel frame at ``pixel_mm`` pixels into a ``crop`` x ``crop`` window:
any in-plane rotation and mirror image (the header's orientation is never trusted), scale
+-``scale`` (the true pixel size of a research export is unknown), 0.9-1.1 anisotropy, the crop
centred near the heart (``p_random_crop`` anywhere in the slice), the neighbour slices shifted
in-plane (breath-hold misalignment); then a multiplicative bias field, gamma, contrast, blur
and Gaussian or Rician noise. Loss: Dice + cross-entropy; AdamW with poly decay over the steps or the time budget, whichever ends first; checkpoints
(``last.pt``, ``best.pt`` by mean Dice on the tuning patients through ``slicenet.predict_stack``,
``step_N.pt`` every ``val_every`` steps).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cardiotwin.config import config_to_dict, load_config
from cardiotwin.io.atomic import write_json_atomic
from cardiotwin.segmentation.network import NetworkSpec, build_network, count_parameters
from cardiotwin.segmentation.slicenet import (
    StackConfig,
    clean_stack_labels,
    neighbour_channels,
    normalise_stack,
    predict_stack,
    predict_stack_probs,
    trim_basal_rv,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CineTrainConfig:
    """Settings of a slice-network run on labelled cine stacks (configs/seg_cine_acdc.yaml)."""

    data_dir: str = "../shared/data/acdc"
    split_file: str = "configs/acdc_split.json"
    seed: int = 0
    crop: int = 128
    pixel_mm: float = 1.5625  # the stacks' header pixel size is taken as true (ACDC: nominal)
    batch: int = 12
    steps: int = 3000
    max_minutes: float = 70.0
    lr: float = 2e-3
    weight_decay: float = 1e-5
    val_every: int = 250
    threads: int = 1
    scale: float = 0.2
    p_random_crop: float = 0.2
    centre_jitter_px: float = 24.0
    misalign_px: float = 3.0
    warmup_steps: int = 0  # linear learning-rate warm-up (a continuation from trained weights restarts gently)
    init: str = ""  # a stack bundle directory or run checkpoint (.pt) whose weights start the run
    network: dict[str, Any] = field(default_factory=lambda: NetworkSpec(
        spatial_dims=2, in_channels=3, out_channels=4, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
        num_res_units=1).to_dict())


def load_stacks(data_dir: Path, patients: list[str]) -> list[dict[str, Any]]:
    """ED and ES stacks of ``patients``: normalised image (Z, X, Y), labels (Z, X, Y), heart centre per slice."""
    import nibabel as nib

    out = []
    for pid in patients:
        for phase in ("ed", "es"):
            img = np.asarray(nib.load(data_dir / pid / f"{phase}_image.nii.gz").dataobj, dtype=np.float32)
            lab = np.asarray(nib.load(data_dir / pid / f"{phase}_labels.nii.gz").dataobj).astype(np.uint8)
            stack = np.moveaxis(normalise_stack(img), 2, 0)
            labs = np.moveaxis(lab, 2, 0)
            heart = np.argwhere(labs > 0)
            centre_all = heart[:, 1:].mean(axis=0) if len(heart) else np.array(stack.shape[1:]) / 2.0
            centres = []
            for z in range(stack.shape[0]):
                idx = np.argwhere(labs[z] > 0)
                centres.append(idx.mean(axis=0) if len(idx) else centre_all)
            out.append({"id": f"{pid}/{phase}", "x": neighbour_channels(stack), "y": labs, "centres": np.array(centres),
                        "img": img, "lab": lab})
    return out


def _sample(stacks: list[dict[str, Any]], cfg: CineTrainConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented (3, crop, crop) input and (1, crop, crop) label."""
    s = stacks[rng.integers(len(stacks))]
    z = int(rng.integers(s["x"].shape[0]))
    x = torch.from_numpy(s["x"][z])  # (3, X, Y)
    y = torch.from_numpy(s["y"][z].astype(np.float32))[None]
    nx, ny = x.shape[1:]
    if rng.random() < cfg.p_random_crop:
        c = np.array([rng.uniform(0, nx - 1), rng.uniform(0, ny - 1)])
    else:
        c = s["centres"][z] + rng.normal(0.0, cfg.centre_jitter_px, 2)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    scale = math.exp(rng.uniform(math.log(1 - cfg.scale), math.log(1 + cfg.scale)))
    aniso = np.diag([rng.uniform(0.9, 1.1), 1.0]) * scale
    mirror = np.diag([1.0, -1.0 if rng.random() < 0.5 else 1.0])
    m = rot @ aniso @ mirror  # output pixel offset -> input pixel offset
    half = (cfg.crop - 1) / 2.0
    q = np.stack(np.meshgrid(np.arange(cfg.crop) - half, np.arange(cfg.crop) - half, indexing="ij"), -1)
    p = q @ m.T + c  # (crop, crop, 2) input pixel coordinates (i, j)

    def grid(pp: np.ndarray) -> torch.Tensor:
        g = np.stack([2 * pp[..., 1] / max(ny - 1, 1) - 1, 2 * pp[..., 0] / max(nx - 1, 1) - 1], -1)
        return torch.from_numpy(g).float()[None]

    chans = []
    for ch in range(3):
        pp = p
        if ch != 1 and rng.random() < 0.5:
            pp = p + rng.normal(0.0, cfg.misalign_px, 2)
        chans.append(torch.nn.functional.grid_sample(x[ch][None, None], grid(pp), mode="bilinear",
                                                     padding_mode="zeros", align_corners=True)[0, 0])
    xi = torch.stack(chans)
    yi = torch.nn.functional.grid_sample(y[None], grid(p), mode="nearest", padding_mode="zeros",
                                         align_corners=True)[0]
    return _intensity(xi, rng), yi


def _intensity(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Bias field, gamma, contrast / brightness, blur and noise on one (3, H, W) sample (in 0..1)."""
    h, w = x.shape[1:]
    if rng.random() < 0.7:  # smooth multiplicative bias field
        coarse = torch.from_numpy(rng.normal(0.0, rng.uniform(0.1, 0.4), (1, 1, 4, 4))).float()
        x = x * torch.exp(torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0])
    if rng.random() < 0.7:
        x = x.clamp(min=0) ** math.exp(rng.uniform(-0.4, 0.4))
    if rng.random() < 0.5:
        x = x * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.2:
        sig = rng.uniform(0.5, 1.2)
        r = int(math.ceil(2 * sig))
        k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sig * sig))
        k = k / k.sum()
        x = torch.nn.functional.conv2d(x[:, None], k.view(1, 1, -1, 1), padding=(r, 0))
        x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))[:, 0]
    if rng.random() < 0.5:
        sd = rng.uniform(0.0, 0.06)
        if rng.random() < 0.5:
            x = x + torch.from_numpy(rng.normal(0, sd, x.shape)).float()
        else:  # Rician: magnitude of a complex signal with noise in both channels
            n1 = torch.from_numpy(rng.normal(0, sd, x.shape)).float()
            n2 = torch.from_numpy(rng.normal(0, sd, x.shape)).float()
            x = torch.sqrt((x + n1) ** 2 + n2**2)
    return x.float()


def dice_scores(pred: np.ndarray, ref: np.ndarray, labels=(1, 2, 3)) -> dict[int, float]:
    """Dice per label (1.0 when both are empty)."""
    out = {}
    for k in labels:
        a, b = pred == k, ref == k
        s = int(a.sum()) + int(b.sum())
        out[k] = 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s
    return out


def evaluate(model: torch.nn.Module, stacks: list[dict[str, Any]], cfg: CineTrainConfig) -> dict[str, Any]:
    """Mean Dice per label of ``predict_stack`` (the inference path) on whole stacks."""
    model.eval()
    per = []
    for s in stacks:
        pred = predict_stack(model, s["img"], (1.5625, 1.5625, 10.0), StackConfig(pixel_mm=cfg.pixel_mm, window=cfg.crop))
        per.append(dice_scores(pred, s["lab"]))
    model.train()
    mean = {k: float(np.mean([d[k] for d in per])) for k in (1, 2, 3)}
    return {"mean_per_label": mean, "mean": float(np.mean(list(mean.values())))}


BASAL_RV_GRID = {"confidence": (0.0, 0.7, 0.75, 0.8, 0.85, 0.9), "ratio": (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)}
BASAL_RV_FIT_GAP = 0.03  # training-minus-tuning RV Dice (rule off) above which the training-stack fit is flagged


def basal_rv_table(cases: list[tuple[np.ndarray, np.ndarray, np.ndarray]], grid: dict = BASAL_RV_GRID,
                   max_slices: int = 2) -> list[dict[str, float]]:
    """Mean RV blood pool Dice over ``cases`` (cleaned labels, RV probability, expert labels; slice axis 2) for
    every confidence x ratio of the basal-slice RV rule (``slicenet.trim_basal_rv``; 0 and 0: the rule off)."""
    rows = []
    for c in grid["confidence"]:
        for r in grid["ratio"]:
            dice = [dice_scores(trim_basal_rv(lab, p_rv, 2, confidence=c, ratio=r, max_slices=max_slices), ref, (3,))[3]
                    for lab, p_rv, ref in cases]
            rows.append({"confidence": float(c), "ratio": float(r), "rv_dice": float(np.mean(dice))})
    return rows


def fit_basal_rv(network: torch.nn.Module, cfg: CineTrainConfig, stack: StackConfig) -> dict[str, Any]:
    """Choose the basal-slice RV rule's thresholds on the training patients' stacks (the best mean RV Dice of
    ``basal_rv_table``; ties: the milder rule) and score that choice and the rule off on the tuning patients."""
    split = json.loads(Path(cfg.split_file).read_text())
    network.eval()

    def cases(patients: list[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for s in load_stacks(Path(cfg.data_dir), sorted(patients)):
            probs = predict_stack_probs(network, s["img"], (cfg.pixel_mm, cfg.pixel_mm, 10.0), stack)
            out.append((clean_stack_labels(probs.argmax(0).astype(np.uint8), 2), probs[3].astype(np.float16), s["lab"]))
        return out

    table = basal_rv_table(cases(list(split["train"])))
    best = max(table, key=lambda r: (round(r["rv_dice"], 4), -r["confidence"], -r["ratio"]))
    tuning_table = basal_rv_table(cases(list(split["tuning"])))

    def tuning(c: float, r: float) -> float:
        return next(row["rv_dice"] for row in tuning_table if row["confidence"] == c and row["ratio"] == r)

    gap = next(row["rv_dice"] for row in table if row["confidence"] == 0.0 and row["ratio"] == 0.0) - tuning(0.0, 0.0)
    if gap > BASAL_RV_FIT_GAP:
        log.warning("the network fits its training stacks (RV Dice, rule off) %.3f better than the tuning stacks: "
                    "its confidence on them is not that of an unseen scan, so the training-stack fit is biased "
                    "towards a milder rule; compare tuning_table", gap)
    return {"chosen": {"confidence": best["confidence"], "ratio": best["ratio"]}, "train_table": table,
            "train_stacks": 2 * len(split["train"]), "tta": stack.tta, "train_minus_tuning_rv_dice": gap,
            "tuning_table": tuning_table,
            "tuning_rv_dice": {"rule_off": tuning(0.0, 0.0), "chosen": tuning(best["confidence"], best["ratio"])}}


def initial_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Network weights of a stack bundle directory (its model.safetensors) or of a run checkpoint (.pt)."""
    from safetensors.torch import load_file

    from cardiotwin.errors import ConfigError

    p = Path(path)
    if p.is_dir() and (p / "model.safetensors").is_file():
        return load_file(str(p / "model.safetensors"))
    if p.is_file() and p.suffix == ".pt":
        return torch.load(p, map_location="cpu", weights_only=True)["model"]
    raise ConfigError(f"{p}: init must be a bundle directory with model.safetensors or a run checkpoint (.pt)")


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Uniform average of the network weights of run checkpoints (weight averaging over the end of a run, as in
    stochastic weight averaging; the network's instance norm keeps no running statistics to recompute)."""
    from cardiotwin.errors import ConfigError

    if not paths:
        raise ConfigError("average: no checkpoints given")
    states = []
    for p in paths:
        if not Path(p).is_file():
            raise ConfigError(f"{p}: checkpoint to average not found")
        states.append(torch.load(p, map_location="cpu", weights_only=True)["model"])
    ref = states[0]
    for p, st in zip(paths, states):
        if set(st) != set(ref) or any(st[k].shape != ref[k].shape for k in ref):
            raise ConfigError(f"{p}: its network differs from {paths[0]}'s (other weights or shapes); cannot average")
    return {k: (torch.stack([st[k].double() for st in states]).mean(0).to(ref[k].dtype)
                if ref[k].is_floating_point() else states[-1][k].clone()) for k in ref}


def train(cfg: CineTrainConfig, *, out_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train; writes last.pt, best.pt, step_N.pt, log.jsonl and summary.json into ``out_dir``."""
    from monai.losses import DiceCELoss

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    split = json.loads(Path(cfg.split_file).read_text())
    data_dir = Path(cfg.data_dir)
    train_stacks = load_stacks(data_dir, list(split["train"]))
    tune_stacks = load_stacks(data_dir, list(split["tuning"]))
    log.info("%d training stacks (%d slices), %d tuning stacks", len(train_stacks),
             sum(s["x"].shape[0] for s in train_stacks), len(tune_stacks))
    spec = NetworkSpec.from_dict(cfg.network)
    model = build_network(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5)
    step, best, elapsed_before = 0, -1.0, 0.0
    last = out_dir / "last.pt"
    resumed = resume and last.is_file()
    if resumed:
        ck = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, best, elapsed_before = int(ck["step"]), float(ck["best"]), float(ck["elapsed_s"])
    elif cfg.init:
        model.load_state_dict(initial_weights(cfg.init))
    rng = np.random.default_rng(cfg.seed + step)
    cfg_json = json.dumps(config_to_dict(cfg), default=str)
    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []

    def save(path: Path, extra: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
                    "elapsed_s": elapsed_before + time.perf_counter() - t0, "config_json": cfg_json,
                    "network": spec.to_dict(), **extra}, tmp)
        tmp.replace(path)

    def validate() -> None:
        nonlocal best
        res = evaluate(model, tune_stacks, cfg)
        rec = {"step": step, "loss": running, "lr": lr, "tune_dice": res["mean_per_label"], "tune_mean": res["mean"],
               "elapsed_s": round(elapsed_before + time.perf_counter() - t0, 1)}
        history.append(rec)
        with open(out_dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        log.info("step %d tuning Dice %s mean %.3f", step, {k: round(v, 3) for k, v in res["mean_per_label"].items()},
                 res["mean"])
        if res["mean"] > best:
            best = res["mean"]
            save(out_dir / "best.pt", {"val": res})
        save(out_dir / f"step_{step}.pt", {"val": res})
        save(last, {})

    running, lr = None, 0.0
    if cfg.init and not resumed:  # the starting weights compete for best.pt like every later checkpoint
        validate()
    model.train()
    while step < cfg.steps and elapsed_before + time.perf_counter() - t0 < cfg.max_minutes * 60:
        xs, ys = zip(*(_sample(train_stacks, cfg, rng) for _ in range(cfg.batch)))
        # poly decay over whichever ends first, the steps or the time budget (a loaded CPU stops early)
        progress = max(step / cfg.steps, (elapsed_before + time.perf_counter() - t0) / (cfg.max_minutes * 60))
        lr = cfg.lr * max(1.0 - progress, 0.0) ** 0.9 * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(torch.stack(xs)), torch.stack(ys))
        loss.backward()
        opt.step()
        step += 1
        lv = float(loss.detach())
        running = lv if running is None else 0.98 * running + 0.02 * lv
        if step % 50 == 0:
            log.info("step %d loss %.4f lr %.2e %.0f s", step, running, lr, elapsed_before + time.perf_counter() - t0)
        if step % cfg.val_every == 0 or step == cfg.steps:
            validate()
    if not history or history[-1]["step"] != step:  # the last step competes for best.pt too
        validate()
    save(last, {})
    summary = {"steps": step, "best_tune_mean_dice": best, "elapsed_s": elapsed_before + time.perf_counter() - t0,
               "history": history, "config": json.loads(cfg_json), "network_parameters": count_parameters(model)}
    write_json_atomic(out_dir / "summary.json", summary)
    return summary


def parent_record(init: str, version: str, cfg: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Name, version, weights and training record of the bundle a run started from (``init``), or None when the
    run started from scratch or from a bare checkpoint. When the bundle there now is this version or was itself
    exported from this run (its training config is ``cfg``), its recorded parent is kept."""
    meta_path = Path(init) / "metadata.json" if init else None
    if meta_path is None or not meta_path.is_file():
        return {"checkpoint": init} if init else None
    meta = json.loads(meta_path.read_text())
    training = meta.get("training") or {}
    same_run = cfg is not None and training.get("config") == cfg
    if (meta.get("version") == version or same_run) and "initialised_from" in training:
        return training["initialised_from"]
    return {"bundle": meta.get("name"), "version": meta.get("version"),
            "weights_sha256": (meta.get("weights") or {}).get("sha256"), "training": meta.get("training")}


def export_stack_bundle(checkpoint: Path, bundle_dir: Path, *, name: str, command: str,
                        stack: StackConfig | None = None, version: str = "1.0.0",
                        average: list[Path] | None = None) -> Path:
    """Write a run checkpoint as a 2D short-axis stack bundle (weights, metadata.json, inference.json) licensed
    CC-BY-NC-SA-4.0; LICENSE and MODEL_CARD.md are written by hand and must already be in ``bundle_dir``.
    A run started from a bundle (``init``) records that bundle's training as ``training.initialised_from``.
    ``average``: the bundle's weights are the mean of these checkpoints' (``checkpoint`` gives the run's record);
    their tuning scores are measured here, as training scores a checkpoint."""
    from safetensors.torch import save_file

    from cardiotwin.anatomy import LABEL_NAMES
    from cardiotwin.io.atomic import sha256_file
    from cardiotwin.machine import machine_description
    from cardiotwin.segmentation.bundle import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, load_bundle

    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = json.loads(ck["config_json"])
    split = json.loads(Path(cfg["split_file"]).read_text())
    averaged = None
    if average:
        ck["model"] = average_checkpoints(list(average))
        net = build_network(NetworkSpec.from_dict(ck["network"]))
        net.load_state_dict(ck["model"])
        tcfg = load_config(CineTrainConfig, cfg, source=str(checkpoint))
        ck["val"] = evaluate(net, load_stacks(Path(cfg["data_dir"]), list(split["tuning"])), tcfg)
        averaged = [{"file": Path(p).name, "step": int(torch.load(p, map_location="cpu", weights_only=True)["step"])}
                    for p in average]
    parent = parent_record(str(cfg.get("init") or ""), version, cfg)  # read before the bundle is overwritten
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    weights = bundle_dir / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ck["model"].items()}, str(weights),
              metadata={"format": BUNDLE_FORMAT, "step": str(ck["step"])})
    stack = stack or StackConfig(pixel_mm=float(cfg["pixel_mm"]), window=int(cfg["crop"]))
    meta = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "name": name, "version": version,
        "description": "LV blood pool, LV myocardium and RV blood pool in short-axis cine MRI stacks, slice by slice "
                       "in the stack's own voxel frame (2D U-Net); research use only (trained on ACDC, CC BY-NC-SA 4.0).",
        "network": ck["network"],
        "inputs": {"channels": 3, "modalities": ["MR"], "target_spacing_mm": stack.pixel_mm,
                   "orientation": "ignored: the thick-slice axis and the slices' own pixel grid (any in-plane rotation "
                                  "or mirror image was trained)",
                   "intensity_normalisation": {"MR": {"method": "percentile", "lower_pct": 0.5, "upper_pct": 99.5,
                                                      "range": [0, 1], "over": "the whole stack"}},
                   "slice_context": "each slice with its two neighbours along the slice axis"},
        "outputs": {"label_table": {str(k): LABEL_NAMES[k] for k in range(4)}, "predicted_labels": [1, 2, 3],
                    "activation": "softmax",
                    "added_by_postprocessing": {"4": "RV myocardium: a shell around the RV blood pool (rv_myocardium)"}},
        "weights": {"file": weights.name, "sha256": sha256_file(weights), "dtype": "float32",
                    "parameters": int(sum(v.numel() for v in ck["model"].values() if v.dtype.is_floating_point))},
        "training": {"data": "ACDC training set (Bernard et al., IEEE TMI 2018), CC BY-NC-SA 4.0: ED and ES stacks of "
                             f"{len(split['train'])} patients with expert labels, from {cfg['data_dir']}",
                     "train_patients": list(split["train"]), "tuning_patients": list(split["tuning"]),
                     "validation_patients_never_trained_on": list(split["validation"]),
                     "config": cfg, "command": command, "step": int(ck["step"]),
                     "wall_time_s": round(float(ck.get("elapsed_s", 0.0)), 1), "hardware": machine_description(),
                     **({"initialised_from": parent} if parent else {}),
                     **({"weights_averaged_over": averaged} if averaged else {})},
        "validation": {"data": "ACDC tuning patients (checkpoint selection)", **(ck.get("val") or {})},
        "licence": "CC-BY-NC-SA-4.0",
        "use": "non-commercial research only; never the default model",
    }
    write_json_atomic(bundle_dir / "metadata.json", meta)
    write_json_atomic(bundle_dir / "inference.json", {
        "slice_stack": {"pixel_mm": stack.pixel_mm, "window": stack.window, "tta": stack.tta,
                        **({"basal_rv_confidence": stack.basal_rv_confidence, "basal_rv_ratio": stack.basal_rv_ratio,
                            "basal_rv_slices": stack.basal_rv_slices} if stack.trims_basal_rv else {})},
        "largest_component": False, "fill_holes": True,  # components: slicenet.clean_stack_labels
        "rv_myocardium": "always", "rv_wall_mm": "3.5 mm", "min_lv_blood_ml": "8 mL", "min_heart_ml": "30 mL",
        "threads": 1})
    load_bundle(bundle_dir)
    return bundle_dir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--threads", type=int, help="torch threads (a run-time setting; resumable with another value)")
    ap.add_argument("--init", help="start from these weights: a stack bundle directory or a run checkpoint (.pt)")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--warmup-steps", type=int)
    ap.add_argument("--seed", type=int, help="sampling and augmentation seed (default: the config's); step k draws from seed + k, so "
                         "seeds closer than the run's steps repeat each other's samples (run 6 used 1000000)")
    ap.add_argument("--export", metavar="BUNDLE_DIR", help="write a checkpoint of the run as a bundle (no training)")
    ap.add_argument("--checkpoint", default="best.pt", help="with --export: which checkpoint of --out (default best.pt)")
    ap.add_argument("--average", nargs="+", metavar="CKPT",
                    help="with --export: the bundle's weights are the mean of these checkpoints of --out")
    ap.add_argument("--version", default="1.0.0", help="with --export: the bundle's version")
    ap.add_argument("--tta", type=int, default=1, choices=(1, 2, 4, 8),
                    help="with --export / --fit-basal-rv: test-time rotations (chosen on the tuning patients)")
    ap.add_argument("--fit-basal-rv", action="store_true",
                    help="choose the basal-slice RV rule on the training stacks for --checkpoint (--average): "
                         "writes OUT/basal_rv_fit.json")
    ap.add_argument("--basal-rv", nargs=2, type=float, metavar=("CONFIDENCE", "RATIO"),
                    help="with --export: the basal-slice RV rule's thresholds (from --fit-basal-rv)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.export or a.fit_basal_rv:
        ck_cfg = json.loads(torch.load(Path(a.out) / a.checkpoint, map_location="cpu", weights_only=True)["config_json"])
        rule = dict(zip(("basal_rv_confidence", "basal_rv_ratio"), a.basal_rv or (0.0, 0.0)))
        stack = StackConfig(pixel_mm=float(ck_cfg["pixel_mm"]), window=int(ck_cfg["crop"]), tta=a.tta, **rule)
    if a.fit_basal_rv:
        torch.set_num_threads(a.threads or 1)
        ckpts = [Path(a.out) / c for c in (a.average or [a.checkpoint])]
        tcfg = load_config(CineTrainConfig, ck_cfg, source=str(ckpts[0]))
        net = build_network(NetworkSpec.from_dict(torch.load(ckpts[0], map_location="cpu", weights_only=True)["network"]))
        net.load_state_dict(average_checkpoints(ckpts))
        fit = {"checkpoints": [p.name for p in ckpts], **fit_basal_rv(net, tcfg, stack)}
        write_json_atomic(Path(a.out) / "basal_rv_fit.json", fit)
        print(json.dumps({k: v for k, v in fit.items() if k not in ("train_table", "tuning_table")}, indent=1))
        return
    if a.export:
        command = (f"python -m cardiotwin.segmentation.train_cine --config {a.config} --out {a.out} "
                   f"--export {a.export} --checkpoint {a.checkpoint} --version {a.version} --tta {a.tta}"
                   + (f" --average {' '.join(a.average)}" if a.average else "")
                   + (f" --basal-rv {a.basal_rv[0]:g} {a.basal_rv[1]:g}" if a.basal_rv else ""))
        export_stack_bundle(Path(a.out) / a.checkpoint, Path(a.export), name=Path(a.export).name, command=command,
                            stack=stack, version=a.version,
                            average=[Path(a.out) / c for c in a.average] if a.average else None)
        return
    import yaml

    raw = yaml.safe_load(Path(a.config).read_text()) or {}
    if a.steps:
        raw["steps"] = a.steps
    if a.max_minutes:
        raw["max_minutes"] = a.max_minutes
    if a.threads:
        raw["threads"] = a.threads
    for key in ("init", "lr", "warmup_steps", "seed"):
        if getattr(a, key) is not None:
            raw[key] = getattr(a, key)
    cfg = load_config(CineTrainConfig, raw, source=a.config)
    train(cfg, out_dir=Path(a.out), resume=a.resume)


if __name__ == "__main__":
    main()
