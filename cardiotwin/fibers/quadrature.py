"""Rule-based fibres at the quadrature points of a dolfinx mesh, for the mechanics.

The fibres stage gives every node the frame of the rule (``ldrb.ldrb_frames``): helix angle
+60 deg at the endocardium, -60 deg at the epicardium. On walls one or two cells thick (the
twins at 5 mm) almost every cell spans the whole wall, and the P1 interpolant of the nodal fibre
vectors, normalised at a quadrature point, turns across the cell as atan(tan 60 (1 - 2t)) (t the
transmural coordinate): mid-wall fibres are circumferential only in a thin layer, and the
quarter-wall points sit at +-41 deg where the rule says +-30. The mechanics then depends on
where the mesher put its nodes through the wall, and the beat's EF changed with a re-mesh
(docs/mechanics.md, "Mesh study of the beat").

The rule is a pointwise function of the Laplace solutions (phi_epi, phi_lv, phi_rv) and the
gradients of those and psi. Their P1 interpolants (and the interpolated nodal gradients) are
smooth through the wall, so ``quadrature_fibres`` evaluates the rule itself at every quadrature
point: the helix angle follows the prescribed linear law of the interpolated transmural
coordinate inside every cell, on any mesh. At the nodes it gives the fibres stage's own frames.

Inputs are point data of the fibres stage's mesh (``RULE_FIELDS``); meshes without them (an older
case, an analytic fibre field) keep the nodal f0 (``rule_point_data`` returns None).
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI  # noqa: F401, I001 - before dolfinx

import basix.ufl
import dolfinx
import ufl

from cardiotwin.fibers.ldrb import RULE_FIELDS, ldrb_frames_at, nodal_gradients
from cardiotwin.meshing.fem import DolfinxHeart, point_field_to_function
from cardiotwin.types import HeartMesh

__all__ = ["RULE_FIELDS", "quadrature_fibres", "rule_point_data"]

_N = 15  # phi_epi, phi_lv, phi_rv, then the gradients of psi, phi_epi, phi_lv, phi_rv


def rule_point_data(mesh: HeartMesh) -> tuple[np.ndarray, np.ndarray] | None:
    """((N, 15) nodal rule inputs: phi_epi, phi_lv, phi_rv and the nodal gradients of psi,
    phi_epi, phi_lv, phi_rv; (4,) angles in degrees) of a fibres-stage mesh, or None when it
    lacks ``RULE_FIELDS``. Serial, on the whole mesh (the gradients average over a node's cells)."""
    pd = mesh.point_data
    if any(k not in pd for k in RULE_FIELDS):
        return None
    phi_epi, psi, phi_lv, phi_rv = (np.asarray(pd[k], dtype=float).reshape(-1) for k in RULE_FIELDS[:4])
    grads = [nodal_gradients(mesh.points, mesh.cells, u) for u in (psi, phi_epi, phi_lv, phi_rv)]
    angles = np.asarray(pd["ldrb_angles_deg"], dtype=float).reshape(mesh.n_points, -1)[0]
    return np.column_stack([phi_epi, phi_lv, phi_rv, *grads]), angles


def quadrature_fibres(heart: DolfinxHeart, rule: np.ndarray, angles_deg: np.ndarray, *, degree: int
                      ) -> tuple[ufl.core.expr.Expr, ufl.core.expr.Expr, ufl.core.expr.Expr]:
    """(f0, s0, n0) as vector functions on the degree-``degree`` quadrature points of every local
    cell (ghosts included): the rule evaluated from the interpolated inputs ``rule`` (from
    ``rule_point_data``, on every rank). Forms that use them must integrate with that degree."""
    mesh = heart.mesh
    inputs = point_field_to_function(heart, rule, dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (_N,))))
    Q = dolfinx.fem.functionspace(mesh, basix.ufl.quadrature_element(mesh.basix_cell(), value_shape=(3,),
                                                                     degree=degree))
    imap = mesh.topology.index_map(mesh.topology.dim)
    cells = np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32)
    expr = dolfinx.fem.Expression(inputs, Q.element.interpolation_points)
    v = expr.eval(mesh, cells).reshape(-1, _N)  # (cells x points, 15), point order = the element's dofs
    has_rv = bool(np.any(rule[:, 2] > 0))
    q = ldrb_frames_at(phi_epi=v[:, 0], phi_lv=v[:, 1], phi_rv=v[:, 2],
                       grads=(v[:, 3:6], v[:, 6:9], v[:, 9:12], v[:, 12:15]), angles_deg=angles_deg, has_rv=has_rv)
    dofs = Q.dofmap.list[cells].reshape(-1)
    out = []
    for name, vec in (("f0", q[:, :, 0]), ("s0", q[:, :, 2]), ("n0", np.cross(q[:, :, 0], q[:, :, 2]))):
        fn = dolfinx.fem.Function(Q, name=name)
        fn.x.array.reshape(-1, 3)[dofs] = vec
        out.append(fn)
    return out[0], out[1], out[2]
