#!/usr/bin/env python3
"""Check that a PEFT-format adapter folder written by PEFTKit loads and runs in Hugging Face `peft`.

Developer tool: run by hand, never by CI. It needs the same Python setup as
scripts/make_peft_fixtures.py (torch, safetensors, transformers 4.57.6 in
/work/pydeps/ah, peft 0.18.1 + psutil in /work/pydeps/peft), e.g.

    HF_HUB_OFFLINE=1 PYTHONPATH=/work/pydeps/peft:/work/pydeps/ah python3 scripts/check_peft_interop.py \
        --model Tests/Fixtures/gpt2/model \
        --adapter /tmp/peftkit_out/adapter \
        --input Tests/Fixtures/peft/gpt2/lora/reference.safetensors \
        --expect /tmp/peftkit_out/logits.safetensors --atol 1e-4

What it does:
  1. loads the Hugging Face model folder (fp32, eager attention);
  2. reads adapter_config.json with peft's own config loader and loads the folder
     with PeftModel.from_pretrained (inference mode, adapter name "default");
  3. checks the tensors: every key of adapter_model.safetensors must be one that
     peft itself would save for this adapter (get_peft_model_state_dict), with
     the same shape and the same values after loading, and no adapter tensor
     peft expects may be missing from the file (exit 2 otherwise);
  4. runs `input_ids` (and `labels`, if present) from --input, prints logits /
     loss statistics, with --logits OUT writes `logits` (f32) and `loss` (f32
     [1]) to OUT;
  5. with --expect FILE compares against FILE's `logits` (key set by
     --expect-key) and `loss` (--expect-loss-key) if both sides have one.
     Prompt tuning returns logits for num_virtual_tokens + T positions; if the
     expected logits have only T positions, the last T positions are compared
     (the real tokens);
  6. with --merge (LoRA / IA3 only) also runs merge_and_unload() and requires
     the merged model's logits to match the unmerged ones (atol 1e-5).

Warnings peft prints while loading that mean the folder is not what peft would
write (missing adapter keys, unknown adapter_config.json fields, a
fan_in_fan_out value peft had to correct), and a prompt-learning adapter
without "task_type": "CAUSAL_LM" (peft would load it and ignore it), fail the
check with exit 2 unless --lenient is given.

Without --adapter the bare model is run (to compare base-model logits).
Exit status: 0 on success, 1 on a numeric mismatch, 2 on a loading / key problem.
"""

import argparse
import json
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import peft  # noqa: E402
from peft import PeftConfig, PeftModel  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402

transformers.logging.set_verbosity_error()

# peft warnings that mean the folder is not what peft itself would have written:
# tensors it could not place, config fields it does not know, and a
# fan_in_fan_out value it had to correct (GPT-2's Conv1D needs true, nn.Linear false).
FORMAT_WARNINGS = (
    "missing adapter keys",
    "Unexpected keyword arguments",
    "unexpected keys",
    "fan_in_fan_out is set to",
)

PROMPT_LEARNING = ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING")


def fail(code, msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(code)


def check_tensors(pm, adapter_dir):
    path = os.path.join(adapter_dir, "adapter_model.safetensors")
    saved = load_file(path)
    # What peft would write for the adapter as loaded: same key naming (no
    # adapter name), so the two sets must agree key by key.
    expected = get_peft_model_state_dict(pm, adapter_name="default")
    problems = []
    for key, tensor in sorted(saved.items()):
        if key not in expected:
            problems.append(f"unexpected key in file (peft does not use it): {key}")
            continue
        want = expected[key]
        if tensor.dtype != torch.float32:
            print(f"  note: {key} stored as {tensor.dtype}")
        if tuple(want.shape) != tuple(tensor.shape):
            problems.append(f"shape mismatch {key}: file {tuple(tensor.shape)} model {tuple(want.shape)}")
        elif not torch.equal(want.detach().cpu(), tensor.to(want.dtype)):
            problems.append(f"value not loaded unchanged: {key}")
    for key in sorted(expected):
        if key not in saved:
            problems.append(f"adapter tensor missing from file: {key}")
    if problems:
        for p in problems:
            print("  " + p, file=sys.stderr)
        fail(2, "adapter tensors do not match what peft expects for this adapter_config.json")
    print(f"  {len(saved)} adapter tensors loaded unchanged; keys: {', '.join(sorted(saved)[:2])}, ...")


def main():
    ap = argparse.ArgumentParser(description="Load a PEFTKit-written PEFT adapter in peft and run it.")
    ap.add_argument("--model", required=True, help="Hugging Face model folder (config.json + *.safetensors)")
    ap.add_argument("--adapter", help="adapter folder (adapter_config.json + adapter_model.safetensors)")
    ap.add_argument("--input", required=True, help="safetensors file with input_ids (and optional labels)")
    ap.add_argument("--logits", help="write logits (and loss) here")
    ap.add_argument("--expect", help="safetensors file with logits to compare with")
    ap.add_argument("--expect-key", default="logits", help="key of the logits in --expect (default: logits)")
    ap.add_argument("--expect-loss-key", default="loss", help="key of the loss in --expect (default: loss)")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--lenient", action="store_true",
                    help="do not fail on peft warnings about the folder (missing keys, unknown config fields, ...)")
    ap.add_argument("--merge", action="store_true", help="also check merge_and_unload() (LoRA / IA3)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    peft_type = None
    if args.adapter:
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            if not os.path.exists(os.path.join(args.adapter, f)):
                fail(2, f"{os.path.join(args.adapter, f)} does not exist")
        with open(os.path.join(args.adapter, "adapter_config.json")) as f:
            raw = json.load(f)
        try:
            cfg = PeftConfig.from_pretrained(args.adapter)
        except Exception as e:  # noqa: BLE001 - any config problem is a format problem
            fail(2, f"peft cannot read adapter_config.json: {type(e).__name__}: {e}")
        peft_type = str(getattr(cfg.peft_type, "value", cfg.peft_type))
        print(f"adapter {peft_type}: {json.dumps(raw, sort_keys=True)}")
        if peft_type in PROMPT_LEARNING and raw.get("task_type") != "CAUSAL_LM":
            # Without it peft builds a plain PeftModel, whose forward never adds
            # the virtual tokens: the adapter would load and silently do nothing.
            msg = f'task_type is {raw.get("task_type")!r}; a prompt-learning adapter needs "CAUSAL_LM"'
            if not args.lenient:
                fail(2, msg)
            print(f"  {msg} (ignored: --lenient)")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = PeftModel.from_pretrained(model, args.adapter)
        except Exception as e:  # noqa: BLE001 - report any loader failure as a key/format problem
            fail(2, f"peft could not load the adapter: {type(e).__name__}: {e}")
        for w in caught:
            msg = str(w.message)
            print(f"  peft warning: {msg.splitlines()[0][:300]}")
            if any(p in msg for p in FORMAT_WARNINGS):
                if args.lenient:
                    print("  (ignored: --lenient)")
                else:
                    fail(2, f"peft reports a format problem: {msg[:1000]}")
        model.eval()
        check_tensors(model, args.adapter)
        if peft_type not in PROMPT_LEARNING:
            n_layers = sum(1 for m in model.modules() if isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer))
            print(f"  {n_layers} adapted modules")

    inp = load_file(args.input)
    input_ids = inp["input_ids"].long()
    labels = inp["labels"].long() if "labels" in inp else None
    with torch.no_grad():
        out = model(input_ids=input_ids, labels=labels)
    logits = out.logits.float()
    print(f"logits {tuple(logits.shape)}: max|.|={logits.abs().max().item():.6f} mean={logits.mean().item():.6f}")
    if labels is not None:
        print(f"loss {out.loss.item():.6f}")

    if args.logits:
        tensors = {"logits": logits.contiguous()}
        if labels is not None:
            tensors["loss"] = out.loss.float().reshape(1)
        save_file(tensors, args.logits)
        print(f"wrote {args.logits}")

    ok = True
    if args.expect:
        exp = load_file(args.expect)
        if args.expect_key not in exp:
            fail(2, f"{args.expect} has no key '{args.expect_key}' (keys: {sorted(exp)})")
        e = exp[args.expect_key].float()
        got = logits
        if tuple(e.shape) != tuple(got.shape):
            T = input_ids.shape[1]
            if e.dim() == 3 and e.shape[1] == T and got.shape[1] > T and e.shape[0] == got.shape[0]:
                print(f"  comparing the last {T} positions (real tokens) of {tuple(got.shape)}")
                got = got[:, -T:]
            else:
                fail(1, f"logits shape {tuple(got.shape)} != expected {tuple(e.shape)}")
        diff = (got - e).abs()
        bound = args.atol + args.rtol * e.abs()
        print(f"compare logits: max|diff|={diff.max().item():.3e} (atol {args.atol:g}, rtol {args.rtol:g})")
        ok = bool((diff <= bound).all())
        lk = args.expect_loss_key
        if lk in exp and labels is not None:
            dl = abs(out.loss.item() - exp[lk].float().item())
            print(f"compare loss: |diff|={dl:.3e}")
            ok = ok and dl <= args.atol + args.rtol * abs(exp[lk].item())

    if args.merge:
        if peft_type not in ("LORA", "IA3"):
            fail(2, f"--merge needs a LoRA or IA3 adapter, not {peft_type}")
        merged = model.merge_and_unload()
        with torch.no_grad():
            ml = merged(input_ids=input_ids).logits.float()
        d = (ml - logits).abs().max().item()
        print(f"merge_and_unload: max|merged - unmerged|={d:.3e}")
        if d > 1e-5:
            ok = False

    if not ok:
        fail(1, "logits/loss differ beyond tolerance")
    if args.expect or args.merge:
        print("MATCH")


if __name__ == "__main__":
    main()
