#!/usr/bin/env python3
"""Writes Tests/Fixtures/quant/: small matrices of every ggml block type PEFTKit's quant kernels read, and their
dequantisation by gguf-py (`gguf.quants.dequantize`), the reference the Swift tests match bit for bit.

    pip install gguf numpy
    python3 scripts/make_quant_fixtures.py [out_dir]

Per type T (rows x cols given in manifest.txt):
    T.blocks  the raw row-major blocks, as a GGUF tensor with ne = [cols, rows] stores them
    T.f32     gguf.quants.dequantize of T.blocks, float32 little-endian, rows x cols
Rows of the 32-element formats come half from gguf.quants.quantize of random normals (with a zero row and an
outlier), half from random block bytes. gguf-py cannot quantize Q4_K/Q5_K/Q6_K, so those are random block bytes.
Every fp16 scale of a random block is overwritten with a finite value (normal, subnormal, zero, negative), so no
fixture holds NaN or infinity.
"""
import importlib.metadata
import os
import sys

import numpy as np
import gguf
from gguf.quants import dequantize, quantize

T = gguf.GGMLQuantizationType
rng = np.random.default_rng(20261202)


def finite_halves(n):
    """n fp16 scales as uint16: mostly normal magnitudes 1e-4..1, some subnormal, zero and negative."""
    mag = np.exp(rng.uniform(np.log(1e-4), np.log(1.0), n)).astype(np.float16)
    sign = np.where(rng.random(n) < 0.25, -1, 1).astype(np.float16)
    h = (mag * sign).view(np.uint16).copy()
    k = rng.random(n)
    h[k < 0.06] = rng.integers(1, 0x400, (k < 0.06).sum())  # subnormal
    h[(k >= 0.06) & (k < 0.1)] = 0
    return h


def random_blocks(qtype, nblocks):
    """Random block bytes with every fp16 scale field set to a finite value."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    b = rng.integers(0, 256, (nblocks, size), dtype=np.uint8)
    # byte offsets of the fp16 fields of one block
    halves = {
        T.Q8_0: [0], T.Q4_0: [0], T.Q5_0: [0], T.Q4_1: [0, 2], T.Q5_1: [0, 2],
        T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    }[qtype]
    for off in halves:
        b[:, off:off + 2] = finite_halves(nblocks).view(np.uint8).reshape(nblocks, 2)
    return b


def make(qtype, rows, cols):
    bs, size = gguf.GGML_QUANT_SIZES[qtype]
    if qtype == T.F16:
        h = rng.integers(0, 0x10000, rows * cols, dtype=np.uint32).astype(np.uint16)
        h[(h & 0x7c00) == 0x7c00] &= 0xbfff  # no inf/NaN: clear the top exponent bit
        return h.view(np.uint8).reshape(rows, cols * 2)
    if qtype == T.BF16:
        h = rng.integers(0, 0x10000, rows * cols, dtype=np.uint32).astype(np.uint16)
        h[(h & 0x7f80) == 0x7f80] &= 0xbfff
        return h.view(np.uint8).reshape(rows, cols * 2)
    nb = cols // bs
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        return random_blocks(qtype, rows * nb).reshape(rows, nb * size)
    half = rows // 2
    x = rng.standard_normal((half, cols)).astype(np.float32) * np.float32(0.05)
    x[0] = 0
    x[1, 3] = 40.0
    q = quantize(x, qtype).reshape(half, nb * size)
    r = random_blocks(qtype, (rows - half) * nb).reshape(rows - half, nb * size)
    return np.concatenate([q, r], axis=0)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "Tests", "Fixtures", "quant")
    os.makedirs(out, exist_ok=True)
    shapes = [
        (T.Q8_0, 6, 96), (T.Q4_0, 6, 96), (T.Q4_1, 6, 96), (T.Q5_0, 6, 96), (T.Q5_1, 6, 96),
        (T.Q4_K, 6, 512), (T.Q5_K, 6, 512), (T.Q6_K, 6, 512), (T.F16, 4, 64), (T.BF16, 4, 64),
    ]
    lines = []
    for qtype, rows, cols in shapes:
        blocks = np.ascontiguousarray(make(qtype, rows, cols))
        ref = dequantize(blocks, qtype).astype("<f4")
        assert ref.shape == (rows, cols), (qtype, ref.shape)
        assert np.isfinite(ref).all(), qtype
        blocks.tofile(os.path.join(out, f"{qtype.name}.blocks"))
        ref.tofile(os.path.join(out, f"{qtype.name}.f32"))
        lines.append(f"{qtype.name} {int(qtype)} {rows} {cols}")
    with open(os.path.join(out, "manifest.txt"), "w") as f:
        f.write("# type ggml_type_id rows cols (written by scripts/make_quant_fixtures.py, gguf %s, numpy %s)\n"
                % (importlib.metadata.version("gguf"), np.__version__))
        f.write("\n".join(lines) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
