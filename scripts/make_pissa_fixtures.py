#!/usr/bin/env python3
"""Reference fixtures for LoRA's PiSSA and OLoRA initialisation (PEFT's init_lora_weights "pissa" / "olora").

Developer tool, run by hand; CI never runs it and only reads the committed files under Tests/Fixtures/pissa/.
It uses the tiny models and the batch scripts/make_fixtures.py wrote (Tests/Fixtures/{gpt2,llama}/model and
.../base/reference.safetensors) and never rewrites them.

Requirements: torch, transformers 4.57.6, peft 0.18.1, safetensors (the reference venv):

    /work/venv-ref/bin/python scripts/make_pissa_fixtures.py

Per case, Tests/Fixtures/pissa/<arch>_<init>/ holds
  reference.safetensors
    init.<param>          A0 / B0 after PEFT's init (PEFT parameter names, `.default.`)
    residual.<weight>     every adapted base weight after the init, as the model stores it (GPT-2 Conv1D [in, out])
    logits_init, loss_init  the adapted model at init (= the base model, to rounding)
    grad.<param>          gradients of the loss at init
    exact.<param>         A0 / B0 by PEFT's formulas from a float64 SVD / QR (PEFT's own are fp32: the script prints
                          how far they are from these)
    exact_residual.<weight>  W - s·B0·A0 in float64 from those, rounded to fp32
    final.<param>         A, B after one AdamW step (lr 1e-2, betas 0.9/0.999, eps 1e-3, weight decay 0.01; eps that
                          large keeps the first step, lr·g/(|g|+eps), smooth in gradients near zero, where eps 1e-8
                          would make it sign(g) and rounding would decide it)
    final_logits, final_loss  the adapted model after that step
  adapter/     PEFT's save_pretrained() after the step (init_lora_weights still "pissa"/"olora": PEFT re-derives
               the residual from the base it is loaded onto)
  converted/   save_pretrained(path_initial_model_for_weight_conversion=...): a rank-2r LoRA of the original base

The script checks itself: both folders, loaded onto a fresh original model with PeftModel.from_pretrained, give
final_logits. GPT-2 has no OLoRA case: PEFT's olora_init decomposes Conv1D's transposed weight as stored (a shape
error on c_attn, a changed output on the square attn.c_proj), so PEFTKit refuses it.
"""

import os
import shutil
import sys
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

transformers.logging.set_verbosity_error()
warnings.filterwarnings("ignore")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIX = os.path.join(ROOT, "Tests", "Fixtures")

CASES = [
    # name, arch, targets, r, alpha, use_rslora, init
    ("gpt2_pissa", "gpt2", ["c_attn", "attn.c_proj", "mlp.c_fc"], 4, 8, False, "pissa"),
    ("llama_pissa", "llama", ["q_proj", "v_proj", "down_proj"], 4, 16, True, "pissa"),
    ("llama_olora", "llama", ["q_proj", "o_proj", "gate_proj"], 4, 8, False, "olora"),
]


def load_model(arch):
    m = AutoModelForCausalLM.from_pretrained(os.path.join(FIX, arch, "model"), torch_dtype=torch.float32)
    return m.eval()


def lora_params(pm):
    return {n: p for n, p in pm.named_parameters() if "lora_" in n}


def exact_ab(pm, ref, init, cfg, fan_in_fan_out):
    """PEFT's pissa_init / olora_init formulas in float64 on the ORIGINAL weights (W = residual + s·B0·A0 as PEFT left
    them, recovered in float64 to well below fp32 rounding), with each component's sign aligned to PEFT's."""
    worst = 0.0
    for n, mod in pm.named_modules():
        if not hasattr(mod, "lora_A") or "default" not in getattr(mod, "lora_A", {}):
            continue
        s = mod.scaling["default"]
        r = mod.r["default"]
        A0 = mod.lora_A["default"].weight.detach().double()
        B0 = mod.lora_B["default"].weight.detach().double()
        stored = mod.base_layer.weight.detach().double()
        W = stored.T if fan_in_fan_out else stored
        W = W + s * B0 @ A0
        if init == "pissa":
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            Sr = S[:r] / s
            A = torch.diag(Sr.sqrt()) @ Vh[:r]
            B = U[:, :r] @ torch.diag(Sr.sqrt())
        else:
            Q, R = torch.linalg.qr(W)
            A, B = R[:r], Q[:, :r]
        sign = torch.sign((A * A0).sum(1) + (B * B0).sum(0))
        A, B = A * sign[:, None], B * sign[None, :]
        res = W - s * B @ A
        key = n + ".lora_A.default.weight"
        ref["exact." + key] = A.float()
        ref["exact." + n + ".lora_B.default.weight"] = B.float()
        hf = n.replace("base_model.model.", "", 1) + ".weight"
        ref["exact_residual." + hf] = (res.T if fan_in_fan_out else res).float().contiguous()
        worst = max(worst, ((A - A0).abs().max() / A.abs().max()).item(), ((B - B0).abs().max() / B.abs().max()).item())
    print(f"  PEFT's fp32 A0/B0 vs float64: worst max|diff|/max|ref| = {worst:.3g}")


def make(case):
    name, arch, targets, r, alpha, rslora, init = case
    out = os.path.join(FIX, "pissa", name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    batch = load_file(os.path.join(FIX, arch, "base", "reference.safetensors"))
    ids, labels = batch["input_ids"].long(), batch["labels"].long()

    base = load_model(arch)
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
    cfg = LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, target_modules=targets, init_lora_weights=init,
                     lora_dropout=0.0, task_type="CAUSAL_LM", fan_in_fan_out=(arch == "gpt2"))
    pm = get_peft_model(base, cfg)
    pm.peft_config["default"].base_model_name_or_path = f"Tests/Fixtures/{arch}/model"  # not this machine's path
    ref = {}
    for n, p in lora_params(pm).items():
        ref["init." + n] = p.detach().clone()
    for n, p in pm.named_parameters():
        if n.endswith(".base_layer.weight"):
            hf = n.replace("base_model.model.", "", 1).replace(".base_layer.weight", ".weight")
            ref["residual." + hf] = p.detach().clone()

    # The initial adapter, as PEFT's conversion wants it (init_lora_weights True, so that loading it does not
    # decompose again).
    exact_ab(pm, ref, init, cfg, arch == "gpt2")
    tmp = tempfile.mkdtemp()
    initial = os.path.join(tmp, "initial")
    pm.peft_config["default"].init_lora_weights = True
    pm.save_pretrained(initial)
    pm.peft_config["default"].init_lora_weights = init

    pm.train()
    o = pm(input_ids=ids, labels=labels)
    ref["logits_init"] = o.logits.detach().clone()
    ref["loss_init"] = o.loss.detach().reshape(1).clone()
    err = (o.logits - base_logits).abs().max().item()
    assert err < 1e-4, f"{name}: adapter at init changes the logits by {err}"
    o.loss.backward()
    params = lora_params(pm)
    for n, p in params.items():
        ref["grad." + n] = p.grad.detach().clone()
    opt = torch.optim.AdamW(list(params.values()), lr=1e-2, betas=(0.9, 0.999), eps=1e-3, weight_decay=0.01)
    opt.step()
    for n, p in params.items():
        ref["final." + n] = p.detach().clone()
    with torch.no_grad():
        o = pm(input_ids=ids, labels=labels)
    ref["final_logits"] = o.logits.detach().clone()
    ref["final_loss"] = o.loss.detach().reshape(1).clone()
    ref["input_ids"] = batch["input_ids"]
    ref["labels"] = batch["labels"]

    pm.save_pretrained(os.path.join(out, "adapter"))
    pm.save_pretrained(os.path.join(out, "converted"), path_initial_model_for_weight_conversion=initial)
    shutil.rmtree(tmp)
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(out, "reference.safetensors"))

    # Self-checks: both folders on a fresh ORIGINAL base give the trained model.
    for folder in ("adapter", "converted"):
        m = PeftModel.from_pretrained(load_model(arch), os.path.join(out, folder)).eval()
        with torch.no_grad():
            got = m(input_ids=ids).logits
        err = (got - ref["final_logits"]).abs().max().item()
        print(f"{name}/{folder}: max |logits - trained| = {err:.3g}")
        assert err < 1e-4, f"{name}/{folder} does not reproduce the trained model"
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        for folder in ("adapter", "converted"):
            assert os.path.isfile(os.path.join(out, folder, f))
    for folder in ("adapter", "converted"):
        p = os.path.join(out, folder, "README.md")
        if os.path.exists(p):
            os.remove(p)
    print(f"{name}: {len(ref)} tensors")


if __name__ == "__main__":
    torch.manual_seed(0)
    for c in CASES:
        make(c)
    sys.exit(0)
