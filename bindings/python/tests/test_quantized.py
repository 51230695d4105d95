"""A GGUF base kept in quantized blocks (the default) against the same file widened to fp32."""

import numpy as np
import pytest

import peftkit
from conftest import FIXTURES

TINY = FIXTURES / "quant_llama" / "tiny_q4_0.gguf"


def test_quantized_and_widened_agree_and_merge_needs_widen():
    ids = np.arange(14, dtype=np.int32).reshape(2, 7) % 50
    with peftkit.Model.load(TINY) as q, peftkit.Model.load(TINY, widen=True) as w:
        lq, lw = q.forward(ids), w.forward(ids)
        assert np.max(np.abs(lq - lw)) <= 1e-5 * np.max(np.abs(lw))
        for m in (q, w):
            m.attach_adapter("a", {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
            m.set_active_adapter("a")
            r1 = m.train_step(ids, learning_rate=1e-2).loss
            r2 = m.train_step(ids, learning_rate=1e-2).loss
            assert np.isfinite(r1) and r2 < r1
        with pytest.raises(peftkit.UnsupportedError, match="widen"):
            q.merge_adapter("a")
        w.merge_adapter("a")
