#!/usr/bin/env python3
"""Writes tiny random Llama models as GGUF files whose matrices are in quantized blocks, with the `gguf`
package's own quantizers (gguf.quants), for the quantized-base tests (Tests/PEFTKitTests/QuantBaseTests.swift).

    pip install gguf numpy
    python3 scripts/make_quant_llama_fixtures.py      # writes Tests/Fixtures/quant_llama/*.gguf

Shapes: vocab 50, hidden 64, 2 layers, 4 heads / 2 KV heads of 16, FFN 96 (every in-feature count is a whole
number of 32-element blocks). Norm weights are F32 near 1; matrices N(0, 0.5) so that logits vary.
  tiny_q8_0.gguf  every matrix Q8_0, tied embeddings (the LM head is the quantized embedding table)
  tiny_q4_0.gguf  matrices Q4_0, a separate LM head in Q8_0, attention biases in F32, one F16 matrix
Query/key rows are random, so no RoPE row permutation is needed to write them: PEFTKit reads them as any file.
"""
import os
import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "quant_llama")
V, C, L, H, KVH, D, I = 50, 64, 2, 4, 2, 16, 96


def tensor(w, name, arr, qtype):
    arr = arr.astype(np.float32)
    if qtype == Q.F32:
        w.add_tensor(name, arr)
    elif qtype == Q.F16:
        w.add_tensor(name, arr.astype(np.float16))
    else:
        data = gguf.quants.quantize(arr, qtype)
        w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)


def write(path, qtype, tied, bias, f16_name=None):
    rng = np.random.default_rng(7 if tied else 8)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny")
    w.add_context_length(32)
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(I)
    w.add_head_count(H)
    w.add_head_count_kv(KVH)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(D)
    w.add_vocab_size(V)
    mat = lambda o, i: rng.normal(0, 0.5, size=(o, i))
    tensor(w, "token_embd.weight", mat(V, C), qtype if tied else Q.Q8_0)
    for l in range(L):
        p = f"blk.{l}."
        tensor(w, p + "attn_norm.weight", 1 + 0.1 * rng.normal(size=C), Q.F32)
        for n, (o, i) in [("attn_q", (H * D, C)), ("attn_k", (KVH * D, C)), ("attn_v", (KVH * D, C)),
                          ("attn_output", (C, H * D))]:
            t = Q.F16 if p + n == f16_name else qtype
            tensor(w, p + n + ".weight", mat(o, i), t)
            if bias and n != "attn_output":
                tensor(w, p + n + ".bias", 0.1 * rng.normal(size=o), Q.F32)
        tensor(w, p + "ffn_norm.weight", 1 + 0.1 * rng.normal(size=C), Q.F32)
        for n, (o, i) in [("ffn_gate", (I, C)), ("ffn_up", (I, C)), ("ffn_down", (C, I))]:
            tensor(w, p + n + ".weight", mat(o, i), qtype)
    tensor(w, "output_norm.weight", 1 + 0.1 * rng.normal(size=C), Q.F32)
    if not tied:
        tensor(w, "output.weight", mat(V, C), Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    write(os.path.join(OUT, "tiny_q8_0.gguf"), Q.Q8_0, tied=True, bias=False)
    write(os.path.join(OUT, "tiny_q4_0.gguf"), Q.Q4_0, tied=False, bias=True, f16_name="blk.1.attn_v")
    print("wrote", sorted(os.listdir(OUT)))
