#!/usr/bin/env python3
"""PEFTKit -> Hugging Face peft and AdapterHub: adapters trained and saved by PEFTKit load there with PEFTKit's
logits (bottleneck adapters through scripts/check_adapter_interop.py, the others through check_peft_interop.py).

Developer tool, run by hand (CI has no torch). For each case it trains an adapter for a few steps with
PEFTKit (through the Python package), saves it, records PEFTKit's logits and loss, then runs
scripts/check_peft_interop.py on the folder: peft must read the config without warnings, the file
must hold exactly the tensors peft would save, and peft's logits (and merged logits for LoRA / IA3)
must equal PEFTKit's.

    swift build -c release --product peftkit
    HF_HUB_OFFLINE=1 PYTHONPATH=bindings/python/src:/work/pydeps/peft:/work/pydeps/ah \\
        PEFTKIT_LIBRARY=$PWD/.build/release/libpeftkit.so python3 scripts/check_peft_export.py

Exit status 0 when every case passes.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import peftkit

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "Tests" / "Fixtures"

CASES = {
    "gpt2": [
        ("lora-all", peftkit.LoRAConfig(r=4, lora_alpha=8, target_modules=["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"])),
        ("rslora-layer1", peftkit.LoRAConfig(r=2, lora_alpha=3, use_rslora=True, target_modules=["c_fc"], layers_to_transform=[1])),
        ("ia3", peftkit.IA3Config()),
        ("ia3-custom", peftkit.IA3Config(target_modules=["c_attn", "c_fc", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"])),
        ("prefix", peftkit.PrefixConfig(num_virtual_tokens=4)),
        ("prefix-projection", peftkit.PrefixConfig(num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=8)),
        ("prompt", peftkit.PromptConfig(num_virtual_tokens=6)),
        ("seq_bn", peftkit.BottleneckConfig.seq_bn(reduction_factor=4)),
        ("double_seq_bn-ln-gelu", peftkit.BottleneckConfig.double_seq_bn(reduction_factor=8, ln_before=True, ln_after=True,
                                                                         non_linearity="gelu")),
    ],
    "llama": [
        ("lora-qv", peftkit.LoRAConfig(r=4, lora_alpha=16)),
        ("lora-all", peftkit.LoRAConfig(r=3, lora_alpha=5.5, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])),
        ("ia3", peftkit.IA3Config()),
        ("prefix", peftkit.PrefixConfig(num_virtual_tokens=4)),
        ("prefix-projection", peftkit.PrefixConfig(num_virtual_tokens=3, prefix_projection=True)),
        ("prompt", peftkit.PromptConfig(num_virtual_tokens=6, init_token_ids=[5, 6, 7])),
        ("seq_bn-leave-out", peftkit.BottleneckConfig.seq_bn(reduction_factor=4, leave_out=[0])),
        ("double_seq_bn", peftkit.BottleneckConfig.double_seq_bn(reduction_factor=2)),
    ],
}


def write_safetensors(path, tensors):
    """A minimal safetensors writer (F32 / I32), so this script needs no torch on PEFTKit's side."""
    import json
    import struct
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}[arr.dtype]
        b = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", help="write the folders here instead of a temporary directory")
    args = ap.parse_args()
    out = Path(args.keep or tempfile.mkdtemp(prefix="peftkit-export-"))
    ok = True
    rng = np.random.default_rng(0)
    for arch, cases in CASES.items():
        ref = FIX / "peft" / arch / "lora" / "reference.safetensors"
        from safetensors.numpy import load_file
        batch = load_file(str(ref))
        ids, labels = batch["input_ids"], batch["labels"]
        for label, cfg in cases:
            d = out / arch / label
            with peftkit.Model.load(FIX / arch / "model") as m:
                m.attach_adapter("a", cfg)
                m.set_active_adapter("a")
                for _ in range(5):
                    m.train_step(rng.integers(0, 97, size=(2, 10), dtype=np.int32), learning_rate=3e-2)
                logits = m.forward(ids)
                loss = m.loss(ids, labels)
                m.save_adapter("a", d / "adapter")
            write_safetensors(d / "peftkit.safetensors", {"logits": logits, "loss": np.array([loss], np.float32)})
            hub = isinstance(cfg, peftkit.BottleneckConfig)
            tool = "check_adapter_interop.py" if hub else "check_peft_interop.py"
            cmd = [sys.executable, str(ROOT / "scripts" / tool), "--model", str(FIX / arch / "model"),
                   "--adapter", str(d / "adapter"), "--input", str(ref), "--expect", str(d / "peftkit.safetensors"),
                   "--atol", "1e-5", "--rtol", "1e-5"]
            if isinstance(cfg, (peftkit.LoRAConfig, peftkit.IA3Config)):
                cmd.append("--merge")
            r = subprocess.run(cmd, capture_output=True, text=True)
            last = [line for line in r.stdout.splitlines() if line.strip()][-3:]
            print(f"{arch}/{label}: {'ok' if r.returncode == 0 else 'FAILED (exit %d)' % r.returncode}  " + " | ".join(last))
            if r.returncode != 0:
                ok = False
                print(r.stdout[-3000:], r.stderr[-3000:])
    print("all cases pass" if ok else "some cases FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
