#!/usr/bin/env python3
"""Writes a random-weight Llama of a large shape as a GGUF file in quantized blocks, for the scale benchmarks of
the quantized base (BENCHMARKS.md, "Scale"). Not a fixture: the files are GBs and are written outside the tree.

    pip install gguf numpy
    python3 scripts/make_scale_gguf.py --shape 1.1b --quant q4_k_m --out /tmp/llama-1.1b-q4_k_m.gguf
    python3 scripts/make_scale_gguf.py --shape 8b   --quant q4_k   --out /tmp/llama-8b-q4_k.gguf

Shapes (Llama, RoPE, SwiGLU, vocab 32000):
  1.1b  22 layers, width 2048, FFN 5632, 32 heads / 4 KV heads   (1.10e9 parameters)
  8b    32 layers, width 4096, FFN 14336, 32 heads / 8 KV heads  (7.25e9 parameters with vocab 32000)

Quant mixes:
  q8_0    every matrix Q8_0
  q4_k    every matrix Q4_K
  q4_k_m  llama.cpp's Q4_K_M rule: Q4_K, except Q6_K for the output matrix and for attn_v / ffn_down of the first
          and last eighth of the layers and every third layer between them

The blocks are random bytes with a fixed scale per block (chosen so that weights have a standard deviation of
roughly 0.02), written straight in block format: no fp32 copy of the model is ever made, so the 8b file is written
in about a minute with a few GB of memory. Norm weights are F32 ones. The values are meaningless; only the shapes,
the formats and so the memory traffic and arithmetic are those of a real model of that size.
"""
import argparse
import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

SHAPES = {
    "1.1b": dict(L=22, C=2048, I=5632, H=32, KVH=4, V=32000),
    "8b": dict(L=32, C=4096, I=14336, H=32, KVH=8, V=32000),
}

# Block layout: (elements per block, bytes per block, offset of the f16 scale d, fixed d).
BLOCKS = {
    Q.Q8_0: (32, 34, 0, 2.7e-4),    # d, 32 x int8                      w = d * q
    Q.Q4_K: (256, 144, 0, 8.0e-5),  # d, dmin, 12 scale bytes, 128 qs  w = d * sc * q - dmin * m
    Q.Q6_K: (256, 210, 208, 1.5e-5),  # 128 ql, 64 qh, 16 int8 scales, d  w = d * sc * (q - 32)
}


def random_blocks(rng, qtype, rows, cols):
    n, nbytes, doff, d = BLOCKS[qtype]
    assert cols % n == 0, (cols, n)
    raw = rng.integers(0, 256, size=(rows, cols // n, nbytes), dtype=np.uint8)
    raw[:, :, doff:doff + 2] = np.frombuffer(np.float16(d).tobytes(), dtype=np.uint8)
    if qtype == Q.Q4_K:
        # dmin so that the mean of d*sc*q - dmin*m is about 0 (q averages 7.5).
        raw[:, :, 2:4] = np.frombuffer(np.float16(7.5 * d).tobytes(), dtype=np.uint8)
    return raw.reshape(rows, -1)


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--quant", choices=["q8_0", "q4_k", "q4_k_m"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    s = SHAPES[a.shape]
    L, C, I, H, KVH, V = s["L"], s["C"], s["I"], s["H"], s["KVH"], s["V"]
    D = C // H
    rng = np.random.default_rng(a.seed)
    base = {"q8_0": Q.Q8_0, "q4_k": Q.Q4_K, "q4_k_m": Q.Q4_K}[a.quant]

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(f"random-llama-{a.shape}-{a.quant}")
    w.add_context_length(2048)
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(I)
    w.add_head_count(H)
    w.add_head_count_kv(KVH)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(D)
    w.add_vocab_size(V)

    params = 0

    def mat(name, o, i, qtype):
        nonlocal params
        data = random_blocks(rng, qtype, o, i)
        w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)  # shape in bytes per row
        params += o * i

    def ones(name, n):
        nonlocal params
        w.add_tensor(name, np.ones(n, dtype=np.float32))
        params += n

    mat("token_embd.weight", V, C, base)
    for l in range(L):
        p = f"blk.{l}."
        more = a.quant == "q4_k_m" and use_more_bits(l, L)
        ones(p + "attn_norm.weight", C)
        mat(p + "attn_q.weight", H * D, C, base)
        mat(p + "attn_k.weight", KVH * D, C, base)
        mat(p + "attn_v.weight", KVH * D, C, Q.Q6_K if more else base)
        mat(p + "attn_output.weight", C, H * D, base)
        ones(p + "ffn_norm.weight", C)
        mat(p + "ffn_gate.weight", I, C, base)
        mat(p + "ffn_up.weight", I, C, base)
        mat(p + "ffn_down.weight", C, I, Q.Q6_K if more else base)
    ones("output_norm.weight", C)
    mat("output.weight", V, C, Q.Q6_K if a.quant == "q4_k_m" else base)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.out}: {a.shape} ({params / 1e9:.2f}e9 parameters), {a.quant}")


if __name__ == "__main__":
    main()
