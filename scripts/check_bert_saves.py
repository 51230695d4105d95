#!/usr/bin/env python3
"""Loads PEFTKit's saves of BERT adapters with the reference libraries and compares their outputs.

Developer tool, run by hand (CI never runs it): the other direction of the fixtures' parity, i.e. folders
PEFTKit writes are what peft 0.18.1 and adapters 1.3.0 read. First let the Swift test write them:

    PEFTKIT_BERT_SAVES=/tmp/bert-saves swift test --skip-build --filter writeSavesForOutsideCheck
    HF_HUB_OFFLINE=1 /work/venv-ref/bin/python scripts/check_bert_saves.py /tmp/bert-saves

Each folder holds an adapter trained a few steps by PEFTKit on fixture shape a (Tests/Fixtures/bert/a/model);
outputs.safetensors holds the batch and PEFTKit's outputs for it (logits, or hidden states for FEATURE_EXTRACTION).
"""

import os
import sys

import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "Tests", "Fixtures", "bert", "a", "model")


def main(d):
    from transformers import BertForSequenceClassification, BertForTokenClassification, BertModel
    from peft import PeftModel
    import adapters
    ref = load_file(os.path.join(d, "outputs.safetensors"))
    ids, mask, types = (ref[k].long() for k in ("input_ids", "attention_mask", "token_type_ids"))
    worst = 0.0
    for folder in ("prefix_seqcls", "prompt_seqcls", "prefix_fe", "seq_bn_head", "double_seq_bn_tokens"):
        path = os.path.join(d, folder)
        if folder == "prefix_fe":
            base = BertModel.from_pretrained(MODEL, attn_implementation="eager").eval()
            pm = PeftModel.from_pretrained(base, path).eval()
            out = pm(input_ids=ids, attention_mask=mask).last_hidden_state
        elif folder.endswith("seqcls"):
            base = BertForSequenceClassification.from_pretrained(MODEL, attn_implementation="eager").eval()
            pm = PeftModel.from_pretrained(base, path).eval()
            out = pm(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        else:
            cls = BertForTokenClassification if folder.endswith("tokens") else BertForSequenceClassification
            model = cls.from_pretrained(MODEL, attn_implementation="eager", num_labels=4 if folder.endswith("tokens") else 3,
                                        ignore_mismatched_sizes=True).eval()
            adapters.init(model)
            name = model.load_adapter(path, with_head=True, use_safetensors=True)
            model.set_active_adapters(name)
            out = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        with torch.no_grad():
            diff = (out.reshape(-1) - ref[folder]).abs().max().item()
        scale = max(1.0, ref[folder].abs().max().item())
        worst = max(worst, diff / scale)
        print(f"{folder}: max |diff| {diff:.3g} (max |PEFTKit| {ref[folder].abs().max().item():.3g})")
    print("worst relative difference", worst)
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
