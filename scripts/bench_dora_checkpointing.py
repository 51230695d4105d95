#!/usr/bin/env python3
"""DoRA vs LoRA step time and gradient checkpointing (memory and speed), side by side in one run.

Rounds alternate the order of the configurations (the machine is shared: a busy minute should not always hit
the same one). Every configuration runs in its own process (`peftkit-cli bench` isolates each one; the PyTorch
side runs scripts/bench_compare.py's child), so each peak RSS (VmHWM) belongs to one configuration.

    python3 scripts/bench_dora_checkpointing.py --peftkit-bin .build/release/peftkit-cli \
        --torch-python /work/venv-ref/bin/python --rounds 3 --big-rounds 1

Measured, all on the SmolLM2-135M shape (random weights, Llama architecture, 30 layers, d=576):
  A. LoRA vs DoRA, r=8 on q_proj,v_proj, B=4 T=256: step time (target DoRA <= 1.3x LoRA).
  B. LoRA B=4 T=256: PEFTKit with gradient checkpointing vs PyTorch + PEFT without (peak RSS, target <= 0.3x)
     and vs PEFTKit without (tok/s, target >= 0.75x).
  C. LoRA B=8 T=1024: PEFTKit with and without gradient checkpointing (peak RSS, tok/s).
Results go to --out (JSON lines, one per measurement) and a summary table on stdout.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peftkit(args, method, batch, seq, ckpt, steps, warmup=1):
    # An address-space cap (prlimit) makes a configuration that does not fit fail with PEFTKit's out-of-memory
    # error instead of pushing a shared machine into the OOM killer.
    cap = ["prlimit", f"--as={args.mem_cap_gib << 30}"] if args.mem_cap_gib else []
    cmd = cap + [args.peftkit_bin, "bench", "--json", "--shapes", "smollm2", "--methods", method, "--batch", str(batch),
           "--seq", str(seq), "--warmup", str(warmup), "--steps", str(steps), "--no-inference", "--no-breakdown",
           "--threads", str(args.threads)]
    if ckpt:
        cmd.append("--grad-checkpoint")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if p.returncode != 0:
        return {"error": f"peftkit-cli status {p.returncode}: {p.stderr.strip()[-300:]}"}
    t = json.loads(p.stdout)["shapes"][0]["train"][0]
    if t.get("error"):
        return {"error": t["error"]}
    return dict(tok_s=t["tokensPerSecond"], median_ms=t["medianMs"], step_ms=t["stepMs"], peak_rss_mib=t["peakRSSMiB"])


def torch_lora(args, batch, seq, steps):
    job = dict(job="train", shape="smollm2", method="lora", batch=batch, seq=seq, warmup=1, steps=steps,
               threads=args.threads)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    p = subprocess.run([args.torch_python, os.path.join(ROOT, "scripts", "bench_compare.py"), "--child", json.dumps(job)],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            return dict(tok_s=r["tokens_per_second"], median_ms=r["median_ms"], step_ms=r["step_ms"],
                        peak_rss_mib=r["peak_rss_mib"])
    return {"error": f"python status {p.returncode}"}


def load():
    return os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peftkit-bin", required=True)
    ap.add_argument("--torch-python", default=sys.executable)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big-rounds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="/tmp/peftkit-bench-dora-ckpt.jsonl")
    ap.add_argument("--big-warmup", type=int, default=1, help="untimed steps before the one timed B=8 T=1024 step")
    ap.add_argument("--skip-torch", action="store_true", help="leave out the PyTorch + PEFT run")
    ap.add_argument("--mem-cap-gib", type=int, default=0, help="address-space cap per PEFTKit run (0 = none)")
    args = ap.parse_args()

    small = [
        ("A lora B4 T256", lambda: peftkit(args, "lora", 4, 256, False, args.steps)),
        ("A dora B4 T256", lambda: peftkit(args, "dora", 4, 256, False, args.steps)),
        ("B peftkit lora ckpt B4 T256", lambda: peftkit(args, "lora", 4, 256, True, args.steps)),
        ("B pytorch+peft lora B4 T256", lambda: torch_lora(args, 4, 256, args.steps)),
    ]
    if args.skip_torch:
        small = small[:3]
    big = [
        ("C peftkit lora B8 T1024", lambda: peftkit(args, "lora", 8, 1024, False, 1, args.big_warmup)),
        ("C peftkit lora ckpt B8 T1024", lambda: peftkit(args, "lora", 8, 1024, True, 1, args.big_warmup)),
    ]
    results = {}
    with open(args.out, "a") as f:
        def run(name, fn, rnd):
            l0 = load()
            t0 = time.time()
            r = fn()
            r.update(name=name, round=rnd, load_before=l0, load_after=load(), wall_s=time.time() - t0,
                     utc=time.strftime("%H:%M:%S", time.gmtime(t0)))
            log(json.dumps(r))
            f.write(json.dumps(r) + "\n")
            f.flush()
            results.setdefault(name, []).append(r)

        for rnd in range(args.rounds):
            order = small if rnd % 2 == 0 else list(reversed(small))
            for name, fn in order:
                run(name, fn, rnd)
        for rnd in range(args.big_rounds):
            order = big if rnd % 2 == 0 else list(reversed(big))
            for name, fn in order:
                run(name, fn, rnd)

    print(f"{'configuration':32} {'tok/s per round':40} {'peak RSS MiB':>14}")
    for name, rs in results.items():
        ok = [r for r in rs if "error" not in r]
        print(f"{name:32} {', '.join('%.1f' % r['tok_s'] for r in ok):40} "
              f"{max((r['peak_rss_mib'] for r in ok), default=float('nan')):14.0f}")
    for rnd in range(args.rounds):
        def get(n):
            return next((r for r in results.get(n, []) if r["round"] == rnd and "error" not in r), None)
        lo, do, ck, pt = (get(n) for n in ("A lora B4 T256", "A dora B4 T256", "B peftkit lora ckpt B4 T256",
                                           "B pytorch+peft lora B4 T256"))
        if lo and do:
            print(f"round {rnd + 1}: DoRA/LoRA step time {do['median_ms'] / lo['median_ms']:.2f}x")
        if ck and lo:
            print(f"round {rnd + 1}: ckpt/no-ckpt tok/s {ck['tok_s'] / lo['tok_s']:.2f}x")
        if ck and pt:
            print(f"round {rnd + 1}: PEFTKit ckpt RSS / PyTorch RSS {ck['peak_rss_mib'] / pt['peak_rss_mib']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
