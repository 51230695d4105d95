"""Whole models saved with Model.save_model: a merged LoRA and a fully fine-tuned model, as a Hugging Face folder
(read here with an independent safetensors reader: transformers' names, GPT-2's Conv1D layout) and as GGUF, read
back with the same logits; the refusals. scripts/check_model_export.py runs transformers and llama.cpp on them."""
import json
from pathlib import Path

import numpy as np
import pytest

import peftkit
from safetensors_np import read_safetensors

FIXTURES = Path(__file__).resolve().parents[3] / "Tests" / "Fixtures"
LLAMA = {"architecture": "llama", "vocab_size": 97, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
         "num_kv_heads": 2, "max_positions": 64}
IDS = np.arange(2 * 12, dtype=np.int32).reshape(2, 12) % 97


def merged_lora(m, targets):
    m.attach_adapter("task", {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": targets})
    m.set_active_adapter("task")
    for _ in range(3):
        m.train_step(IDS, learning_rate=2e-2)
    m.merge_adapter("task")


def test_gpt2_merged_lora_hf_round_trip(tmp_path):
    src = FIXTURES / "gpt2" / "model"
    with peftkit.Model.load(src) as m:
        before = m.forward(IDS)
        merged_lora(m, ["c_attn", "c_fc"])
        want = m.forward(IDS)
        assert np.abs(want - before).max() > 1e-4
        m.save_model(tmp_path / "out")
    saved = read_safetensors(tmp_path / "out" / "model.safetensors")
    original = read_safetensors(src / "model.safetensors")
    assert set(saved) == {k for k in original if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    for k, v in saved.items():
        assert v.dtype == np.float32 and v.shape == original[k].shape, k
    # Only the merged modules changed; Conv1D keeps its [in, out] shape.
    changed = {k for k in saved if not np.array_equal(saved[k], original[k])}
    assert changed == {f"transformer.h.{l}.{m}.weight" for l in range(2) for m in ("attn.c_attn", "mlp.c_fc")}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    with peftkit.Model.load(tmp_path / "out") as back:
        np.testing.assert_array_equal(back.forward(IDS), want)


@pytest.mark.parametrize("fmt,dtype", [("hf", "f32"), ("gguf", "f32"), ("gguf", "f16")])
def test_llama_full_fine_tuning_round_trip(tmp_path, fmt, dtype):
    with peftkit.Model.create(LLAMA, seed=4) as m:
        m.set_full_fine_tuning(True)
        for _ in range(2):
            m.train_step(IDS, learning_rate=1e-2)
        want = m.forward(IDS)
        path = tmp_path / ("out" if fmt == "hf" else "out.gguf")
        m.save_model(path, format=fmt, dtype=dtype)
    with peftkit.Model.load(path) as back:
        got = back.forward(IDS)
    if dtype == "f32":
        np.testing.assert_array_equal(got, want)
    else:
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert 0 < rel < 1e-2


def test_merged_lora_gguf_round_trip(tmp_path):
    with peftkit.Model.create(LLAMA, seed=5) as m:
        merged_lora(m, ["q_proj", "k_proj", "v_proj", "down_proj"])
        want = m.forward(IDS)
        m.save_model(tmp_path / "m.gguf", format="gguf")
    with peftkit.Model.load(tmp_path / "m.gguf") as back:
        np.testing.assert_array_equal(back.forward(IDS), want)


def test_refusals_leave_nothing(tmp_path):
    with peftkit.Model.create(LLAMA, seed=6) as m:
        m.attach_adapter("p", {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2})
        m.set_active_adapter("p")
        with pytest.raises(peftkit.StateError, match="not merged"):
            m.save_model(tmp_path / "a")
        with pytest.raises(peftkit.UnsupportedError):
            m.merge_adapter("p")
        m.set_active_adapter(None)
        with pytest.raises(peftkit.InvalidArgumentError):
            m.save_model(tmp_path / "b", format="hf", dtype="f16")
        with pytest.raises(peftkit.InvalidArgumentError):
            m.save_model(tmp_path / "b", format="onnx")
        with pytest.raises(peftkit.PeftKitIOError):
            m.save_model(tmp_path / "missing" / "x.gguf", format="gguf")
        with pytest.raises(peftkit.PeftKitIOError):
            m.save_model(tmp_path, format="gguf")
    with peftkit.Model.create(seed=1) as gpt2:
        with pytest.raises(peftkit.UnsupportedError, match="Llama"):
            gpt2.save_model(tmp_path / "g.gguf", format="gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
