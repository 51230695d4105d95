"""The adapter methods through Python: config classes, parameter counts, Hugging Face PEFT files
(Tests/Fixtures/peft, written by scripts/make_peft_fixtures.py with peft 0.18.1) and save/load."""

import json

import numpy as np
import peftkit
import pytest
from conftest import FIXTURES
from safetensors_np import read_safetensors
from test_parity import ADAMW, assert_close

PEFT = FIXTURES / "peft"
CASES = [(a, k) for a in ("gpt2", "llama") for k in ("lora", "rslora", "ia3", "prefix", "prompt")]


def tiny(arch="gpt2"):
    return peftkit.Model.create({"architecture": arch, "num_kv_heads": 2 if arch == "llama" else None}, seed=3)


@pytest.mark.parametrize(
    "config, count",
    [
        # tiny GPT-2: hidden 64, 2 layers, 4 heads; c_attn is 64 -> 192, c_fc 64 -> 256.
        (peftkit.LoRAConfig(rank=8), 2 * 8 * (64 + 192)),
        (peftkit.LoRAConfig(rank=4, target_modules="c_attn,c_fc", layers=[1]), 4 * (64 + 192) + 4 * (64 + 256)),
        (peftkit.IA3Config(), 2 * (192 + 256)),
        (peftkit.PrefixConfig(num_virtual_tokens=5), 5 * 2 * 2 * 64),
        (peftkit.PrefixConfig(num_virtual_tokens=5, prefix_projection=True, projection_hidden=16),
         5 * 64 + (16 * 64 + 16) + (2 * 2 * 64 * 16 + 2 * 2 * 64)),
        (peftkit.PromptConfig(num_virtual_tokens=7), 7 * 64),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, int) else str(v),
)
def test_config_classes_attach_with_peft_parameter_counts(config, count):
    with tiny() as m:
        m.attach_adapter("a", config)
        assert m.adapter_num_params("a") == count
        # The same through method= and keyword options.
        fields = {k: v for k, v in config.__dict__.items()}
        m.attach_adapter("b", method=config.method, **fields)
        assert m.adapter_num_params("b") == count


def test_method_names_and_bad_options():
    assert set(peftkit.ADAPTER_METHODS) == {"bottleneck", "lora", "ia3", "prefix", "prompt"}
    assert peftkit.LoRAConfig(target_modules=["q_proj", " v_proj"]).target_modules == ("q_proj", "v_proj")
    with pytest.raises(peftkit.InvalidArgumentError):
        peftkit.LoRAConfig(target_modules=["a,b"])
    with tiny() as m:
        for bad in (peftkit.LoRAConfig(rank=0), peftkit.LoRAConfig(dropout=1.0), peftkit.LoRAConfig(alpha=float("nan")),
                    peftkit.LoRAConfig(target_modules="q_proj"), peftkit.IA3Config(layers=[5]),
                    peftkit.PrefixConfig(num_virtual_tokens=0), peftkit.PromptConfig(init_tokens=[10**6])):
            with pytest.raises(peftkit.InvalidArgumentError):
                m.attach_adapter("x", bad)
            assert m.adapters == []


@pytest.mark.parametrize("arch, kind", CASES)
def test_peft_folders_load_with_peft_logits_and_train_like_peft(arch, kind):
    r = read_safetensors(PEFT / arch / kind / "reference.safetensors")
    ids, labels = r["input_ids"], r["labels"]
    with peftkit.Model.load(FIXTURES / arch / "model") as m:
        assert m.load_adapter(PEFT / arch / kind / "adapter") == "default"
        m.set_active_adapter("default")
        want = r["logits"][:, 5:] if kind == "prompt" else r["logits"]
        assert_close(f"{arch}/{kind} logits", m.forward(ids), want, 1e-5)
        losses = [m.train_step(ids, labels, **ADAMW) for _ in range(10)]
        assert_close(f"{arch}/{kind} AdamW losses", losses, r["adam_losses"], 1e-5)


@pytest.mark.parametrize("arch, kind", CASES)
def test_saved_folders_are_peft_files(arch, kind, tmp_path):
    with peftkit.Model.load(FIXTURES / arch / "model") as m:
        m.load_adapter(PEFT / arch / kind / "adapter", name="x")
        m.set_active_adapter("x")
        m.train_step(r := read_safetensors(PEFT / arch / kind / "reference.safetensors")["input_ids"], learning_rate=1e-2)
        before = m.forward(r)
        m.save_adapter("x", tmp_path / "out")
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
        cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
        theirs = json.loads((PEFT / arch / kind / "adapter" / "adapter_config.json").read_text())
        assert cfg["peft_type"] == theirs["peft_type"] and cfg["task_type"] == "CAUSAL_LM"
        for key in ("r", "lora_alpha", "use_rslora", "fan_in_fan_out", "layers_to_transform", "num_virtual_tokens",
                    "token_dim", "num_attention_heads", "num_layers"):
            assert cfg.get(key) == theirs.get(key), key
        for key in ("target_modules", "feedforward_modules"):
            assert set(cfg.get(key) or []) == set(theirs.get(key) or []), key
        mine = read_safetensors(tmp_path / "out" / "adapter_model.safetensors")
        peft_file = read_safetensors(PEFT / arch / kind / "adapter" / "adapter_model.safetensors")
        assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in peft_file.items()}
        assert any(not np.array_equal(mine[k], peft_file[k]) for k in mine), "training changed the weights"
        m.load_adapter(tmp_path / "out", name="y")
        m.set_active_adapter("y")
        np.testing.assert_array_equal(m.forward(r), before)


def test_peft_options_peftkit_lacks_are_refused(tmp_path):
    src = PEFT / "gpt2" / "lora" / "adapter"
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    (tmp_path / "adapter_model.safetensors").write_bytes((src / "adapter_model.safetensors").read_bytes())
    with peftkit.Model.load(FIXTURES / "gpt2" / "model") as m:
        with pytest.raises(peftkit.UnsupportedError, match="DoRA"):
            m.load_adapter(tmp_path)
        assert m.adapters == []
