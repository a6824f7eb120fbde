"""Numba kernels of the local inertial flood scheme (de Almeida et al. 2012).

Every kernel works on a *padded block*: arrays of shape ``(NY, NX)`` whose outer ring of cells is
never updated. On the domain border that ring holds ghost cells (boundary conditions, set by
:func:`set_ghosts`); inside a Dask block it holds the outermost halo cell. Fluxes are stored
cell-aligned: ``qx[i, j]`` is the unit discharge (m2/s) through the east face of cell ``(i, j)``
(positive towards ``j + 1``), ``qy[i, j]`` the one through the face between rows ``i`` and ``i + 1``
(positive towards ``i + 1``). Closed cells (nodata, buildings, closed borders) carry the elevation
:data:`CLOSED_Z`, so every face touching them has zero flow depth and no flow, without a mask read.

Why the code looks the way it does (measured on the 2-core reference machine):

* State and flux arithmetic are float32 and the inner loops are written so that LLVM vectorises
  them (``error_model="numpy"``, branch-free selects, peeled row ends). A single construct that
  does not vectorise -- a float ``max`` reduction, a ``pow`` or ``cbrt`` call per face -- cuts the
  throughput 5-10x. So ``h**(-7/3)`` of the friction term comes from an inline float32 inverse
  cube root (bit-level first guess, three Newton steps; no division, no libm call).
* The water-surface difference is formed in float64 as ``(z1 - z0) + (h1 - h0)``: differences of
  float32 numbers are exact there, so the computed gradient is the gradient of the stored surface.
  In float32 the rounding of ``z1 - z0`` does not sum to zero around a loop and drives a spurious
  circulation (a lake at rest drifted by 3e-6 m in 30 min).
* Continuity is evaluated in float64 with a per-cell float32 compensation term ``c`` (Kahan-style):
  a rain increment of 1e-5 m added to 1 m of water would otherwise lose ~1 % to float32 rounding,
  systematically, and the volume balance could not close to 1e-6.
* The running maximum depth array doubles as the activity mask (negative = closed cell), which
  saves a mask read per cell and step.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

F32 = np.float32
G = 9.80665  # standard gravity, m/s2
CLOSED_Z = np.float32(1.0e30)  # elevation of closed cells: zero flow depth on all their faces
# LLVM fast-math flags: deliberately almost none. The loops vectorise without them (there are no
# float reductions). Without reassociation, reciprocal, approximate-function and contraction
# (FMA) rewrites every cell is computed with the same IEEE operations whether it lands in a
# vector body or a scalar remainder loop: a mirrored or transposed problem and a chunked run give
# bit-identical results. That matters near the 1 mm flow threshold, where one ulp decides whether
# a face flows and a 1e-7 m difference can grow to 1e-4 m. nnan/ninf would be unsafe anyway:
# closed cells make huge intermediates.
_FM = {"nsz"}
_JIT = {"fastmath": _FM, "error_model": "numpy", "cache": True, "nogil": True}


# --- float32 bit helpers ---------------------------------------------------------------------------
@intrinsic
def _f32_bits(typingctx, x):
    """Reinterpret a float32 as int32 (LLVM bitcast, vectorisable)."""
    if not isinstance(x, types.Float) or x.bitwidth != 32:
        raise TypingError("_f32_bits expects float32")

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _bits_f32(typingctx, x):
    """Reinterpret an int32 as float32 (LLVM bitcast, vectorisable)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@nb.njit(inline="always", **_JIT)
def pow_m7_3(x):
    """``x**(-7/3)`` for a positive float32 (relative error < 2e-6), vectorisable, no division.

    Inverse cube root ``r = x**(-1/3)``: first guess from the exponent bits (``K - bits(x)/3``,
    ``K`` fitted for a 3.5 % worst-case error), then three Newton steps ``r <- r (4 - x r^3) / 3``
    (errors 2.4e-3, 1.2e-5, 3e-10); finally ``r^7``.
    """
    r = _bits_f32(np.int32(1419920000 - _f32_bits(x) // 3))
    r = r * (F32(4.0) - x * r * r * r) * F32(1.0 / 3.0)
    r = r * (F32(4.0) - x * r * r * r) * F32(1.0 / 3.0)
    r = r * (F32(4.0) - x * r * r * r) * F32(1.0 / 3.0)
    r2 = r * r
    return r2 * r2 * r2 * r


# --- compile-time dispatch on "uniform or raster" inputs --------------------------------------------
def _friction_coef(n, i0, j0, i1, j1):  # pragma: no cover - replaced by the overload
    raise NotImplementedError


@overload(_friction_coef, inline="always")
def _friction_coef_impl(n, i0, j0, i1, j1):
    """n^2 on the face between cells (i0, j0) and (i1, j1): the square of the face-mean Manning n."""
    if isinstance(n, types.Float):
        return lambda n, i0, j0, i1, j1: n  # scalar: the caller passes n^2 already
    return lambda n, i0, j0, i1, j1: (F32(0.5) * (n[i0, j0] + n[i1, j1])) ** 2


def _rain_factor(rf, i, j):  # pragma: no cover - replaced by the overload
    raise NotImplementedError


@overload(_rain_factor, inline="always")
def _rain_factor_impl(rf, i, j):
    """Relative rain intensity of a cell: 1 for uniform rain, the field value for a rain raster."""
    if isinstance(rf, types.Float):
        return lambda rf, i, j: 1.0
    return lambda rf, i, j: np.float64(rf[i, j])


# --- momentum: one face --------------------------------------------------------------------------
@nb.njit(inline="always", **_JIT)
def _face_q(q0, q_prev, q_next, q_cross, z0, z1, h0, h1, gdt, inv_dx, theta, half_1m_theta, fric,
            hmin, q_cap):
    """New unit discharge (m2/s) through one face, de Almeida et al. (2012) eq. (15)/(23).

    ``q = [theta q0 + (1-theta)/2 (q_prev + q_next) - g h_f dt (eta1 - eta0)/dx]
    / [1 + g dt n^2 |q| / h_f^(7/3)]`` with the flow depth ``h_f = max(eta0, eta1) - max(z0, z1)``
    (Bates et al. 2010) and ``|q| = sqrt(q0^2 + q_cross^2)`` from both components. ``fric`` is
    ``g dt n^2``. No flow where ``h_f <= hmin``. The outflow is capped at ``h_up dx / (4 dt)`` (per
    face a quarter of the upstream cell's water): this keeps depths non-negative without clipping,
    so volume is conserved exactly (the same limiter as landlab's ``adjust_unstable_discharge``).
    """
    zm = max(z0, z1)
    hf = max(h0 + (z0 - zm), h1 + (z1 - zm))
    he = max(hf, hmin)  # keep the arithmetic finite on dry / closed faces; selected away below
    # Water-surface difference in float64 (see the module notes).
    deta = np.float32((np.float64(z1) - np.float64(z0)) + (np.float64(h1) - np.float64(h0)))
    qmag = math.sqrt(q0 * q0 + q_cross * q_cross)
    q = (theta * q0 + half_1m_theta * (q_prev + q_next) - gdt * he * deta * inv_dx) / (
        F32(1.0) + fric * qmag * pow_m7_3(he))
    q = min(q, h0 * q_cap) if q > F32(0.0) else max(q, -h1 * q_cap)
    return q if hf > hmin else F32(0.0)


@nb.njit(**_JIT)
def _flux_row(i, z, h, qx, qy, qxn, qyn, n, gdt, inv_dx, theta, half_1m_theta, hmin, q_cap):
    """New fluxes of row ``i``: its x faces (interior rows only) and the y faces below it.

    Theta averaging uses the two neighbouring parallel faces. The first and last face of a row or
    column (the domain border, or a Dask block's outer halo) have a neighbour on one side only and
    use their own flux for both, so a border face is driven by its own gradient alone: a neighbour's
    rounding noise cannot leak through an outflow-only border and drain a lake.
    """
    ny, nx = h.shape
    if i >= 1:
        for j in range(nx - 1):
            border = j == 0 or j == nx - 2
            jl = j if border else j - 1
            jr = j if border else j + 1
            qc = F32(0.25) * ((qy[i - 1, j] + qy[i - 1, j + 1]) + (qy[i, j] + qy[i, j + 1]))
            qxn[i, j] = _face_q(qx[i, j], qx[i, jl], qx[i, jr], qc, z[i, j], z[i, j + 1],
                                h[i, j], h[i, j + 1], gdt, inv_dx, theta, half_1m_theta,
                                gdt * _friction_coef(n, i, j, i, j + 1), hmin, q_cap)
    border = i == 0 or i == ny - 2
    iu = i if border else i - 1
    idn = i if border else i + 1
    for j in range(1, nx - 1):
        qc = F32(0.25) * ((qx[i, j - 1] + qx[i + 1, j - 1]) + (qx[i, j] + qx[i + 1, j]))
        qyn[i, j] = _face_q(qy[i, j], qy[iu, j], qy[idn, j], qc, z[i, j], z[i + 1, j],
                            h[i, j], h[i + 1, j], gdt, inv_dx, theta, half_1m_theta,
                            gdt * _friction_coef(n, i, j, i + 1, j), hmin, q_cap)


@nb.njit(**_JIT)
def _flux_row_fast(i, z, h, qx, qy, qxn, qyn, n, gdt, inv_dx, theta, half_1m_theta, hmin, q_cap):
    """As :func:`_flux_row`, with the row's end faces peeled so the x-face loop has no branches."""
    ny, nx = h.shape
    if nx < 4:
        _flux_row(i, z, h, qx, qy, qxn, qyn, n, gdt, inv_dx, theta, half_1m_theta, hmin, q_cap)
        return
    if i >= 1:
        for j in (0, nx - 2):
            qc = F32(0.25) * ((qy[i - 1, j] + qy[i - 1, j + 1]) + (qy[i, j] + qy[i, j + 1]))
            qxn[i, j] = _face_q(qx[i, j], qx[i, j], qx[i, j], qc, z[i, j], z[i, j + 1],
                                h[i, j], h[i, j + 1], gdt, inv_dx, theta, half_1m_theta,
                                gdt * _friction_coef(n, i, j, i, j + 1), hmin, q_cap)
        for j in range(1, nx - 2):
            qc = F32(0.25) * ((qy[i - 1, j] + qy[i - 1, j + 1]) + (qy[i, j] + qy[i, j + 1]))
            qxn[i, j] = _face_q(qx[i, j], qx[i, j - 1], qx[i, j + 1], qc, z[i, j], z[i, j + 1],
                                h[i, j], h[i, j + 1], gdt, inv_dx, theta, half_1m_theta,
                                gdt * _friction_coef(n, i, j, i, j + 1), hmin, q_cap)
    border = i == 0 or i == ny - 2
    iu = i if border else i - 1
    idn = i if border else i + 1
    for j in range(1, nx - 1):
        qc = F32(0.25) * ((qx[i, j - 1] + qx[i + 1, j - 1]) + (qx[i, j] + qx[i + 1, j]))
        qyn[i, j] = _face_q(qy[i, j], qy[iu, j], qy[idn, j], qc, z[i, j], z[i + 1, j],
                            h[i, j], h[i + 1, j], gdt, inv_dx, theta, half_1m_theta,
                            gdt * _friction_coef(n, i, j, i + 1, j), hmin, q_cap)


@nb.njit(**_JIT)
def flux(z, h, qx, qy, qxn, qyn, n, gdt, inv_dx, theta, half_1m_theta, hmin, q_cap):
    """Momentum step on all faces of a block: writes ``qxn``/``qyn`` from ``qx``/``qy``.

    Single-threaded on purpose: a large grid is split into bands that threads (or Dask workers)
    advance for whole blocks of steps, see :mod:`.chunked`.
    """
    for i in range(h.shape[0] - 1):
        _flux_row_fast(i, z, h, qx, qy, qxn, qyn, n, gdt, inv_dx, theta, half_1m_theta, hmin, q_cap)


# --- continuity: one row -------------------------------------------------------------------------
@nb.njit(**_JIT)
def _continuity_row(i, h, c, qx, qy, hmax, tarr, rf, dt_dx, rain_depth, thr, t_end):
    """``h += dt [ (qx_w - qx_e + qy_n - qy_s)/dx + r ]`` for row ``i``.

    Evaluated in float64 with the compensation ``c`` carried from the previous step, so that the
    float32 state loses no volume to rounding (see the module notes). Updates the running maximum
    ``hmax`` and the first time ``tarr`` the depth exceeded ``thr``.
    """
    nx = h.shape[1]
    for j in range(1, nx - 1):
        hm = hmax[i, j]
        active = hm >= F32(0.0)
        r = rain_depth * _rain_factor(rf, i, j) if active else 0.0
        dh = dt_dx * ((np.float64(qx[i, j - 1]) - np.float64(qx[i, j]))
                      + (np.float64(qy[i - 1, j]) - np.float64(qy[i, j]))) + r + np.float64(c[i, j])
        hn = np.float64(h[i, j]) + dh
        hs = np.float32(hn) if hn > 0.0 else F32(0.0)
        c[i, j] = np.float32(hn - np.float64(hs))
        h[i, j] = hs
        hmax[i, j] = hs if (active and hs > hm) else hm
        tarr[i, j] = t_end if (active and hs > thr and hm <= thr) else tarr[i, j]


@nb.njit(**_JIT)
def continuity(h, c, qx, qy, hmax, tarr, rf, dt_dx, rain_depth, thr, t_end):
    """Continuity on all interior cells of a block."""
    for i in range(1, h.shape[0] - 1):
        _continuity_row(i, h, c, qx, qy, hmax, tarr, rf, dt_dx, rain_depth, thr, t_end)


# --- point sources ---------------------------------------------------------------------------------
@nb.njit(**_JIT)
def add_sources(h, c, hmax, tarr, rows, cols, depths, thr, t_end):
    """Add ``depths[k]`` metres of water to cell ``(rows[k], cols[k])``, compensated like continuity."""
    for k in range(rows.shape[0]):
        i = rows[k]
        j = cols[k]
        hn = np.float64(h[i, j]) + np.float64(c[i, j]) + depths[k]
        hs = np.float32(hn)
        c[i, j] = np.float32(hn - np.float64(hs))
        h[i, j] = hs
        hm = hmax[i, j]
        if hs > hm:
            hmax[i, j] = hs
            if hs > thr and hm <= thr:
                tarr[i, j] = t_end


# --- boundaries ------------------------------------------------------------------------------------
# Side codes: 0 closed, 1 open (free outflow), 2 fixed water level.
CLOSED, OPEN, LEVEL = 0, 1, 2
OPEN_DEADBAND = np.float32(1e-4)  # m: surface drop towards an open border below which it is flat


@nb.njit(**_JIT)
def _ghost(z, h, gi, gj, ii, ij, ni, nj, ny, nx, kind, level, hmin):
    """Set ghost cell (gi, gj) from its inner cell (ii, ij) and the next cell inwards (ni, nj)."""
    z_in = z[ii, ij]
    if kind == CLOSED or z_in >= CLOSED_Z:
        z[gi, gj] = CLOSED_Z
        h[gi, gj] = F32(0.0)
    elif kind == LEVEL:
        # A reservoir at the given water surface elevation behind the face, same bed as inside.
        z[gi, gj] = z_in
        h[gi, gj] = max(F32(level) - z_in, F32(0.0))
    else:
        # Free outflow: continue the water-surface slope towards the border (zero curvature). Only
        # a surface that is connected (flow depth above the threshold between the two inner cells)
        # and falls towards the border drives outflow; a lake at rest stays at rest. The ghost keeps
        # the inner depth, so the border face's flow depth is the inner depth.
        slope = F32(0.0)
        if 1 <= ni <= ny - 2 and 1 <= nj <= nx - 2 and z[ni, nj] < CLOSED_Z:
            zn = z[ni, nj]
            hn = h[ni, nj]
            h_in = h[ii, ij]
            zm = max(zn, z_in)
            if max(hn + (zn - zm), h_in + (z_in - zm)) > hmin:
                drop = np.float32((np.float64(zn) - np.float64(z_in)) + (np.float64(hn) - np.float64(h_in)))
                # A dead band far above float32 noise: without it, rounding noise on a lake at rest
                # would start an outflow that steepens itself and drains the lake.
                slope = drop if drop > OPEN_DEADBAND else F32(0.0)
        z[gi, gj] = z_in - slope
        h[gi, gj] = h[ii, ij]


@nb.njit(**_JIT)
def set_ghosts(z, h, kinds, levels, edges, hmin):
    """Fill the ghost ring on the sides that are domain borders (``edges[s]`` true).

    Sides ``s``: 0 = first row, 1 = last row, 2 = first column, 3 = last column.
    """
    ny, nx = h.shape
    if edges[0]:
        for j in range(1, nx - 1):
            _ghost(z, h, 0, j, 1, j, 2, j, ny, nx, kinds[0], levels[0], hmin)
    if edges[1]:
        for j in range(1, nx - 1):
            _ghost(z, h, ny - 1, j, ny - 2, j, ny - 3, j, ny, nx, kinds[1], levels[1], hmin)
    if edges[2]:
        for i in range(1, ny - 1):
            _ghost(z, h, i, 0, i, 1, i, 2, ny, nx, kinds[2], levels[2], hmin)
    if edges[3]:
        for i in range(1, ny - 1):
            _ghost(z, h, i, nx - 1, i, nx - 2, i, nx - 3, ny, nx, kinds[3], levels[3], hmin)


@nb.njit(**_JIT)
def border_outflow(qx, qy, kinds, edges, own, dt, dx):
    """Net outflow volume (m3, float64) through the border faces of the owned cells in one step.

    Open sides let water out only (an inflowing face is set to zero first). ``own`` is
    ``(row0, row1, col0, col1)``: the owned interior cells. A border face belongs to the cell inside
    it, so a Dask block whose halo reaches the border counts no face twice.
    """
    ny, nx = qx.shape
    r0, r1, c0, c1 = own[0], own[1], own[2], own[3]
    vol = 0.0
    # Clip over the whole side (halo cells must evolve exactly as in the block that owns them),
    # count only the faces of owned cells.
    if edges[0]:  # faces between ghost row 0 and row 1; positive qy flows into the domain
        count = r0 <= 1 < r1
        for j in range(1, nx - 1):
            if kinds[0] == OPEN and qy[0, j] > 0:
                qy[0, j] = 0
            if count and c0 <= j < c1:
                vol -= np.float64(qy[0, j])
    if edges[1]:
        count = r0 <= ny - 2 < r1
        for j in range(1, nx - 1):
            if kinds[1] == OPEN and qy[ny - 2, j] < 0:
                qy[ny - 2, j] = 0
            if count and c0 <= j < c1:
                vol += np.float64(qy[ny - 2, j])
    if edges[2]:
        count = c0 <= 1 < c1
        for i in range(1, ny - 1):
            if kinds[2] == OPEN and qx[i, 0] > 0:
                qx[i, 0] = 0
            if count and r0 <= i < r1:
                vol -= np.float64(qx[i, 0])
    if edges[3]:
        count = c0 <= nx - 2 < c1
        for i in range(1, ny - 1):
            if kinds[3] == OPEN and qx[i, nx - 2] < 0:
                qx[i, nx - 2] = 0
            if count and r0 <= i < r1:
                vol += np.float64(qx[i, nx - 2])
    return vol * dt * dx
