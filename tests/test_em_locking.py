"""Volumetric locking of the twin's default mechanics (P1 tetrahedra, penalty kappa 500 kPa).

Linear tetrahedra with a stiff volumetric penalty lock: every cell carries one near-constraint
J = 1 while a P1 mesh has only ~3 displacement dofs per ~5-6 cells, so the discrete solution is
far too stiff and converges slowly under refinement; quadratic (P2) displacements do not lock
this way (Hughes, The Finite Element Method, 2000, sec. 4.1-4.4; Zienkiewicz & Taylor, The FEM
for Solid and Structural Mechanics, 6th ed., ch. 2). Land et al. 2015 (Proc R Soc A 471:
20150641) saw the same in their benchmark: low-order compressible formulations needed far finer
meshes than quadratic or mixed ones.

On the demo CT twin (``cardiotwin/mechanics/electromechanics.py`` docstring) passive filling to
1 kPa gave LV volume changes of 33.6 mL (P1, 14.6k tets), 39.5 mL (P1, 29k tets) and 53.0 mL
(P2, 14.6k tets). This test shows the mechanism on the Land ellipsoid at one and about two
elements across its 3 mm wall (the demo mesh has 1-2): passive inflation of the EM defaults'
Guccione material (C 2 kPa) to the twin's end-diastolic 1 kPa.
"""

from __future__ import annotations

import pytest
from mpi4py import MPI  # noqa: F401, I001 - before dolfinx

from cardiotwin.anatomy import FacetTag
from cardiotwin.mechanics.demo import analytic_beat_inputs
from cardiotwin.mechanics.electromechanics import EMConfig
from cardiotwin.mechanics.problem import Boundaries, CardiacMechanics, MechanicsConfig

COARSE_MM, FINE_MM = 4.0, 2.5  # ~1 and ~2 elements across the 3 mm wall
EDP_KPA = 1.0


def _relative_filling(h_mm: float, degree: int) -> float:
    """(V(EDP) - V0) / V0 of the LV cavity: relative, so the inscribed-facet volume error of the
    reference geometry (a few % between the two meshes) cancels."""
    em = EMConfig()
    inp = analytic_beat_inputs(geometry="ellipsoid", char_length_mm=h_mm)
    mech = CardiacMechanics(
        inp.mesh, inp.facet_tags, material=em.guccione, fibres=inp.fibres,
        boundaries=Boundaries(fixed=(int(FacetTag.BASE),), cavities={"LV": int(FacetTag.LV_ENDO)},
                              base=int(FacetTag.BASE)),
        cfg=MechanicsConfig(formulation="penalty", degree=degree, bulk_modulus=em.mechanics.bulk_modulus),
        prefix=f"lock_p{degree}_",
    )
    v0 = mech.cavity_volume_ml("LV")
    mech.solve_to(pressures_kpa={"LV": EDP_KPA}, label="locking test", initial_fraction=0.25)
    return (mech.cavity_volume_ml("LV") - v0) / v0


@pytest.fixture(scope="module")
def filling() -> dict[tuple[float, int], float]:
    return {(h, p): _relative_filling(h, p) for h in (COARSE_MM, FINE_MM) for p in (1, 2)}


def test_default_kappa_is_the_em_default():
    # the test is about the twin's defaults: P1 penalty with kappa 500 kPa
    m = EMConfig().mechanics
    assert (m.formulation, m.degree, m.bulk_modulus) == ("penalty", 1, 500.0)


def test_p2_filling_agrees_across_meshes(filling):
    # no locking: one or two quadratic elements across the wall give the same filling within 8 %
    # (measured 0.653 vs 0.675, 3.4 %)
    coarse, fine = filling[(COARSE_MM, 2)], filling[(FINE_MM, 2)]
    assert abs(coarse - fine) / fine < 0.08


def test_p1_penalty_locks_on_a_wall_one_or_two_cells_thick(filling):
    # P1 fills to less than half of P2 on both meshes (measured 26 % and 32 %) and changes by
    # more than 15 % between them (measured 23 %): too stiff and far from mesh-converged
    for h in (COARSE_MM, FINE_MM):
        assert filling[(h, 1)] < 0.5 * filling[(h, 2)]
    coarse, fine = filling[(COARSE_MM, 1)], filling[(FINE_MM, 1)]
    assert coarse < fine
    assert (fine - coarse) / fine > 0.15
