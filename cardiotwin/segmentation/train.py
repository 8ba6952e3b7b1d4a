"""Training on synthetic data: `cardiotwin train-seg --config configs/seg_train.yaml --out runs/seg`.

A background worker (torch DataLoader, one process) draws label volumes from the shape model
(cached as .npz under ``cache_dir``, so a rerun or a resume reuses them) and paints random
appearances (``synth.synth_sample``); the main process runs the optimiser. Every
``val_every`` steps the model is scored (Dice per label) on held-out phantoms of both modalities
through the real inference path at the working resolution, and a checkpoint is written;
``best.pt`` keeps the best mean Dice. A run stops after ``steps`` steps or ``max_minutes`` and can
be resumed from ``last.pt`` (same config) with ``--resume``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cardiotwin.config import config_to_dict, quantity
from cardiotwin.errors import ConfigError
from cardiotwin.io.atomic import write_json_atomic
from cardiotwin.phantom import LvShape, VesselModel
from cardiotwin.segmentation.network import NetworkSpec, build_network, count_parameters
from cardiotwin.segmentation.synth import SynthLabels, make_label_volume, synth_batch

log = logging.getLogger(__name__)

# Settings that change how fast a run goes, not what it learns: a resumed run may change them.
RUNTIME_KEYS = frozenset({"threads", "workers", "max_minutes", "val_every"})

VAL_SEED_BASE = 700000  # validation phantoms; training label volumes use seeds 0..n-1; 900000+ is held out


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (configs/seg_train.yaml)."""

    seed: int = 0
    n_label_volumes: int = 200
    label_volume_size: int = 80
    spacing_mm: float = quantity(2.5, "mm")
    patch: int = 64
    batch: int = 2
    steps: int = 1500
    max_minutes: float = quantity(50.0, "min")
    lr: float = 3e-3
    weight_decay: float = 1e-5
    val_every: int = 150
    n_val_per_modality: int = 2
    threads: int = 2
    workers: int = 1
    cache_dir: str = ".cache/seg_synth"
    network: dict[str, Any] = field(default_factory=lambda: NetworkSpec().to_dict())
    # appearance mix (ct, mr, random), probability of random non-cardiac structures, patch zoom range
    mode_weights: tuple[float, float, float] = (0.3, 0.35, 0.35)
    p_distractors: float = 0.0
    scale_range: tuple[float, float] = (0.85, 1.2)
    # patches far off the heart (probability, maximum shift per axis) and thorax mirrored beyond the cube
    p_off_centre: float = 0.0
    off_centre_mm: float = quantity(90.0, "mm")
    p_reflect: float = 0.0
    p_trabeculae: float = 0.0  # trabeculated LV rim, labelled blood pool as expert contours do
    p_negative: float = 0.0  # texture-only patches without a heart (all background)
    p_pericardium: float = 0.0  # dark or bright patchy tissue against the heart's outer wall
    pericardium_depth_vox: int = 4  # ... 1 to this many voxels deep
    p_dark_fat: float = 0.0  # MR appearance: fat (pericardial shell, body wall) as dark as myocardium
    p_endo_ramp: float = 0.0  # LV blood signal falling towards the wall (trabeculae, slow flow), still blood
    p_myo_hetero: float = 0.0  # MR / random appearance: uneven myocardial signal, brighter outer LV wall
    p_contrast_mixing: float = 0.0  # CT appearance: unenhanced blood swirling into the right atrium and ventricle
    # shape model's great vessels: "short" (as the sample phantoms) or "thoracic" (adult lengths)
    vessels: VesselModel = "short"
    # share of the label volumes with a dilated LV (heart failure; phantom.sample_heart_params), spread evenly
    dilated_fraction: float = 0.0
    dim_range: tuple[float, float] = (1.0, 1.0)  # MR images scaled by a factor from this range after normalisation
    log_gamma_range: tuple[float, float] = (-0.35, 0.35)  # half of the patches: intensity ** exp(u), u in this range
    # fine-tuning: start from these weights (a run's .pt checkpoint or a bundle's model.safetensors)
    init_weights: str = ""

    def validate(self) -> None:
        if self.patch % 16:
            raise ValueError(f"patch must be a multiple of 16, got {self.patch}")
        if self.n_label_volumes < 1 or self.batch < 1 or self.steps < 1:
            raise ValueError("n_label_volumes, batch and steps must be >= 1")
        NetworkSpec.from_dict(self.network)
        if len(self.mode_weights) != 3 or min(self.mode_weights) < 0 or sum(self.mode_weights) <= 0:
            raise ValueError(f"mode_weights must be three non-negative weights (ct, mr, random), got {self.mode_weights}")
        for name in ("p_distractors", "p_off_centre", "p_reflect", "p_trabeculae", "p_negative", "p_pericardium",
                     "p_dark_fat", "p_endo_ramp", "p_myo_hetero", "p_contrast_mixing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.dilated_fraction <= 1.0:
            raise ValueError(f"dilated_fraction must be in [0, 1], got {self.dilated_fraction}")
        if self.vessels not in ("short", "thoracic"):
            raise ValueError(f"vessels must be 'short' or 'thoracic', got {self.vessels!r}")
        if self.pericardium_depth_vox < 1:
            raise ValueError(f"pericardium_depth_vox must be >= 1, got {self.pericardium_depth_vox}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if len(self.dim_range) != 2 or not 0 < self.dim_range[0] <= self.dim_range[1] <= 1.0:
            raise ValueError(f"dim_range must be (low, high) with 0 < low <= high <= 1, got {self.dim_range}")
        if len(self.log_gamma_range) != 2 or not -2.0 <= self.log_gamma_range[0] <= self.log_gamma_range[1] <= 2.0:
            raise ValueError(f"log_gamma_range must be (low, high) within -2..2, got {self.log_gamma_range}")
        if self.spatial_dims == 2 and self.p_negative > 0:
            raise ValueError("p_negative (texture-only volumes) is for 3D networks; set it to 0 for a slice network")

    @property
    def spatial_dims(self) -> int:
        """3: a volume network trained on patches (``synth.synth_sample``); 2: a slice network trained on
        thick short-axis slices (``synth.synth_slice``; ``patch`` is then the slice size in pixels of
        ``spacing_mm``)."""
        return NetworkSpec.from_dict(self.network).spatial_dims

    def lv_shape(self, index: int) -> LvShape:
        """The LV shape range of label volume ``index`` (0-based): every 1/dilated_fraction-th is dilated."""
        f = self.dilated_fraction
        return "dilated" if math.floor((index + 1) * f) > math.floor(index * f) else "typical"

    def sample_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``synth.synth_sample`` set by this config."""
        return {"mode_weights": tuple(float(w) for w in self.mode_weights), "p_distractors": float(self.p_distractors),
                "scale_range": tuple(float(s) for s in self.scale_range), "p_off_centre": float(self.p_off_centre),
                "off_centre_mm": float(self.off_centre_mm), "p_reflect": float(self.p_reflect),
                "p_trabeculae": float(self.p_trabeculae),
                "p_pericardium": float(self.p_pericardium), "dim_range": tuple(float(d) for d in self.dim_range),
                "log_gamma_range": tuple(float(g) for g in self.log_gamma_range), "p_dark_fat": float(self.p_dark_fat),
                "pericardium_depth_vox": int(self.pericardium_depth_vox), "p_endo_ramp": float(self.p_endo_ramp),
                "p_myo_hetero": float(self.p_myo_hetero), "p_contrast_mixing": float(self.p_contrast_mixing)} | (
                    {"p_negative": float(self.p_negative)} if self.spatial_dims == 3 else {})


def load_init_weights(path: Path) -> dict[str, torch.Tensor]:
    """Model state dict from a run checkpoint (.pt, key "model") or a bundle's .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"init_weights: {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or "model" not in ck:
        raise ConfigError(f"init_weights: {path} is not a cardiotwin training checkpoint (no 'model' entry)")
    return ck["model"]


class _SynthStream(torch.utils.data.IterableDataset):
    """Endless synthetic batches; grows its pool of label volumes while training runs."""

    def __init__(self, cfg: TrainConfig, start_step: int) -> None:
        self.cfg = cfg
        self.start_step = start_step

    def _lv(self, seed: int) -> LvShape:
        return self.cfg.lv_shape(seed - self.cfg.seed * 100_000)

    def _cache_file(self, seed: int) -> Path:
        variant = "" if self.cfg.vessels == "short" else f"_{self.cfg.vessels}"
        variant += "" if self._lv(seed) == "typical" else f"_{self._lv(seed)}"
        return Path(self.cfg.cache_dir) / f"vol_{self.cfg.label_volume_size}_{self.cfg.spacing_mm:g}mm{variant}_{seed:06d}.npz"

    def _volume(self, seed: int) -> SynthLabels:
        cache = self._cache_file(seed)
        if cache.is_file():
            try:
                d = np.load(cache)
                return SynthLabels(codes=d["codes"], long_axis=tuple(d["long_axis"].tolist()),
                                   spacing_mm=float(d["spacing_mm"]), seed=seed)
            except (OSError, ValueError, KeyError):
                log.warning("ignoring damaged cache file %s", cache)
        vol = make_label_volume(seed, size=self.cfg.label_volume_size, spacing_mm=self.cfg.spacing_mm,
                                vessels=self.cfg.vessels, lv=self._lv(seed))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, codes=vol.codes, long_axis=np.asarray(vol.long_axis), spacing_mm=vol.spacing_mm)
        tmp.replace(cache)
        return vol

    def __iter__(self):
        torch.set_num_threads(1)
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.start_step)
        seeds = list(range(cfg.seed * 100_000, cfg.seed * 100_000 + cfg.n_label_volumes))
        pool: list[SynthLabels] = [self._volume(s) for s in seeds[:4]]
        nxt = 4
        # volumes already cached are loaded at once; new ones are drawn one every six batches so
        # the worker keeps ahead of the optimiser on a slow machine
        while nxt < len(seeds) and self._cache_file(seeds[nxt]).is_file():
            pool.append(self._volume(seeds[nxt]))
            nxt += 1
        k = 0
        while True:
            if nxt < len(seeds) and k % 6 == 0:
                pool.append(self._volume(seeds[nxt]))
                nxt += 1
            k += 1
            yield synth_batch(pool, gen, batch=cfg.batch, patch=cfg.patch, spatial_dims=cfg.spatial_dims,
                              **cfg.sample_kwargs())


def validation_cases(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Validation phantoms (seeds VAL_SEED_BASE+i, with the run's great-vessel model).

    Volume networks: CT and MR phantoms on the working grid. Slice networks: short-axis MR stacks,
    every second one with a dilated LV, on their own grid with the window centred on the reference
    heart (the 3D pass's job in ``inference.segment``).
    """
    from cardiotwin.phantom import make_phantom
    from cardiotwin.segmentation.inference import labels_to_working_grid, slice_axis, to_working_grid
    from cardiotwin.segmentation.synth import normalise_intensities

    cases: list[dict[str, Any]] = []
    if cfg.spatial_dims == 2:
        for i in range(2 * cfg.n_val_per_modality):
            lv: LvShape = "dilated" if i % 2 else "typical"
            ph = make_phantom(seed=VAL_SEED_BASE + i, modality="MR", vessels=cfg.vessels, lv=lv)
            heart = np.argwhere(np.isin(ph.labels.labels, (1, 2)))
            image = normalise_intensities(torch.from_numpy(ph.scan.voxels), torch.ones(ph.scan.voxels.shape, dtype=torch.bool))
            cases.append({"name": f"MR-{lv}-{VAL_SEED_BASE + i}", "image": image.numpy(), "ref": ph.labels.labels,
                          "geometry": ph.scan.geometry, "axis": slice_axis(ph.scan.geometry, min_ratio=2.0),
                          "centre_mm": ph.scan.geometry.index_to_world(heart.mean(axis=0))})
        return cases
    for i in range(cfg.n_val_per_modality):
        for modality in ("CT", "MR"):
            ph = make_phantom(seed=VAL_SEED_BASE + i, modality=modality, vessels=cfg.vessels)
            work = to_working_grid(ph.scan, spacing_mm=cfg.spacing_mm)
            ref = labels_to_working_grid(ph.labels, work.geometry)
            cases.append({"name": f"{modality}-{VAL_SEED_BASE + i}", "image": work.image, "ref": ref})
    return cases


def dice_per_label(pred: np.ndarray, ref: np.ndarray, labels: range | list[int]) -> dict[int, float]:
    """Dice 2|P∩R|/(|P|+|R|) per label (nan when both are empty)."""
    out = {}
    for k in labels:
        p, r = pred == k, ref == k
        denom = int(p.sum()) + int(r.sum())
        out[int(k)] = float(2.0 * np.logical_and(p, r).sum() / denom) if denom else float("nan")
    return out


def evaluate(model: torch.nn.Module, cases: list[dict[str, Any]], *, roi: int, spacing_mm: float) -> dict[str, Any]:
    """Dice per label on the validation phantoms, with the sliding-window settings a bundle is
    exported with (``SegConfig`` defaults: overlap and the windows centred on the heart), so best.pt
    is chosen by the inference that ships."""
    from cardiotwin.segmentation.inference import SegConfig, predict_slices, predict_working_grid

    model.eval()
    per_case = {}
    for c in cases:
        if "axis" in c:  # slice network: scored inside its window on the stack's own grid
            probs, inside = predict_slices(model, c["image"], c["geometry"], axis=c["axis"], centre_mm=c["centre_mm"],
                                           spacing_mm=spacing_mm, size=roi)
            per_case[c["name"]] = dice_per_label(np.where(inside, probs.argmax(0), 0), np.where(inside, c["ref"], 0),
                                                 range(1, 9))
            continue
        probs = predict_working_grid(model, c["image"], roi=roi, spacing_mm=spacing_mm, cfg=SegConfig())
        pred = probs.argmax(0).numpy()
        per_case[c["name"]] = dice_per_label(pred, c["ref"], range(1, 9))
    mean = {k: float(np.nanmean([d[k] for d in per_case.values()])) for k in range(1, 9)}
    model.train()
    return {"per_case": per_case, "mean_per_label": mean, "mean": float(np.nanmean(list(mean.values())))}


def train(cfg: TrainConfig, *, out_dir: Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a network; writes last.pt, best.pt, log.jsonl and summary.json into ``out_dir``."""
    from monai.losses import DiceCELoss

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    spec = NetworkSpec.from_dict(cfg.network)
    model = build_network(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=False, smooth_nr=1e-5, smooth_dr=1e-5)
    step, best, elapsed_before = 0, -1.0, 0.0
    schedule_changes: list[dict[str, int]] = []
    last = out_dir / "last.pt"
    cfg_dict = config_to_dict(cfg)
    if resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        saved = json.loads(ck["config_json"])
        now = json.loads(json.dumps(cfg_dict, default=str))
        changed = sorted(k for k in set(saved) | set(now)
                         if saved.get(k) != now.get(k) and k not in RUNTIME_KEYS and k != "steps")
        if changed:
            raise ConfigError(f"{last}: was trained with another config ({', '.join(changed)} differ); "
                              "start a new --out folder")
        if int(saved.get("steps", cfg.steps)) != cfg.steps:
            if cfg.steps <= int(ck["step"]):
                raise ConfigError(f"{last}: already at step {ck['step']}; --steps must be larger")
            # the poly learning-rate decay is re-aimed at the new end; recorded so a model card can say so
            schedule_changes = list(ck.get("schedule_changes", [])) + [
                {"at_step": int(ck["step"]), "steps_from": int(saved["steps"]), "steps_to": cfg.steps}]
            log.info("resume: schedule changed from %s to %d steps at step %d", saved["steps"], cfg.steps, ck["step"])
        else:
            schedule_changes = list(ck.get("schedule_changes", []))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, best, elapsed_before = int(ck["step"]), float(ck["best"]), float(ck["elapsed_s"])
        log.info("resumed from %s at step %d", last, step)
    elif cfg.init_weights:
        try:
            model.load_state_dict(load_init_weights(Path(cfg.init_weights)))
        except RuntimeError as exc:
            raise ConfigError(f"init_weights: {cfg.init_weights} does not fit the network of the config ({exc})") from None
        log.info("initialised from %s", cfg.init_weights)
    log.info("network %s, %d parameters", spec.type, count_parameters(model))
    val_cases = validation_cases(cfg)
    stream = _SynthStream(cfg, step)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.workers,
                                         persistent_workers=cfg.workers > 0, prefetch_factor=2 if cfg.workers else None)
    t0 = time.perf_counter()
    log_path = out_dir / "log.jsonl"
    history: list[dict[str, Any]] = []

    def save(path: Path, extra: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
                    "elapsed_s": elapsed_before + time.perf_counter() - t0,
                    "config_json": json.dumps(cfg_dict, default=str), "network": spec.to_dict(),
                    "schedule_changes": schedule_changes, **extra}, tmp)
        tmp.replace(path)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("train-seg"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}")]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=step, info="")
        running = None
        for images, targets in loader:
            if step >= cfg.steps or (elapsed_before + time.perf_counter() - t0) > cfg.max_minutes * 60.0:
                break
            lr = cfg.lr * (1.0 - step / cfg.steps) ** 0.9
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(images), targets)
            loss.backward()
            opt.step()
            step += 1
            lv = float(loss.detach())
            running = lv if running is None else 0.95 * running + 0.05 * lv
            bar.update(task, completed=step, info=f"loss {running:.3f} best {best:.3f}")
            if step % cfg.val_every == 0 or step == cfg.steps:
                res = evaluate(model, val_cases, roi=cfg.patch, spacing_mm=cfg.spacing_mm)
                rec = {"step": step, "loss": running, "lr": lr, "val_dice": res["mean_per_label"],
                       "val_mean": res["mean"], "elapsed_s": round(elapsed_before + time.perf_counter() - t0, 1)}
                history.append(rec)
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                log.info("step %d loss %.3f val mean Dice %.3f %s", step, running, res["mean"],
                         {k: round(v, 3) for k, v in res["mean_per_label"].items()})
                if res["mean"] > best:
                    best = res["mean"]
                    save(out_dir / "best.pt", {"val": res})
                save(last, {})
    if not history or history[-1]["step"] != step:  # stopped by time: score the final weights too
        res = evaluate(model, val_cases, roi=cfg.patch, spacing_mm=cfg.spacing_mm)
        rec = {"step": step, "loss": running, "val_dice": res["mean_per_label"], "val_mean": res["mean"],
               "elapsed_s": round(elapsed_before + time.perf_counter() - t0, 1)}
        history.append(rec)
        with open(log_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        log.info("final step %d val mean Dice %.3f", step, res["mean"])
        if res["mean"] > best:
            best = res["mean"]
            save(out_dir / "best.pt", {"val": res})
    save(last, {})
    summary = {"steps": step, "best_val_mean_dice": best, "elapsed_s": elapsed_before + time.perf_counter() - t0,
               "history": history, "config": cfg_dict, "network_parameters": count_parameters(model),
               "schedule_changes": schedule_changes}
    write_json_atomic(out_dir / "summary.json", summary)
    return summary

