#!/usr/bin/env python3
"""Reference fixtures for the methods and objectives added after plain LoRA: DoRA (PEFT's `use_dora`) and the
preference objectives (DPO, ORPO), written with the tiny models of scripts/make_fixtures.py.

Developer tool, run by hand (CI only reads the committed files):

    HF_HUB_OFFLINE=1 /work/venv-ref/bin/python scripts/make_method_fixtures.py   # torch, transformers 4.57.6, peft 0.18.1

Writes Tests/Fixtures/peft/<arch>/dora/{adapter/, reference.safetensors} (and dora_dropout/, see
`dora_dropout_case`) with the keys of
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


class FixedDropout(torch.nn.Module):
    """Inverted dropout with a given keep mask (1 kept, 0 dropped) in place of a drawn one."""

    def __init__(self, keep, p):
        super().__init__()
        self.keep, self.p = keep, p

    def forward(self, x):
        return x * self.keep / (1 - self.p) if self.training else x


def dora_dropout_case(arch):
    """DoRA with lora_dropout 0.3, trained with fixed keep masks (one per adapted module, the same every pass):
    PEFT's DoraLinearVariant then recomputes the base product on the dropped input. Writes
    Tests/Fixtures/peft/<arch>/dora_dropout/{adapter/, reference.safetensors}: input_ids, labels, eval_logits
    (model.eval(), no dropout), loss (train mode, masked), init.*/grad.* under PEFT's parameter names,
    adam_losses (3 AdamW steps, same masks) and mask.<module> ([B·T, in], 1/0, module as in the base model)."""
    ff = arch == "gpt2"
    targets = ["c_attn", "attn.c_proj", "c_fc"] if ff else ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
    p = 0.3
    model = load_base(arch)
    cfg = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=p, use_dora=True,
                     target_modules=targets, fan_in_fan_out=ff)
    torch.manual_seed(6)
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(77 + (1000 if arch == "llama" else 0))
    params = sorted([(n, q) for n, q in pm.named_parameters() if q.requires_grad], key=lambda kv: kv[0])
    with torch.no_grad():
        for n, q in params:
            noise = torch.randn(q.shape, generator=g)
            if "lora_magnitude_vector" in n:
                q.mul_(1 + 0.1 * noise)
            else:
                q.copy_(0.1 * noise)
    init = {n: q.detach().clone() for n, q in params}
    cdir = f"Tests/Fixtures/peft/{arch}/dora_dropout"
    os.makedirs(cdir, exist_ok=True)
    save_adapter(pm, cdir + "/adapter")
    ids, labels = load_batch(arch)
    N = ids.numel()
    masks = {}
    mg = torch.Generator().manual_seed(99)
    for name, mod in sorted(pm.named_modules()):
        if hasattr(mod, "lora_dropout") and "default" in mod.lora_dropout:
            keep = (torch.rand((N, mod.in_features), generator=mg) >= p).float()
            mod.lora_dropout["default"] = FixedDropout(keep.view(ids.shape[0], ids.shape[1], -1), p)
            masks["mask." + name.removeprefix("base_model.model.")] = keep.contiguous()
    assert masks
    pm.eval()
    with torch.no_grad():
        eval_logits = pm(input_ids=ids).logits.detach()
    pm.train()
    out = pm(input_ids=ids, labels=labels)
    out.loss.backward()
    grads = {n: q.grad.detach().clone() for n, q in params}
    opt = torch.optim.AdamW([q for _, q in params], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses = []
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        o = pm(input_ids=ids, labels=labels)
        losses.append(o.loss.item())
        o.loss.backward()
        opt.step()
    t = {"input_ids": ids.int().contiguous(), "labels": labels.int().contiguous(),
         "eval_logits": eval_logits.contiguous(), "loss": out.loss.detach().reshape(1),
         "adam_losses": torch.tensor(losses)}
    t.update(masks)
    for n, _ in params:
        t["init." + n] = init[n].contiguous()
        t["grad." + n] = grads[n].contiguous()
    save_file(t, cdir + "/reference.safetensors")
    print(arch, "dora+dropout loss", out.loss.item(), "losses", [round(x, 4) for x in losses],
          "masks", sorted(masks)[:2], "kept", sum(m.sum().item() for m in masks.values()) / sum(m.numel() for m in masks.values()))


if __name__ == "__main__":
    which = sys.argv[1:] or ["dora", "dora_dropout"]
    for arch in ("gpt2", "llama"):
        if "dora" in which:
            dora_case(arch)
        if "dora_dropout" in which:
            dora_dropout_case(arch)
