"""LoRA adapters in llama.cpp's GGUF adapter format: the file's layout (read here with a small independent
reader, the Q/K row order checked against llama.cpp's converter's `permute`), the round trip through
load_adapter, and the refusals. scripts/check_llamacpp_lora.py runs llama.cpp itself on such a file."""
import struct

import numpy as np
import pytest

import peftkit
from safetensors_np import read_safetensors

CFG = {"architecture": "llama", "vocab_size": 97, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
       "num_kv_heads": 2, "max_positions": 64}
IDS = np.arange(2 * 12, dtype=np.int32).reshape(2, 12) % 97
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def read_gguf(path):
    """(metadata, {name: (ne, float32 array)}) of a GGUF v3 file with string/float32/uint32 metadata, F32 tensors."""
    b = open(path, "rb").read()
    assert b[:4] == b"GGUF" and struct.unpack_from("<I", b, 4)[0] == 3
    n_t, n_kv = struct.unpack_from("<QQ", b, 8)
    pos = 24

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", b, pos)
        s = b[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        return s

    meta = {}
    for _ in range(n_kv):
        key = string()
        (t,) = struct.unpack_from("<I", b, pos)
        pos += 4
        if t == 8:
            meta[key] = string()
        elif t == 6:
            meta[key] = struct.unpack_from("<f", b, pos)[0]
            pos += 4
        elif t == 4:
            meta[key] = struct.unpack_from("<I", b, pos)[0]
            pos += 4
        else:
            raise AssertionError(f"metadata type {t}")
    infos = []
    for _ in range(n_t):
        name = string()
        (nd,) = struct.unpack_from("<I", b, pos)
        ne = list(struct.unpack_from(f"<{nd}Q", b, pos + 4))
        typ, off = struct.unpack_from("<IQ", b, pos + 4 + 8 * nd)
        pos += 4 + 8 * nd + 12
        assert typ == 0, "F32"
        infos.append((name, ne, off))
    data = (pos + 31) // 32 * 32
    tensors = {}
    for name, ne, off in infos:
        n = int(np.prod(ne))
        tensors[name] = (ne, np.frombuffer(b, dtype="<f4", count=n, offset=data + off).reshape(ne[::-1]))
    return meta, tensors


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute on the rows of a [out, ...] matrix."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("rslora", [False, True])
def test_gguf_layout_and_round_trip(tmp_path, rslora):
    with peftkit.Model.create(CFG, seed=3) as a:
        a.attach_adapter("task", {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": rslora,
                                  "target_modules": ALL, "layers_to_transform": [1]})
        a.set_active_adapter("task")
        for _ in range(4):
            a.train_step(IDS, learning_rate=1e-2)
        want = a.forward(IDS)
        a.save_adapter("task", tmp_path / "x.gguf", format="gguf")
        a.save_adapter("task", tmp_path / "peft")
    meta, tensors = read_gguf(tmp_path / "x.gguf")
    assert meta["general.architecture"] == "llama" and meta["general.type"] == "adapter"
    assert meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == pytest.approx(8 * 2 if rslora else 8)  # rsLoRA: alpha * sqrt(4)
    peft = read_safetensors(tmp_path / "peft" / "adapter_model.safetensors")
    gguf_names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                  "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
    assert len(tensors) == 2 * len(ALL)
    for mod, g in gguf_names.items():
        sub = "self_attn" if mod in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        pa = peft[f"base_model.model.model.layers.1.{sub}.{mod}.lora_A.weight"]
        pb = peft[f"base_model.model.model.layers.1.{sub}.{mod}.lora_B.weight"]
        ne_a, a_ = tensors[f"blk.1.{g}.weight.lora_a"]
        ne_b, b_ = tensors[f"blk.1.{g}.weight.lora_b"]
        assert ne_a == [pa.shape[1], 4] and ne_b == [4, pb.shape[0]]
        np.testing.assert_array_equal(a_, pa)
        heads = {"q_proj": 4, "k_proj": 2}.get(mod)
        np.testing.assert_array_equal(b_, permute(pb, heads) if heads else pb)
    with peftkit.Model.create(CFG, seed=3) as b:
        assert b.load_adapter(tmp_path / "x.gguf") == "default"
        b.set_active_adapter("default")
        np.testing.assert_allclose(b.forward(IDS), want, rtol=0, atol=1e-5)


def test_gguf_refusals(tmp_path):
    with peftkit.Model.create(CFG, seed=3) as m:
        m.attach_adapter("bn", {"config": "seq_bn"})
        with pytest.raises(peftkit.UnsupportedError):
            m.save_adapter("bn", tmp_path / "bn.gguf", format="gguf")
        m.attach_adapter("z", {"peft_type": "LORA", "r": 2, "lora_alpha": 0, "target_modules": ["q_proj"]})
        with pytest.raises(peftkit.UnsupportedError, match="alpha 0"):
            m.save_adapter("z", tmp_path / "z.gguf", format="gguf")
        with pytest.raises(peftkit.InvalidArgumentError):
            m.save_adapter("z", tmp_path / "z.gguf", format="ggml")
        (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\0" * 20)
        with pytest.raises(peftkit.PeftKitError):
            m.load_adapter(tmp_path / "junk.gguf")
    with peftkit.Model.create(seed=1) as gpt2:
        gpt2.attach_adapter("l", {"peft_type": "LORA", "r": 2, "target_modules": ["c_attn"]})
        with pytest.raises(peftkit.UnsupportedError, match="Llama"):
            gpt2.save_adapter("l", tmp_path / "g.gguf", format="gguf")
