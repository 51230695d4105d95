#!/usr/bin/env python3
"""Coefficients of the vectorised erf in Sources/CPEFTKitKernels/elementwise_body.h (`ew_erf`), and a check of the
float evaluation against math.erf. Developer tool, not run by CI (numpy only):

    python3 scripts/fit_erf.py

z = |x| < SPLIT:       erf = z + z * P(z^2)             (P fitted to erf(z)/z - 1, absolute error)
SPLIT <= z < SATURATE: erf = 1 - exp(Q(z - CENTER))     (Q fitted to log(erfc(z)), absolute error)
z >= SATURATE:         erf = 1
Each fit is least squares on Chebyshev nodes, re-weighted toward equal ripple (an approximate minimax fit).
The check evaluates the float polynomials with one rounding per multiply-add (as the kernels' fused
multiply-adds do) and a correctly rounded exp, so it shows the error of the form, not of the kernels' exp.
"""

import math

import numpy as np

SPLIT, SATURATE, CENTER = 1.25, 3.925, 2.5
DEG_P, DEG_Q = 7, 9


def fit(fun, lo, hi, shift, square, deg, iters=60):
    z = np.cos(np.linspace(0, math.pi, 6000)) * (hi - lo) / 2 + (hi + lo) / 2 + 1e-12
    v = z * z if square else z - shift
    target = np.array([fun(t) for t in z])
    a = np.stack([v ** k for k in range(deg + 1)], 1)
    w = np.ones_like(z)
    for _ in range(iters):
        c, *_ = np.linalg.lstsq(a * w[:, None], target * w, rcond=None)
        err = np.abs(a @ c - target)
        w = w * np.sqrt(err / err.max()) + 1e-12
        w /= w.max()
    return [np.float32(x) for x in c], float(np.abs(a @ c - target).max())


def fma(a, b, c):
    # a product of two floats is exact in double; the sum is rounded once to double, then to float
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


def horner(cs, t):
    p = np.full_like(t, cs[-1])
    for c in reversed(cs[:-1]):
        p = fma(p, t, np.full_like(t, c))
    return p


def erf32(x, p, q):
    f = np.float32
    z = np.abs(x)
    small = fma(z, horner(p, (z * z).astype(f)), z)
    large = (f(1) - np.exp(horner(q, (z - f(CENTER)).astype(f)).astype(np.float64)).astype(f)).astype(f)
    r = np.where(z < f(SPLIT), small, np.where(z >= f(SATURATE), f(1), large))
    return np.copysign(r, x).astype(f)


def main():
    p, ep = fit(lambda z: math.erf(z) / z - 1, 0, SPLIT, 0, True, DEG_P)
    q, eq = fit(lambda z: math.log(math.erfc(z)), SPLIT, SATURATE, CENTER, False, DEG_Q)
    print(f"P (degree {DEG_P} in z^2, fit error {ep:.2e}), highest first:")
    print("\n".join(f"    {c:.9e}f" for c in reversed(p)))
    print(f"Q (degree {DEG_Q} in z - {CENTER}, fit error {eq:.2e}), highest first:")
    print("\n".join(f"    {c:.9e}f" for c in reversed(q)))
    x = np.concatenate([np.linspace(-6, 6, 2_000_001), np.logspace(-30, 0.7, 100_000)]).astype(np.float32)
    ref = np.array([math.erf(float(v)) for v in x])
    err = np.abs(erf32(x, p, q).astype(np.float64) - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    for lo, hi in [(0, SPLIT), (SPLIT, SATURATE), (SATURATE, 7)]:
        m = (np.abs(x) >= lo) & (np.abs(x) < hi)
        print(f"|x| in [{lo}, {hi}): max {err[m].max():.2f} ulp at x = {x[m][err[m].argmax()]:.7g}")


if __name__ == "__main__":
    main()
