// Included by elementwise.c once per instruction-set path, after it defines the vector vocabulary of that path:
//   VF (W floats), EW_W, EW_SFX(name), VLOAD/VSTORE, VLOADN/VSTOREN (the first n < W lanes, the rest zero),
//   VKEEPN (zero the lanes >= n), VSET, VADD/VSUB/VMUL/VDIV, VFMA(a, b, c) = a*b + c, VFNMA(a, b, c) = c - a*b,
//   VMIN_X(c, x) / VMAX_X(c, x) (x when x is NaN), VROUND_EXP (the exponent scaling of ew_exp), VHSUM / VHMAX
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

static void EW_SFX(ew_act_forward)(int act, float *out, const float *inp, int64_t n) {
    int64_t i = 0;
    if (act == PK_EW_GELU_TANH) {
        for (; i + EW_W <= n; i += EW_W) VSTORE(out + i, EW_SFX(ew_gelu_tanh)(VLOAD(inp + i)));
        if (i < n) VSTOREN(out + i, EW_SFX(ew_gelu_tanh)(VLOADN(inp + i, n - i)), n - i);
    } else {
        for (; i + EW_W <= n; i += EW_W) VSTORE(out + i, EW_SFX(ew_silu)(VLOAD(inp + i)));
        if (i < n) VSTOREN(out + i, EW_SFX(ew_silu)(VLOADN(inp + i, n - i)), n - i);
    }
}

static void EW_SFX(ew_act_backward)(int act, float *dinp, const float *inp, const float *dout, int64_t n) {
    int64_t i = 0;
    if (act == PK_EW_GELU_TANH) {
        for (; i + EW_W <= n; i += EW_W)
            VSTORE(dinp + i, VFMA(VLOAD(dout + i), EW_SFX(ew_gelu_tanh_grad)(VLOAD(inp + i)), VLOAD(dinp + i)));
        if (i < n) {
            const int64_t k = n - i;
            VSTOREN(dinp + i, VFMA(VLOADN(dout + i, k), EW_SFX(ew_gelu_tanh_grad)(VLOADN(inp + i, k)),
                                   VLOADN(dinp + i, k)), k);
        }
    } else {
        for (; i + EW_W <= n; i += EW_W)
            VSTORE(dinp + i, VFMA(VLOAD(dout + i), EW_SFX(ew_silu_grad)(VLOAD(inp + i)), VLOAD(dinp + i)));
        if (i < n) {
            const int64_t k = n - i;
            VSTOREN(dinp + i, VFMA(VLOADN(dout + i, k), EW_SFX(ew_silu_grad)(VLOADN(inp + i, k)),
                                   VLOADN(dinp + i, k)), k);
        }
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
