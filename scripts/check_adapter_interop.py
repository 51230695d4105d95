#!/usr/bin/env python3
"""Check that an adapter folder written by PEFTKit loads and runs in AdapterHub.

Developer tool: run by hand, never by CI. It needs the same Python setup as
scripts/make_fixtures.py (torch, safetensors, adapters==1.3.0 with its pinned
transformers), e.g.

    HF_HUB_OFFLINE=1 PYTHONPATH=/work/pydeps/ah python3 scripts/check_adapter_interop.py \
        --model Tests/Fixtures/gpt2/model \
        --adapter /tmp/peftkit_out/adapter \
        --input Tests/Fixtures/gpt2/seq_bn/reference.safetensors \
        --expect /tmp/peftkit_out/logits.safetensors --atol 1e-4

What it does:
  1. loads the Hugging Face model folder (fp32, eager attention);
  2. loads the adapter folder (adapter_config.json + adapter.safetensors, the
     AdapterHub layout) with AdapterHub's own loader and activates it; fails if
     AdapterHub reports missing or unexpected adapter keys, or if a tensor in
     adapter.safetensors did not end up in the model unchanged;
  3. runs `input_ids` (and `labels`, if present) from --input;
  4. prints logits / loss statistics; with --logits OUT writes `logits`
     (f32 [B,T,V]) and `loss` (f32 [1], when labels are given) to OUT;
     with --expect FILE compares against FILE's `logits` (key set by
     --expect-key) and, if both have one, `loss` (key set by --expect-loss-key).

Without --adapter the bare model is run (to compare base-model logits).
Exit status: 0 on success, 1 on a numeric mismatch, 2 on a loading / key problem.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import adapters  # noqa: E402

transformers.logging.set_verbosity_error()


def fail(code, msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(code)


def check_loaded_tensors(model, adapter_dir, file_name, loaded_name):
    """Every tensor in the adapter file must now be a model parameter, bit for bit."""
    path = os.path.join(adapter_dir, "adapter.safetensors")
    if not os.path.exists(path):
        fail(2, f"{path} does not exist")
    saved = load_file(path)
    state = model.state_dict()
    prefix = model.base_model_prefix + "."
    problems = []
    for key, tensor in sorted(saved.items()):
        k = key.replace(f"adapters.{file_name}.", f"adapters.{loaded_name}.")
        target = k if k in state else (prefix + k if prefix + k in state else None)
        if target is None:
            problems.append(f"key not found in model: {key}")
            continue
        if tensor.dtype != torch.float32:
            print(f"  note: {key} stored as {tensor.dtype}")
        if tuple(state[target].shape) != tuple(tensor.shape):
            problems.append(f"shape mismatch {key}: file {tuple(tensor.shape)} model {tuple(state[target].shape)}")
        elif not torch.equal(state[target], tensor.to(state[target].dtype)):
            problems.append(f"value not loaded: {key}")
    expected = [n for n in state if f".adapters.{loaded_name}." in n]
    loaded = set()
    for key in saved:
        k = key.replace(f"adapters.{file_name}.", f"adapters.{loaded_name}.")
        loaded.add(k if k in state else prefix + k)
    for n in expected:
        if n not in loaded:
            problems.append(f"adapter parameter missing from file: {n}")
    if problems:
        for p in problems:
            print("  " + p, file=sys.stderr)
        fail(2, "adapter tensors do not match the model's adapter parameters")
    print(f"  {len(saved)} adapter tensors loaded unchanged; keys: {', '.join(sorted(saved)[:2])}, ...")


def main():
    ap = argparse.ArgumentParser(description="Load a PEFTKit-written adapter in AdapterHub and run it.")
    ap.add_argument("--model", required=True, help="Hugging Face model folder (config.json + *.safetensors)")
    ap.add_argument("--adapter", help="adapter folder (adapter_config.json + adapter.safetensors)")
    ap.add_argument("--input", required=True, help="safetensors file with input_ids (and optional labels)")
    ap.add_argument("--logits", help="write logits (and loss) here")
    ap.add_argument("--expect", help="safetensors file with logits to compare with")
    ap.add_argument("--expect-key", default="logits", help="key of the logits in --expect (default: logits)")
    ap.add_argument("--expect-loss-key", default="loss", help="key of the loss in --expect (default: loss)")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--rtol", type=float, default=1e-4)
    args = ap.parse_args()

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, adapters {adapters.__version__}")

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()

    if args.adapter:
        cfg_path = os.path.join(args.adapter, "adapter_config.json")
        if not os.path.exists(cfg_path):
            fail(2, f"{cfg_path} does not exist")
        with open(cfg_path) as f:
            cfg = json.load(f)
        file_name = cfg.get("name")
        print(f"adapter '{file_name}': {json.dumps(cfg.get('config'), sort_keys=True)}")
        adapters.init(model)
        info = {}
        try:
            name = model.load_adapter(
                args.adapter, use_safetensors=True, with_head=False, loading_info=info, set_active=True
            )
        except Exception as e:  # noqa: BLE001 - report any loader failure as a key/format problem
            fail(2, f"AdapterHub could not load the adapter: {type(e).__name__}: {e}")
        if info.get("missing_keys"):
            fail(2, f"AdapterHub reports missing keys: {info['missing_keys']}")
        if info.get("unexpected_keys"):
            fail(2, f"AdapterHub reports unexpected keys: {info['unexpected_keys']}")
        model.set_active_adapters(name)
        model.eval()
        check_loaded_tensors(model, args.adapter, file_name, name)

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

    if args.expect:
        exp = load_file(args.expect)
        if args.expect_key not in exp:
            fail(2, f"{args.expect} has no key '{args.expect_key}' (keys: {sorted(exp)})")
        e = exp[args.expect_key].float()
        if tuple(e.shape) != tuple(logits.shape):
            fail(1, f"logits shape {tuple(logits.shape)} != expected {tuple(e.shape)}")
        diff = (logits - e).abs()
        bound = args.atol + args.rtol * e.abs()
        print(f"compare logits: max|diff|={diff.max().item():.3e} (atol {args.atol:g}, rtol {args.rtol:g})")
        ok = bool((diff <= bound).all())
        lk = args.expect_loss_key
        if lk in exp and labels is not None:
            dl = abs(out.loss.item() - exp[lk].float().item())
            print(f"compare loss: |diff|={dl:.3e}")
            ok = ok and dl <= args.atol + args.rtol * abs(exp[lk].item())
        if not ok:
            fail(1, "logits/loss differ beyond tolerance")
        print("MATCH")


if __name__ == "__main__":
    main()
