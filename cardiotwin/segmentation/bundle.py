"""Segmentation model bundles: load, validate, export.

A bundle is a folder (``models/heart_seg_v1/`` ships with cardiotwin; ``--model DIR`` selects
another one in the same format)::

    metadata.json      format, network spec, inputs (spacing, orientation, intensity normalisation),
                       outputs (label table, predicted labels), weights file + sha256, training data
                       (generator, seeds, steps, time), validation scores, licence
    inference.json     sliding-window and post-processing settings (``SegConfig`` fields + roi_size)
    model.safetensors  the weights (safetensors: tensors only, no pickled code)
    slice_model.safetensors  optional: a 2D network for thick-slice MR stacks (metadata "slice_model")
    MODEL_CARD.md, LICENSE

A bundle whose main network is 2D (``network.spatial_dims`` 2) is a short-axis stack bundle: it
segments thick-slice cine MR stacks slice by slice in the stack's own voxel frame
(``slicenet.predict_stack``; settings in inference.json ``slice_stack``) and refuses other scans.

Licences: LICENSE must exist and name the licence of metadata.json ``licence`` (Apache-2.0 or
CC-BY-NC-SA-4.0). A non-commercial bundle (trained on data such as ACDC, whose licence follows the
data) also needs a MODEL_CARD.md that says non-commercial research only, and is never loaded as
the default: it is used only when asked for (``--model DIR``, ``--model NAME`` of a folder in
``models/``, or a recipe's segment option ``model``).

Everything is checked on load; any problem raises ``BundleError`` naming the bundle and the problem.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from cardiotwin.anatomy import LABEL_NAMES
from cardiotwin.config import load_config
from cardiotwin.errors import ConfigError
from cardiotwin.io.atomic import sha256_file, write_json_atomic
from cardiotwin.segmentation.inference import SegConfig
from cardiotwin.segmentation.network import NetworkSpec, build_network
from cardiotwin.segmentation.slicenet import StackConfig

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "cardiotwin-seg-bundle"
BUNDLE_FORMAT_VERSION = 1
DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "models" / "heart_seg_v1"
MODELS_DIR = DEFAULT_BUNDLE.parent
REQUIRED_FILES = ("metadata.json", "inference.json", "model.safetensors", "LICENSE")
# licence id (metadata.json "licence") -> a phrase its LICENSE file must contain
LICENCES = {"Apache-2.0": "Apache License", "CC-BY-NC-SA-4.0": "Attribution-NonCommercial-ShareAlike 4.0"}
NON_COMMERCIAL = frozenset({"CC-BY-NC-SA-4.0"})


# Ranges of a bundle's numbers, so that a bad bundle is refused on load instead of allocating
# terabytes or looping: the window edge (voxels) and the inference settings.
ROI_RANGE = (16, 256)
SLICE_WINDOW_RANGE = (16, 512)
_INFERENCE_RANGES: dict[str, tuple[float, float]] = {
    "sw_batch_size": (1, 64), "threads": (1, 256), "centred_windows_mm": (0.0, 100.0), "rv_wall_mm": (0.5, 20.0),
    "rv_myo_min_fraction": (0.0, 1.0), "min_lv_blood_ml": (0.0, 1000.0), "min_heart_ml": (0.0, 5000.0),
}


def _bounded_int(value: Any, bounds: tuple[int, int], *, root: Path, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        shown = repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"
        raise BundleError(f"bundle {root}: {what} must be an integer in {bounds[0]}-{bounds[1]}, got {shown}")
    return value


def _bounded_float(value: Any, bounds: tuple[float, float], *, root: Path, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not bounds[0] <= value <= bounds[1]:
        shown = repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"
        raise BundleError(f"bundle {root}: {what} must be a number in {bounds[0]}-{bounds[1]}, got {shown}")
    return float(value)


class BundleError(ConfigError):
    """A model bundle that is missing files or inconsistent. The message names the bundle."""


@dataclass(frozen=True)
class SliceModel:
    """A bundle's optional 2D network for thick-slice stacks (``inference.refine_thick_slices``)."""

    network: torch.nn.Module
    spec: NetworkSpec
    spacing_mm: float  # in-plane pixel size it works at
    window: int  # window size in pixels
    min_slice_ratio: float  # used when the slices are at least this many times thicker than the pixels
    weight: float = 0.5  # its share when its probabilities are averaged with the 3D network's


@dataclass(frozen=True)
class SegModel:
    """A loaded, validated bundle ready for ``inference.segment``."""

    name: str
    root: Path
    network: torch.nn.Module
    spec: NetworkSpec
    spacing_mm: float
    roi: int
    predicted_labels: tuple[int, ...]
    label_table: dict[int, str]
    metadata: dict[str, Any]
    default_config: SegConfig
    slice: SliceModel | None = None
    stack: StackConfig | None = None  # set: a 2D short-axis stack bundle (``slicenet``)

    @property
    def licence(self) -> str:
        return str(self.metadata.get("licence", ""))

    @property
    def non_commercial(self) -> bool:
        return self.licence in NON_COMMERCIAL


def _read_json(path: Path, root: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle {root}: {path.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"bundle {root}: {path.name} must hold a JSON object")
    return data


def validate_metadata(meta: dict[str, Any], *, root: Path) -> None:
    """Raise BundleError when metadata.json lacks a field or its label table disagrees with cardiotwin's."""
    if meta.get("format") != BUNDLE_FORMAT or meta.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"bundle {root}: metadata.json is not a {BUNDLE_FORMAT} v{BUNDLE_FORMAT_VERSION} "
                          f"(format={meta.get('format')!r}, format_version={meta.get('format_version')!r})")
    for key in ("name", "network", "inputs", "outputs", "weights", "training", "validation", "licence"):
        if key not in meta:
            raise BundleError(f"bundle {root}: metadata.json has no {key!r} entry")
    for key in ("network", "inputs", "outputs", "weights"):
        if not isinstance(meta[key], dict):
            raise BundleError(f"bundle {root}: metadata.json {key!r} must be a JSON object")
    table = meta["outputs"].get("label_table")
    if not isinstance(table, dict):
        raise BundleError(f"bundle {root}: outputs.label_table must map label values to names")
    try:
        table_int = {int(k): str(v) for k, v in table.items()}
    except ValueError:
        raise BundleError(f"bundle {root}: label_table keys must be integers") from None
    predicted = meta["outputs"].get("predicted_labels", [])
    if not isinstance(predicted, list) or any(isinstance(p, bool) or not isinstance(p, int) for p in predicted):
        raise BundleError(f"bundle {root}: outputs.predicted_labels must be a list of label values")
    if isinstance(meta["network"].get("out_channels"), bool) or not isinstance(meta["network"].get("out_channels"), int):
        raise BundleError(f"bundle {root}: network.out_channels must be an integer")
    for value, name in table_int.items():
        if LABEL_NAMES.get(value) != name:
            raise BundleError(f"bundle {root}: wrong label table: label {value} is {name!r} in the bundle but "
                              f"{LABEL_NAMES.get(value, 'undefined')!r} in cardiotwin (ARCHITECTURE.md)")
    predicted = meta["outputs"].get("predicted_labels", [])
    if not predicted or any(int(p) not in table_int or int(p) == 0 for p in predicted):
        raise BundleError(f"bundle {root}: predicted_labels {predicted} must be non-background labels of the table")
    out_channels = int(meta["network"].get("out_channels", -1))
    if out_channels != len(table_int):
        raise BundleError(f"bundle {root}: network has {out_channels} outputs but the label table has "
                          f"{len(table_int)} entries")
    if sorted(table_int) != list(range(len(table_int))):
        raise BundleError(f"bundle {root}: label table values must be 0..{len(table_int) - 1} (one per output channel)")
    spacing = meta["inputs"].get("target_spacing_mm")
    if not isinstance(spacing, (int, float)) or not 0.3 <= float(spacing) <= 6.0:
        raise BundleError(f"bundle {root}: inputs.target_spacing_mm must be a number in 0.3-6 mm, got {spacing!r}")


def resolve_bundle(name: str | Path | None) -> Path:
    """The bundle folder for ``--model``: a path, or the name of a folder in ``models/`` (None: the default)."""
    if name is None:
        return DEFAULT_BUNDLE
    path = Path(name)
    if not path.exists() and len(path.parts) == 1 and (MODELS_DIR / path).is_dir():
        return MODELS_DIR / path
    return path


def model_record(model: SegModel) -> dict[str, Any]:
    """What a result names about the model that made it: name, version, weights hash, licence and use."""
    meta = model.metadata
    return {"name": model.name, "folder": model.root.name, "version": meta.get("version"),
            "weights_sha256": meta["weights"]["sha256"], "licence": model.licence,
            "use": "non-commercial research only" if model.non_commercial else "per its licence"}


def check_licence(meta: dict[str, Any], root: Path, *, as_default: bool) -> None:
    """BundleError unless LICENSE names the licence of metadata.json and a non-commercial bundle has a model
    card saying so and is not loaded as the default."""
    licence = str(meta.get("licence", ""))
    if licence not in LICENCES:
        raise BundleError(f"bundle {root}: metadata.json licence {licence!r} is not one of {', '.join(LICENCES)}")
    text = (root / "LICENSE").read_text(errors="replace")
    if LICENCES[licence] not in text:
        raise BundleError(f"bundle {root}: LICENSE does not hold the {licence} licence named in metadata.json "
                          f"(expected the phrase {LICENCES[licence]!r})")
    if licence in NON_COMMERCIAL:
        card = root / "MODEL_CARD.md"
        if not card.is_file():
            raise BundleError(f"bundle {root}: a {licence} bundle needs a MODEL_CARD.md (non-commercial use, training data)")
        if "non-commercial" not in card.read_text(errors="replace").lower():
            raise BundleError(f"bundle {root}: MODEL_CARD.md of a {licence} bundle must say it is for non-commercial "
                              "research only")
        if as_default or root.resolve() == DEFAULT_BUNDLE.resolve():
            raise BundleError(f"bundle {root}: a {licence} (non-commercial) bundle is never the default model; "
                              "select it with --model")


def load_bundle(root: str | Path | None = None, *, device: str = "cpu") -> SegModel:
    """Load and validate a bundle folder (default: the shipped ``models/heart_seg_v1``; a name: ``models/NAME``)."""
    as_default = root is None
    root = resolve_bundle(root)
    if not root.is_dir():
        raise BundleError(f"bundle {root}: no such folder")
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise BundleError(f"bundle {root}: missing {', '.join(missing)}")
    meta = _read_json(root / "metadata.json", root)
    validate_metadata(meta, root=root)
    check_licence(meta, root, as_default=as_default)
    inference = _read_json(root / "inference.json", root)
    dims = meta["network"].get("spatial_dims", 3) if isinstance(meta["network"], dict) else 3
    spec, net = _load_network(root, meta["weights"], meta["network"], device=device, spatial_dims=2 if dims == 2 else 3)
    stack = None
    if spec.spatial_dims == 2:
        entry = inference.get("slice_stack")
        if not isinstance(entry, dict):
            raise BundleError(f"bundle {root}: a 2D bundle needs inference.json slice_stack (pixel_mm, window, tta)")
        try:
            stack = load_config(StackConfig, entry, source=f"{root}/inference.json slice_stack")
        except ConfigError as exc:
            raise BundleError(f"bundle {root}: {exc}") from None
        if stack.window % spec.divisor or stack.tta not in (1, 2, 4, 8) or not 0.3 <= stack.pixel_mm <= 3.0:
            raise BundleError(f"bundle {root}: slice_stack needs window a multiple of {spec.divisor}, tta 1/2/4/8 and "
                              f"pixel_mm 0.3-3 (got {stack.window}, {stack.tta}, {stack.pixel_mm})")
        if not (0.0 <= stack.basal_rv_confidence <= 1.0 and 0.0 <= stack.basal_rv_ratio <= 2.0
                and 1 <= stack.basal_rv_slices <= 4):
            raise BundleError(f"bundle {root}: slice_stack basal_rv_confidence must be 0-1, basal_rv_ratio 0-2 and "
                              f"basal_rv_slices 1-4 (got {stack.basal_rv_confidence}, {stack.basal_rv_ratio}, "
                              f"{stack.basal_rv_slices})")
    if stack is not None and inference.get("largest_component", True):
        raise BundleError(f"bundle {root}: a short-axis stack bundle keeps its components slice-aware "
                          "(slicenet.clean_stack_labels): inference.json largest_component must be false")
    cfg_keys = {f.name for f in fields(SegConfig)}
    unknown = sorted(str(k)[:40] for k in set(inference) - cfg_keys - {"roi_size", "comment", "slice_stack"})
    if unknown:
        raise BundleError(f"bundle {root}: inference.json has unknown key(s) {', '.join(unknown)}")
    roi = _bounded_int(inference.get("roi_size", stack.window if stack else 64), ROI_RANGE, root=root,
                       what="inference.json roi_size")
    if roi % spec.divisor:
        raise BundleError(f"bundle {root}: inference.json roi_size {roi} must be a multiple of {spec.divisor}")
    try:
        cfg = load_config(SegConfig, {k: v for k, v in inference.items() if k in cfg_keys},
                          source=f"{root}/inference.json")
    except ConfigError as exc:
        raise BundleError(f"bundle {root}: {exc}") from None
    for key, bounds in _INFERENCE_RANGES.items():
        value = getattr(cfg, key)
        if not bounds[0] <= value <= bounds[1]:
            raise BundleError(f"bundle {root}: inference.json {key} {value} outside {bounds[0]}-{bounds[1]}")
    table = {int(k): str(v) for k, v in meta["outputs"]["label_table"].items()}
    return SegModel(
        name=str(meta["name"]), root=root, network=net, spec=spec, spacing_mm=float(meta["inputs"]["target_spacing_mm"]),
        roi=roi, predicted_labels=tuple(int(p) for p in meta["outputs"]["predicted_labels"]), label_table=table,
        metadata=meta, default_config=cfg, slice=_load_slice_model(root, meta, device=device,
                                                                  out_channels=spec.out_channels),
        stack=stack,
    )


def _load_network(root: Path, weights_meta: dict[str, Any], network_meta: Any, *, device: str,
                  spatial_dims: int) -> tuple[NetworkSpec, torch.nn.Module]:
    """Build a network from its spec and load its safetensors weights, checking the sha256."""
    from safetensors.torch import load_file

    name = weights_meta.get("file", "model.safetensors") if isinstance(weights_meta, dict) else None
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise BundleError(f"bundle {root}: weights.file must name a file inside the bundle")
    weights = root / name
    if not weights.is_file():
        raise BundleError(f"bundle {root}: missing weights file {weights.name}")
    expected = weights_meta.get("sha256")
    if expected and sha256_file(weights) != expected:
        raise BundleError(f"bundle {root}: {weights.name} does not match the sha256 in metadata.json (corrupt or replaced)")
    channels = network_meta.get("channels") if isinstance(network_meta, dict) else None
    if not isinstance(channels, list) or not 2 <= len(channels) <= 8 or any(
            isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 1024 for c in channels):
        raise BundleError(f"bundle {root}: the network spec of {weights.name} needs channels: 2-8 integers in 1-1024")
    try:
        spec = NetworkSpec.from_dict(network_meta)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"bundle {root}: invalid network spec for {weights.name} ({exc})") from None
    if spec.spatial_dims != spatial_dims:
        raise BundleError(f"bundle {root}: {weights.name} must be a {spatial_dims}D network, "
                          f"its spec has spatial_dims {spec.spatial_dims}")
    try:
        state = load_file(str(weights), device=device)
    except Exception as exc:  # noqa: BLE001 - any parse failure of the weights file is a bad bundle
        raise BundleError(f"bundle {root}: cannot read {weights.name} ({str(exc)[:200]})") from None
    net = build_network(spec)
    try:
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"bundle {root}: weights do not fit the network spec "
                          f"({weights.name}: {str(exc).splitlines()[0][:200]})") from None
    return spec, net.eval().to(device)


def _load_slice_model(root: Path, meta: dict[str, Any], *, device: str, out_channels: int) -> SliceModel | None:
    entry = meta.get("slice_model")
    if entry is None:
        return None
    if not isinstance(entry, dict) or not all(k in entry for k in ("weights", "network", "pixel_spacing_mm", "window")):
        raise BundleError(f"bundle {root}: metadata.json slice_model needs weights, network, pixel_spacing_mm and window")
    n_out = entry["network"].get("out_channels") if isinstance(entry["network"], dict) else None
    if n_out != out_channels:  # its probabilities are averaged with the 3D network's, class by class
        raise BundleError(f"bundle {root}: the slice network has {n_out} outputs, the 3D network "
                          f"{out_channels}; they must predict the same label table")
    spec, net = _load_network(root, entry["weights"], entry["network"], device=device, spatial_dims=2)
    window = _bounded_int(entry["window"], SLICE_WINDOW_RANGE, root=root, what="slice_model window")
    if window % spec.divisor:
        raise BundleError(f"bundle {root}: slice_model window {window} must be a multiple of {spec.divisor}")
    spacing = _bounded_float(entry["pixel_spacing_mm"], (0.3, 3.0), root=root, what="slice_model pixel_spacing_mm")
    weight = _bounded_float(entry.get("weight", 0.5), (1e-6, 1.0), root=root, what="slice_model weight")
    ratio = _bounded_float(entry.get("min_slice_ratio", 2.5), (1.0, 100.0), root=root,
                           what="slice_model min_slice_ratio")
    return SliceModel(network=net, spec=spec, spacing_mm=spacing, window=window, min_slice_ratio=ratio, weight=weight)


def export_bundle(run_dir: Path, bundle_dir: Path, *, config_path: Path | None = None,
                  name: str | None = None, command: str | None = None) -> Path:
    """Write ``run_dir/best.pt`` as a bundle into ``bundle_dir`` (weights, metadata, inference config).

    MODEL_CARD.md and LICENSE are kept when they already exist in ``bundle_dir``.
    """
    from safetensors.torch import save_file

    from cardiotwin.segmentation.synth import CT_WINDOW_HU

    best = Path(run_dir) / "best.pt"
    if not best.is_file():
        raise BundleError(f"{run_dir}: no best.pt to export (train first)")
    ck = torch.load(best, map_location="cpu", weights_only=True)
    cfg = json.loads(ck["config_json"])
    summary_path = Path(run_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    weights = bundle_dir / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ck["model"].items()}, str(weights),
              metadata={"format": BUNDLE_FORMAT, "step": str(ck["step"])})
    val = ck.get("val", {})
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "name": name or bundle_dir.name,
        "version": "1.0.0",
        "description": "Whole-heart segmentation (LV/RV blood pools and myocardium, atria, aorta, pulmonary artery) "
                       "of CT and cine MRI, trained only on domain-randomised synthetic data.",
        "network": ck["network"],
        "inputs": {
            "channels": 1,
            "modalities": ["CT", "MR"],
            "target_spacing_mm": float(str(cfg["spacing_mm"]).split()[0]),
            "orientation": "resampled onto a world-aligned (LPS, identity direction) grid covering the scan",
            "intensity_normalisation": {
                "CT": {"method": "window", "window_hu": list(CT_WINDOW_HU), "range": [0, 1]},
                "MR": {"method": "percentile", "lower_pct": 0.5, "upper_pct": 99.5, "range": [0, 1]},
            },
            "outside_field_of_view_value": 0.0,
        },
        "outputs": {
            "label_table": {str(k): LABEL_NAMES[k] for k in range(9)},
            "predicted_labels": list(range(1, 9)),
            "activation": "softmax",
            "not_predicted": {"9": "scar (needs LGE contrast; not in the training appearances)"},
        },
        "weights": {"file": weights.name, "sha256": sha256_file(weights), "dtype": "float32",
                    "parameters": int(sum(v.numel() for v in ck["model"].values() if v.dtype.is_floating_point))},
        "training": {
            "data": "synthetic only: label volumes from the cardiotwin phantom shape model (random shape, "
                    "affine and smooth deformation, papillary muscles, thorax tissues) painted with SynthSeg-style "
                    "random appearances (CT-like, bSSFP-like, fully random; bias field, blur, thick slices, slab "
                    "field of view, noise, gamma)" + (
                        "; fine-tuning adds random non-cardiac structures, patches off the heart with the thorax "
                        "mirrored beyond the label cube, a trabeculated LV rim labelled blood pool"
                        + (" and texture-only negatives" if float(cfg.get("p_negative", 0.0) or 0.0) > 0 else "")
                        + ("; dark or fat-like tissue against the outer wall (pericardium)"
                           if float(cfg.get("p_pericardium", 0.0) or 0.0) > 0 else "")
                        + ("; MR images dimmed after normalisation (whole-scan percentiles)"
                           if min(cfg.get("dim_range") or [1.0]) < 1.0 else "")
                        + ("; MR fat as dark as the myocardium" if float(cfg.get("p_dark_fat", 0.0) or 0.0) > 0 else "")
                        + ("; LV blood signal falling towards the wall (trabeculae, slow flow), labelled blood pool"
                           if float(cfg.get("p_endo_ramp", 0.0) or 0.0) > 0 else "")
                        + ("; uneven myocardial signal with a brighter outer LV wall"
                           if float(cfg.get("p_myo_hetero", 0.0) or 0.0) > 0 else "")
                        if cfg.get("init_weights") else "")
                    + ("; great vessels with adult thoracic lengths (ascending aorta, arch, descending aorta, "
                       "pulmonary trunk and branches)" if cfg.get("vessels") == "thoracic" else ""),
            "validation_phantom_seeds": "700000+ (CT and MR)",
            "held_out_seeds": "900000-999999 (never used in training)",
            "initialised_from": cfg.get("init_weights") or None,
            **_run_record(ck, cfg, summary, command or f"cardiotwin train-seg --config "
                          f"{config_path or 'configs/seg_train.yaml'} --out {run_dir} --export {bundle_dir}"),
        },
        "validation": _validation_record(val, "phantoms 700000+ via make_phantom, scored at the working resolution"),
        "licence": "Apache-2.0",
    }
    old_meta = bundle_dir / "metadata.json"
    if old_meta.is_file():  # a slice network already in the bundle stays there
        old = json.loads(old_meta.read_text())
        if isinstance(old, dict) and "slice_model" in old:
            meta["slice_model"] = old["slice_model"]
    write_json_atomic(bundle_dir / "metadata.json", meta)
    inference_path = bundle_dir / "inference.json"
    if not inference_path.is_file():
        write_json_atomic(inference_path, {"roi_size": int(cfg["patch"]), "overlap": 0.5, "centred_windows_mm": "15 mm",
                                           "sw_batch_size": 2,
                                           "largest_component": True, "aorta_min_fraction": 0.25,
                                           "fill_holes": True, "rv_myocardium": "always",
                                           "rv_wall_mm": "3.5 mm", "min_lv_blood_ml": "8 mL", "min_heart_ml": "30 mL"})
    if not (bundle_dir / "LICENSE").is_file():
        (bundle_dir / "LICENSE").write_text(_LICENSE_NOTICE)
    load_bundle(bundle_dir)  # the exported bundle must load
    return bundle_dir


def export_slice_model(run_dir: Path, bundle_dir: Path, *, config_path: Path | None = None,
                       command: str | None = None, min_slice_ratio: float = 2.5) -> Path:
    """Add ``run_dir/best.pt`` of a slice-network run (2D) to the existing bundle ``bundle_dir``:
    ``slice_model.safetensors`` and the ``slice_model`` entry of metadata.json (the rest is kept)."""
    from safetensors.torch import save_file

    best = Path(run_dir) / "best.pt"
    if not best.is_file():
        raise BundleError(f"{run_dir}: no best.pt to export (train first)")
    bundle_dir = Path(bundle_dir)
    meta_path = bundle_dir / "metadata.json"
    if not meta_path.is_file():
        raise BundleError(f"bundle {bundle_dir}: a slice network is added to an existing bundle (no metadata.json)")
    ck = torch.load(best, map_location="cpu", weights_only=True)
    if int(ck["network"].get("spatial_dims", 3)) != 2:
        raise BundleError(f"{best}: not a slice network (spatial_dims {ck['network'].get('spatial_dims', 3)})")
    cfg = json.loads(ck["config_json"])
    summary_path = Path(run_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    meta = _read_json(meta_path, bundle_dir)
    weights = bundle_dir / "slice_model.safetensors"
    tmp = weights.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in ck["model"].items()}, str(tmp),
              metadata={"format": BUNDLE_FORMAT, "step": str(ck["step"])})
    tmp.replace(weights)
    val = ck.get("val", {})
    meta["slice_model"] = {
        "purpose": "relabels thick-slice MR stacks (short-axis cines) slice by slice at their in-plane resolution, "
                   "in a window centred on the heart the 3D network finds",
        "weights": {"file": weights.name, "sha256": sha256_file(weights), "dtype": "float32",
                    "parameters": int(sum(v.numel() for v in ck["model"].values() if v.dtype.is_floating_point))},
        "network": ck["network"],
        "pixel_spacing_mm": float(str(cfg["spacing_mm"]).split()[0]),
        "window": int(cfg["patch"]),
        "min_slice_ratio": float(min_slice_ratio),
        "weight": 0.5,
        "modalities": ["MR"],
        "training": {
            "data": "synthetic only: thick slices (5-11 mm, five sub-planes averaged) near the short axis through "
                    "label cubes of the phantom shape model at 1.25 mm, painted with the 3D network's random appearances",
            **_run_record(ck, cfg, summary, command or f"cardiotwin train-seg --config "
                          f"{config_path or 'configs/seg_slice_train.yaml'} --out {run_dir} --export {bundle_dir}"),
        },
        "validation": _validation_record(val, "short-axis MR phantoms 700000+ (typical and dilated LV), inside the "
                                              "window centred on the reference heart"),
    }
    write_json_atomic(meta_path, meta)
    load_bundle(bundle_dir)  # the bundle must still load
    return bundle_dir


def _run_record(ck: dict[str, Any], cfg: dict[str, Any], summary: dict[str, Any], command: str) -> dict[str, Any]:
    """The training-run part of a bundle's metadata: seeds, config, command, steps, time, machine."""
    return {
        "label_volume_seeds": [int(cfg["seed"]) * 100000, int(cfg["seed"]) * 100000 + int(cfg["n_label_volumes"]) - 1],
        "config": cfg,
        "command": command,
        "best_step": int(ck["step"]),
        "steps_run": summary.get("steps"),
        "wall_time_s": round(float(summary.get("elapsed_s", ck.get("elapsed_s", 0.0))), 1),
        "hardware": _machine(),
    }


def _validation_record(val: dict[str, Any], data: str) -> dict[str, Any]:
    return {"data": data, "mean_dice": val.get("mean"),
            "dice_per_label": {LABEL_NAMES[int(k)]: round(float(v), 4) for k, v in val.get("mean_per_label", {}).items()}}


_LICENSE_NOTICE = """Copyright 2026 the cardiotwin authors.

The weights and configuration files in this folder are licensed under the Apache License,
Version 2.0 (the "License"); you may not use them except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the
License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND,
either express or implied. See the License for the specific language governing permissions
and limitations under the License.

The model was trained only on synthetic data generated by cardiotwin; no patient data were used.
"""


def _machine() -> str:
    from cardiotwin.machine import machine_description

    return machine_description()
