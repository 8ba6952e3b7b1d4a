"""Labels without RV myocardium (ACDC expert contours: LV blood, LV myocardium, RV blood only): the
mesher builds the RV wall outside the RV blood (``MeshConfig.built_wall_mm``, 4 mm; a normal RV free
wall is under 5 mm, Rudski et al. 2010), so both cavities keep their labelled volume; the mesh is
compared with the labels' myocardium plus that wall (``volume_error_closed``) and the wall is reported
(``built_wall_ml``). Before, the RV wall was made of RV blood and the LV blood touching the background
became wall: ACDC patient001 at 5 mm had an LV cavity 21.6 % short of the labels and genus 2, patient003
+100.7 % myocardial volume (its RV, a slice shorter than the LV at the base, was closed off and filled).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cardiotwin.anatomy import Label
from cardiotwin.bench.mesh_sweep import phantom_labels
from cardiotwin.io.scans import read_labels
from cardiotwin.meshing.quality import mesh_quality
from cardiotwin.meshing.surface import MYO_LABELS, labelled_volume_below_plane_ml
from cardiotwin.meshing.volume import MeshConfig, mesh_labels
from cardiotwin.types import LabelMap

ACDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc"


def _check(labels: LabelMap, edge_mm: float) -> dict:
    mesh, base, closed, _ = mesh_labels(labels, cfg=MeshConfig(edge_mm=edge_mm))
    q = mesh_quality(mesh, labels=labels, base=base, closed=closed)
    assert q["boundary_genus"] == 0 and q["inverted_cells"] == 0 and q["min_dihedral_deg"] >= 5.0
    assert abs(q["lv_cavity_error"]) < 0.05
    assert abs(q["volume_error_closed"]) < 0.05
    q["label_rv_cavity_ml"] = labelled_volume_below_plane_ml(labels, base, (int(Label.RV_BLOOD),))
    q["base"] = base
    return q


def test_phantom_without_rv_myocardium_gets_an_rv_wall_and_keeps_its_cavities():
    full = phantom_labels(seed=1, spacing_mm=(3.0, 3.0, 3.0))
    lab = np.where(full.labels == Label.RV_MYO, Label.BACKGROUND, full.labels).astype(np.uint8)
    q = _check(LabelMap(labels=lab, geometry=full.geometry, source="no RV wall"), 5.0)
    # the RV cavity is the labelled one (before, the wall was taken out of it)
    assert q["rv_cavity_ml"] == pytest.approx(q["label_rv_cavity_ml"], rel=0.08)
    # the wall built where the phantom's RV wall was: same order of volume (phantom RV wall ~3-4 mm)
    rv_wall = labelled_volume_below_plane_ml(full, q["base"], (int(Label.RV_MYO),))
    assert 0.5 * rv_wall < q["built_wall_ml"] < 2.0 * rv_wall
    assert q["volume_error"] > 0.05  # against the labels alone the built wall shows, and is reported


@pytest.mark.skipif(not (ACDC / "patient003").is_dir(), reason="ACDC data not present (../shared/data)")
def test_acdc_stack_whose_rv_ends_a_slice_below_the_base():
    labels = read_labels(ACDC / "patient003" / "ed_labels.nii.gz")  # DCM; no RV blood in the basal slice
    assert not np.isin(labels.labels, MYO_LABELS[1:]).any()  # LV myocardium only
    q = _check(labels, 5.0)
    # the RV cavity opens at the base and is kept (it was closed off and filled: 0 mL, volume +100 %)
    assert q["rv_cavity_ml"] > 0.9 * q["label_rv_cavity_ml"]
