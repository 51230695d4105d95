"""TrainConfig.activation_memory: every policy gives the same gradients, bit for bit; names and values reach the
library; a bad value is refused."""

import numpy as np
import peftkit
import pytest

LORA = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["c_attn", "c_proj"]}
IDS = (np.arange(2 * 12, dtype=np.int32).reshape(2, 12) * 7) % 50


def _gradients(memory):
    with peftkit.Model.create(seed=3) as m:
        m.attach_adapter("a", LORA)
        m.set_active_adapter("a")
        out = []
        for _ in range(2):
            m.compute_gradients(IDS, activation_memory=memory)
            out.append(m.gradients().copy())
            m.apply_gradients(learning_rate=1e-2)
        return out


def test_every_policy_gives_the_same_gradients():
    ref = _gradients("keep")
    assert np.abs(ref[0]).max() > 0
    for memory in ("recompute-attention", peftkit.ActivationMemory.RECOMPUTE_ATTENTION_UP, "auto"):
        for a, b in zip(ref, _gradients(memory)):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), memory


def test_activation_memory_reaches_the_struct():
    assert peftkit.TrainConfig()._to_struct().activation_memory == peftkit.ActivationMemory.AUTO == 0
    s = peftkit.TrainConfig(activation_memory="recompute_attention")._to_struct()
    assert s.activation_memory == peftkit.ActivationMemory.RECOMPUTE_ATTENTION
    with pytest.raises(peftkit.InvalidArgumentError):
        peftkit.TrainConfig(activation_memory="sometimes")


class _Unknown(peftkit.TrainConfig):
    """A config whose struct carries a value no PEFTKIT_ACTIVATIONS_* constant has (as a C caller could)."""

    def _to_struct(self):
        s = super()._to_struct()
        s.activation_memory = 9
        return s


def test_the_library_refuses_an_unknown_value():
    with peftkit.Model.create(seed=3) as m:
        m.attach_adapter("a", LORA)
        m.set_active_adapter("a")
        with pytest.raises(peftkit.InvalidArgumentError, match="activation_memory"):
            m.train_step(IDS, config=_Unknown())
