"""Weighted sums of products of a chunk's rows, generated in registers (a native kernel).

Every EM iteration of a regression MoE accumulates weighted Grams ``sum_c w_jc z_c z_c^T``: the
``k`` expert Grams of ``[f; y]`` weighted by the responsibilities and the ``k (k - 1) / 2`` gate
Hessian blocks. Written in torch this is a GEMM ``W @ Q^T`` against the ``D (D + 1) / 2``
materialised products ``Q`` of the chunk: at ``D = 12`` that writes and reads back 78 numbers per
sample, and the GEMM's shape (``m`` x chunk x 78) keeps MKL at a third of its peak.
:func:`weighted_sums` instead forms each product ``z_a z_b`` in a vector register and feeds it
straight into a register tile of ``6 x 4`` accumulators (6 weight rows, 4 products, one SIMD lane
per sample), so a block of samples is read from the L1 cache once per tile and nothing per sample
is written. A row of ones among the rows (:class:`Pairs`) turns the same kernel into plain
weighted sums (the gate gradient, the masses, the log-likelihood).

The C source below is compiled once per machine with the system's C compiler (``$CC``, else
``cc``; ``-O3 -march=native``, OpenMP when available) into the moebench cache and loaded with
:mod:`ctypes`. Where that is impossible (no compiler, a device other than the CPU, a dtype other
than float32/float64, ``MOEBENCH_NATIVE=never``) the same sums are computed by the torch
expression :func:`weighted_sums_torch`, which the tests hold the native kernel to.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["FUSED_MAX_EXPERTS", "FusedPass", "Pairs", "fused_supported", "native_available",
           "native_mode", "native_supported", "vector_exp", "vector_log", "weighted_sums",
           "weighted_sums_torch"]

#: The vector width and the register tile follow the instruction set the compiler targets:
#: 64-byte vectors and 6 x 4 tiles (24 accumulators; measured 7-9% faster than 5 x 4 on the
#: fused passes of k = 4 experts, whose 6 Hessian rows then make one tile) with 32 vector
#: registers (AVX-512),
#: narrower vectors and 3 x 3 tiles with 16 (AVX2, SSE). BLK samples per block: a tile's weight
#: and chunk rows of one block (13 x 256 doubles, 26 KB) fit a 32-48 KB L1 data cache.
_HEAD = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
typedef int64_t IDX;
#if defined(__AVX512F__)
#define VBYTES 64
#define TW 6
#define TP 4
#elif defined(__aarch64__)
#define VBYTES 16
#define TW 5
#define TP 4
#elif defined(__AVX__)
#define VBYTES 32
#define TW 3
#define TP 3
#else
#define VBYTES 16
#define TW 3
#define TP 3
#endif
#define BLK 256
"""

_TEMPLATE = r"""
#define LANES_REAL ((int)(VBYTES / sizeof(REAL)))
typedef REAL VEC_REAL __attribute__((vector_size(VBYTES)));

static inline VEC_REAL load_REAL(const REAL *p)
{
    VEC_REAL v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* acc[t][p] += sum_{i in [i0, i1)} w_t[i] * za_p[i] * zb_p[i], lanes = samples; tw <= TW. */
static inline __attribute__((always_inline)) void tile_REAL(
    IDX i0, IDX i1, const int tw, const REAL *const *w, const REAL *const *za,
    const REAL *const *zb, VEC_REAL *acc)
{
    VEC_REAL a[TW][TP];
    for (int t = 0; t < tw; t++)
        for (int p = 0; p < TP; p++) a[t][p] = acc[t * TP + p];
    for (IDX i = i0; i < i1; i += LANES_REAL) {
        VEC_REAL wv[TW];
        for (int t = 0; t < tw; t++) wv[t] = load_REAL(w[t] + i);
        for (int p = 0; p < TP; p++) {
            VEC_REAL q = load_REAL(za[p] + i) * load_REAL(zb[p] + i);
            for (int t = 0; t < tw; t++) a[t][p] += wv[t] * q;
        }
    }
    for (int t = 0; t < tw; t++)
        for (int p = 0; p < TP; p++) acc[t * TP + p] = a[t][p];
}

#define TILE_VARIANT(TW) \
    static __attribute__((noinline)) void tile##TW##_REAL( \
        IDX i0, IDX i1, const REAL *const *w, const REAL *const *za, const REAL *const *zb, \
        VEC_REAL *acc) { tile_REAL(i0, i1, TW, w, za, zb, acc); }
TILE_VARIANT(1)
TILE_VARIANT(2)
TILE_VARIANT(3)
#if TW >= 5
TILE_VARIANT(4)
TILE_VARIANT(5)
#endif
#if TW >= 6
TILE_VARIANT(6)
#endif
#undef TILE_VARIANT

/* Vector sums of every group over [i0, i1) (a multiple of LANES_REAL long) into the group's
   scratch scr[g], tile-major. The samples go in blocks of BLK so that a block's rows stay in
   the L1/L2 cache while every tile of every group is run over it. */
static void range_REAL(IDX i0, IDX i1, int ng, const int *m, const REAL *const *W,
                       const int *np, const int *const *pa,
                       const int *const *pb, const REAL *Z, IDX ldz, int D, const REAL *ones,
                       VEC_REAL *const *scr)
{
    for (IDX s0 = i0; s0 < i1; s0 += BLK) {
        IDX s1 = s0 + BLK < i1 ? s0 + BLK : i1;
        const REAL *const *Wg = W;
        for (int g = 0; g < ng; Wg += m[g], g++) {
            int ntp = (np[g] + TP - 1) / TP;
            for (int j0 = 0; j0 < m[g]; j0 += TW) {
                int tw = m[g] - j0 < TW ? m[g] - j0 : TW;
                const REAL *w[TW];
                for (int t = 0; t < tw; t++) w[t] = Wg[j0 + t];
                for (int p0 = 0; p0 < np[g]; p0 += TP) {
                    const REAL *za[TP], *zb[TP];
                    for (int p = 0; p < TP; p++) {
                        int pp = p0 + p < np[g] ? p0 + p : np[g] - 1; /* padding: dropped */
                        za[p] = pa[g][pp] == D ? ones : Z + (IDX)pa[g][pp] * ldz;
                        zb[p] = pb[g][pp] == D ? ones : Z + (IDX)pb[g][pp] * ldz;
                    }
                    VEC_REAL *acc = scr[g] + ((IDX)(j0 / TW) * ntp + p0 / TP) * TW * TP;
                    switch (tw) {
#if TW >= 6
                    case 6: tile6_REAL(s0, s1, w, za, zb, acc); break;
#endif
#if TW >= 5
                    case 5: tile5_REAL(s0, s1, w, za, zb, acc); break;
                    case 4: tile4_REAL(s0, s1, w, za, zb, acc); break;
#endif
                    case 3: tile3_REAL(s0, s1, w, za, zb, acc); break;
                    case 2: tile2_REAL(s0, s1, w, za, zb, acc); break;
                    default: tile1_REAL(s0, s1, w, za, zb, acc); break;
                    }
                }
            }
        }
    }
}

/* For each group g with weight rows w_j = W[m[0] + ... + m[g - 1] + j] (pointers):
   out[g][j * np[g] + p] += sum_{i < c} w_j[i] z_a[i] z_b[i] with (a, b) = (pa[g][p], pb[g][p]),
   z_r the row Z + r * ldz for r < D and the c ones at `ones` for r == D. The c samples are
   split into nthreads contiguous ranges (fixed for given c and nthreads, so results are
   reproducible); partial sums are added in thread order, in double. Returns 0, -1 when the
   scratch memory cannot be allocated, -2 for more than 8 groups. */
int moebench_sums_REAL(IDX c, int ng, const int *m, const REAL *const *W, const int *np,
                       const int *const *pa, const int *const *pb,
                       REAL *const *out, const REAL *Z, IDX ldz, int D, const REAL *ones,
                       int nthreads)
{
    if (c <= 0 || ng <= 0 || ng > 8) return ng > 8 ? -2 : 0;
    IDX cv = c - c % LANES_REAL;
    int nt = nthreads < 1 ? 1 : nthreads;
    if (cv / (2 * BLK) < nt) nt = cv / (2 * BLK) > 1 ? (int)(cv / (2 * BLK)) : 1;
    IDX tiles[8], toff[9], poff[9];
    toff[0] = poff[0] = 0;
    for (int g = 0; g < ng; g++) {
        tiles[g] = (IDX)((m[g] + TW - 1) / TW) * ((np[g] + TP - 1) / TP) * TW * TP;
        toff[g + 1] = toff[g] + tiles[g];
        poff[g + 1] = poff[g] + (IDX)m[g] * np[g];
    }
    size_t bytes = sizeof(VEC_REAL) * (size_t)(toff[ng] * nt);
    bytes = (bytes / 64 + 1) * 64; /* a multiple of the alignment, as C11 wants */
    VEC_REAL *scr = aligned_alloc(64, bytes);
    double *part = malloc(sizeof(double) * (poff[ng] * nt + 1));
    if (!scr || !part) { free(scr); free(part); return -1; }
    memset(scr, 0, sizeof(VEC_REAL) * toff[ng] * nt);
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static, 1)
#endif
    for (int t = 0; t < nt; t++) {
        IDX nv = cv / LANES_REAL;
        IDX i0 = nv * t / nt * LANES_REAL, i1 = nv * (t + 1) / nt * LANES_REAL;
        VEC_REAL *s[8];
        for (int g = 0; g < ng; g++) s[g] = scr + toff[ng] * t + toff[g];
        range_REAL(i0, i1, ng, m, W, np, pa, pb, Z, ldz, D, ones, s);
        for (int g = 0; g < ng; g++) {
            int ntp = (np[g] + TP - 1) / TP;
            double *pt = part + poff[ng] * t + poff[g];
            for (int j = 0; j < m[g]; j++)
                for (int p = 0; p < np[g]; p++) {
                    VEC_REAL v = s[g][((IDX)(j / TW) * ntp + p / TP) * TW * TP
                                      + (j % TW) * TP + p % TP];
                    double h = 0.0;
                    for (int l = 0; l < LANES_REAL; l++) h += v[l];
                    pt[(size_t)j * np[g] + p] = h;
                }
        }
    }
    const REAL *const *Wg = W;
    for (int g = 0; g < ng; Wg += m[g], g++)
        for (int j = 0; j < m[g]; j++)
            for (int p = 0; p < np[g]; p++) {
                double h = 0.0;
                for (int t = 0; t < nt; t++)
                    h += part[poff[ng] * t + poff[g] + (IDX)j * np[g] + p];
                const REAL *za = pa[g][p] == D ? ones : Z + (IDX)pa[g][p] * ldz;
                const REAL *zb = pb[g][p] == D ? ones : Z + (IDX)pb[g][p] * ldz;
                const REAL *w = Wg[j];
                for (IDX i = cv; i < c; i++) h += (double)w[i] * za[i] * zb[i];
                out[g][(size_t)j * np[g] + p] += (REAL)h;
            }
    free(scr);
    free(part);
    return 0;
}
"""


_FUSED = r"""
/* ---- fused E-step / gate kernel (float64 only) ------------------------------------------ */
typedef int64_t VEC_I64 __attribute__((vector_size(VBYTES)));

static inline VEC_double splat_d(double x)
{
    VEC_double v;
    for (int l = 0; l < LANES_double; l++) v[l] = x;
    return v;
}

static inline VEC_double sel_d(VEC_I64 m, VEC_double a, VEC_double b)
{
    return (VEC_double)((m & (VEC_I64)a) | (~m & (VEC_I64)b));
}

/* exp(x) to about 1 ulp: x = q ln2 + s (Cody-Waite, |s| <= ln2 / 2), the Taylor polynomial of
   degree 13 (truncation below 2e-17 relative), then 2^q in two factors so that q down to -1077
   (subnormal results) stays exact. x > 709.78: inf; x < -745.2: 0; NaN: NaN. */
static inline VEC_double vexp_d(VEC_double x)
{
    const double magic = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    VEC_double xc = sel_d(x < splat_d(-746.0), splat_d(-746.0), x);
    xc = sel_d(xc > splat_d(710.0), splat_d(710.0), xc);
    xc = sel_d(xc == xc, xc, splat_d(0.0));
    VEC_double t = xc * 1.4426950408889634074 + magic;
    VEC_double qd = t - magic;
    VEC_I64 q = (VEC_I64)t - (VEC_I64)splat_d(magic);
    VEC_double s = xc - qd * 6.93147180369123816490e-01;
    s = s - qd * 1.90821492927058770002e-10;
    VEC_double p = splat_d(1.0 / 6227020800.0);
    p = p * s + 1.0 / 479001600.0;
    p = p * s + 1.0 / 39916800.0;
    p = p * s + 1.0 / 3628800.0;
    p = p * s + 1.0 / 362880.0;
    p = p * s + 1.0 / 40320.0;
    p = p * s + 1.0 / 5040.0;
    p = p * s + 1.0 / 720.0;
    p = p * s + 1.0 / 120.0;
    p = p * s + 1.0 / 24.0;
    p = p * s + 1.0 / 6.0;
    p = p * s + 0.5;
    VEC_double u = (s * s) * p + s + 1.0;
    VEC_I64 q1 = q >> 1, q2 = q - q1;
    VEC_double f1 = (VEC_double)((q1 + 1023) << 52), f2 = (VEC_double)((q2 + 1023) << 52);
    u = u * f1 * f2;
    u = sel_d(x > splat_d(709.782712893384), splat_d(__builtin_inf()), u);
    u = sel_d(x < splat_d(-745.2), splat_d(0.0), u);
    return sel_d(x == x, u, x);
}

/* log(x) for positive normal x (fdlibm's e_log.c reduction and polynomial, below 1 ulp);
   other arguments give NaN, except +inf which gives +inf. */
static inline VEC_double vlog_d(VEC_double x)
{
    VEC_I64 bits = (VEC_I64)x;
    VEC_I64 e = ((bits >> 52) & 0x7ff) - 1023;
    VEC_double m = (VEC_double)((bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
    VEC_I64 big = m > splat_d(1.4142135623730951);
    m = sel_d(big, m * 0.5, m);
    e = e - big; /* big is -1 where true */
    VEC_double dk = __builtin_convertvector(e, VEC_double);
    VEC_double f = m - 1.0;
    VEC_double s = f / (f + 2.0);
    VEC_double z = s * s, w = z * z;
    VEC_double t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01
                                                         + w * 1.531383769920937332e-01));
    VEC_double t2 = z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01
                    + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
    VEC_double R = t2 + t1;
    VEC_double hfsq = 0.5 * f * f;
    VEC_double r = dk * 6.93147180369123816490e-01
                   - ((hfsq - (s * (hfsq + R) + dk * 1.90821492927058770002e-10)) - f);
    VEC_I64 ok = (x >= splat_d(2.2250738585072014e-308)) & (x < splat_d(__builtin_inf()));
    r = sel_d(ok, r, splat_d(__builtin_nan("")));
    return sel_d(x == splat_d(__builtin_inf()), x, r);
}

/* The maximum of rows v[0..n), 0 where it is not finite (the log-sum-exp shift). */
static inline VEC_double finite_max_d(const VEC_double *v, int n)
{
    VEC_double mx = v[0];
    for (int j = 1; j < n; j++) mx = sel_d(v[j] > mx, v[j], mx);
    return sel_d((mx - mx) == splat_d(0.0), mx, splat_d(0.0));
}

void moebench_vexp_double(IDX n, const double *x, double *y)
{
    IDX i = 0;
    for (; i + LANES_double <= n; i += LANES_double) {
        VEC_double v = vexp_d(load_double(x + i));
        memcpy(y + i, &v, sizeof v);
    }
    for (; i < n; i++) {
        VEC_double v = vexp_d(splat_d(x[i]));
        y[i] = v[0];
    }
}

void moebench_vlog_double(IDX n, const double *x, double *y)
{
    IDX i = 0;
    for (; i + LANES_double <= n; i += LANES_double) {
        VEC_double v = vlog_d(load_double(x + i));
        memcpy(y + i, &v, sizeof v);
    }
    for (; i < n; i++) {
        VEC_double v = vlog_d(splat_d(x[i]));
        y[i] = v[0];
    }
}

#define FUSED_KMAX 16
#define F_POSTERIOR 1
#define F_EXPERTS 2
#define F_GATE 4
#define F_SYSTEM 8
#define F_HESSIAN 16

/* The weight rows of samples [0, len) of one block (a multiple of LANES_double, rows of Z and
   of the labels at stride ldz / readable up to len), in the order: gate gradient rows
   r_a - s p_a (a < k - 1, with F_SYSTEM); the objective row sum_i r_i log p_i (F_GATE) and the
   log-likelihood (F_POSTERIOR); the responsibilities (F_EXPERTS); the Hessian weights
   s p_a (delta_ab - p_b), a <= b < k - 1 (F_SYSTEM and F_HESSIAN). With rout/llout the
   posterior and the log-likelihood are also written to the rows rout[j] and llout
   (block-relative). */
static void fused_weights_d(int len, int k, int nf, const double *Z, IDX ldz, const double *AW,
                            const double *cst, const double *isg, const double *const *lab,
                            int flags, double *wrow, double *const *rout, double *llout)
{
    const int post = flags & F_POSTERIOR, gate = flags & F_GATE, sys = flags & F_SYSTEM;
    const int nl = post ? 2 * k : k, goff = post ? k : 0, km1 = k - 1;
    const int ngrad = sys ? km1 : 0, ntot = (gate ? 1 : 0) + (post ? 1 : 0);
    const int nr = (flags & F_EXPERTS) ? k : 0;
    double *wgrad = wrow, *wtot = wrow + (IDX)ngrad * BLK, *wr = wtot + (IDX)ntot * BLK;
    double *whw = wr + (IDX)nr * BLK;
    for (int i = 0; i < len; i += LANES_double) {
        VEC_double L[2 * FUSED_KMAX], eg[FUSED_KMAX], lg[FUSED_KMAX], R[FUSED_KMAX];
        VEC_double sg = splat_d(1.0), ll = splat_d(0.0);
        for (int j = 0; j < nl; j++) L[j] = splat_d(0.0);
        for (int a = 0; a < nf && (post || gate); a++) {
            VEC_double za = load_double(Z + (IDX)a * ldz + i);
            for (int j = 0; j < nl; j++) L[j] += AW[(IDX)j * nf + a] * za;
        }
        if (post || gate) {
            VEC_double mx = finite_max_d(L + goff, k);
            sg = splat_d(0.0);
            for (int j = 0; j < k; j++) {
                eg[j] = vexp_d(L[goff + j] - mx);
                sg += eg[j];
            }
            VEC_double lse = mx + vlog_d(sg);
            for (int j = 0; j < k; j++) lg[j] = L[goff + j] - lse;
        }
        if (post) {
            VEC_double y = load_double(Z + (IDX)nf * ldz + i), u[FUSED_KMAX];
            for (int j = 0; j < k; j++) {
                VEC_double z = (y - L[j]) * isg[j];
                u[j] = lg[j] + cst[j] - 0.5 * z * z;
            }
            VEC_double mu = finite_max_d(u, k), su = splat_d(0.0);
            for (int j = 0; j < k; j++) {
                R[j] = vexp_d(u[j] - mu);
                su += R[j];
            }
            ll = mu + vlog_d(su);
            VEC_double inv = 1.0 / su;
            for (int j = 0; j < k; j++) R[j] = R[j] * inv;
        } else {
            for (int j = 0; j < k; j++) R[j] = load_double(lab[j] + i);
        }
        if (rout)
            for (int j = 0; j < k; j++) memcpy(rout[j] + i, &R[j], sizeof R[j]);
        if (llout) memcpy(llout + i, &ll, sizeof ll);
        for (int j = 0; j < nr; j++) memcpy(wr + (IDX)j * BLK + i, &R[j], sizeof R[j]);
        int t = 0;
        if (gate) {
            VEC_double q = splat_d(0.0);
            for (int j = 0; j < k; j++)
                q += sel_d(R[j] > splat_d(0.0), R[j] * lg[j], splat_d(0.0));
            memcpy(wtot + i, &q, sizeof q);
            t = 1;
        }
        if (post) memcpy(wtot + (IDX)t * BLK + i, &ll, sizeof ll);
        if (sys && km1 > 0) {
            VEC_double s = R[0], P[FUSED_KMAX], Ps[FUSED_KMAX];
            for (int j = 1; j < k; j++) s += R[j];
            VEC_double inv_sg = 1.0 / sg;
            for (int a = 0; a < km1; a++) {
                P[a] = eg[a] * inv_sg;
                Ps[a] = s * P[a];
                VEC_double gr = R[a] - Ps[a];
                memcpy(wgrad + (IDX)a * BLK + i, &gr, sizeof gr);
            }
            int p = 0;
            for (int a = 0; a < km1 && (flags & F_HESSIAN); a++)
                for (int b = a; b < km1; b++, p++) {
                    VEC_double h = a == b ? Ps[a] * (1.0 - P[b]) : Ps[a] * (0.0 - P[b]);
                    memcpy(whw + (IDX)p * BLK + i, &h, sizeof h);
                }
        }
    }
}

/* One pass of the fused kernel over the c samples of the chunk Z ((nf + 1) rows at stride ldz:
   features, then targets): per block of BLK samples the weight rows of fused_weights_d, then
   their weighted sums by the register tiles of range_double. The groups (m[g] weight rows in
   the order above, products pa/pb over rows [0, nf + 1) and the row of ones nf + 1) and their
   accumulators out[g] are given by the caller. AW: the rows [A; W] (with F_POSTERIOR) or W,
   row-major with nf columns; lab: the k label rows (without F_POSTERIOR); rout, llout: the
   posterior rows and the log-likelihoods of the c samples, or NULL. The blocks are split into
   nthreads contiguous ranges, partial sums added in thread order in double. Returns 0, -1
   without memory, -2 when the groups do not match the flags or k is out of range. */
int moebench_fused_double(IDX c, int k, int nf, const double *Z, IDX ldz, const double *AW,
                          const double *cst, const double *isg, const double *const *lab,
                          int flags, double *const *rout, double *llout,
                          int ng, const int *m, const int *np, const int *const *pa,
                          const int *const *pb, double *const *out, const double *ones,
                          int nthreads)
{
    if (k < 1 || k > FUSED_KMAX || ng < 0 || ng > 8) return -2;
    if (!(flags & F_POSTERIOR) && !lab) return -2;
    if ((flags & F_EXPERTS) && !(flags & F_POSTERIOR) && !lab) return -2;
    if (c <= 0) return 0;
    const int km1 = k - 1, sys = flags & F_SYSTEM;
    const int nw = (sys ? km1 : 0) + ((flags & F_GATE) ? 1 : 0) + ((flags & F_POSTERIOR) ? 1 : 0)
                   + ((flags & F_EXPERTS) ? k : 0)
                   + (sys && (flags & F_HESSIAN) ? km1 * k / 2 : 0);
    int mt = 0;
    for (int g = 0; g < ng; g++) mt += m[g];
    if (mt != nw) return -2;
    const int D = nf + 1;
    IDX nblk = (c + BLK - 1) / BLK;
    int nt = nthreads < 1 ? 1 : nthreads;
    if (nblk / 2 < nt) nt = nblk / 2 > 1 ? (int)(nblk / 2) : 1;
    IDX toff[9], poff[9];
    toff[0] = poff[0] = 0;
    for (int g = 0; g < ng; g++) {
        toff[g + 1] = toff[g] + (IDX)((m[g] + TW - 1) / TW) * ((np[g] + TP - 1) / TP) * TW * TP;
        poff[g + 1] = poff[g] + (IDX)m[g] * np[g];
    }
    size_t per = (size_t)toff[ng] * sizeof(VEC_double);
    size_t wbytes = ((size_t)(nw > 0 ? nw : 1) * BLK * sizeof(double) + 63) / 64 * 64;
    size_t zbytes = ((size_t)(D + 2 * k + 1) * BLK * sizeof(double) + 63) / 64 * 64;
    size_t sbytes = (per + 63) / 64 * 64 + wbytes + zbytes;
    char *scr = aligned_alloc(64, sbytes * nt + 64);
    double *part = malloc(sizeof(double) * (poff[ng] * nt + 1));
    if (!scr || !part) { free(scr); free(part); return -1; }
    memset(scr, 0, sbytes * nt);
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static, 1)
#endif
    for (int t = 0; t < nt; t++) {
        char *mine = scr + sbytes * t;
        VEC_double *acc = (VEC_double *)mine;
        double *wrow = (double *)(mine + (per + 63) / 64 * 64);
        double *zpad = (double *)((char *)wrow + wbytes);
        VEC_double *sg[8];
        for (int g = 0; g < ng; g++) sg[g] = acc + toff[g];
        const double *wp[FUSED_KMAX * FUSED_KMAX];
        for (int r = 0; r < nw; r++) wp[r] = wrow + (IDX)r * BLK;
        IDX b0 = nblk * t / nt, b1 = nblk * (t + 1) / nt;
        for (IDX b = b0; b < b1; b++) {
            IDX s0 = b * BLK, len = c - s0 < BLK ? c - s0 : BLK;
            int lenv = (int)((len + LANES_double - 1) / LANES_double * LANES_double);
            const double *Zb = Z + s0;
            IDX ld = ldz;
            const double *labb[FUSED_KMAX];
            double *rb[FUSED_KMAX];
            for (int j = 0; j < k; j++) {
                labb[j] = lab ? lab[j] + s0 : NULL;
                rb[j] = rout ? rout[j] + s0 : NULL;
            }
            double *llb = llout ? llout + s0 : NULL;
            int tail = lenv != len;
            double *rt[FUSED_KMAX], *llt = llb;
            for (int j = 0; j < k; j++) rt[j] = rb[j];
            if (tail) { /* the last, partial block: zero-padded copies in and out */
                for (int r = 0; r < D; r++) {
                    memcpy(zpad + (IDX)r * BLK, Z + (IDX)r * ldz + s0, sizeof(double) * len);
                    memset(zpad + (IDX)r * BLK + len, 0, sizeof(double) * (lenv - len));
                }
                for (int j = 0; j < k; j++) {
                    if (lab) {
                        double *dst = zpad + (IDX)(D + j) * BLK;
                        memcpy(dst, labb[j], sizeof(double) * len);
                        memset(dst + len, 0, sizeof(double) * (lenv - len));
                        labb[j] = dst;
                    }
                    rt[j] = zpad + (IDX)(D + k + j) * BLK;
                }
                llt = zpad + (IDX)(D + 2 * k) * BLK;
                Zb = zpad;
                ld = BLK;
            }
            fused_weights_d(lenv, k, nf, Zb, ld, AW, cst, isg, lab ? labb : NULL, flags, wrow,
                            rout ? rt : NULL, llout ? llt : NULL);
            if (tail) {
                for (int r = 0; r < nw; r++)
                    memset(wrow + (IDX)r * BLK + len, 0, sizeof(double) * (lenv - len));
                for (int j = 0; j < k && rout; j++)
                    memcpy(rb[j], rt[j], sizeof(double) * len);
                if (llout) memcpy(llb, llt, sizeof(double) * len);
            }
            range_double(0, lenv, ng, m, wp, np, pa, pb, Zb, ld, D, ones, sg);
        }
        for (int g = 0; g < ng; g++) {
            int ntp = (np[g] + TP - 1) / TP;
            double *pt = part + poff[ng] * t + poff[g];
            for (int j = 0; j < m[g]; j++)
                for (int p = 0; p < np[g]; p++) {
                    VEC_double v = sg[g][((IDX)(j / TW) * ntp + p / TP) * TW * TP
                                         + (j % TW) * TP + p % TP];
                    double h = 0.0;
                    for (int l = 0; l < LANES_double; l++) h += v[l];
                    pt[(size_t)j * np[g] + p] = h;
                }
        }
    }
    for (int g = 0; g < ng; g++)
            for (IDX j = 0; j < (IDX)m[g] * np[g]; j++) {
                double h = 0.0;
                for (int t = 0; t < nt; t++) h += part[poff[ng] * t + poff[g] + j];
                out[g][j] += h;
            }
    free(scr);
    free(part);
    return 0;
}
"""


def _source() -> str:
    return (_HEAD + "".join(_TEMPLATE.replace("REAL", real) for real in ("double", "float"))
            + _FUSED)


_lock = threading.Lock()
_state: dict[str, object] = {}


def native_mode() -> str:
    """``"auto"`` or ``"never"``, from ``MOEBENCH_NATIVE`` (``0``/``false`` mean never).

    ``auto`` (the default) compiles the native Gram kernel on first use and falls back to the
    torch expression, with one warning, when that fails.
    """
    raw = os.environ.get("MOEBENCH_NATIVE")
    if raw is None:
        return "auto"
    raw = raw.strip().lower()
    mode = {"0": "never", "false": "never", "1": "auto", "true": "auto", "": "auto"}.get(raw, raw)
    if mode not in ("auto", "never"):
        raise ValueError(f"MOEBENCH_NATIVE={raw!r}: use auto or never")
    return mode


#: Flag sets tried in order: the machine's vector ISA and OpenMP threads where available.
_FLAG_SETS = (["-march=native", "-fopenmp"], ["-march=native"], ["-fopenmp"], [])
_BASE_FLAGS = ["-std=gnu11", "-O3", "-ffp-contract=fast", "-fPIC", "-shared"]


def _cpu_description() -> str:
    """What identifies the CPU a ``-march=native`` build is for."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as fh:
            keys = ("flags", "model name", "features", "cpu part", "cpu implementer",
                    "cpu architecture", "isa")
            parts += sorted({ln.strip() for ln in fh if ln.lower().startswith(keys)})
    except OSError:
        if sys.platform == "darwin":
            try:
                parts.append(subprocess.run(
                    ["sysctl", "-n", "machdep.cpu.brand_string", "machdep.cpu.features"],
                    capture_output=True, text=True, timeout=30).stdout)
            except (OSError, subprocess.SubprocessError):
                pass
    return "\n".join(parts)


def _machine_key(compiler: list[str]) -> str:
    """What a build depends on: the source, the flags, the compiler and the CPU."""
    h = hashlib.sha256(_source().encode())
    h.update(repr((_BASE_FLAGS, _FLAG_SETS)).encode())
    try:
        version = subprocess.run([*compiler, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    h.update(version.encode())
    h.update(_cpu_description().encode())
    return h.hexdigest()[:20]


class _CompilerMissing(RuntimeError):
    """The C compiler cannot be started."""


class _Unloadable(RuntimeError):
    """Every flag set compiled to a library that cannot be loaded (or did not compile)."""


def _build(compiler: list[str], target: Path) -> None:
    """Compile ``_source()`` into ``target``: the first flag set whose library compiles and loads,
    written under a temporary name, made read-only for others and renamed into place."""
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "moebench_sums.c"
        src.write_text(_source())
        errors = []
        for i, flags in enumerate(_FLAG_SETS):
            out = Path(tmp) / f"try{i}_{target.name}"
            cmd = [*compiler, *_BASE_FLAGS, *flags, str(src), "-o", str(out)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except OSError as exc:  # missing or not executable
                raise _CompilerMissing(f"cannot run the C compiler {compiler[0]!r}: {exc}") from exc
            if proc.returncode != 0:
                lines = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
                errors.append((lines or proc.stderr.strip().splitlines() or [""])[0])
                continue
            try:
                ctypes.CDLL(str(out))  # e.g. an OpenMP runtime the loader cannot find
            except OSError as exc:
                errors.append(f"{' '.join(flags) or 'no flags'}: built but not loadable: {exc}")
                continue
            os.chmod(out, 0o755)
            os.replace(out, target)
            return
        raise _Unloadable(f"{' '.join(compiler)} failed: {errors[0]}")


def _trusted(path: Path) -> bool:
    """A file or folder that only this user can have written (always true off POSIX)."""
    if not hasattr(os, "getuid"):
        return True
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _open_library(compiler: list[str], folder: Path, name: str) -> ctypes.CDLL:
    """Load ``folder/name``, building it when missing, foreign or unloadable.

    Raises ``PermissionError`` when ``folder`` could be written by other users.
    """
    if folder.exists() and not _trusted(folder):
        raise PermissionError(f"{folder} belongs to another user or is writable by others")
    target = folder / name
    if target.exists():
        if _trusted(target):
            try:
                return ctypes.CDLL(str(target))
            except OSError:  # truncated or foreign: build it again
                pass
        target.unlink(missing_ok=True)
    _build(compiler, target)
    return ctypes.CDLL(str(target))


def _load_library(compiler: list[str]) -> ctypes.CDLL:
    """The built library from the moebench cache or, where that is not writable (or could be
    written by others), from a private folder of the temporary directory."""
    from moebench.datafiles import cache_dir

    name = f"moebench_sums_{_machine_key(compiler)}.so"
    try:
        return _open_library(compiler, cache_dir() / "native", name)
    except (_CompilerMissing, _Unloadable):
        raise
    except OSError:  # a read-only, full or shared cache
        pass
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    private = Path(tempfile.gettempdir()) / f"moebench-native-{uid}"
    private.mkdir(mode=0o700, exist_ok=True)
    return _open_library(compiler, private, name)


def _compiler() -> list[str]:
    """``$CC`` (split like a shell would: ``ccache gcc`` works), else ``cc`` or ``gcc``."""
    cc = os.environ.get("CC")
    if cc and cc.strip():
        return shlex.split(cc)
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        raise _CompilerMissing("no C compiler (cc) on PATH")
    return [found]


def _load() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; ``None`` when unavailable."""
    if "lib" in _state:  # loaded (or found unavailable) once and for all
        return _state["lib"]  # type: ignore[return-value]
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib = None
        try:
            lib = _load_library(_compiler())
            for real in ("double", "float"):
                fn = getattr(lib, f"moebench_sums_{real}")
                ptr = ctypes.c_void_p
                fn.argtypes = [ctypes.c_longlong, ctypes.c_int, ptr, ptr, ptr, ptr, ptr, ptr,
                               ptr, ctypes.c_longlong, ctypes.c_int, ptr, ctypes.c_int]
                fn.restype = ctypes.c_int
            ptr = ctypes.c_void_p
            lib.moebench_fused_double.argtypes = [
                ctypes.c_longlong, ctypes.c_int, ctypes.c_int, ptr, ctypes.c_longlong, ptr, ptr,
                ptr, ptr, ctypes.c_int, ptr, ptr, ctypes.c_int, ptr, ptr, ptr, ptr, ptr, ptr,
                ctypes.c_int]
            lib.moebench_fused_double.restype = ctypes.c_int
            for name in ("moebench_vexp_double", "moebench_vlog_double"):
                getattr(lib, name).argtypes = [ctypes.c_longlong, ptr, ptr]
                getattr(lib, name).restype = None
        except Exception as exc:  # no compiler, unwritable caches, foreign platform
            warnings.warn(
                f"moebench's native weighted-sums kernel is unavailable ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); the torch expression is used "
                "instead (slower; set MOEBENCH_NATIVE=never to skip the attempt)",
                RuntimeWarning, stacklevel=2,
            )
            lib = None
        _state["lib"] = lib
        return lib


def native_available() -> bool:
    """Whether :func:`weighted_sums` runs the compiled kernel for CPU tensors."""
    return native_mode() != "never" and _load() is not None


def native_supported(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether :func:`weighted_sums` runs the compiled kernel for tensors like these."""
    if not isinstance(device, torch.device):
        device = torch.device(device)
    return (device.type == "cpu" and dtype in (torch.float64, torch.float32)
            and native_available())


@dataclass(frozen=True)
class Pairs:
    """Which products ``z_a z_b`` of a chunk's rows :func:`weighted_sums` sums against.

    Attributes
    ----------
    a, b
        Row indices per product; the index ``D`` (one past the chunk's ``D`` rows) stands for a
        row of ones, so ``(a, D)`` gives plain weighted sums of row ``a`` and ``(D, D)`` the sums
        of the weights themselves.
    """

    a: tuple[int, ...]
    b: tuple[int, ...]

    @classmethod
    def packed(cls, D: int, *, ones: bool = False) -> Pairs:
        """The upper triangle ``a <= b < D`` row by row, then ``(D, D)`` with ``ones``."""
        return _packed_pairs(cls, D, ones)

    @classmethod
    def linear(cls, rows: int, D: int) -> Pairs:
        """``(a, D)`` for ``a < rows`` then ``(D, D)``: sums of ``w z_a``, then of ``w``."""
        return cls((*range(rows), D), (D,) * (rows + 1))

    def __len__(self) -> int:
        return len(self.a)

    def runs(self) -> list[tuple[int, int, int, int]]:
        """The products as slices ``z[a0:a1] * z[b0:b1]``: runs of consecutive pairs in which
        one index stays fixed (a slice of length one) and the other counts up."""
        out: list[tuple[int, int, int, int]] = []
        i, n = 0, len(self.a)
        while i < n:
            a, b = self.a[i], self.b[i]
            j = i + 1
            if j < n and self.a[j] == a and self.b[j] == b + 1:
                while j < n and self.a[j] == a and self.b[j] == b + (j - i):
                    j += 1
                out.append((a, a + 1, b, b + j - i))
            else:
                while j < n and self.b[j] == b and self.a[j] == a + (j - i):
                    j += 1
                out.append((a, a + j - i, b, b + 1))
            i = j
        return out

    def indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``int32`` index tensors on ``device`` (cached)."""
        key = (self, str(device))
        hit = _INDICES.get(key)
        if hit is None:
            hit = _INDICES[key] = (torch.tensor(self.a, dtype=torch.int32, device=device),
                                   torch.tensor(self.b, dtype=torch.int32, device=device))
        return hit


@functools.lru_cache(maxsize=32)
def _packed_pairs(cls: type[Pairs], D: int, ones: bool) -> Pairs:
    """:meth:`Pairs.packed`, built once per ``D``: a pass over ``D = 786`` gate inputs would
    otherwise spend a third of its time building the 309,000 index pairs in Python."""
    upper = torch.triu_indices(D, D)
    a, b = upper[0].tolist(), upper[1].tolist()
    if ones:
        a.append(D)
        b.append(D)
    return cls(tuple(a), tuple(b))

_INDICES: dict[tuple[Pairs, str], tuple[torch.Tensor, torch.Tensor]] = {}
_ONES: dict[tuple[torch.dtype, str], torch.Tensor] = {}


def _ones(n: int, like: torch.Tensor) -> torch.Tensor:
    key = (like.dtype, str(like.device))
    buf = _ONES.get(key)
    if buf is None or buf.numel() < n:
        buf = _ONES[key] = torch.ones(max(n, 1 << 16), dtype=like.dtype, device=like.device)
    return buf[:n]


def weighted_sums_torch(weights: torch.Tensor, Z: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """``out[j, p] = sum_c weights[j, c] z_{a_p}[c] z_{b_p}[c]``, materialising the products.

    The reference that :func:`weighted_sums` must equal, and its path on other devices.

    Parameters
    ----------
    weights
        ``(m, c)`` weight rows.
    Z
        ``(D, c)`` chunk.
    pairs
        The products (index ``D``: a row of ones).

    Returns
    -------
    torch.Tensor
        ``(m, len(pairs))``.
    """
    Zx = torch.cat([Z, _ones(Z.shape[1], Z)[None]])
    return weights @ torch.cat([Zx[a0:a1] * Zx[b0:b1] for a0, a1, b0, b1 in pairs.runs()]).T


#: A term of :func:`weighted_sums`: ``(weights, pairs)``, the weights an ``(m, c)`` tensor or a
#: sequence of them whose rows are taken in order.
Term = tuple["torch.Tensor | Sequence[torch.Tensor]", Pairs]
_MAX_TERMS = 8


def _rows(weights: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [weights] if isinstance(weights, torch.Tensor) else list(weights)


def weighted_sums(Z: torch.Tensor, terms: Sequence[Term],
                  out: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """Weighted sums of products of a chunk's rows, for several terms in one pass over ``Z``.

    Parameters
    ----------
    Z
        ``(D, c)`` chunk (rows may be strided views of a larger buffer).
    terms
        ``(weights, pairs)`` per term: ``(m, c)`` weight rows (or a sequence of such tensors,
        their rows taken in order, so that rows from several buffers form one term) and the
        products ``z_a z_b`` to weight (:class:`Pairs`; index ``D`` is a row of ones). At most
        8 terms.
    out
        Accumulators ``(m, len(pairs))`` per term (``None`` entries, or no list: zeros); the sums
        are added to them.

    Returns
    -------
    list of torch.Tensor
        Per term ``out[t][j, p] += sum_c weights[j, c] z_{a_p}[c] z_{b_p}[c]``.

    Notes
    -----
    CPU float64/float32 tensors go through the compiled kernel (threads:
    ``torch.get_num_threads()``), which reads each block of ``Z`` once for all terms; everything
    else through :func:`weighted_sums_torch`.
    """
    D, c = Z.shape
    if len(terms) > _MAX_TERMS:
        raise ValueError(f"at most {_MAX_TERMS} terms per call, got {len(terms)}")
    outs: list[torch.Tensor] = []
    parts: list[list[torch.Tensor]] = []
    for t, (weights, pairs) in enumerate(terms):
        rows = _rows(weights)
        for w in rows:
            if w.ndim != 2 or w.shape[1] != c:
                raise ValueError(f"term {t}: weights of shape {tuple(w.shape)}, Z has {c} columns")
        if max(pairs.a + pairs.b, default=0) > D or min(pairs.a + pairs.b, default=0) < 0:
            raise ValueError(f"term {t}: pairs index rows {min(pairs.a + pairs.b)} to "
                             f"{max(pairs.a + pairs.b)}; Z has {D} rows (+ the row of ones)")
        m = sum(w.shape[0] for w in rows)
        acc = out[t] if out is not None and out[t] is not None else None
        if acc is not None and tuple(acc.shape) != (m, len(pairs)):
            raise ValueError(f"term {t}: out has shape {tuple(acc.shape)}, the sums "
                             f"{(m, len(pairs))}")
        outs.append(rows[0].new_zeros(m, len(pairs)) if acc is None else acc)
        parts.append(rows)
    fn = _native_fn(Z, [w for rows in parts for w in rows], outs)
    if fn is None:
        for rows, (_, pairs), acc in zip(parts, terms, outs, strict=True):
            acc.add_(weighted_sums_torch(torch.cat(rows), Z, pairs))
        return outs
    if Z.stride(1) != 1:
        Z = Z.contiguous()
    parts = [[w if w.stride(1) == 1 else w.contiguous() for w in rows] for rows in parts]
    item = Z.element_size()
    row_ptrs = [w.data_ptr() + j * w.stride(0) * item
                for rows in parts for w in rows for j in range(w.shape[0])]
    ng = len(terms)
    idx = [pairs.indices(Z.device) for _, pairs in terms]
    ones = _ones(c, Z)  # held until the call returns (another thread may grow the cache)
    ptr = ctypes.c_void_p
    rc = fn(
        c, ng,
        (ctypes.c_int * ng)(*[sum(w.shape[0] for w in rows) for rows in parts]),
        (ptr * len(row_ptrs))(*row_ptrs),
        (ctypes.c_int * ng)(*[len(pairs) for _, pairs in terms]),
        (ptr * ng)(*[a.data_ptr() for a, _ in idx]),
        (ptr * ng)(*[b.data_ptr() for _, b in idx]),
        (ptr * ng)(*[o.data_ptr() for o in outs]),
        Z.data_ptr(), Z.stride(0), D, ones.data_ptr(), torch.get_num_threads(),
    )
    if rc == -1:
        raise MemoryError("moebench's native kernel could not allocate its scratch memory")
    if rc != 0:
        raise RuntimeError(f"moebench's native kernel refused the call (code {rc})")
    return outs


def _native_fn(Z: torch.Tensor, weights: list[torch.Tensor], outs: list[torch.Tensor]) -> Any:
    """The compiled function for these tensors, or ``None`` (torch expression instead)."""
    dt = Z.dtype
    tensors = [Z, *weights, *outs]
    if (any(t.dtype != dt or t.device != Z.device or t.requires_grad for t in tensors)
            or any(not o.is_contiguous() for o in outs) or not native_supported(Z.device, dt)):
        return None
    name = "moebench_sums_double" if dt == torch.float64 else "moebench_sums_float"
    return getattr(_load(), name)


#: Most experts the fused kernel takes (its per-sample rows live in registers and on the stack).
FUSED_MAX_EXPERTS = 16
_F_POSTERIOR, _F_EXPERTS, _F_GATE, _F_SYSTEM, _F_HESSIAN = 1, 2, 4, 8, 16
_BLK = 256  # the C source's BLK: the row of ones passed along covers at least one block


def fused_supported(device: torch.device | str, dtype: torch.dtype, k: int) -> bool:
    """Whether :class:`FusedPass` runs for chunks like these (CPU float64, ``k <= 16``)."""
    return (dtype == torch.float64 and 1 <= k <= FUSED_MAX_EXPERTS
            and native_supported(device, dtype))


def _elementwise(name: str, x: torch.Tensor) -> torch.Tensor:
    if not fused_supported(x.device, x.dtype, 1):
        raise RuntimeError("the native kernels need CPU float64 tensors and a C compiler")
    x = x.contiguous()
    y = torch.empty_like(x)
    getattr(_load(), name)(x.numel(), x.data_ptr(), y.data_ptr())
    return y


def vector_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` by the fused kernel's vectorised exponential (within 1 ulp; for the tests).

    Parameters
    ----------
    x
        A CPU float64 tensor.

    Returns
    -------
    torch.Tensor
        ``exp(x)``, same shape.
    """
    return _elementwise("moebench_vexp_double", x)


def vector_log(x: torch.Tensor) -> torch.Tensor:
    """``log(x)`` by the fused kernel's vectorised logarithm (within 1 ulp for positive normal
    ``x``, NaN for zero, negative and subnormal ``x``; for the tests).

    Parameters
    ----------
    x
        A CPU float64 tensor.

    Returns
    -------
    torch.Tensor
        ``log(x)``, same shape.
    """
    return _elementwise("moebench_vlog_double", x)


class FusedPass:
    """One native call per chunk for the E-step and gate kernel and its weighted sums.

    Per block of 256 samples the C kernel computes in registers what the torch chunk kernel of
    :mod:`~moebench_plugins.models.kernels` computes as ``(k, c)`` temporaries (logits, gate
    log-softmax, Gaussian log-densities, responsibilities, log-likelihood, gate gradient rows and
    Hessian weights) and sums them against the chunk with the register tiles of
    :func:`weighted_sums`. Its sums, per :attr:`groups` entry:

    ``grad``
        ``(k - 1, nf)``: ``sum_c (r_a - s p_a) f`` (with ``system``).
    ``totals``
        ``(t, 1)``: ``sum_c sum_i r_i log p_i`` (with ``gate``), then the log-likelihood (with
        ``posterior``).
    ``experts``
        ``(k, (nf + 1)(nf + 2) / 2 + 1)``: the Grams of ``[f; y]`` weighted by the
        responsibilities, packed as ``Pairs.packed(nf + 1, ones=True)`` (with ``expert_stats``).
    ``hessian``
        ``(k (k - 1) / 2, nf (nf + 1) / 2)``: the Grams of ``f`` weighted by
        ``s p_a (delta_ab - p_b)``, ``a <= b < k - 1``, packed as ``Pairs.packed(nf)`` (with
        ``system`` and ``hessian``).

    Parameters
    ----------
    k, nf
        Experts and chunk features (rows of ``f``; the chunk has one more row, ``y``).
    posterior
        Compute the posterior from linear experts (else the labels are given).
    expert_stats, gate, system, hessian
        What to accumulate, as :class:`~moebench_plugins.models.kernels.KernelSpec`
        (``hessian``: its ``gate_hessian``).
    """

    def __init__(self, k: int, nf: int, *, posterior: bool, expert_stats: bool, gate: bool,
                 system: bool, hessian: bool = True):
        if not 1 <= k <= FUSED_MAX_EXPERTS:
            raise ValueError(f"the fused kernel takes 1 to {FUSED_MAX_EXPERTS} experts, got {k}")
        self.k, self.nf, self.posterior = k, nf, posterior
        system = system and gate and k > 1
        ones = nf + 1
        groups: list[tuple[str, int, Pairs]] = []
        if system:
            groups.append(("grad", k - 1, Pairs(tuple(range(nf)), (ones,) * nf)))
        n_totals = int(gate) + int(posterior)
        if n_totals:
            groups.append(("totals", n_totals, Pairs((ones,), (ones,))))
        if expert_stats:
            groups.append(("experts", k, Pairs.packed(nf + 1, ones=True)))
        if system and hessian:
            groups.append(("hessian", k * (k - 1) // 2, Pairs.packed(nf)))
        self.groups = groups
        self.flags = ((_F_POSTERIOR if posterior else 0) | (_F_EXPERTS if expert_stats else 0)
                      | (_F_GATE if gate else 0) | (_F_SYSTEM if system else 0)
                      | (_F_HESSIAN if hessian else 0))
        ng = len(groups)
        idx = [pairs.indices(torch.device("cpu")) for _, _, pairs in groups]
        self._keep = idx
        ptr = ctypes.c_void_p
        self._m = (ctypes.c_int * max(ng, 1))(*[m for _, m, _ in groups])
        self._np = (ctypes.c_int * max(ng, 1))(*[len(p) for _, _, p in groups])
        self._pa = (ptr * max(ng, 1))(*[a.data_ptr() for a, _ in idx])
        self._pb = (ptr * max(ng, 1))(*[b.data_ptr() for _, b in idx])
        sizes = [m * len(pairs) for _, m, pairs in groups]
        self._offsets = [sum(sizes[:g]) for g in range(ng)]
        self._size = sum(sizes)
        self._views = [(name, o, m, len(pairs))
                       for (name, m, pairs), o in zip(groups, self._offsets, strict=True)]
        self._out = ptr * max(ng, 1)

    def new_sums(self, like: torch.Tensor) -> torch.Tensor:
        """Zeroed accumulators of every group, one flat buffer (:meth:`views` cuts it)."""
        return like.new_zeros(self._size)

    def views(self, sums: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ``(m, len(pairs))`` accumulators of the groups in ``sums``, by name."""
        base = sums.storage_offset()
        return {name: sums.as_strided((m, p), (p, 1), base + o) for name, o, m, p in self._views}

    def __call__(self, Z: torch.Tensor, AW: torch.Tensor, const: torch.Tensor,
                 inv_sigma: torch.Tensor, labels: torch.Tensor | None,
                 sums: torch.Tensor, R_out: torch.Tensor | None = None,
                 loglik_out: torch.Tensor | None = None) -> None:
        """Add one chunk's sums to ``sums`` (:meth:`new_sums`).

        Parameters
        ----------
        Z
            ``(nf + 1, c)`` chunk ``[f; y]``, CPU float64, rows contiguous.
        AW
            ``[A; W]`` (posterior) or ``W``, ``(2k or k, nf)``.
        const, inv_sigma
            ``-log(2 pi) / 2 - log sigma_i`` and ``1 / sigma_i``, ``(k,)`` (posterior only).
        labels
            ``(k, c)`` given responsibilities, rows contiguous (without the posterior).
        sums
            The accumulators (:meth:`new_sums`).
        R_out, loglik_out
            ``(k, c)`` and ``(c,)`` outputs of the posterior and the log-likelihoods, rows
            contiguous, or ``None``.
        """
        k, c = self.k, Z.shape[1]
        if Z.shape[0] != self.nf + 1 or Z.stride(1) != 1 or Z.dtype != torch.float64:
            raise ValueError(f"Z must be ({self.nf + 1}, c) float64 with contiguous rows")
        for t in (labels, R_out, loglik_out):
            if t is not None and (t.stride(-1) != 1 or t.shape[-1] != c or t.dtype != Z.dtype):
                raise ValueError("labels and outputs must be float64 rows of the chunk's length")
        if (labels is None) == (not self.posterior):
            raise ValueError("labels are needed exactly when the posterior is not computed")
        if sums.shape != (self._size,) or not sums.is_contiguous() or sums.dtype != Z.dtype:
            raise ValueError(f"sums must be the flat buffer of new_sums(), ({self._size},)")
        logits = self.flags & (_F_POSTERIOR | _F_GATE)
        need = (2 * k if self.posterior else k) * self.nf if logits else 0
        if AW.numel() < need or (self.posterior and min(const.numel(), inv_sigma.numel()) < k):
            raise ValueError("AW, const or inv_sigma are too small for the pass")
        if not AW.is_contiguous():
            AW = AW.contiguous()
        if not (const.is_contiguous() and inv_sigma.is_contiguous()):
            const, inv_sigma = const.contiguous(), inv_sigma.contiguous()
        ptr = ctypes.c_void_p
        item = Z.element_size()

        def rows(t: torch.Tensor | None) -> Any:
            if t is None:
                return None
            base, step = t.data_ptr(), t.stride(0) * item
            return (ptr * k)(*[base + j * step for j in range(k)])

        ones = _ONES.get((Z.dtype, str(Z.device)))
        if ones is None or ones.numel() < max(c, _BLK):
            ones = _ones(max(c, _BLK), Z)
        base = sums.data_ptr()
        rc = _load().moebench_fused_double(
            c, k, self.nf, Z.data_ptr(), Z.stride(0), AW.data_ptr(), const.data_ptr(),
            inv_sigma.data_ptr(), rows(labels), self.flags, rows(R_out),
            None if loglik_out is None else loglik_out.data_ptr(), len(self.groups), self._m,
            self._np, self._pa, self._pb, self._out(*[base + o * item for o in self._offsets]),
            ones.data_ptr(), torch.get_num_threads())
        if rc == -1:
            raise MemoryError("moebench's fused kernel could not allocate its scratch memory")
        if rc != 0:
            raise RuntimeError(f"moebench's fused kernel refused the call (code {rc})")
