// Included by elementwise.c once per instruction-set path, after it defines the vector vocabulary of that path:
//   VF (W floats), EW_W, EW_SFX(name), VLOAD/VSTORE, VLOADN/VSTOREN (the first n < W lanes, the rest zero),
//   VKEEPN (zero the lanes >= n), VSET, VADD/VSUB/VMUL/VDIV, VFMA(a, b, c) = a*b + c, VFNMA(a, b, c) = c - a*b,
//   VMIN_X(c, x) / VMAX_X(c, x) (x when x is NaN), VSEL_LT(a, b, t, f) / VSEL_GE(a, b, t, f) (per lane a < b
//   (a >= b) ? t : f, false for NaN), VROUND_EXP (the exponent scaling of ew_exp), VHSUM / VHMAX
//   (horizontal, fixed order; VHMAX ignores NaN lanes), and DACC with dacc_zero / dacc_add / dacc_add_prod /
//   dacc_add_sqdiff / dacc_sum (W-lane double accumulators, summed in lane order at the end).
// Element-wise loops run the same vector code on a partial last group (zero-padded), so an element's result does
// not depend on where a caller's chunk starts. Not a header to include anywhere else.

#define EW_INLINE static inline __attribute__((always_inline))

// ---- exp ------------------------------------------------------------------------------------------------------

/// e^x: x = n*ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2), e^r by its degree-7 Taylor polynomial, then two
/// exact power-of-two scalings so that results near overflow and in the subnormal range are right.
EW_INLINE VF EW_SFX(ew_exp)(VF x) {
    const VF log2e = VSET(1.44269504088896340736f);
    const VF ln2hi = VSET(0.693359375f);            // 355/512: n*ln2hi is exact for |n| < 2^15
    const VF ln2lo = VSET(-2.12194440054690583e-4f);
    const VF magic = VSET(12582912.0f);             // 1.5*2^23: adding it rounds to an integer
    VF xc = VMIN_X(VSET(89.0f), x);
    xc = VMAX_X(VSET(-104.0f), xc);
    const VF t = VFMA(xc, log2e, magic);
    const VF nf = VSUB(t, magic);
    VF r = VFNMA(nf, ln2hi, xc);
    r = VFNMA(nf, ln2lo, r);
    VF p = VSET(1.0f / 5040);
    p = VFMA(p, r, VSET(1.0f / 720));
    p = VFMA(p, r, VSET(1.0f / 120));
    p = VFMA(p, r, VSET(1.0f / 24));
    p = VFMA(p, r, VSET(1.0f / 6));
    p = VFMA(p, r, VSET(0.5f));
    p = VFMA(p, r, VSET(1.0f));
    p = VFMA(p, r, VSET(1.0f));
    return VROUND_EXP(p, t, magic);
}

// ---- the per-element formulas (PyTorch's order; see Kernels/Activations.swift) ---------------------------------

#define EW_SQRT_2_OVER_PI 0.797884560802865355879892119868763737f
#define EW_GELU_KAPPA 0.044715f

/// gelu_new: 0.5*x*(1 + tanh u) = x / (1 + exp(-2u)), u = sqrt(2/pi) * (x + 0.044715 x^3).
EW_INLINE VF EW_SFX(ew_gelu_tanh)(VF x) {
    const VF u = VMUL(VSET(EW_SQRT_2_OVER_PI), VFMA(VSET(EW_GELU_KAPPA), VMUL(VMUL(x, x), x), x));
    return VDIV(x, VADD(VSET(1.0f), EW_SFX(ew_exp)(VMUL(VSET(-2.0f), u))));
}

/// d gelu_new / dx = s + 2 x s (e s) u', s = sigmoid(2u), e = exp(-2u) (so e*s = 1 - s without cancellation).
EW_INLINE VF EW_SFX(ew_gelu_tanh_grad)(VF x) {
    const VF x2 = VMUL(x, x);
    const VF u = VMUL(VSET(EW_SQRT_2_OVER_PI), VFMA(VSET(EW_GELU_KAPPA), VMUL(x2, x), x));
    const VF e = EW_SFX(ew_exp)(VMUL(VSET(-2.0f), u));
    const VF s = VDIV(VSET(1.0f), VADD(VSET(1.0f), e));
    const VF du = VMUL(VSET(EW_SQRT_2_OVER_PI), VFMA(VSET(3.0f * EW_GELU_KAPPA), x2, VSET(1.0f)));
    return VFMA(VMUL(VMUL(VMUL(VSET(2.0f), x), s), VMUL(e, s)), du, s);
}

// ---- erf and the exact GELU ------------------------------------------------------------------------------------

/// erf(x) in two pieces of z = |x| (coefficients: scripts/fit_erf.py, a minimax fit in double rounded to float):
/// z < 1.25: erf = z + z * P(z^2) (the leading 1 kept out of P so its rounding does not count);
/// 1.25 <= z < 3.925: erf = 1 - exp(Q(z - 2.5)), Q ~ log(erfc) (erfc < 0.08 there, so its relative error barely
/// reaches erf); z >= 3.925: 1 (erf rounds to 1 from 3.9193 on). The sign of x is put back last, so erf is odd and
/// erf(-0) = -0. Within 2 ulp of erf over the float range (tests: ElementwiseSIMDTests). NaN stays NaN.
EW_INLINE VF EW_SFX(ew_erf)(VF x) {
    const VF z = VMAX_X(VSUB(VSET(0.0f), x), x);
    const VF z2 = VMUL(z, z);
    VF p = VSET(-7.641892807e-06f);
    p = VFMA(p, z2, VSET(1.043190350e-04f));
    p = VFMA(p, z2, VSET(-8.347826079e-04f));
    p = VFMA(p, z2, VSET(5.209906958e-03f));
    p = VFMA(p, z2, VSET(-2.686074190e-02f));
    p = VFMA(p, z2, VSET(1.128368825e-01f));
    p = VFMA(p, z2, VSET(-3.761263192e-01f));
    p = VFMA(p, z2, VSET(1.283791661e-01f));
    const VF small = VFMA(z, p, z);
    const VF t = VSUB(z, VSET(2.5f));
    VF q = VSET(-1.084265620e-07f);
    q = VFMA(q, t, VSET(1.672768803e-06f));
    q = VFMA(q, t, VSET(-1.281872392e-05f));
    q = VFMA(q, t, VSET(7.719464338e-05f));
    q = VFMA(q, t, VSET(-4.208994214e-04f));
    q = VFMA(q, t, VSET(2.165370621e-03f));
    q = VFMA(q, t, VSET(-1.085807942e-02f));
    q = VFMA(q, t, VSET(-9.438937306e-01f));
    q = VFMA(q, t, VSET(-5.352680683e+00f));
    q = VFMA(q, t, VSET(-7.806815147e+00f));
    const VF large = VSUB(VSET(1.0f), EW_SFX(ew_exp)(q));
    const VF r = VSEL_LT(z, VSET(1.25f), small, VSEL_GE(z, VSET(3.925f), VSET(1.0f), large));
    return VSEL_LT(x, VSET(0.0f), VSUB(VSET(0.0f), r), r);
}

#define EW_SQRT_HALF 0.707106781186547524400844362104849039f
#define EW_INV_SQRT_2PI 0.398942280401432677939946059934381868f

/// Exact GELU, torch's order: x * 0.5 * (1 + erf(x * sqrt(1/2))).
EW_INLINE VF EW_SFX(ew_gelu)(VF x) {
    return VMUL(VMUL(x, VSET(0.5f)), VADD(VSET(1.0f), EW_SFX(ew_erf)(VMUL(x, VSET(EW_SQRT_HALF)))));
}

/// d gelu / dx = cdf + x * pdf, cdf = 0.5 * (1 + erf(x sqrt(1/2))), pdf = exp(-x^2 / 2) / sqrt(2 pi).
EW_INLINE VF EW_SFX(ew_gelu_grad)(VF x) {
    const VF cdf = VMUL(VSET(0.5f), VADD(VSET(1.0f), EW_SFX(ew_erf)(VMUL(x, VSET(EW_SQRT_HALF)))));
    const VF pdf = VMUL(VSET(EW_INV_SQRT_2PI), EW_SFX(ew_exp)(VMUL(VMUL(x, x), VSET(-0.5f))));
    return VFMA(x, pdf, cdf);
}

/// silu: x / (1 + exp(-x)).
EW_INLINE VF EW_SFX(ew_silu)(VF x) {
    return VDIV(x, VADD(VSET(1.0f), EW_SFX(ew_exp)(VSUB(VSET(0.0f), x))));
}

/// d silu / dx = s * (1 + x * (1 - s)), s = sigmoid(x).
EW_INLINE VF EW_SFX(ew_silu_grad)(VF x) {
    const VF s = VDIV(VSET(1.0f), VADD(VSET(1.0f), EW_SFX(ew_exp)(VSUB(VSET(0.0f), x))));
    return VMUL(s, VFMA(x, VSUB(VSET(1.0f), s), VSET(1.0f)));
}

// ---- element-wise loops ---------------------------------------------------------------------------------------

static void EW_SFX(ew_exp_n)(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + EW_W <= n; i += EW_W) VSTORE(y + i, EW_SFX(ew_exp)(VLOAD(x + i)));
    if (i < n) VSTOREN(y + i, EW_SFX(ew_exp)(VLOADN(x + i, n - i)), n - i);
}

static void EW_SFX(ew_erf_n)(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + EW_W <= n; i += EW_W) VSTORE(y + i, EW_SFX(ew_erf)(VLOAD(x + i)));
    if (i < n) VSTOREN(y + i, EW_SFX(ew_erf)(VLOADN(x + i, n - i)), n - i);
}

static void EW_SFX(ew_act_forward)(int act, float *out, const float *inp, int64_t n) {
    int64_t i = 0;
    if (act == PK_EW_GELU) {
        for (; i + EW_W <= n; i += EW_W) VSTORE(out + i, EW_SFX(ew_gelu)(VLOAD(inp + i)));
        if (i < n) VSTOREN(out + i, EW_SFX(ew_gelu)(VLOADN(inp + i, n - i)), n - i);
    } else if (act == PK_EW_GELU_TANH) {
        for (; i + EW_W <= n; i += EW_W) VSTORE(out + i, EW_SFX(ew_gelu_tanh)(VLOAD(inp + i)));
        if (i < n) VSTOREN(out + i, EW_SFX(ew_gelu_tanh)(VLOADN(inp + i, n - i)), n - i);
    } else {
        for (; i + EW_W <= n; i += EW_W) VSTORE(out + i, EW_SFX(ew_silu)(VLOAD(inp + i)));
        if (i < n) VSTOREN(out + i, EW_SFX(ew_silu)(VLOADN(inp + i, n - i)), n - i);
    }
}

EW_INLINE VF EW_SFX(ew_act_grad)(int act, VF x) {
    if (act == PK_EW_GELU) return EW_SFX(ew_gelu_grad)(x);
    if (act == PK_EW_GELU_TANH) return EW_SFX(ew_gelu_tanh_grad)(x);
    return EW_SFX(ew_silu_grad)(x);
}

/// dinp += dout * act'(inp), or dinp = dout * act'(inp) (one rounding, as the sum onto zeros) with PK_EW_ACT_SET.
static void EW_SFX(ew_act_backward)(int act, float *dinp, const float *inp, const float *dout, int64_t n) {
    const int set = (act & PK_EW_ACT_SET) != 0;
    act &= ~PK_EW_ACT_SET;
    int64_t i = 0;
    if (set) {
        for (; i + EW_W <= n; i += EW_W)
            VSTORE(dinp + i, VFMA(VLOAD(dout + i), EW_SFX(ew_act_grad)(act, VLOAD(inp + i)), VSET(0.0f)));
    } else {
        for (; i + EW_W <= n; i += EW_W)
            VSTORE(dinp + i, VFMA(VLOAD(dout + i), EW_SFX(ew_act_grad)(act, VLOAD(inp + i)), VLOAD(dinp + i)));
    }
    if (i < n) {
        const int64_t k = n - i;
        const VF base = set ? VSET(0.0f) : VLOADN(dinp + i, k);
        VSTOREN(dinp + i, VFMA(VLOADN(dout + i, k), EW_SFX(ew_act_grad)(act, VLOADN(inp + i, k)), base), k);
    }
}

EW_INLINE VF EW_SFX(ew_swiglu1)(VF g, VF u) { return VMUL(EW_SFX(ew_silu)(g), u); }

static void EW_SFX(ew_swiglu_forward)(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + EW_W <= n; i += EW_W) VSTORE(out + i, EW_SFX(ew_swiglu1)(VLOAD(gate + i), VLOAD(up + i)));
    if (i < n) VSTOREN(out + i, EW_SFX(ew_swiglu1)(VLOADN(gate + i, n - i), VLOADN(up + i, n - i)), n - i);
}

/// One group of the SwiGLU backward; k = lanes to store (EW_W for a full group).
EW_INLINE void EW_SFX(ew_swiglu_back1)(float *dgate, float *dup, const float *dout, const float *gate,
                                       const float *up, int64_t k) {
    const VF g = k == EW_W ? VLOAD(gate) : VLOADN(gate, k);
    const VF d = k == EW_W ? VLOAD(dout) : VLOADN(dout, k);
    const VF u = k == EW_W ? VLOAD(up) : VLOADN(up, k);
    const VF dg0 = k == EW_W ? VLOAD(dgate) : VLOADN(dgate, k);
    const VF du0 = k == EW_W ? VLOAD(dup) : VLOADN(dup, k);
    const VF denom = VADD(VSET(1.0f), EW_SFX(ew_exp)(VSUB(VSET(0.0f), g)));
    const VF s = VDIV(VSET(1.0f), denom);
    const VF du = VFMA(d, VDIV(g, denom), du0);
    const VF dg = VFMA(VMUL(d, u), VMUL(s, VFMA(g, VSUB(VSET(1.0f), s), VSET(1.0f))), dg0);
    if (k == EW_W) {
        VSTORE(dup, du);
        VSTORE(dgate, dg);
    } else {
        VSTOREN(dup, du, k);
        VSTOREN(dgate, dg, k);
    }
}

static void EW_SFX(ew_swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate,
                                       const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + EW_W <= n; i += EW_W) EW_SFX(ew_swiglu_back1)(dgate + i, dup + i, dout + i, gate + i, up + i, EW_W);
    if (i < n) EW_SFX(ew_swiglu_back1)(dgate + i, dup + i, dout + i, gate + i, up + i, n - i);
}

// ---- softmax and cross-entropy --------------------------------------------------------------------------------

static void EW_SFX(ew_softmax_row)(float *row, int64_t valid, int64_t width, float mx) {
    const VF m = VSET(mx);
    VF acc = VSET(0.0f);
    int64_t j = 0;
    for (; j + EW_W <= valid; j += EW_W) {
        const VF e = EW_SFX(ew_exp)(VSUB(VLOAD(row + j), m));
        VSTORE(row + j, e);
        acc = VADD(acc, e);
    }
    if (j < valid) {
        const VF e = VKEEPN(EW_SFX(ew_exp)(VSUB(VLOADN(row + j, valid - j), m)), valid - j);
        VSTOREN(row + j, e, valid - j);
        acc = VADD(acc, e);
    }
    const VF inv = VSET(1.0f / VHSUM(acc));
    for (j = 0; j + EW_W <= valid; j += EW_W) VSTORE(row + j, VMUL(VLOAD(row + j), inv));
    if (j < valid) VSTOREN(row + j, VMUL(VLOADN(row + j, valid - j), inv), valid - j);
    for (j = valid; j < width; j++) row[j] = 0.0f;
}

/// Scores of keys whose mask entry is 0 (keys off..valid-1 read mask[j - off]) become -inf, then the row max over
/// the first `valid` (NaN never wins; the max is exact, so any order gives it) and the softmax above.
static void EW_SFX(ew_masked_softmax_row)(float *row, int64_t valid, int64_t width, const int32_t *mask, int64_t off) {
    for (int64_t j = off > 0 ? off : 0; j < valid; j++)
        if (mask[j - off] == 0) row[j] = -INFINITY;
    VF mv = VSET(-INFINITY);
    int64_t j = 0;
    for (; j + EW_W <= valid; j += EW_W) mv = VMAX_NN(VLOAD(row + j), mv);
    float mx = VHMAX(mv);
    for (; j < valid; j++)
        if (row[j] > mx) mx = row[j];
    EW_SFX(ew_softmax_row)(row, valid, width, mx);
}

static double EW_SFX(ew_xent_row)(float *row, int64_t V, int64_t target, int grad, float scale) {
    // Row max; a NaN lane never wins, so a NaN logit shows up in the loss (through its exponential) instead.
    VF mv = VSET(-INFINITY);
    int64_t j = 0;
    for (; j + EW_W <= V; j += EW_W) mv = VMAX_NN(VLOAD(row + j), mv);
    float mx = VHMAX(mv);
    for (; j < V; j++)
        if (row[j] > mx) mx = row[j];
    const float xt = row[target];
    const VF m = VSET(mx);
    DACC acc = EW_SFX(dacc_zero)();
    for (j = 0; j + EW_W <= V; j += EW_W) {
        const VF e = EW_SFX(ew_exp)(VSUB(VLOAD(row + j), m));
        if (grad) VSTORE(row + j, e);
        EW_SFX(dacc_add)(&acc, e);
    }
    if (j < V) {
        const VF e = VKEEPN(EW_SFX(ew_exp)(VSUB(VLOADN(row + j, V - j), m)), V - j);
        if (grad) VSTOREN(row + j, e, V - j);
        EW_SFX(dacc_add)(&acc, e);
    }
    const double sum = EW_SFX(dacc_sum)(acc);
    const double loss = log(sum) + (double)mx - (double)xt;
    if (grad) {
        const float inv = (float)(1.0 / sum);
        const float pt = row[target] * inv;
        const VF vi = VSET(inv), vs = VSET(scale);
        for (j = 0; j + EW_W <= V; j += EW_W) VSTORE(row + j, VMUL(VMUL(VLOAD(row + j), vi), vs));
        if (j < V) VSTOREN(row + j, VMUL(VMUL(VLOADN(row + j, V - j), vi), vs), V - j);
        row[target] = (pt - 1.0f) * scale;
    }
    return loss;
}

// ---- norms ----------------------------------------------------------------------------------------------------

static void EW_SFX(ew_layernorm_forward)(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                         const float *b, int64_t rows, int64_t C, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *x = inp + r * C;
        float *y = out + r * C;
        DACC a = EW_SFX(dacc_zero)();
        int64_t i = 0;
        for (; i + EW_W <= C; i += EW_W) EW_SFX(dacc_add)(&a, VLOAD(x + i));
        double s = EW_SFX(dacc_sum)(a);
        for (; i < C; i++) s += (double)x[i];
        const double m = s / (double)C;
        DACC q = EW_SFX(dacc_zero)();
        for (i = 0; i + EW_W <= C; i += EW_W) EW_SFX(dacc_add_sqdiff)(&q, VLOAD(x + i), m);
        double ss = EW_SFX(dacc_sum)(q);
        for (; i < C; i++) {
            const double d = (double)x[i] - m;
            ss += d * d;
        }
        const float mf = (float)m;
        const float rs = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        const VF vm = VSET(mf), vr = VSET(rs);
        for (i = 0; i + EW_W <= C; i += EW_W)
            VSTORE(y + i, VFMA(VMUL(VSUB(VLOAD(x + i), vm), vr), VLOAD(w + i), VLOAD(b + i)));
        if (i < C) {
            const int64_t k = C - i;
            VSTOREN(y + i, VFMA(VMUL(VSUB(VLOADN(x + i, k), vm), vr), VLOADN(w + i, k), VLOADN(b + i, k)), k);
        }
        mean[r] = mf;
        rstd[r] = rs;
    }
}

static void EW_SFX(ew_layernorm_backward)(float *dinp, const float *dout, const float *inp, const float *w,
                                          const float *mean, const float *rstd, int64_t rows, int64_t C) {
    for (int64_t r = 0; r < rows; r++) {
        const float *x = inp + r * C, *d = dout + r * C;
        float *dx = dinp + r * C;
        const float mf = mean[r], rs = rstd[r];
        const VF vm = VSET(mf), vr = VSET(rs);
        DACC ag = EW_SFX(dacc_zero)(), agx = EW_SFX(dacc_zero)();
        int64_t i = 0;
        for (; i + EW_W <= C; i += EW_W) {
            const VF g = VMUL(VLOAD(d + i), VLOAD(w + i));
            const VF xh = VMUL(VSUB(VLOAD(x + i), vm), vr);
            EW_SFX(dacc_add)(&ag, g);
            EW_SFX(dacc_add_prod)(&agx, g, xh);
        }
        double sg = EW_SFX(dacc_sum)(ag), sgx = EW_SFX(dacc_sum)(agx);
        for (int64_t t = i; t < C; t++) {
            const float g = d[t] * w[t];
            const float xh = (x[t] - mf) * rs;
            sg += (double)g;
            sgx += (double)g * (double)xh;
        }
        const VF mg = VSET((float)(sg / (double)C)), mgx = VSET((float)(sgx / (double)C));
        for (i = 0; i + EW_W <= C; i += EW_W) {
            const VF g = VMUL(VLOAD(d + i), VLOAD(w + i));
            const VF xh = VMUL(VSUB(VLOAD(x + i), vm), vr);
            VSTORE(dx + i, VFMA(vr, VFNMA(xh, mgx, VSUB(g, mg)), VLOAD(dx + i)));
        }
        if (i < C) {
            const int64_t k = C - i;
            const VF g = VMUL(VLOADN(d + i, k), VLOADN(w + i, k));
            const VF xh = VMUL(VSUB(VLOADN(x + i, k), vm), vr);
            VSTOREN(dx + i, VFMA(vr, VFNMA(xh, mgx, VSUB(g, mg)), VLOADN(dx + i, k)), k);
        }
    }
}

static void EW_SFX(ew_rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *w, int64_t rows,
                                       int64_t C, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *x = inp + r * C;
        float *y = out + r * C;
        DACC a = EW_SFX(dacc_zero)();
        int64_t i = 0;
        for (; i + EW_W <= C; i += EW_W) {
            const VF v = VLOAD(x + i);
            EW_SFX(dacc_add_prod)(&a, v, v);
        }
        double ss = EW_SFX(dacc_sum)(a);
        for (; i < C; i++) ss += (double)x[i] * (double)x[i];
        const float variance = (float)(ss / (double)C);
        const float rs = 1.0f / sqrtf(variance + eps);
        const VF vr = VSET(rs);
        for (i = 0; i + EW_W <= C; i += EW_W) VSTORE(y + i, VMUL(VLOAD(w + i), VMUL(VLOAD(x + i), vr)));
        if (i < C) VSTOREN(y + i, VMUL(VLOADN(w + i, C - i), VMUL(VLOADN(x + i, C - i), vr)), C - i);
        rstd[r] = rs;
    }
}

static void EW_SFX(ew_rmsnorm_backward)(float *dinp, const float *dout, const float *inp, const float *w,
                                        const float *rstd, int64_t rows, int64_t C) {
    for (int64_t r = 0; r < rows; r++) {
        const float *x = inp + r * C, *d = dout + r * C;
        float *dx = dinp + r * C;
        const float rs = rstd[r];
        DACC a = EW_SFX(dacc_zero)();
        int64_t i = 0;
        for (; i + EW_W <= C; i += EW_W) EW_SFX(dacc_add_prod)(&a, VMUL(VLOAD(d + i), VLOAD(w + i)), VLOAD(x + i));
        double sgx = EW_SFX(dacc_sum)(a);
        for (; i < C; i++) sgx += (double)(d[i] * w[i]) * (double)x[i];
        const double r64 = (double)rs;
        const VF k = VSET((float)(r64 * r64 * r64 * sgx / (double)C)), vr = VSET(rs);
        for (i = 0; i + EW_W <= C; i += EW_W) {
            const VF g = VMUL(VLOAD(d + i), VLOAD(w + i));
            VSTORE(dx + i, VADD(VLOAD(dx + i), VFNMA(k, VLOAD(x + i), VMUL(vr, g))));
        }
        if (i < C) {
            const int64_t n = C - i;
            const VF g = VMUL(VLOADN(d + i, n), VLOADN(w + i, n));
            VSTOREN(dx + i, VADD(VLOADN(dx + i, n), VFNMA(k, VLOADN(x + i, n), VMUL(vr, g))), n);
        }
    }
}

// ---- RoPE -----------------------------------------------------------------------------------------------------

static void EW_SFX(ew_rope_row)(float *x, const float *cs, const float *sn, int64_t heads, int64_t head_dim,
                                float sign) {
    const int64_t half = head_dim / 2;
    const VF sg = VSET(sign);
    for (int64_t h = 0; h < heads; h++) {
        float *lo = x + h * head_dim, *hi = lo + half;
        int64_t i = 0;
        for (; i + EW_W <= half; i += EW_W) {
            const VF a = VLOAD(lo + i), b = VLOAD(hi + i), c = VLOAD(cs + i), s = VMUL(sg, VLOAD(sn + i));
            VSTORE(lo + i, VFNMA(b, s, VMUL(a, c)));
            VSTORE(hi + i, VFMA(a, s, VMUL(b, c)));
        }
        if (i < half) {
            const int64_t k = half - i;
            const VF a = VLOADN(lo + i, k), b = VLOADN(hi + i, k), c = VLOADN(cs + i, k);
            const VF s = VMUL(sg, VLOADN(sn + i, k));
            VSTOREN(lo + i, VFNMA(b, s, VMUL(a, c)), k);
            VSTOREN(hi + i, VFMA(a, s, VMUL(b, c)), k);
        }
    }
}

#undef EW_INLINE
