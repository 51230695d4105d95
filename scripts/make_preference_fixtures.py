#!/usr/bin/env python3
"""Reference values for PEFTKit's preference objectives (DPO, ORPO), written from the formulas in PyTorch.

Developer tool, run by hand; CI never runs it and only reads the files it writes:

    /work/venv-ref/bin/python scripts/make_preference_fixtures.py

Needs torch, safetensors, transformers 4.57.x and peft 0.18.1 (TRL is not used: the losses are written
below). For each tiny model (Tests/Fixtures/{gpt2,llama}/model) it loads PEFT's LoRA adapter from
Tests/Fixtures/peft/<arch>/lora/adapter, sets every lora_B to seeded random values (so the policy differs from
the reference), and for two pairs of 12-token rows (prompt, response, right padding; masks mark the response)
writes Tests/Fixtures/preference/<arch>.safetensors:

  init.<PEFT parameter name>        the LoRA tensors used
  chosen, rejected                  int32 [2, 12] token ids
  chosen_mask, rejected_mask        int32 [2, 12], 1 = response token (its log-probability counts)
  dpo.loss, dpo.grad.<name>         DPO, beta 0.1: loss and the LoRA gradients
  dpo.chosen_reward, dpo.rejected_reward, dpo.policy_chosen, dpo.policy_rejected, dpo.ref_chosen, dpo.ref_rejected
  orpo.loss, orpo.grad.<name>       ORPO, lambda 0.5 (TRL's `beta`): loss and the LoRA gradients
  orpo.nll, orpo.log_odds_ratio

Formulas (means over pairs; log pi(y) = sum over response tokens t of log softmax(logits[t-1])[y_t]):
  DPO:  z = beta * ((log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))), loss = mean(-log sigmoid(z)),
        pi_ref = the same model with the adapter disabled (peft's disable_adapter()).
  ORPO: a(y) = log pi(y) / |y|, log odds(y) = a - log(1 - exp(a)),
        loss = NLL - lambda * mean(log sigmoid(log odds(c) - log odds(r))),
        NLL = -(sum over pairs of log pi(c)) / (chosen response tokens in the batch).
"""

import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import transformers
from peft import PeftModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DPO_BETA = 0.1
ORPO_LAMBDA = 0.5
T = 12

transformers.logging.set_verbosity_error()
torch.set_default_dtype(torch.float32)


def pairs(vocab, gen):
    """Two pairs: prompts of 4 and 5 tokens, responses of different lengths, right padding with token 0."""
    chosen = torch.zeros(2, T, dtype=torch.int32)
    rejected = torch.zeros(2, T, dtype=torch.int32)
    cm = torch.zeros(2, T, dtype=torch.int32)
    rm = torch.zeros(2, T, dtype=torch.int32)
    for i, (p, lc, lr) in enumerate([(4, 6, 4), (5, 3, 7)]):
        prompt = torch.randint(1, vocab, (p,), generator=gen, dtype=torch.int32)
        c = torch.randint(1, vocab, (lc,), generator=gen, dtype=torch.int32)
        r = torch.randint(1, vocab, (lr,), generator=gen, dtype=torch.int32)
        chosen[i, :p] = prompt
        chosen[i, p:p + lc] = c
        cm[i, p:p + lc] = 1
        rejected[i, :p] = prompt
        rejected[i, p:p + lr] = r
        rm[i, p:p + lr] = 1
    return chosen, cm, rejected, rm


def seq_logps(model, ids, mask):
    """Summed log-probability of the masked tokens of each row, and the number of tokens counted."""
    logits = model(input_ids=ids.long()).logits.double()
    lp = torch.log_softmax(logits[:, :-1], dim=-1)
    tgt = ids[:, 1:].long()
    tok = lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    m = mask[:, 1:].double()
    return (tok * m).sum(-1), m.sum(-1)


def main():
    os.chdir(ROOT)
    out_dir = "Tests/Fixtures/preference"
    os.makedirs(out_dir, exist_ok=True)
    for arch in ("gpt2", "llama"):
        torch.manual_seed(0)
        base = transformers.AutoModelForCausalLM.from_pretrained(f"Tests/Fixtures/{arch}/model", torch_dtype=torch.float32)
        model = PeftModel.from_pretrained(base, f"Tests/Fixtures/peft/{arch}/lora/adapter", is_trainable=True)
        model.eval()  # no dropout anywhere (the adapter's is 0 too)
        gen = torch.Generator().manual_seed(1234)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        with torch.no_grad():
            for n, p in named:
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        tensors = {f"init.{n}": p.detach().clone().contiguous() for n, p in named}
        chosen, cm, rejected, rm = pairs(model.config.vocab_size, gen)
        tensors.update(chosen=chosen, rejected=rejected, chosen_mask=cm, rejected_mask=rm)

        # DPO
        with torch.no_grad(), model.disable_adapter():
            ref_c, _ = seq_logps(model, chosen, cm)
            ref_r, _ = seq_logps(model, rejected, rm)
        model.zero_grad()
        pc, nc = seq_logps(model, chosen, cm)
        pr, nr = seq_logps(model, rejected, rm)
        z = DPO_BETA * ((pc - ref_c) - (pr - ref_r))
        loss = (-F.logsigmoid(z)).mean()
        loss.backward()
        tensors["dpo.loss"] = loss.detach().float().reshape(1)
        for key, v in [("chosen_reward", DPO_BETA * (pc - ref_c)), ("rejected_reward", DPO_BETA * (pr - ref_r)),
                       ("policy_chosen", pc), ("policy_rejected", pr), ("ref_chosen", ref_c), ("ref_rejected", ref_r)]:
            tensors[f"dpo.{key}"] = v.detach().float().contiguous()
        for n, p in named:
            tensors[f"dpo.grad.{n}"] = p.grad.detach().float().clone().contiguous()
        print(f"{arch} DPO loss {loss.item():.6f}, margin {(DPO_BETA * ((pc - ref_c) - (pr - ref_r))).mean().item():.6f}")

        # ORPO
        model.zero_grad()
        pc, nc = seq_logps(model, chosen, cm)
        pr, nr = seq_logps(model, rejected, rm)
        ac, ar = pc / nc, pr / nr
        log_odds = (ac - torch.log1p(-torch.exp(ac))) - (ar - torch.log1p(-torch.exp(ar)))
        ratio = F.logsigmoid(log_odds)
        nll = -pc.sum() / nc.sum()
        loss = nll - ORPO_LAMBDA * ratio.mean()
        loss.backward()
        tensors["orpo.loss"] = loss.detach().float().reshape(1)
        tensors["orpo.nll"] = nll.detach().float().reshape(1)
        tensors["orpo.log_odds_ratio"] = ratio.mean().detach().float().reshape(1)
        for n, p in named:
            tensors[f"orpo.grad.{n}"] = p.grad.detach().float().clone().contiguous()
        print(f"{arch} ORPO loss {loss.item():.6f} (nll {nll.item():.6f})")

        save_file(tensors, f"{out_dir}/{arch}.safetensors", metadata={
            "dpo_beta": str(DPO_BETA), "orpo_lambda": str(ORPO_LAMBDA),
            "torch": torch.__version__, "transformers": transformers.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
