#!/usr/bin/env python3
"""Generate the PyTorch / AdapterHub reference fixtures used by PEFTKit's tests.

This script is run by developers by hand, when the fixtures need to be
regenerated. CI never runs it: CI only reads the files it produced, which are
committed under Tests/Fixtures/.

Requirements (none of them are needed to build or test PEFTKit):
  * torch and safetensors in the python3 that runs the script
  * adapters==1.3.0 together with the transformers release it pins
    (transformers~=4.57.6), kept in a separate folder so they do not disturb
    anything else, e.g.

        pip install --no-deps --target /work/pydeps/ah adapters==1.3.0 \
            "transformers~=4.57.6" "tokenizers>=0.22,<=0.23" \
            "huggingface-hub>=0.34,<1.0" tqdm

How to run (from the repository root):

    HF_HUB_OFFLINE=1 PYTHONPATH=/work/pydeps/ah python3 scripts/make_fixtures.py

Options: --out DIR (default Tests/Fixtures next to this script's parent).

Everything is random-weight and seeded; nothing is downloaded. Running the
script twice gives byte-identical files on the same software versions.
What is written, and the AdapterHub semantics the files encode, is described
in Tests/Fixtures/README.md.
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

import adapters  # noqa: E402
from adapters import DoubleSeqBnConfig, SeqBnConfig  # noqa: E402

transformers.logging.set_verbosity_error()

# ----------------------------------------------------------------------------
# Fixed settings
# ----------------------------------------------------------------------------

VOCAB = 97
BATCH = 2
SEQ = 12
ADAPTER_NAME = "fixture"       # the adapter's name inside every key
REDUCTION_FACTOR = 4           # hidden 32 -> bottleneck 8
ADAPTER_INIT_STD = 0.1         # all adapter weights and biases ~ N(0, 0.1^2)
ADAM_STEPS = 10
ADAM_LR = 1e-2
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
ADAM_WD = 0.01
BASE_WEIGHT_STD = 0.1          # std of every base matrix / embedding
BASE_BIAS_STD = 0.05           # std of every base linear bias
NORM_WEIGHT_STD = 0.1          # norm weights ~ 1 + N(0, 0.1^2)
NORM_BIAS_STD = 0.1            # LayerNorm biases ~ N(0, 0.1^2)
LLAMA_SHARD_SIZE = "40KB"      # gives 3 shards for the tiny Llama

SEED_GPT2 = 1234
SEED_LLAMA = 5678
SEED_BATCH = 42
SEED_ADAPTER = {"seq_bn": 101, "double_seq_bn": 202}
MODEL_SEED_OFFSET = {"gpt2": 0, "llama": 1000}

ADAPTER_CONFIGS = {
    # Default non-linearity of each config is kept (relu / swish).
    "seq_bn": lambda: SeqBnConfig(reduction_factor=REDUCTION_FACTOR),
    "double_seq_bn": lambda: DoubleSeqBnConfig(reduction_factor=REDUCTION_FACTOR),
}


def gpt2_config():
    return GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
    )


def llama_config():
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=56,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
    )


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def is_norm_param(name):
    return any(t in name for t in ("ln_1.", "ln_2.", "ln_f.", "layernorm.", "norm."))


@torch.no_grad()
def randomize_base(model, seed):
    """Overwrite every base parameter with seeded draws (independent of HF's init).

    Matrices / embeddings ~ N(0, BASE_WEIGHT_STD^2); linear biases ~
    N(0, BASE_BIAS_STD^2); norm weights ~ 1 + N(0, NORM_WEIGHT_STD^2); LayerNorm
    biases ~ N(0, NORM_BIAS_STD^2). Parameters are visited in sorted name order.
    Tied parameters (GPT-2 lm_head == wte) appear once in named_parameters().
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if is_norm_param(name):
            if name.endswith("weight"):
                p.copy_(1.0 + NORM_WEIGHT_STD * noise)
            else:
                p.copy_(NORM_BIAS_STD * noise)
        elif name.endswith("bias"):
            p.copy_(BASE_BIAS_STD * noise)
        else:
            p.copy_(BASE_WEIGHT_STD * noise)


def make_batch():
    g = torch.Generator().manual_seed(SEED_BATCH)
    input_ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g, dtype=torch.int64)
    labels = input_ids.clone()
    labels[0, 0:4] = -100     # a masked "prompt"
    labels[1, 6] = -100       # a hole in the middle
    labels[1, SEQ - 1] = -100  # the last target masked
    return input_ids, labels


def causal_lm_loss(logits, labels):
    """HF causal-LM loss: predict token t+1 from position t, mean over labels != -100."""
    v = logits.shape[-1]
    shift_logits = logits[:, :-1, :].reshape(-1, v).float()
    shift_labels = labels[:, 1:].reshape(-1)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="mean")


def load_fp32(model_dir):
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    # AdapterHub copies config.name_or_path into adapter_config.json ("model_name");
    # blank it so no local path ends up in the fixtures.
    model.config.name_or_path = ""
    return model


def adapter_params(model):
    return [(n, p) for n, p in model.named_parameters() if f".adapters.{ADAPTER_NAME}." in n]


def max_abs(t):
    return float(t.detach().abs().max())


def check_close(what, a, b, atol):
    d = float((a.detach().float() - b.detach().float()).abs().max())
    status = "ok" if d <= atol else "MISMATCH"
    print(f"    check {what}: max|diff|={d:.3e} (atol {atol:.0e}) {status}")
    if d > atol:
        raise SystemExit(f"self-check failed: {what}")


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


# ----------------------------------------------------------------------------
# Semantics check via hooks on the AdapterHub bottleneck layers
# ----------------------------------------------------------------------------


def bottleneck_fn(adapter_module, z):
    """A(z) = up(act(down(z))) * scaling, computed from the module's own weights."""
    down = adapter_module.adapter_down[0]
    act = adapter_module.non_linearity
    up = adapter_module.adapter_up
    return up(act(down(z))) * adapter_module.scaling


class SemanticsProbe:
    """Checks every attention_adapters / output_adapters call against the expected algebra.

    Expected, with h = sub-layer output and x = residual input (pre-LN blocks):
      seq_bn         output position:       out = x + h + A(x + h)
      double_seq_bn  attention and output:  out = x + h + A(h)
      position without an adapter:          out = x + h
    and the layer_norm argument passed by the block is always None.
    """

    def __init__(self, model, config_name):
        self.config_name = config_name
        self.handles = []
        self.calls = 0
        self.max_err = 0.0
        for name, module in model.named_modules():
            if name.endswith("attention_adapters") or name.endswith("output_adapters"):
                self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def fn(module, args, out):
            h, x, ln = args
            assert ln is None, f"{name}: layer_norm argument is not None"
            assert x is not None, f"{name}: residual argument is None"
            has = ADAPTER_NAME in module.adapters and module.get_active_setup() is not None
            if not has:
                exp = x + h
            else:
                a = module.adapters[ADAPTER_NAME]
                if self.config_name == "seq_bn":
                    exp = (x + h) + bottleneck_fn(a, x + h)
                else:
                    exp = x + h + bottleneck_fn(a, h)
            err = float((out - exp).detach().abs().max())
            self.max_err = max(self.max_err, err)
            self.calls += 1

        return fn

    def close(self):
        for hd in self.handles:
            hd.remove()


# ----------------------------------------------------------------------------
# Fixture steps
# ----------------------------------------------------------------------------


def build_and_save_model(kind, out_root):
    if kind == "gpt2":
        torch.manual_seed(SEED_GPT2)
        model = GPT2LMHeadModel(gpt2_config())
        randomize_base(model, SEED_GPT2)
    else:
        torch.manual_seed(SEED_LLAMA)
        model = LlamaForCausalLM(llama_config())
        randomize_base(model, SEED_LLAMA)
    model.eval()
    mdir = os.path.join(out_root, kind, "model")
    model.save_pretrained(mdir, safe_serialization=True)
    print(f"  wrote {mdir} ({dir_size(mdir)} bytes)")

    extra = {}
    if kind == "gpt2":
        # F16 copy of the same weights.
        fdir = os.path.join(out_root, kind, "model_f16")
        m16 = copy.deepcopy(model).to(torch.float16)
        m16.save_pretrained(fdir, safe_serialization=True)
        print(f"  wrote {fdir} ({dir_size(fdir)} bytes)")
        extra["f16_dir"] = fdir
    else:
        sdir = os.path.join(out_root, kind, "model_sharded")
        model.save_pretrained(sdir, safe_serialization=True, max_shard_size=LLAMA_SHARD_SIZE)
        shards = sorted(f for f in os.listdir(sdir) if f.endswith(".safetensors"))
        assert len(shards) >= 2, f"expected 2+ shards, got {shards}"
        assert os.path.exists(os.path.join(sdir, "model.safetensors.index.json"))
        print(f"  wrote {sdir} ({len(shards)} shards, {dir_size(sdir)} bytes)")
        extra["sharded_dir"] = sdir
    return mdir, extra


def run_base(kind, mdir, extra, out_root, input_ids, labels):
    model = load_fp32(mdir)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=input_ids, labels=labels)
    logits, loss = out.logits, out.loss
    check_close("base loss vs. manual shifted CE", loss, causal_lm_loss(logits, labels), 1e-6)
    tensors = {
        "input_ids": input_ids.to(torch.int32).contiguous(),
        "labels": labels.to(torch.int32).contiguous(),
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(1).contiguous(),
    }
    if kind == "gpt2":
        # Logits of the F16-rounded weights run in fp32 (what loading model_f16/ and
        # upcasting gives).
        m16 = AutoModelForCausalLM.from_pretrained(
            extra["f16_dir"], dtype=torch.float32, attn_implementation="eager"
        ).eval()
        with torch.no_grad():
            o16 = m16(input_ids=input_ids, labels=labels)
        tensors["logits_f16_weights"] = o16.logits.float().contiguous()
        tensors["loss_f16_weights"] = o16.loss.float().reshape(1).contiguous()
        d = max_abs(o16.logits - logits)
        print(f"    f16-weights logits differ from fp32 by max {d:.3e}")
    else:
        msh = AutoModelForCausalLM.from_pretrained(
            extra["sharded_dir"], dtype=torch.float32, attn_implementation="eager"
        ).eval()
        with torch.no_grad():
            osh = msh(input_ids=input_ids)
        check_close("sharded copy logits == fp32 logits", osh.logits, logits, 0.0)

    bdir = os.path.join(out_root, kind, "base")
    os.makedirs(bdir, exist_ok=True)
    save_file(tensors, os.path.join(bdir, "reference.safetensors"))
    print(
        f"    base: loss={loss.item():.6f} (ln V={math.log(VOCAB):.4f}) "
        f"max|logits|={max_abs(logits):.4f} logits std={logits.std().item():.4f}"
    )
    return logits


def run_case(kind, config_name, mdir, out_root, input_ids, labels, base_logits):
    print(f"  case {kind}/{config_name}")
    cdir = os.path.join(out_root, kind, config_name)
    adir = os.path.join(cdir, "adapter")
    os.makedirs(cdir, exist_ok=True)

    model = load_fp32(mdir)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    adapters.init(model)
    model.add_adapter(ADAPTER_NAME, config=ADAPTER_CONFIGS[config_name]())
    model.train_adapter(ADAPTER_NAME)  # freezes the base, activates the adapter, train()
    model.set_active_adapters(ADAPTER_NAME)

    params = adapter_params(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [n for n, _ in params], (trainable, [n for n, _ in params])

    # Non-zero random adapter weights (AdapterHub's default init zeroes the biases
    # and uses small weights; the fixtures need every term to matter).
    g = torch.Generator().manual_seed(SEED_ADAPTER[config_name] + MODEL_SEED_OFFSET[kind])
    with torch.no_grad():
        for n, p in params:
            p.copy_(ADAPTER_INIT_STD * torch.randn(p.shape, generator=g, dtype=torch.float32))
    init = {n: p.detach().clone() for n, p in params}

    # Save the adapter with the initial weights (the ones logits/loss/grad refer to).
    if os.path.exists(adir):
        shutil.rmtree(adir)
    model.save_adapter(adir, ADAPTER_NAME, use_safetensors=True)
    if not os.path.exists(os.path.join(adir, "adapter.safetensors")):
        # Fall back: write the safetensors version ourselves.
        save_file({n: t.contiguous() for n, t in init.items()}, os.path.join(adir, "adapter.safetensors"))

    # One forward + backward, with the semantics probe attached.
    probe = SemanticsProbe(model, config_name)
    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, labels=labels)
    probe.close()
    n_layers = model.config.num_hidden_layers
    assert probe.calls == 2 * n_layers, probe.calls
    print(f"    semantics probe: {probe.calls} adapter-layer calls, max|out-expected|={probe.max_err:.3e}")
    if probe.max_err > 1e-5:
        raise SystemExit("semantics probe failed")

    logits, loss = out.logits, out.loss
    check_close("loss vs. manual shifted CE", loss, causal_lm_loss(logits, labels), 1e-6)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in params}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n

    # 10 AdamW steps on the adapter parameters only, same batch each step;
    # loss i is recorded before update i (i.e. after i updates).
    opt = torch.optim.AdamW(
        [p for _, p in params], lr=ADAM_LR, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=ADAM_WD
    )
    losses = []
    for _ in range(ADAM_STEPS):
        opt.zero_grad(set_to_none=True)
        o = model(input_ids=input_ids, labels=labels)
        losses.append(o.loss.item())
        o.loss.backward()
        opt.step()
    with torch.no_grad():
        final_loss = model(input_ids=input_ids, labels=labels).loss.detach().float()
    final = {n: p.detach().clone() for n, p in params}

    # The base model must be untouched by training.
    for k, v in model.state_dict().items():
        if k in base_state:
            assert torch.equal(v, base_state[k]), f"base weight changed: {k}"

    tensors = {
        "input_ids": input_ids.to(torch.int32).contiguous(),
        "labels": labels.to(torch.int32).contiguous(),
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(1).contiguous(),
        "adam_losses": torch.tensor(losses, dtype=torch.float32),
        "final_loss": final_loss.reshape(1).contiguous(),
    }
    for n in init:
        tensors[f"init.{n}"] = init[n].contiguous()
        tensors[f"grad.{n}"] = grads[n].float().contiguous()
        tensors[f"final.{n}"] = final[n].contiguous()
    ref_path = os.path.join(cdir, "reference.safetensors")
    save_file(tensors, ref_path)

    print(
        f"    loss={loss.item():.6f} max|logits|={max_abs(logits):.4f} "
        f"max|logits-base|={max_abs(logits - base_logits):.4f}"
    )
    print("    adam_losses=" + " ".join(f"{x:.5f}" for x in losses) + f" final={final_loss.item():.5f}")
    for n in init:
        print(
            f"    {n}: shape={tuple(init[n].shape)} max|init|={max_abs(init[n]):.4f} "
            f"max|grad|={max_abs(grads[n]):.3e} max|final-init|={max_abs(final[n] - init[n]):.3e}"
        )
    assert losses[-1] < losses[0], "AdamW did not reduce the loss"

    self_check(kind, config_name, mdir, adir, ref_path)


def self_check(kind, config_name, mdir, adir, ref_path):
    """Recompute logits and loss from the files on disk only."""
    ref = load_file(ref_path)
    ids = ref["input_ids"].long()
    lab = ref["labels"].long()

    # (1) model folder + adapter folder through AdapterHub's own loader.
    model = load_fp32(mdir)
    adapters.init(model)
    info = {}
    name = model.load_adapter(adir, use_safetensors=True, with_head=False, loading_info=info)
    assert name == ADAPTER_NAME, name
    assert not info.get("missing_keys") and not info.get("unexpected_keys"), info
    model.set_active_adapters(name)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, labels=lab)
    check_close("reload(model/, adapter/) logits", out.logits, ref["logits"], 1e-6)
    check_close("reload(model/, adapter/) loss", out.loss.reshape(1), ref["loss"], 1e-6)

    # (2) the saved adapter file holds exactly the init.* tensors.
    saved = load_file(os.path.join(adir, "adapter.safetensors"))
    init_keys = sorted(k[len("init."):] for k in ref if k.startswith("init."))
    assert sorted(saved) == init_keys, (sorted(saved), init_keys)
    for k in init_keys:
        assert torch.equal(saved[k], ref["init." + k]), k

    # (3) final.* weights reproduce final_loss.
    with torch.no_grad():
        sd = dict(model.named_parameters())
        for k in init_keys:
            sd[k].copy_(ref["final." + k])
        fl = model(input_ids=ids, labels=lab).loss
    check_close("final.* weights -> final_loss", fl.reshape(1), ref["final_loss"], 1e-6)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(here), "Tests", "Fixtures"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"adapters {adapters.__version__}"
    )
    if adapters.__version__ != "1.3.0":
        print("warning: fixtures were specified against adapters 1.3.0", file=sys.stderr)

    out_root = os.path.abspath(args.out)
    input_ids, labels = make_batch()
    print(f"input_ids={input_ids.tolist()}")
    print(f"labels={labels.tolist()}")

    for kind in ("gpt2", "llama"):
        print(f"== {kind}")
        kdir = os.path.join(out_root, kind)
        if os.path.exists(kdir):
            shutil.rmtree(kdir)
        mdir, extra = build_and_save_model(kind, out_root)
        base_logits = run_base(kind, mdir, extra, out_root, input_ids, labels)
        for config_name in ("seq_bn", "double_seq_bn"):
            run_case(kind, config_name, mdir, out_root, input_ids, labels, base_logits)

    total = 0
    print("== files")
    for root, _, files in sorted(os.walk(out_root)):
        for f in sorted(files):
            p = os.path.join(root, f)
            s = os.path.getsize(p)
            total += s
            print(f"  {os.path.relpath(p, out_root):60s} {s:8d}")
    print(f"  total {total} bytes")
    assert total < 3 * 1024 * 1024, "fixtures grew past 3 MB"


if __name__ == "__main__":
    main()
