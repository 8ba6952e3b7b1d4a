"""Fused CPU kernels of the monodomain time step (numba, parallel over nodes / matrix rows).

The torch path runs every step as some hundred element-wise tensor operations, each a full pass over
memory (the ionic update alone touches ~150 MB per step at 58k nodes). Here each phase is one or a
few passes that keep a node's 19 states in registers:

- ``ttp06_tabulated_step``: the whole TTP06 update of ``tentusscher2006.step_tabulated`` (same
  tables, same formulas, same operation order where it matters), one node per loop iteration;
- ``pcg``: Jacobi-preconditioned CG on a CSR matrix in three fused passes per iteration
  (A p with p.Ap; x, r, z updates with r.z and r.r; the new direction), convergence checked
  every iteration (no device to synchronise with);
- ``record_crossings``: activation / repolarisation threshold crossings in one pass.

They operate in place on NumPy views of the solver's CPU tensors (``tensor.numpy()`` shares
memory), in float64 or float32 (numba compiles one version per dtype, cached on disk). Threads:
``numba.set_num_threads`` follows ``torch.get_num_threads()`` (``use_torch_threads``).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from cardiotwin.electrophysiology.ionic.tentusscher2006 import TABLE_GATES, TTP06Params, TTP06Tables

# Column order the kernel expects in the voltage table (TTP06Tables.voltage names are mapped onto it).
_GATE_ROWS = np.array([row for _name, row in TABLE_GATES], dtype=np.int64)
_VOLTAGE_COLUMNS: tuple[str, ...] = (
    *(f"a_{name}" for name, _ in TABLE_GATES), *(f"e_{name}" for name, _ in TABLE_GATES),
    "naca_na", "naca_ca", "nak", "pk", "cal_ss", "cal_o",
)
_N_GATES = len(TABLE_GATES)
_C_NACA_NA, _C_NACA_CA, _C_NAK, _C_PK, _C_CAL_SS, _C_CAL_O = range(2 * _N_GATES, 2 * _N_GATES + 6)


def use_torch_threads() -> int:
    """Make numba's parallel loops use as many threads as torch (capped at numba's maximum).

    numba's OpenMP layer starts on the first parallel call and then sets the process-wide OpenMP
    thread count (which torch shares) to numba's maximum: start it here, then restore torch's."""
    n_torch = torch.get_num_threads()
    tiny = np.zeros(1)
    increment(tiny, tiny, tiny)  # starts numba's threading layer
    n = max(1, min(n_torch, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    torch.set_num_threads(n_torch)
    return n


class TTP06Kernel:
    """Fused TTP06 reaction step for one cell type and reaction step, from its lookup tables.

    Tables are re-laid out node-major, (n_grid, k) values and slopes, so one node's lookups read
    neighbouring memory. ``step(states, passive)`` updates the (19, n) NumPy states in place;
    nodes with ``passive`` True keep their V (non-conducting tissue)."""

    def __init__(self, tables: TTP06Tables, params: TTP06Params, dtype: np.dtype) -> None:
        tv, tk = tables.voltage, tables.vek
        order = [tv.column(name) for name in _VOLTAGE_COLUMNS]
        self.v_values = np.ascontiguousarray(tv.values[order].T.cpu().numpy(), dtype=dtype)
        self.v_slopes = np.ascontiguousarray(tv.slopes[order].T.cpu().numpy(), dtype=dtype)
        self.k_values = np.ascontiguousarray(tk.values[0].cpu().numpy(), dtype=dtype)
        self.k_slopes = np.ascontiguousarray(tk.slopes[0].cpu().numpy(), dtype=dtype)
        self.grid = np.array([tv.x_min, 1.0 / tv.dx, tv.n_grid, tk.x_min, 1.0 / tk.dx, tk.n_grid], dtype=np.float64)
        self.consts = _constants(params)
        self.dt_ms = tables.dt_ms

    def step(self, states: np.ndarray, passive: np.ndarray) -> None:
        _ttp06_step(states, self.dt_ms, self.v_values, self.v_slopes, self.k_values, self.k_slopes, self.grid,
                    self.consts, _GATE_ROWS, passive)


def _constants(p: TTP06Params) -> np.ndarray:
    """Scalar constants of the kernel, in the order ``_ttp06_step`` unpacks them."""
    rtf = p.R * p.T / p.F
    return np.array([
        rtf, rtf * math.log(p.Na_o), rtf * math.log(p.K_o), rtf * math.log(p.K_o + p.p_KNa * p.Na_o),
        0.5 * rtf * math.log(p.Ca_o), p.p_KNa,
        p.g_Na, p.g_to, p.g_Kr * math.sqrt(p.K_o / 5.4), p.g_Ks, p.g_pCa, p.K_pCa, p.g_bNa, p.g_bCa, p.K_mNa,
        p.max_sr, p.max_sr - p.min_sr, p.EC**2, p.k1_prime, p.k2_prime, p.k3, p.k4, p.V_rel, p.Vmax_up,
        p.K_up**2, p.V_leak, p.V_xfer, p.Buf_c * p.K_buf_c, p.K_buf_c, p.Buf_sr * p.K_buf_sr, p.K_buf_sr,
        p.Buf_ss * p.K_buf_ss, p.K_buf_ss, p.V_sr / p.V_c, p.Cm / (2.0 * p.V_c * p.F), p.V_sr / p.V_ss,
        p.V_c / p.V_ss, p.Cm / (2.0 * p.V_ss * p.F), p.Cm / (p.V_c * p.F),
    ], dtype=np.float64)


@numba.njit(cache=True, parallel=True, fastmath=False)
def _ttp06_step(S, dt, vv, vs, kv, ks, grid, c, gate_rows, passive):  # noqa: ANN001, ANN202, PLR0915
    (rtf, rtf_ln_nao, rtf_ln_ko, rtf_ln_kso, half_rtf_ln_cao, p_kna,
     g_na, g_to, g_kr, g_ks, g_pca, k_pca, g_bna, g_bca, k_mna,
     max_sr, d_sr, ec2, k1p, k2p, k3, k4, v_rel, vmax_up, k_up2, v_leak, v_xfer,
     bk_c, k_buf_c, bk_sr, k_buf_sr, bk_ss, k_buf_ss, vsr_vc, cm_2vcf, vsr_vss, vc_vss, cm_2vssf, cm_vcf) = c
    x0, inv_dx, ngrid = grid[0], grid[1], grid[2]
    u0, inv_du, nugrid = grid[3], grid[4], grid[5]
    ng = gate_rows.shape[0]
    n = S.shape[1]
    for i in numba.prange(n):
        V = S[0, i]
        Xr1, Xr2, Xs, m, h, j = S[1, i], S[2, i], S[3, i], S[4, i], S[5, i], S[6, i]
        d, f, f2, fCass, s_g, r = S[7, i], S[8, i], S[9, i], S[10, i], S[11, i], S[12, i]
        Ca_i, Rp, Ca_SR, Ca_ss, Na_i, K_i = S[13, i], S[14, i], S[15, i], S[16, i], S[17, i], S[18, i]
        # locate V on the voltage grid (clamped), as LookupTable.locate
        pos = min(max((V - x0) * inv_dx, 0.0), ngrid - 1.0)
        k = min(int(pos), int(ngrid) - 2)
        w = pos - k
        v_ena = rtf * math.log(Na_i) + V - rtf_ln_nao
        v_ek = rtf * math.log(K_i) + V - rtf_ln_ko
        v_eks = rtf * math.log(K_i + p_kna * Na_i) + V - rtf_ln_kso
        v_eca = 0.5 * rtf * math.log(Ca_i) + V - half_rtf_ln_cao
        posu = min(max((v_ek - u0) * inv_du, 0.0), nugrid - 1.0)
        ku = min(int(posu), int(nugrid) - 2)
        k1 = kv[ku] + (posu - ku) * ks[ku]

        i_na = m * m * m * h * j * v_ena * g_na
        i_to = r * s_g * v_ek * g_to
        i_kr = Xr1 * Xr2 * v_ek * g_kr
        i_ks = Xs * Xs * v_eks * g_ks
        cal = (vv[k, _C_CAL_SS] + w * vs[k, _C_CAL_SS]) * Ca_ss - (vv[k, _C_CAL_O] + w * vs[k, _C_CAL_O])
        i_cal = d * f * f2 * fCass * cal
        i_k1 = k1 * v_ek
        i_naca = ((vv[k, _C_NACA_NA] + w * vs[k, _C_NACA_NA]) * (Na_i * Na_i * Na_i)
                  - (vv[k, _C_NACA_CA] + w * vs[k, _C_NACA_CA]) * Ca_i)
        i_nak = (vv[k, _C_NAK] + w * vs[k, _C_NAK]) * Na_i / (Na_i + k_mna)
        i_pca = Ca_i * g_pca / (Ca_i + k_pca)
        i_pk = (vv[k, _C_PK] + w * vs[k, _C_PK]) * v_ek
        i_bna = v_ena * g_bna
        i_bca = v_eca * g_bca
        i_ion = i_na + i_to + i_kr + i_ks + i_cal + i_k1 + i_naca + i_nak + i_pca + i_pk + i_bna + i_bca

        # calcium handling (as tentusscher2006._concentration_rates_lean)
        ca_sr2 = Ca_SR * Ca_SR
        kcasr = max_sr - d_sr * ca_sr2 / (ca_sr2 + ec2)
        k1c2 = Ca_ss * Ca_ss / kcasr * k1p
        i_rel = k1c2 * Rp / (k1c2 + k3) * (Ca_SR - Ca_ss) * v_rel
        ca_i2 = Ca_i * Ca_i
        i_up = ca_i2 / (ca_i2 + k_up2) * vmax_up
        i_leak = (Ca_SR - Ca_i) * v_leak
        i_xfer = (Ca_ss - Ca_i) * v_xfer
        q = (Ca_i + k_buf_c) ** 2
        dca_i = ((i_leak - i_up) * vsr_vc + i_xfer - (i_bca + i_pca - 2.0 * i_naca) * cm_2vcf) * (q / (q + bk_c))
        q = (Ca_SR + k_buf_sr) ** 2
        dca_sr = (i_up - i_rel - i_leak) * (q / (q + bk_sr))
        q = (Ca_ss + k_buf_ss) ** 2
        dca_ss = (i_rel * vsr_vss - i_xfer * vc_vss - i_cal * cm_2vssf) * (q / (q + bk_ss))
        dna_i = -(i_na + i_bna + 3.0 * i_nak + 3.0 * i_naca) * cm_vcf
        dk_i = -(i_k1 + i_to + i_kr + i_ks + i_pk - 2.0 * i_nak) * cm_vcf
        rp_rate = kcasr * Ca_ss * k2p + k4
        x = 1.0 / ((Ca_ss * 20.0) ** 2 + 1.0)
        fcass_inf = 0.6 * x + 0.4
        e_fcass = math.exp(-dt / (80.0 * x + 2.0))
        rp_inf = k4 / rp_rate
        e_rp = math.exp(-dt * rp_rate)

        # Rush-Larsen gates g+ = a + e g (columns: a_* first, then e_*)
        for g in range(ng):
            row = gate_rows[g]
            S[row, i] = S[row, i] * (vv[k, ng + g] + w * vs[k, ng + g]) + (vv[k, g] + w * vs[k, g])
        S[10, i] = (fCass - fcass_inf) * e_fcass + fcass_inf
        S[14, i] = (Rp - rp_inf) * e_rp + rp_inf
        if not passive[i]:
            S[0, i] = V - dt * i_ion
        S[13, i] = Ca_i + dt * dca_i
        S[15, i] = Ca_SR + dt * dca_sr
        S[16, i] = Ca_ss + dt * dca_ss
        S[17, i] = Na_i + dt * dna_i
        S[18, i] = K_i + dt * dk_i


# --- Sparse linear algebra ------------------------------------------------------------------------

@numba.njit(cache=True, inline="always")
def _row_dot(indptr, indices, data, x, i):  # noqa: ANN001, ANN202 - (A x)_i of a CSR matrix
    acc = 0.0
    for jj in range(indptr[i], indptr[i + 1]):
        acc += data[jj] * x[indices[jj]]
    return acc


@numba.njit(cache=True, parallel=True)
def _spmv(indptr, indices, data, x, y):  # noqa: ANN001, ANN202 - y = A x
    for i in numba.prange(indptr.shape[0] - 1):
        acc = _row_dot(indptr, indices, data, x, i)
        y[i] = acc


@numba.njit(cache=True, parallel=True)
def _spmv_axpy(indptr, indices, data, x, f, alpha, y):  # noqa: ANN001, ANN202 - y = A x + alpha f
    for i in numba.prange(indptr.shape[0] - 1):
        acc = _row_dot(indptr, indices, data, x, i)
        y[i] = acc + alpha * f[i]


@numba.njit(cache=True, parallel=True)
def _spmv_dot(indptr, indices, data, p, ap):  # noqa: ANN001, ANN202 - ap = A p; return p.ap
    total = 0.0
    for i in numba.prange(indptr.shape[0] - 1):
        acc = _row_dot(indptr, indices, data, p, i)
        ap[i] = acc
        total += p[i] * acc
    return total


@numba.njit(cache=True, parallel=True)
def _residual_start(indptr, indices, data, b, x, inv_diag, r, z, p):  # noqa: ANN001, ANN202
    """r = b - A x, z = D^-1 r, p = z; returns (r.z, r.r, b.b)."""
    rz = 0.0
    rr = 0.0
    bb = 0.0
    for i in numba.prange(indptr.shape[0] - 1):
        acc = _row_dot(indptr, indices, data, x, i)
        ri = b[i] - acc
        zi = inv_diag[i] * ri
        r[i] = ri
        z[i] = zi
        p[i] = zi
        rz += ri * zi
        rr += ri * ri
        bb += b[i] * b[i]
    return rz, rr, bb


@numba.njit(cache=True, parallel=True)
def _update_xr(x, r, p, ap, alpha, inv_diag, z):  # noqa: ANN001, ANN202
    """x += alpha p, r -= alpha Ap, z = D^-1 r; returns (r.z, r.r)."""
    rz = 0.0
    rr = 0.0
    for i in numba.prange(x.shape[0]):
        x[i] += alpha * p[i]
        ri = r[i] - alpha * ap[i]
        r[i] = ri
        zi = inv_diag[i] * ri
        z[i] = zi
        rz += ri * zi
        rr += ri * ri
    return rz, rr


@numba.njit(cache=True, parallel=True)
def _update_p(p, z, beta):  # noqa: ANN001, ANN202 - p = z + beta p
    for i in numba.prange(p.shape[0]):
        p[i] = z[i] + beta * p[i]


@numba.njit(cache=True, parallel=True)
def extrapolate_guess(v, v_saved, delta):  # noqa: ANN001, ANN201
    """v_saved = v; v += delta (the previous step's diffusion increment as the CG initial guess)."""
    for i in numba.prange(v.shape[0]):
        v_saved[i] = v[i]
        v[i] += delta[i]


@numba.njit(cache=True, parallel=True)
def increment(v, v_saved, delta):  # noqa: ANN001, ANN201 - delta = v - v_saved
    for i in numba.prange(v.shape[0]):
        delta[i] = v[i] - v_saved[i]


class CSRMatrix:
    """A scipy CSR matrix as NumPy arrays of one dtype, with the work vectors of ``pcg``."""

    def __init__(self, a, dtype: np.dtype) -> None:  # noqa: ANN001 - scipy.sparse matrix
        a = a.tocsr()
        a.sort_indices()
        # unsigned index types: numba then skips the negative-index wraparound test on every access
        # (measured 0.37 vs 0.61 ms per product on the 58k-node slab; scipy 0.44, torch 0.61)
        self.indptr = a.indptr.astype(np.uint64)
        self.indices = a.indices.astype(np.uint32)
        self.data = a.data.astype(dtype)
        n = a.shape[0]
        self.inv_diag = (1.0 / a.diagonal()).astype(dtype)
        self._r, self._z, self._p, self._ap = (np.empty(n, dtype=dtype) for _ in range(4))

    def matvec_plus(self, x: np.ndarray, f: np.ndarray | None, alpha: float, out: np.ndarray) -> np.ndarray:
        """out = A x + alpha f (f None: out = A x)."""
        if f is None:
            _spmv(self.indptr, self.indices, self.data, x, out)
        else:
            _spmv_axpy(self.indptr, self.indices, self.data, x, f, alpha, out)
        return out

    def pcg(self, b: np.ndarray, x: np.ndarray, *, rtol: float, max_iterations: int) -> int:
        """Solve A x = b in place from the initial guess ``x`` (Jacobi-preconditioned CG, stop when
        ||r|| <= rtol ||b||); returns the iteration count."""
        r, z, p, ap = self._r, self._z, self._p, self._ap
        rz, rr, bb = _residual_start(self.indptr, self.indices, self.data, b, x, self.inv_diag, r, z, p)
        tol2 = rtol * rtol * bb
        it = 0
        while rr > tol2 and it < max_iterations:
            alpha = rz / _spmv_dot(self.indptr, self.indices, self.data, p, ap)
            rz_new, rr = _update_xr(x, r, p, ap, alpha, self.inv_diag, z)
            it += 1
            if rr <= tol2:
                break
            _update_p(p, z, rz_new / rz)
            rz = rz_new
        return it


@numba.njit(cache=True, parallel=True)
def record_crossings(v_old, v_new, act, rep, t_old, dt, thr_up, thr_down):  # noqa: ANN001, ANN201
    """First upward crossing of ``thr_up`` (activation) and the next downward crossing of
    ``thr_down`` (repolarisation), linearly interpolated in time; NaN until crossed (in place)."""
    for i in numba.prange(v_old.shape[0]):
        a, b = v_old[i], v_new[i]
        if math.isnan(act[i]):
            if a < thr_up and b >= thr_up:
                act[i] = t_old + dt * (thr_up - a) / (b - a)
        elif math.isnan(rep[i]) and a > thr_down and b <= thr_down:
            rep[i] = t_old + dt * (a - thr_down) / (a - b)
