"""Passive myocardium: Guccione and Holzapfel-Ogden strain energies (UFL), stresses in kPa.

Both take the deformation gradient ``F`` and the reference fibre, sheet and sheet-normal unit
vectors ``f0, s0, n0`` and return the strain energy density W (kPa = mJ/mL... kPa in mm units).
Parameters are validated up front (ValueError naming the parameter; load_config turns it into
ConfigError).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import ufl

from cardiotwin.config import quantity


class Material(Protocol):
    """A hyperelastic law: W(F; f0, s0, n0) in kPa, isochoric if ``isochoric``."""

    def strain_energy(self, F: ufl.core.expr.Expr, f0: ufl.core.expr.Expr, s0: ufl.core.expr.Expr,
                      n0: ufl.core.expr.Expr, *, isochoric: bool) -> ufl.core.expr.Expr: ...

    def validate(self) -> None: ...

    def shear_modulus(self) -> float: ...


def _check_positive(obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0, got {value}")


def _kinematics(F: ufl.core.expr.Expr, isochoric: bool) -> ufl.core.expr.Expr:
    """Right Cauchy-Green tensor, optionally its isochoric part J^(-2/3) C."""
    C = F.T * F
    if isochoric:
        J = ufl.det(F)
        C = J ** (-2.0 / 3.0) * C
    return C


@dataclass(frozen=True)
class Guccione:
    """Guccione et al. (J Biomech Eng 113:42, 1991), transversely isotropic.

    W = C/2 (exp(Q) - 1), Q = b_f E_ff^2 + b_t (E_ss^2 + E_nn^2 + 2 E_sn^2) + 2 b_fs (E_fs^2 + E_fn^2)
    with E = (C - I)/2 in the fibre frame. Defaults: Land et al. 2015, Problems 1 and 3.
    """

    C: float = quantity(2.0, "kPa")
    bf: float = quantity(8.0, "")
    bt: float = quantity(2.0, "")
    bfs: float = quantity(4.0, "")

    def validate(self) -> None:
        _check_positive(self, ("C", "bf", "bt", "bfs"))

    def shear_modulus(self) -> float:
        """Small-strain shear modulus across the fibres (kPa): W ~ C b_t/2 E:E there, so C b_t / 2."""
        return 0.5 * self.C * self.bt

    def strain_energy(self, F, f0, s0, n0, *, isochoric: bool = False):  # noqa: ANN001, ANN201 - UFL
        Cg = _kinematics(F, isochoric)
        E = 0.5 * (Cg - ufl.Identity(3))
        Eff, Ess, Enn = ufl.inner(f0, E * f0), ufl.inner(s0, E * s0), ufl.inner(n0, E * n0)
        Efs, Efn, Esn = ufl.inner(f0, E * s0), ufl.inner(f0, E * n0), ufl.inner(s0, E * n0)
        Q = (self.bf * Eff**2 + self.bt * (Ess**2 + Enn**2 + 2 * Esn**2)
             + self.bfs * 2 * (Efs**2 + Efn**2))
        return 0.5 * self.C * (ufl.exp(Q) - 1.0)


@dataclass(frozen=True)
class HolzapfelOgden:
    """Holzapfel & Ogden (Phil Trans R Soc A 367:3445, 2009), orthotropic.

    W = a/(2b) (exp(b (I1 - 3)) - 1) + sum_{i=f,s} a_i/(2 b_i) (exp(b_i (I4i - 1)_+^2) - 1)
        + a_fs/(2 b_fs) (exp(b_fs I8fs^2) - 1). Defaults: Table 1 of the paper (kPa).
    Fibre and sheet terms act in tension only (I4 > 1).
    """

    a: float = quantity(0.059, "kPa")
    b: float = quantity(8.023, "")
    a_f: float = quantity(18.472, "kPa")
    b_f: float = quantity(16.026, "")
    a_s: float = quantity(2.481, "kPa")
    b_s: float = quantity(11.120, "")
    a_fs: float = quantity(0.216, "kPa")
    b_fs: float = quantity(11.436, "")

    def validate(self) -> None:
        _check_positive(self, ("a", "b", "a_f", "b_f", "a_s", "b_s", "a_fs", "b_fs"))

    def shear_modulus(self) -> float:
        """Small-strain shear modulus in the fibre-sheet plane (kPa): a (isotropic part) + a_fs."""
        return self.a + self.a_fs

    def strain_energy(self, F, f0, s0, n0, *, isochoric: bool = False):  # noqa: ANN001, ANN201 - UFL
        Cg = _kinematics(F, isochoric)
        I1 = ufl.tr(Cg)
        I4f, I4s, I8fs = ufl.inner(f0, Cg * f0), ufl.inner(s0, Cg * s0), ufl.inner(f0, Cg * s0)

        def tension(i4):  # noqa: ANN001, ANN202
            return ufl.conditional(ufl.gt(i4, 1.0), i4 - 1.0, 0.0)

        return (self.a / (2 * self.b) * (ufl.exp(self.b * (I1 - 3)) - 1)
                + self.a_f / (2 * self.b_f) * (ufl.exp(self.b_f * tension(I4f) ** 2) - 1)
                + self.a_s / (2 * self.b_s) * (ufl.exp(self.b_s * tension(I4s) ** 2) - 1)
                + self.a_fs / (2 * self.b_fs) * (ufl.exp(self.b_fs * I8fs**2) - 1))
