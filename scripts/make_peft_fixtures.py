#!/usr/bin/env python3
"""Generate the Hugging Face `peft` reference fixtures used by PEFTKit's tests.

Developer tool, run by hand; CI never runs it and only reads the committed files
under Tests/Fixtures/peft/. It reuses the tiny models and the batch that
scripts/make_fixtures.py wrote (Tests/Fixtures/{gpt2,llama}/model and
.../base/reference.safetensors); it never rewrites them.

Requirements (none of them are needed to build or test PEFTKit):
  * torch and safetensors in the python3 that runs the script
  * transformers 4.57.6 (+ accelerate, tokenizers, huggingface-hub) as for
    scripts/make_fixtures.py, in /work/pydeps/ah
  * peft 0.18.1 and psutil in their own folder:

        pip install --no-deps --target /work/pydeps/peft peft==0.18.1 psutil

How to run (from anywhere; the script changes to the repository root):

    HF_HUB_OFFLINE=1 PYTHONPATH=/work/pydeps/peft:/work/pydeps/ah \
        python3 scripts/make_peft_fixtures.py

The script re-executes itself with PYTHONHASHSEED=0: PEFT keeps target_modules
as a Python set and writes it to adapter_config.json in set order, which
otherwise changes from run to run. With that, two runs give byte-identical
files on the same software versions. Nothing is downloaded.

Besides writing the files, the script checks itself: an independent
re-implementation of both models (plain tensor algebra, below) reproduces
every PEFT forward from the formulas documented in
Tests/Fixtures/peft/README.md; every adapter folder is reloaded with
PeftModel.from_pretrained and must give the same logits; merged weights are
compared with the documented merge formulas; final.* weights must reproduce
final_loss; base weights must be untouched by training.
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import warnings

if os.environ.get("PYTHONHASHSEED") != "0":
    # Deterministic set order (adapter_config.json target_modules); see docstring.
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402

import peft  # noqa: E402
from peft import (  # noqa: E402
    IA3Config,
    LoraConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptTuningConfig,
    get_peft_model,
)

transformers.logging.set_verbosity_error()

# ----------------------------------------------------------------------------
# Fixed settings
# ----------------------------------------------------------------------------

ARCHS = ("gpt2", "llama")
NUM_VIRTUAL = 5
ADAM_STEPS = 10
ADAM_LR = 1e-2
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
ADAM_WD = 0.01
SIZE_LIMIT = 2 * 1024 * 1024

LORA_STD = 0.1          # lora_A and lora_B ~ N(0, 0.1^2) (overwriting PEFT's init)
IA3_STD = 0.1           # ia3_l ~ 1 + N(0, 0.1^2)   (overwriting PEFT's ones)
PREFIX_STD = 0.5        # prefix key/value rows ~ N(0, 0.5^2)
PREFIX_PROJ_STD = {     # prefix_projection=True: every encoder tensor re-drawn
    "embedding.weight": 1.0,
    "transform.0.weight": 0.2,
    "transform.0.bias": 0.1,
    "transform.2.weight": 0.2,
    "transform.2.bias": 0.1,
}
PROMPT_STD = 0.1        # virtual token embeddings ~ N(0, 0.1^2) (same scale as wte)

CASE_SEED = {"lora": 11, "rslora": 22, "ia3": 33, "prefix": 44, "prefix_proj": 55, "prompt": 66, "multi_lora": 77}
ARCH_SEED_OFFSET = {"gpt2": 0, "llama": 1000}

# Which base module each case records merged weights for.
MERGED_MODULES = {
    ("gpt2", "lora"): ["transformer.h.0.attn.c_attn"],
    ("llama", "lora"): ["model.layers.0.self_attn.q_proj"],
    ("gpt2", "ia3"): ["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_proj"],
    ("llama", "ia3"): ["model.layers.0.self_attn.k_proj", "model.layers.0.mlp.down_proj"],
}


def lora_targets(arch):
    if arch == "gpt2":
        # "attn.c_proj" and "mlp.c_proj" are matched as name suffixes after a dot;
        # plain "c_proj" would select both as well.
        return ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]
    return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_config(arch, case):
    ff = arch == "gpt2"  # GPT-2's Conv1D stores weights [in, out]
    if case == "lora":
        return LoraConfig(
            task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0,
            target_modules=lora_targets(arch), fan_in_fan_out=ff,
        )
    if case == "rslora":
        return LoraConfig(
            task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=True,
            target_modules=["c_attn"] if arch == "gpt2" else ["q_proj", "v_proj"],
            layers_to_transform=[1], fan_in_fan_out=ff,
        )
    if case == "multi_lora_b":
        return LoraConfig(
            task_type="CAUSAL_LM", r=2, lora_alpha=6, lora_dropout=0.0,
            target_modules=["c_attn", "c_fc"] if arch == "gpt2" else ["q_proj", "v_proj", "up_proj"],
            fan_in_fan_out=ff,
        )
    if case == "ia3":
        # PEFT's per-architecture defaults (target_modules / feedforward_modules left None).
        # fan_in_fan_out is passed for GPT-2 so that PEFT does not have to correct it.
        return IA3Config(task_type="CAUSAL_LM", fan_in_fan_out=ff)
    if case == "prefix":
        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=NUM_VIRTUAL, prefix_projection=False)
    if case == "prefix_proj":
        return PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=NUM_VIRTUAL, prefix_projection=True, encoder_hidden_size=16
        )
    if case == "prompt":
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=NUM_VIRTUAL, prompt_tuning_init="RANDOM")
    raise KeyError(case)


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def model_dir(arch):
    # Relative on purpose: PEFT copies this string into adapter_config.json
    # (base_model_name_or_path); relative to the repository root it is valid.
    return f"Tests/Fixtures/{arch}/model"


def load_base(arch):
    return AutoModelForCausalLM.from_pretrained(model_dir(arch), dtype=torch.float32, attn_implementation="eager")


def load_batch(arch):
    ref = load_file(f"Tests/Fixtures/{arch}/base/reference.safetensors")
    return ref["input_ids"].long(), ref["labels"].long(), ref["logits"]


def causal_lm_loss(logits, labels):
    v = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1, :].reshape(-1, v).float(), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="mean"
    )


def max_abs(t):
    return float(t.detach().abs().max())


def check_close(what, a, b, atol, log):
    d = float((a.detach().float() - b.detach().float()).abs().max())
    status = "ok" if d <= atol else "MISMATCH"
    print(f"    check {what}: max|diff|={d:.3e} (atol {atol:.0e}) {status}")
    log[what] = d
    if d > atol:
        raise SystemExit(f"self-check failed: {what}")
    return d


def trainable(pm):
    return [(n, p) for n, p in pm.named_parameters() if p.requires_grad]


def strip_default(name):
    """PEFT's saved key for a named parameter of the adapter called 'default'."""
    if name.endswith(".default"):
        return name[: -len(".default")]
    return name.replace(".default.", ".")


def base_name(peft_module_name):
    return peft_module_name.removeprefix("base_model.model.")


def dir_size(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def save_adapter(pm, adir, **kw):
    if os.path.exists(adir):
        shutil.rmtree(adir)
    pm.save_pretrained(adir, **kw)
    # PEFT also writes a generated model card (README.md); the fixtures keep only
    # the two files an adapter consists of.
    for root, _, files in os.walk(adir):
        if "README.md" in files:
            os.remove(os.path.join(root, "README.md"))


# ----------------------------------------------------------------------------
# Independent re-implementation of the two tiny models (eager, fp32)
# ----------------------------------------------------------------------------
#
# lin(name, x) applies the linear module `name` (base-model path, e.g.
# "transformer.h.0.attn.c_attn") to x; adapters are expressed by passing a
# different lin. prefix is a list over layers of (keys, values), each
# [B, H_kv, P, head_dim], placed in front of the real keys/values with no
# rotation. pos are the absolute positions of the tokens fed in.


def base_lin(arch, W):
    def lin(name, x):
        w = W[name + ".weight"]
        if arch == "gpt2":  # Conv1D, [in, out]
            return x @ w + W[name + ".bias"]
        return x @ w.t()
    return lin


def attention(q, k, v, n_prefix, n_rep):
    # q [B,H,T,d]; k,v [B,Hkv,P+T,d]; query t sees all prefix rows and real rows <= t.
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)
        v = v.repeat_interleave(n_rep, dim=1)
    T, S = q.shape[2], k.shape[2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    allowed = torch.arange(S)[None, :] <= (torch.arange(T)[:, None] + n_prefix)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


def gpt2_manual(W, cfg, emb, pos, lin, prefix=None):
    B, T, D = emb.shape
    H = cfg.n_head
    hd = D // H
    P = 0 if prefix is None else prefix[0][0].shape[2]

    def ln(x, p):
        return F.layer_norm(x, (D,), W[p + ".weight"], W[p + ".bias"], cfg.layer_norm_epsilon)

    def heads(x):
        return x.view(B, T, H, hd).transpose(1, 2)

    h = emb + W["transformer.wpe.weight"][pos]
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        qkv = lin(p + "attn.c_attn", ln(h, p + "ln_1"))
        q, k, v = (heads(t) for t in qkv.split(D, dim=-1))
        if prefix is not None:
            k = torch.cat([prefix[i][0], k], dim=2)
            v = torch.cat([prefix[i][1], v], dim=2)
        o = attention(q, k, v, P, 1).transpose(1, 2).reshape(B, T, D)
        h = h + lin(p + "attn.c_proj", o)
        m = lin(p + "mlp.c_fc", ln(h, p + "ln_2"))
        m = 0.5 * m * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (m + 0.044715 * m.pow(3))))
        h = h + lin(p + "mlp.c_proj", m)
    h = ln(h, "transformer.ln_f")
    return h @ W["transformer.wte.weight"].t()


def rope(x, pos, theta):
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = pos.float()[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * ang.cos() + torch.cat([-x2, x1], dim=-1) * ang.sin()


def llama_manual(W, cfg, emb, pos, lin, prefix=None, rotate_prefix_at=None):
    B, T, D = emb.shape
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = D // H
    P = 0 if prefix is None else prefix[0][0].shape[2]

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps))

    h = emb
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        a = rms(h, W[p + "input_layernorm.weight"])
        q = lin(p + "self_attn.q_proj", a).view(B, T, H, hd).transpose(1, 2)
        k = lin(p + "self_attn.k_proj", a).view(B, T, Hkv, hd).transpose(1, 2)
        v = lin(p + "self_attn.v_proj", a).view(B, T, Hkv, hd).transpose(1, 2)
        q, k = rope(q, pos, cfg.rope_theta), rope(k, pos, cfg.rope_theta)
        if prefix is not None:
            pk = prefix[i][0]
            if rotate_prefix_at is not None:  # only used to show that PEFT does NOT do this
                pk = rope(pk, rotate_prefix_at, cfg.rope_theta)
            k = torch.cat([pk, k], dim=2)
            v = torch.cat([prefix[i][1], v], dim=2)
        o = attention(q, k, v, P, H // Hkv).transpose(1, 2).reshape(B, T, D)
        h = h + lin(p + "self_attn.o_proj", o)
        m = rms(h, W[p + "post_attention_layernorm.weight"])
        g = lin(p + "mlp.gate_proj", m)
        m = lin(p + "mlp.down_proj", F.silu(g) * lin(p + "mlp.up_proj", m))
        h = h + m
    h = rms(h, W["model.norm.weight"])
    return h @ W["lm_head.weight"].t()


def manual_logits(arch, W, cfg, ids=None, emb=None, pos=None, lin=None, prefix=None, **kw):
    if emb is None:
        emb = W["transformer.wte.weight" if arch == "gpt2" else "model.embed_tokens.weight"][ids]
    if pos is None:
        pos = torch.arange(emb.shape[1])
    lin = lin or base_lin(arch, W)
    f = gpt2_manual if arch == "gpt2" else llama_manual
    return f(W, cfg, emb, pos, lin, prefix, **kw)


def lora_lin(arch, W, layers):
    """layers: {base module name: [(A [r,in], B [out,r], scaling), ...]} -> lin with LoRA."""
    base = base_lin(arch, W)

    def lin(name, x):
        y = base(name, x)
        for A, B, s in layers.get(name, []):
            y = y + s * ((x @ A.t()) @ B.t())
        return y
    return lin


def ia3_lin(arch, W, vecs):
    """vecs: {base module name: (l, is_feedforward)}; output scaling or input scaling."""
    base = base_lin(arch, W)

    def lin(name, x):
        if name not in vecs:
            return base(name, x)
        l, ff = vecs[name]
        if ff:
            return base(name, x * l.flatten())
        return base(name, x) * l.flatten()
    return lin


def lora_layers_of(pm, adapter, config):
    """Reads lora_A/lora_B of every LoRA-wrapped module, checking PEFT's scaling."""
    out = {}
    for name, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and adapter in getattr(mod, "lora_A", {}):
            r, alpha = config.r, config.lora_alpha
            s = alpha / math.sqrt(r) if config.use_rslora else alpha / r
            assert abs(mod.scaling[adapter] - s) < 1e-12, (name, mod.scaling[adapter], s)
            assert mod.fan_in_fan_out == config.fan_in_fan_out, name
            out.setdefault(base_name(name), []).append(
                (mod.lora_A[adapter].weight.detach(), mod.lora_B[adapter].weight.detach(), s)
            )
    return out


def prefix_from_rows(rows, num_layers, heads_kv, head_dim, batch):
    """rows [Nv, 2*L*Hkv*hd] -> per layer (keys, values) each [B, Hkv, Nv, hd].

    Column c of a row = ((layer*2 + kv) * Hkv + head) * hd + d, kv 0 = key, 1 = value.
    """
    nv = rows.shape[0]
    x = rows.view(nv, num_layers, 2, heads_kv, head_dim).permute(1, 2, 3, 0, 4)  # [L,2,Hkv,Nv,hd]
    return [(x[l, 0].expand(batch, -1, -1, -1), x[l, 1].expand(batch, -1, -1, -1)) for l in range(num_layers)], x


# ----------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------


def randomize(pm, arch, case):
    g = torch.Generator().manual_seed(CASE_SEED[case] + ARCH_SEED_OFFSET[arch])
    with torch.no_grad():
        for n, p in sorted(trainable(pm), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if ".lora_A." in n or ".lora_B." in n:
                p.copy_(LORA_STD * noise)
            elif ".ia3_l." in n:
                p.copy_(1.0 + IA3_STD * noise)
            elif case == "prefix":
                p.copy_(PREFIX_STD * noise)
            elif case == "prefix_proj":
                key = n.split(".default.", 1)[1]
                p.copy_(PREFIX_PROJ_STD[key] * noise)
            elif case == "prompt":
                p.copy_(PROMPT_STD * noise)
            else:
                raise KeyError(n)


def expected_forward(arch, case, pm, W, cfg, ids, labels):
    """The documented algebra, from the adapter's current tensors. Returns (logits, labels used)."""
    pc = pm.peft_config["default"]
    B = ids.shape[0]
    if case in ("lora", "rslora"):
        return manual_logits(arch, W, cfg, ids=ids, lin=lora_lin(arch, W, lora_layers_of(pm, "default", pc))), labels
    if case == "ia3":
        vecs = {}
        for name, mod in pm.named_modules():
            if hasattr(mod, "ia3_l") and "default" in mod.ia3_l:
                vecs[base_name(name)] = (mod.ia3_l["default"].detach(), mod.is_feedforward)
        return manual_logits(arch, W, cfg, ids=ids, lin=ia3_lin(arch, W, vecs)), labels
    if case in ("prefix", "prefix_proj"):
        enc = pm.prompt_encoder["default"]
        idx = torch.arange(pc.num_virtual_tokens)
        rows = enc.transform(enc.embedding(idx)) if case == "prefix_proj" else enc.embedding.weight
        hkv = pc.num_attention_heads
        prefix, _ = prefix_from_rows(rows.detach(), pc.num_layers, hkv, pc.token_dim // hkv, B)
        pos = torch.arange(pc.num_virtual_tokens, pc.num_virtual_tokens + ids.shape[1])
        return manual_logits(arch, W, cfg, ids=ids, pos=pos, prefix=prefix), labels
    if case == "prompt":
        wte = W["transformer.wte.weight" if arch == "gpt2" else "model.embed_tokens.weight"]
        prompt = pm.prompt_encoder["default"].embedding.weight.detach()
        emb = torch.cat([prompt.unsqueeze(0).expand(B, -1, -1), wte[ids]], dim=1)
        lab = torch.cat([torch.full((B, pc.num_virtual_tokens), -100, dtype=labels.dtype), labels], dim=1)
        return manual_logits(arch, W, cfg, emb=emb), lab
    raise KeyError(case)


def run_case(arch, case, out_root, ids, labels, base_logits, W, cfg, report):
    print(f"  case {arch}/{case}")
    log = report.setdefault(f"{arch}/{case}", {})
    cdir = os.path.join(out_root, arch, case)
    adir = os.path.join(cdir, "adapter")
    os.makedirs(cdir, exist_ok=True)

    model = load_base(arch)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(CASE_SEED[case] + ARCH_SEED_OFFSET[arch])  # PEFT's own init draws (overwritten below)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = get_peft_model(model, make_config(arch, case))
    log["warnings_at_creation"] = sorted({str(w.message) for w in caught})
    pc = pm.peft_config["default"]

    # PEFT's own initial values, before the fixtures overwrite them.
    init_summary = {}
    for n, p in trainable(pm):
        d = p.detach()
        init_summary[n] = {"mean": float(d.mean()), "std": float(d.std()) if d.numel() > 1 else 0.0,
                           "min": float(d.min()), "max": float(d.max())}
    log["peft_default_init"] = init_summary

    randomize(pm, arch, case)
    params = trainable(pm)
    names = [n for n, _ in params]
    log["trainable"] = {n: list(p.shape) for n, p in params}
    tr, total = pm.get_nb_trainable_parameters()
    log["nb_trainable"] = [tr, total]
    init = {n: p.detach().clone() for n, p in params}

    save_adapter(pm, adir)

    extra = {}
    if case in ("prefix", "prefix_proj"):
        with torch.no_grad():
            rows = pm.get_prompt_embedding_to_save("default")
        hkv = pc.num_attention_heads
        _, kv = prefix_from_rows(rows, pc.num_layers, hkv, pc.token_dim // hkv, 1)
        extra["prefix_kv"] = kv.contiguous()
        if case == "prefix_proj":
            extra["prefix_projected"] = rows.contiguous()
        # What PEFT hands to the model, compared with the documented layout.
        with torch.no_grad():
            cache = pm.get_prompt(batch_size=ids.shape[0])
        log["past_key_values_type"] = type(cache).__name__
        for l in range(pc.num_layers):
            ck, cv = cache.layers[l].keys, cache.layers[l].values
            assert tuple(ck.shape) == (ids.shape[0], hkv, pc.num_virtual_tokens, pc.token_dim // hkv), ck.shape
            assert torch.equal(ck[0], kv[l, 0]) and torch.equal(cv[1], kv[l, 1]), l
        log["past_key_values_layer_shape"] = list(ck.shape)

    # One forward + backward.
    pm.train()
    pm.zero_grad(set_to_none=True)
    out = pm(input_ids=ids, labels=labels)
    logits, loss = out.logits, out.loss
    exp_logits, used_labels = expected_forward(arch, case, pm, W, cfg, ids, labels)
    check_close("documented algebra vs PEFT logits", logits, exp_logits, 2e-5, log)
    check_close("loss vs manual shifted CE", loss, causal_lm_loss(logits, used_labels), 1e-6, log)
    log["logits_shape"] = list(logits.shape)
    log["loss_targets"] = int((used_labels[:, 1:] != -100).sum())
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in params}
    for n, p in pm.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n

    if case == "prefix" or case == "prefix_proj":
        prefix_semantics_probe(arch, pm, W, cfg, ids, logits, log)

    # 10 AdamW steps, loss recorded before each update.
    opt = torch.optim.AdamW([p for _, p in params], lr=ADAM_LR, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=ADAM_WD)
    losses = []
    for _ in range(ADAM_STEPS):
        opt.zero_grad(set_to_none=True)
        o = pm(input_ids=ids, labels=labels)
        losses.append(o.loss.item())
        o.loss.backward()
        opt.step()
    with torch.no_grad():
        final_loss = pm(input_ids=ids, labels=labels).loss.detach().float()
    final = {n: p.detach().clone() for n, p in params}
    if case == "prefix_proj":
        with torch.no_grad():
            extra["final_prefix_projected"] = pm.get_prompt_embedding_to_save("default").contiguous()
    for k, v in pm.get_base_model().state_dict().items():
        k2 = k.replace(".base_layer.", ".")
        if k2 in base_state:
            assert torch.equal(v, base_state[k2]), f"base weight changed: {k}"

    tensors = {
        "input_ids": ids.to(torch.int32).contiguous(),
        "labels": labels.to(torch.int32).contiguous(),
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(1),
        "adam_losses": torch.tensor(losses, dtype=torch.float32),
        "final_loss": final_loss.reshape(1),
    }
    if case == "prompt":
        tensors["peft_labels"] = used_labels.to(torch.int32).contiguous()
    for n in names:
        tensors[f"init.{n}"] = init[n].contiguous()
        tensors[f"grad.{n}"] = grads[n].float().contiguous()
        tensors[f"final.{n}"] = final[n].contiguous()
    tensors.update(extra)

    if case in ("lora", "ia3"):
        tensors.update(merge_check(arch, case, adir, ids, logits.detach(), W, log))

    ref_path = os.path.join(cdir, "reference.safetensors")
    save_file(tensors, ref_path)
    log["loss"] = loss.item()
    log["adam_losses"] = losses
    log["final_loss"] = final_loss.item()
    log["max_abs_logits_minus_base"] = max_abs(logits[:, -ids.shape[1]:] - base_logits)
    print(f"    logits {tuple(logits.shape)} loss={loss.item():.6f} "
          f"max|logits-base|={log['max_abs_logits_minus_base']:.4f}")
    print("    adam_losses=" + " ".join(f"{x:.5f}" for x in losses) + f" final={final_loss.item():.5f}")
    assert losses[-1] < losses[0], "AdamW did not reduce the loss"
    assert log["max_abs_logits_minus_base"] > 1e-2, "adapter does not change the logits"

    self_check(arch, case, adir, ref_path, pc, log)
    return init


def prefix_semantics_probe(arch, pm, W, cfg, ids, peft_logits, log):
    """Shows numerically which alternative prefix conventions PEFT does NOT use."""
    pc = pm.peft_config["default"]
    with torch.no_grad():
        rows = pm.get_prompt_embedding_to_save("default")
    hkv = pc.num_attention_heads
    prefix, _ = prefix_from_rows(rows, pc.num_layers, hkv, pc.token_dim // hkv, ids.shape[0])
    nv, T = pc.num_virtual_tokens, ids.shape[1]
    alt = {}
    alt["real tokens at positions 0..T-1"] = manual_logits(arch, W, cfg, ids=ids, pos=torch.arange(T), prefix=prefix)
    if arch == "llama":
        alt["prefix keys rotated at positions 0..Nv-1"] = manual_logits(
            arch, W, cfg, ids=ids, pos=torch.arange(nv, nv + T), prefix=prefix, rotate_prefix_at=torch.arange(nv)
        )
    probe = {}
    # An all-ones attention mask is accepted and changes nothing (PEFT prepends
    # num_virtual_tokens ones to it).
    with torch.no_grad():
        masked = pm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    d = max_abs(masked - peft_logits)
    log["all_ones_attention_mask_max_diff"] = d
    assert d < 1e-6, d
    for what, lg in alt.items():
        d = max_abs(lg - peft_logits)
        probe[what] = d
        print(f"    alternative '{what}' differs from PEFT by {d:.3e}")
        assert d > 1e-3, what
    log["rejected_alternatives_max_diff"] = probe


def merge_check(arch, case, adir, ids, ref_logits, W, log):
    model = load_base(arch)
    pm = PeftModel.from_pretrained(model, adir)
    with torch.no_grad():
        unmerged = pm(input_ids=ids).logits
    check_close("reloaded (unmerged) logits", unmerged, ref_logits, 0.0, log)
    expected = {}
    for name, mod in pm.named_modules():
        b = base_name(name)
        if b not in MERGED_MODULES[(arch, case)]:
            continue
        w = W[b + ".weight"]
        if case == "lora":
            A, Bm = mod.lora_A["default"].weight.detach(), mod.lora_B["default"].weight.detach()
            delta = mod.scaling["default"] * (Bm @ A)  # [out, in]
            expected[b + ".weight"] = w + (delta.t() if arch == "gpt2" else delta)
        else:
            l, ff = mod.ia3_l["default"].detach(), mod.is_feedforward
            vec = l.flatten()
            if arch == "gpt2":  # [in, out]
                expected[b + ".weight"] = w * (vec[:, None] if ff else vec[None, :])
            else:  # [out, in]
                expected[b + ".weight"] = w * (vec[None, :] if ff else vec[:, None])
            if (b + ".bias") in W:
                expected[b + ".bias"] = W[b + ".bias"] if ff else W[b + ".bias"] * vec
    merged_model = pm.merge_and_unload()
    msd = merged_model.state_dict()
    with torch.no_grad():
        merged = merged_model(input_ids=ids).logits
    d = check_close("merge_and_unload logits vs unmerged", merged, ref_logits, 1e-5, log)
    out = {"merged_logits": merged.float().contiguous(), "merge_max_abs_diff": torch.tensor([d], dtype=torch.float32)}
    for k, v in expected.items():
        check_close(f"merged {k} vs formula", msd[k], v, 1e-6, log)
        out[f"merged.{k}"] = msd[k].detach().clone().contiguous()
    assert not any("lora_" in k or "ia3_" in k or "base_layer" in k for k in msd), "unload left adapter keys"
    return out


def self_check(arch, case, adir, ref_path, pc, log):
    ref = load_file(ref_path)
    ids, lab = ref["input_ids"].long(), ref["labels"].long()
    saved = load_file(os.path.join(adir, "adapter_model.safetensors"))
    with safe_open(os.path.join(adir, "adapter_model.safetensors"), "pt") as f:
        log["adapter_file_metadata"] = f.metadata()
    init = {k[len("init."):]: v for k, v in ref.items() if k.startswith("init.")}
    if case in ("prefix", "prefix_proj", "prompt"):
        assert sorted(saved) == ["prompt_embeddings"], sorted(saved)
        want = ref["prefix_projected"] if case == "prefix_proj" else init["prompt_encoder.default.embedding.weight"]
        assert torch.equal(saved["prompt_embeddings"], want), "prompt_embeddings != init"
    else:
        renamed = {strip_default(k): v for k, v in init.items()}
        assert sorted(saved) == sorted(renamed), (sorted(saved), sorted(renamed))
        for k in saved:
            assert torch.equal(saved[k], renamed[k]), k
    log["adapter_file_keys"] = {k: list(v.shape) for k, v in sorted(saved.items())}

    # (1) reload through PEFT's loader (inference mode).
    pm = PeftModel.from_pretrained(load_base(arch), adir)
    with torch.no_grad():
        out = pm(input_ids=ids, labels=lab)
    check_close("reload(model/, adapter/) logits", out.logits, ref["logits"], 1e-6, log)
    check_close("reload(model/, adapter/) loss", out.loss.reshape(1), ref["loss"], 1e-6, log)
    log["reloaded_trainable_after_from_pretrained"] = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    if case == "prefix_proj":
        log["reloaded_prompt_encoder_params"] = {n: list(p.shape) for n, p in pm.prompt_encoder.named_parameters()}
        # Loading it for further training does not work: the saved tensor is the
        # projection's output, the trainable encoder expects embedding + MLP.
        try:
            PeftModel.from_pretrained(load_base(arch), adir, is_trainable=True)
            log["reload_is_trainable"] = "loaded"
        except Exception as e:  # noqa: BLE001
            log["reload_is_trainable"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        print(f"    from_pretrained(is_trainable=True): {log['reload_is_trainable']}")

    # (2) final.* reproduce final_loss. PEFT refuses is_trainable=True for prompt
    # learning adapters, so those are loaded for inference and overwritten.
    prompt_learning = case in ("prefix", "prefix_proj", "prompt")
    pm2 = PeftModel.from_pretrained(load_base(arch), adir, is_trainable=not prompt_learning)
    with torch.no_grad():
        if not prompt_learning:
            sd = dict(pm2.named_parameters())
            for k in init:
                sd[k].copy_(ref["final." + k])
        elif case == "prefix_proj":
            pm2.prompt_encoder["default"].embedding.weight.copy_(ref["final_prefix_projected"])
        else:
            pm2.prompt_encoder["default"].embedding.weight.copy_(ref["final.prompt_encoder.default.embedding.weight"])
        fl = pm2(input_ids=ids, labels=lab).loss
    check_close("final.* weights -> final_loss", fl.reshape(1), ref["final_loss"], 1e-6, log)


def run_multi(arch, out_root, ids, labels, base_logits, W, cfg, report):
    print(f"  case {arch}/multi_lora")
    log = report.setdefault(f"{arch}/multi_lora", {})
    cdir = os.path.join(out_root, arch, "multi_lora")
    os.makedirs(cdir, exist_ok=True)
    lora_ref = load_file(os.path.join(out_root, arch, "lora", "reference.safetensors"))

    model = load_base(arch)
    pm = PeftModel.from_pretrained(model, os.path.join(out_root, arch, "lora", "adapter"), adapter_name="a")
    torch.manual_seed(CASE_SEED["multi_lora"] + ARCH_SEED_OFFSET[arch])
    pm.add_adapter("b", make_config(arch, "multi_lora_b"))
    g = torch.Generator().manual_seed(CASE_SEED["multi_lora"] + ARCH_SEED_OFFSET[arch])
    b_params = sorted((n, p) for n, p in pm.named_parameters() if ".b." in n and "lora_" in n)
    with torch.no_grad():
        for n, p in b_params:
            p.copy_(LORA_STD * torch.randn(p.shape, generator=g, dtype=torch.float32))
    log["parameters_of_b"] = {n: list(p.shape) for n, p in b_params}
    log["active_adapters_after_add"] = list(pm.active_adapters)

    res = {"input_ids": ids.to(torch.int32), "labels": labels.to(torch.int32)}
    pm.eval()
    with torch.no_grad():
        for tag, active in (("a", "a"), ("b", "b"), ("ab", ["a", "b"])):
            if isinstance(active, str):
                pm.set_adapter(active)
            else:
                pm.base_model.set_adapter(active)
            o = pm(input_ids=ids, labels=labels)
            res[f"logits_{tag}"] = o.logits.float().contiguous()
            res[f"loss_{tag}"] = o.loss.float().reshape(1)
            log[f"active_for_{tag}"] = list(pm.active_adapters)
        with pm.disable_adapter():
            res["logits_disabled"] = pm(input_ids=ids).logits.float().contiguous()
    check_close("logits_a == lora/logits", res["logits_a"], lora_ref["logits"], 0.0, log)
    check_close("logits_disabled == base logits", res["logits_disabled"], base_logits, 1e-6, log)
    layers = {}
    for ad in ("a", "b"):
        for k, v in lora_layers_of(pm, ad, pm.peft_config[ad]).items():
            layers.setdefault(k, []).extend(v)
    check_close("logits_ab vs sum of both deltas", res["logits_ab"],
                manual_logits(arch, W, cfg, ids=ids, lin=lora_lin(arch, W, layers)), 2e-5, log)
    for n, p in b_params:
        res[f"init.{n}"] = p.detach().clone().contiguous()
    adir = os.path.join(cdir, "adapter")
    save_adapter(pm, adir)
    log["saved_layout"] = sorted(os.path.relpath(os.path.join(r, f), adir) for r, _, fs in os.walk(adir) for f in fs)
    save_file(res, os.path.join(cdir, "reference.safetensors"))

    # Reload both folders into one model and compare.
    # PEFT selects an adapter's tensors by substring match on its name, so with the
    # names "a" / "b" each file also carries the other adapter's tensors (under
    # keys that keep the other name); loading reports those as unexpected.
    for ad, other in (("a", "b"), ("b", "a")):
        with safe_open(os.path.join(adir, ad, "adapter_model.safetensors"), "pt") as f:
            keys = list(f.keys())
        log[f"file_{ad}_keys"] = keys
        log[f"file_{ad}_foreign_keys"] = sum(f".{other}." in k for k in keys)
    pm2 = PeftModel.from_pretrained(load_base(arch), os.path.join(adir, "a"), adapter_name="a")
    res_b = pm2.load_adapter(os.path.join(adir, "b"), adapter_name="b")
    log["load_b_unexpected_keys"] = sorted(getattr(res_b, "unexpected_keys", []))
    log["load_b_missing_keys"] = sorted(k for k in getattr(res_b, "missing_keys", []) if ".b." in k)
    with torch.no_grad():
        for tag in ("a", "b"):
            pm2.set_adapter(tag)
            check_close(f"reload {tag}/ logits", pm2(input_ids=ids).logits, res[f"logits_{tag}"], 0.0, log)
        pm2.base_model.set_adapter(["a", "b"])
        check_close("reload a+b logits", pm2(input_ids=ids).logits, res["logits_ab"], 0.0, log)


# ----------------------------------------------------------------------------
# Prompt tuning TEXT init (no committed case: the tiny models have no tokenizer)
# ----------------------------------------------------------------------------


def probe_text_init(report):
    """Builds a throw-away character tokenizer over the GPT-2 fixture vocabulary
    to observe what prompt_tuning_init="TEXT" copies from the embedding table."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(33 + i): i for i in range(94)}
    vocab.update({"<unk>": 94, "<s>": 95, "</s>": 96})
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    res = {}
    with tempfile.TemporaryDirectory() as td:
        PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(td)
        for text in ("abc", "abcdefgh"):
            model = load_base("gpt2")
            ids = PreTrainedTokenizerFast.from_pretrained(td)(text)["input_ids"]
            pm = get_peft_model(model, PromptTuningConfig(
                task_type="CAUSAL_LM", num_virtual_tokens=NUM_VIRTUAL, prompt_tuning_init="TEXT",
                prompt_tuning_init_text=text, tokenizer_name_or_path=td))
            emb = pm.prompt_encoder["default"].embedding.weight.detach()
            wte = model.get_input_embeddings().weight.detach()
            rows = []
            for r in range(NUM_VIRTUAL):
                hit = [i for i in range(wte.shape[0]) if torch.equal(wte[i], emb[r])]
                rows.append(hit[0] if hit else None)
            res[text] = {"tokenized": ids, "virtual_token_rows_equal_wte_rows": rows}
            print(f"    TEXT init {text!r}: tokens {ids} -> rows {rows}")
    report["prompt_text_init_probe"] = res


# ----------------------------------------------------------------------------
# Trainable-parameter counts at real model sizes
# ----------------------------------------------------------------------------


def param_counts(out_root):
    print("== param counts")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config())
    torch.manual_seed(0)
    smol = LlamaForCausalLM(LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True))
    L, D, ff = 12, 768, 3072
    cases = [
        ("gpt2_124m", "lora_r8_c_attn", gpt2,
         LoraConfig(task_type="CAUSAL_LM", r=8, target_modules=["c_attn"], fan_in_fan_out=True),
         L * 8 * (D + 3 * D), "12 x 8 x (768 + 2304)"),
        ("gpt2_124m", "lora_r8_all_linears", gpt2,
         LoraConfig(task_type="CAUSAL_LM", r=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True),
         L * 8 * ((D + 3 * D) + (D + D) + (D + ff) + (ff + D)),
         "12 x 8 x ((768 + 2304) + (768 + 768) + (768 + 3072) + (3072 + 768))"),
        ("gpt2_124m", "ia3_defaults", gpt2, IA3Config(task_type="CAUSAL_LM", fan_in_fan_out=True),
         L * (3 * D + ff), "12 x (2304 + 3072)"),
        ("gpt2_124m", "prefix_20", gpt2,
         PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20), 20 * 2 * L * D, "20 x 2 x 12 x 768"),
        ("gpt2_124m", "prefix_20_projection", gpt2,
         PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20, prefix_projection=True),
         20 * D + (D * D + D) + (D * 2 * L * D + 2 * L * D),
         "20 x 768 + (768 x 768 + 768) + (768 x 18432 + 18432)"),
        ("gpt2_124m", "prompt_20", gpt2, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20), 20 * D,
         "20 x 768"),
        ("smollm2_135m", "lora_r8_q_proj_v_proj", smol,
         LoraConfig(task_type="CAUSAL_LM", r=8, target_modules=["q_proj", "v_proj"]),
         30 * 8 * ((576 + 576) + (576 + 192)), "30 x 8 x ((576 + 576) + (576 + 192))"),
        # Extra: prefix rows carry only the key/value width under GQA (3 kv heads x 64).
        ("smollm2_135m", "prefix_20", smol, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20),
         20 * 2 * 30 * 192, "20 x 2 x 30 x (3 x 64)"),
    ]
    result = {
        "peft_version": peft.__version__,
        "transformers_version": transformers.__version__,
        "note": "get_nb_trainable_parameters() of the PeftModel: (trainable, all); all = base + adapter parameters, "
                "tied embeddings counted once",
        "models": {
            "gpt2_124m": "GPT2Config() defaults (vocab 50257, n_embd 768, 12 layers, 12 heads, n_inner 3072, tied)",
            "smollm2_135m": "LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, "
                            "num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, "
                            "tie_word_embeddings=True)",
        },
        "counts": {},
    }
    for mname, cname, base, cfg, formula, formula_text in cases:
        m = copy.deepcopy(base)
        base_total = sum(p.numel() for p in m.parameters())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = get_peft_model(m, cfg)
        tr, total = pm.get_nb_trainable_parameters()
        pc = pm.peft_config["default"]
        entry = {
            "trainable": tr, "all": total, "base_model": base_total,
            "trainable_percent": round(100.0 * tr / total, 4),
            "formula": formula_text,
            "target_modules": sorted(pc.target_modules) if getattr(pc, "target_modules", None) else None,
        }
        if getattr(pc, "peft_type", None) and pc.is_prompt_learning:
            entry.update({k: getattr(pc, k, None) for k in
                          ("num_virtual_tokens", "token_dim", "num_layers", "num_attention_heads",
                           "encoder_hidden_size", "prefix_projection") if hasattr(pc, k)})
        if pc.peft_type == "IA3":
            entry["feedforward_modules"] = sorted(pc.feedforward_modules)
        assert tr == formula, (mname, cname, tr, formula)
        assert total == base_total + tr, (mname, cname, total, base_total, tr)
        result["counts"].setdefault(mname, {})[cname] = entry
        print(f"  {mname}/{cname}: trainable {tr} of {total} ({entry['trainable_percent']}%)")
        del pm, m
    with open(os.path.join(out_root, "param_counts.json"), "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")


# ----------------------------------------------------------------------------


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    os.chdir(repo)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="Tests/Fixtures/peft")
    ap.add_argument("--report", default=None, help="also write the observations (json) here")
    ap.add_argument("--skip-counts", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    if peft.__version__ != "0.18.1" or transformers.__version__ != "4.57.6":
        print("warning: fixtures were specified against peft 0.18.1 / transformers 4.57.6", file=sys.stderr)

    out_root = args.out
    report = {}
    for arch in ARCHS:
        print(f"== {arch}")
        adir = os.path.join(out_root, arch)
        if os.path.exists(adir):
            shutil.rmtree(adir)
        ids, labels, base_logits = load_batch(arch)
        base = load_base(arch)
        W = {k: v.detach().clone() for k, v in base.state_dict().items()}
        if arch == "gpt2":
            W.pop("lm_head.weight", None)
        cfg = base.config
        with torch.no_grad():
            check_close(f"{arch} base: manual model vs transformers",
                        manual_logits(arch, W, cfg, ids=ids), base_logits, 1e-5, report.setdefault(arch, {}))
        for case in ("lora", "rslora", "ia3", "prefix", "prefix_proj", "prompt"):
            run_case(arch, case, out_root, ids, labels, base_logits, W, cfg, report)
        run_multi(arch, out_root, ids, labels, base_logits, W, cfg, report)
    probe_text_init(report)
    if not args.skip_counts:
        param_counts(out_root)

    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True, default=str)

    total = 0
    print("== files")
    for root, dirs, files in sorted(os.walk(out_root)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            total += os.path.getsize(p)
            print(f"  {os.path.relpath(p, out_root):58s} {os.path.getsize(p):8d}")
    print(f"  total {total} bytes")
    assert total < SIZE_LIMIT, "peft fixtures grew past 2 MB"


if __name__ == "__main__":
    main()
