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
