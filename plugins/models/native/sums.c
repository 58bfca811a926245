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
