"""Review scene (no browser): case discovery, payload contents, isochrones, confinement rules.

The review case is built here from real pipeline pieces: the shipped CT sample and its labels,
the idealised biventricle (``meshing.analytic``) with LDRB fibres and AHA segments
(``fibers.compute_fibers``), the baseline activation and 12-lead pseudo-ECG of
`cardiotwin simulate ep` (anisotropic eikonal), and three biventricular pacing candidates solved
with the same eikonal solver (RV site + one LV lead site each) with their activation-time metrics
in ``therapy/ranking.json`` (the CRT stage's layout; the CRT stage itself is exercised in
test_viewer_browser.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.viewer.geometry import boundary_faces, isochrone_segments
from cardiotwin.viewer.scene import build_scene, decode_array, find_case_contents
from cardiotwin.viewer.security import PathRefused, check_request_path, resolve_inside

REPO = Path(__file__).resolve().parents[1]


def _write_activation(mesh, act_ms: np.ndarray, path: Path) -> None:
    from cardiotwin.io.meshes import write_mesh

    path.parent.mkdir(parents=True, exist_ok=True)
    write_mesh(mesh.with_fields(point_data={"activation_time_ms": act_ms}), path)


def build_review_case(root: Path, *, with_scan: bool = True, with_mesh: bool = True) -> Path:
    """A case with scan, labels, fibre mesh, a baseline EP run (eikonal + ECG) and three
    biventricular pacing candidates (eikonal from the RV site and an LV lead site)."""
    from cardiotwin.cases import Case
    from cardiotwin.cli import main
    from cardiotwin.electrophysiology.eikonal import EikonalConfig, EikonalSolver, simulate_eikonal
    from cardiotwin.fibers.coordinates import compute_fibers
    from cardiotwin.io.meshes import write_mesh
    from cardiotwin.io.scans import read_labels, read_scan, write_labels
    from cardiotwin.meshing.analytic import idealised_biventricle

    case = Case.create(root)
    if with_scan:
        scan_path = case.import_scan(read_scan(REPO / "sample_scans" / "ct_sample.nii.gz"))
        labels = read_labels(REPO / "sample_scans" / "ct_sample_labels.nii.gz")
        with case.stage("segment", inputs={"scan": scan_path}, config={}) as st:
            write_labels(labels, st.output("labels.nii.gz"))
    if not with_mesh:
        return root
    mesh, _ = compute_fibers(idealised_biventricle(char_length_mm=4.0))
    with case.stage("fibers", inputs={}, config={"char_length_mm": 4.0}) as st:
        write_mesh(mesh, st.output("mesh.vtu"))
    pts = mesh.points
    lv = mesh.point_data["aha"] > 0
    # Baseline (LBBB-like): one early site on the RV free wall, the node nearest (-18, 0, -10) mm,
    # through the EP stage's own command (anisotropic eikonal, 12-lead pseudo-ECG).
    rv_site = pts[np.argmin(np.linalg.norm(pts - np.array([-18.0, 0.0, -10.0]), axis=1))]
    pace = "--pace=" + ",".join(f"{v:.6f}" for v in rv_site)
    assert main(["-q", "simulate", "ep", str(root / "fibers"), pace, "--out", str(root / "ep"), "--ecg"]) == 0
    base_ms = np.asarray(read_mesh_field(root / "ep" / "activation.vtu"))
    # Three LV epicardial lead sites (nearest LV nodes to lateral / anterior / apical targets),
    # paced together with the RV site: the same eikonal solver and speeds as `simulate ep`.
    solver = EikonalSolver(mesh, cfg=EikonalConfig(v_l=0.6, v_t=0.6 / 2.75))
    targets = {"lv-lateral": (10.0, 0.0, -5.0), "lv-anterior": (0.0, -10.0, -5.0), "lv-apical": (0.0, 0.0, -28.0)}
    candidates = []
    for cid, target in targets.items():
        idx = np.flatnonzero(lv)[np.argmin(np.linalg.norm(pts[lv] - np.array(target), axis=1))]
        res = simulate_eikonal(mesh, [(tuple(rv_site), 0.0), (tuple(pts[idx]), 0.0)], radius_mm=1.5, solver=solver)
        act = np.asarray(res.activation_times_ms, dtype=float)
        _write_activation(mesh, act, root / "therapy" / cid / "activation.vtu")
        tat, base_tat = float(np.nanmax(act) - np.nanmin(act)), float(np.nanmax(base_ms) - np.nanmin(base_ms))
        candidates.append({"id": cid, "label": cid.replace("-", " "), "position_mm": pts[idx].tolist(),
                           "metrics": {"tat_ms": tat, "lvat_ms": float(np.nanmax(act[lv]) - np.nanmin(act[lv])),
                                       "tat_change_pct": 100.0 * (tat - base_tat) / base_tat}})
    candidates.sort(key=lambda c: c["metrics"]["tat_change_pct"])
    for rank, c in enumerate(candidates, 1):
        c["rank"] = rank
    (root / "therapy" / "ranking.json").write_text(json.dumps({"candidates": candidates}, indent=1))
    return root


def read_mesh_field(path: Path, name: str = "activation_time_ms") -> np.ndarray:
    import meshio

    return np.asarray(meshio.read(path).point_data[name], dtype=float)


@pytest.fixture(scope="module")
def review_case(tmp_path_factory) -> Path:
    return build_review_case(tmp_path_factory.mktemp("viewer") / "p001")


def test_scene_holds_every_stage_of_the_case(review_case: Path) -> None:
    scene = build_scene(review_case)
    assert {"volume", "label_surfaces", "mesh", "fibres", "configurations", "candidates"} <= set(scene["present"])
    assert {"pv_loops", "deformation"} <= set(scene["absent"])  # no em stage in this case: panels left out
    assert set(scene["ecg"]["leads"]) == {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"}
    vol = scene["volume"]
    scan = decode_array(vol["scan"])
    assert scan.shape == tuple(reversed(vol["shape"])) and scan.std() > 10  # an image, not a constant
    labels = decode_array(vol["labels"])
    assert set(np.unique(labels)) >= {0, 1, 2, 3, 4}
    assert {s["label"] for s in scene["label_surfaces"]} >= {1, 2, 3, 4}
    # baseline + one configuration per candidate, each with its own activation map
    ids = [c["id"] for c in scene["configurations"]]
    assert ids[0] == "baseline" and len(ids) == 4
    assert all(c["configuration"] in ids for c in scene["candidates"])
    base = decode_array(scene["configurations"][0]["activation_ms"])
    lateral = decode_array(next(c for c in scene["configurations"] if c["id"] == "candidate:lv-lateral")["activation_ms"])
    # A second source can only make activation earlier (the eikonal solution is the minimum over
    # sources); allow the solver's discretisation error near the sources.
    assert np.all(lateral <= base + 0.5) and np.nanmax(lateral) < np.nanmax(base)
    # AHA means: all 17 LV segments present; a lateral LV lead (x > 0 is the LV free wall of the
    # idealised biventricle) activates the lateral segments (5, 6, 11, 12) earlier than baseline,
    # and under RV-only (LBBB-like) baseline activation the septum (2, 3, 8, 9) on average precedes them.
    aha_b = scene["configurations"][0]["aha_mean_ms"]
    aha_l = next(c for c in scene["configurations"] if c["id"] == "candidate:lv-lateral")["aha_mean_ms"]
    assert set(aha_b) == {str(s) for s in range(1, 18)}
    lateral_segs, septal_segs = ("5", "6", "11", "12"), ("2", "3", "8", "9")
    assert all(aha_l[s] < aha_b[s] - 5.0 for s in lateral_segs)
    assert np.mean([aha_b[s] for s in septal_segs]) < np.mean([aha_b[s] for s in lateral_segs]) - 5.0, aha_b


def test_scene_json_round_trip_is_finite(review_case: Path) -> None:
    text = json.dumps(build_scene(review_case), allow_nan=False)  # NaN would break JSON.parse in the page
    assert len(text) < 12e6


def test_case_without_stages_lists_what_is_absent(tmp_path: Path) -> None:
    from cardiotwin.cases import Case

    Case.create(tmp_path / "empty")
    contents = find_case_contents(tmp_path / "empty")
    assert {"slices", "mesh", "activation", "candidates", "pv_loops"} <= set(contents.absent)
    scene = build_scene(tmp_path / "empty")
    assert scene["present"] == [] and scene["mesh"] is None


def test_isochrones_lie_on_their_level() -> None:
    # Linear field v = x on a fan of triangles: isolines at x = level, exactly (linear interpolation).
    rng = np.random.default_rng(3)
    pts = np.column_stack([rng.uniform(0, 10, 200), rng.uniform(0, 10, 200), np.zeros(200)])
    from scipy.spatial import Delaunay

    tri = Delaunay(pts[:, :2]).simplices
    seg = isochrone_segments(pts, tri, pts[:, 0], np.array([2.5, 5.0, 7.5]))
    assert seg.shape[0] > 20
    xs = seg[:, :, 0].ravel()
    levels = np.array([2.5, 5.0, 7.5])
    assert np.min(np.abs(xs[:, None] - levels[None, :]), axis=1).max() < 1e-9


def test_slice_names_follow_the_scan_orientation() -> None:
    from cardiotwin.viewer.scene import slice_names

    assert slice_names(np.eye(3)) == ["sagittal (i)", "coronal (j)", "axial (k)"]
    tilt = np.deg2rad(40.0)  # short-axis stack tilted 40 degrees about x: j and k are oblique
    rot = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    assert slice_names(rot) == ["sagittal (i)", "oblique (j)", "oblique (k)"]


def test_boundary_of_a_cube_split_in_tets_has_12_triangles() -> None:
    # Freudenthal split of the unit cube into 6 tets: boundary = 6 faces x 2 triangles.
    cube = np.array([[0, 1, 3, 7], [0, 1, 5, 7], [0, 2, 3, 7], [0, 2, 6, 7], [0, 4, 5, 7], [0, 4, 6, 7]])
    assert boundary_faces(cube).shape == (12, 3)


@pytest.mark.parametrize("raw", [
    "/case/../manifest.json", "/case/%2e%2e/secret", "/case/%2E%2E%2Fsecret", "/case/%252e%252e/secret",
    "/case/..%2f..%2fetc/passwd", "/case/a\\..\\b", "/case/x%00.json", "//etc/passwd", "/static/./x",
])
def test_request_paths_with_traversal_are_refused(raw: str) -> None:
    with pytest.raises(PathRefused):
        check_request_path(raw)


def test_resolve_inside_refuses_absolute_hidden_and_escaping_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "case"
    (root / "em").mkdir(parents=True)
    (root / "em" / "metrics.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "em" / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / ".lock").write_text("")
    assert resolve_inside(root, "em/metrics.json") == (root / "em" / "metrics.json").resolve()
    for bad in ("/etc/passwd", "em/link.txt", ".lock", "em/../../secret.txt", "C:/x", "em//metrics.json"):
        with pytest.raises(PathRefused):
            resolve_inside(root, bad)
    with pytest.raises(FileNotFoundError):
        resolve_inside(root, "em/none.json")
