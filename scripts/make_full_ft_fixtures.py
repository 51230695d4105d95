#!/usr/bin/env python3
"""Reference fixtures for PEFTKit's full fine-tuning (every base weight trained with AdamW).

Run by hand when the fixtures need regenerating; CI only reads the files. From the repository root:

    HF_HUB_OFFLINE=1 PYTHONPATH=/work/pydeps/ah python3 scripts/make_full_ft_fixtures.py

For each tiny fixture model (Tests/Fixtures/{gpt2,llama}/model) and the batch of its base reference
(Tests/Fixtures/{arch}/base/reference.safetensors) it writes Tests/Fixtures/{arch}/full/reference.safetensors:

  input_ids, labels     the batch (int32, [2, T])
  loss                  the loss before any update
  grad.<name>           the gradient of every parameter (Hugging Face names; a tied LM head is the
                        embedding's gradient)
  losses                the loss before each of STEPS AdamW steps (lr 1e-3, weight decay 0.01, PyTorch
                        defaults otherwise) on that batch
  final.<name>          every parameter after those steps
"""

import os

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

STEPS = 3
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")


def main():
    torch.manual_seed(0)
    for arch in ["gpt2", "llama"]:
        ref = load_file(os.path.join(ROOT, arch, "base", "reference.safetensors"))
        ids = ref["input_ids"].long()
        labels = ref["labels"].long()
        model = AutoModelForCausalLM.from_pretrained(os.path.join(ROOT, arch, "model"), dtype=torch.float32,
                                                     attn_implementation="eager")
        model.eval()  # no dropout; gradients are still computed
        out = {"input_ids": ids.to(torch.int32).contiguous(), "labels": labels.to(torch.int32).contiguous()}
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        out["loss"] = loss.detach().reshape(1)
        for name, p in model.named_parameters():
            out["grad." + name] = p.grad.detach().clone().contiguous()
        model.zero_grad()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        losses = []
        for _ in range(STEPS):
            opt.zero_grad()
            loss = model(input_ids=ids, labels=labels).loss
            losses.append(loss.item())
            loss.backward()
            opt.step()
        out["losses"] = torch.tensor(losses, dtype=torch.float32)
        for name, p in model.named_parameters():
            out["final." + name] = p.detach().clone().contiguous()
        d = os.path.join(ROOT, arch, "full")
        os.makedirs(d, exist_ok=True)
        save_file(out, os.path.join(d, "reference.safetensors"))
        print(arch, "loss", out["loss"].item(), "losses", losses, "tensors", len(out))


if __name__ == "__main__":
    main()
