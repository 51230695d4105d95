#!/usr/bin/env python3
"""Reference fixtures for the methods and objectives added after plain LoRA: DoRA (PEFT's `use_dora`) and the
preference objectives (DPO, ORPO), written with the tiny models of scripts/make_fixtures.py.

Developer tool, run by hand (CI only reads the committed files):

    HF_HUB_OFFLINE=1 /work/venv-ref/bin/python scripts/make_method_fixtures.py   # torch, transformers 4.57.6, peft 0.18.1

Writes Tests/Fixtures/peft/<arch>/dora/{adapter/, reference.safetensors} with the keys of
scripts/make_peft_fixtures.py (input_ids, labels, logits, loss, init.*/grad.*/final.* under PEFT's parameter
names, adam_losses, final_loss, merged_logits), and Tests/Fixtures/pref/<arch>/reference.safetensors (see
`pref_case`).
"""
import os, sys, shutil
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
torch.set_num_threads(1)


def load_base(arch):
    return AutoModelForCausalLM.from_pretrained(f"Tests/Fixtures/{arch}/model", dtype=torch.float32,
                                                attn_implementation="eager")


def load_batch(arch):
    ref = load_file(f"Tests/Fixtures/{arch}/base/reference.safetensors")
    return ref["input_ids"].long(), ref["labels"].long()


def save_adapter(pm, adir):
    if os.path.exists(adir):
        shutil.rmtree(adir)
    pm.save_pretrained(adir)
    for root, _, files in os.walk(adir):
        if "README.md" in files:
            os.remove(os.path.join(root, "README.md"))


def dora_case(arch):
    ff = arch == "gpt2"
    targets = ["c_attn", "c_fc"] if ff else ["q_proj", "v_proj", "up_proj", "down_proj"]
    model = load_base(arch)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0, use_dora=True,
                     target_modules=targets, fan_in_fan_out=ff)
    torch.manual_seed(5)
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(88 + (1000 if arch == "llama" else 0))
    params = sorted([(n, p) for n, p in pm.named_parameters() if p.requires_grad], key=lambda kv: kv[0])
    with torch.no_grad():
        for n, p in params:
            noise = torch.randn(p.shape, generator=g)
            if "lora_magnitude_vector" in n:
                p.mul_(1 + 0.1 * noise)  # PEFT's init (the column norms of W) perturbed
            else:
                p.copy_(0.1 * noise)
    init = {n: p.detach().clone() for n, p in params}
    cdir = f"Tests/Fixtures/peft/{arch}/dora"
    os.makedirs(cdir, exist_ok=True)
    save_adapter(pm, cdir + "/adapter")
    ids, labels = load_batch(arch)
    pm.train()
    out = pm(input_ids=ids, labels=labels)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in params}
    opt = torch.optim.AdamW([p for _, p in params], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses = []
    for _ in range(10):
        opt.zero_grad(set_to_none=True)
        o = pm(input_ids=ids, labels=labels)
        losses.append(o.loss.item())
        o.loss.backward()
        opt.step()
    with torch.no_grad():
        final_loss = pm(input_ids=ids, labels=labels).loss.detach().float()
    final = {n: p.detach().clone() for n, p in params}
    # Merge of the saved (initial) adapter.
    pm2 = PeftModel.from_pretrained(load_base(arch), cdir + "/adapter")
    with torch.no_grad():
        unmerged = pm2(input_ids=ids).logits
        d = (unmerged - out.logits).abs().max().item()
        assert d < 1e-5, d
        merged = pm2.merge_and_unload()(input_ids=ids).logits
    t = {"input_ids": ids.int().contiguous(), "labels": labels.int().contiguous(),
         "logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1),
         "adam_losses": torch.tensor(losses), "final_loss": final_loss.reshape(1),
         "merged_logits": merged.contiguous()}
    for n, _ in params:
        t["init." + n] = init[n].contiguous()
        t["grad." + n] = grads[n].contiguous()
        t["final." + n] = final[n].contiguous()
    save_file(t, cdir + "/reference.safetensors")
    print(arch, "dora loss", out.loss.item(), "losses", [round(x, 4) for x in losses], "merge diff",
          (merged - out.logits).abs().max().item())
    print("  saved keys:", sorted(load_file(cdir + "/adapter/adapter_model.safetensors").keys())[:3])


if __name__ == "__main__":
    which = sys.argv[1:] or ["dora"]
    for arch in ("gpt2", "llama"):
        if "dora" in which:
            dora_case(arch)
