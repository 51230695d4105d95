"""Packed rows (segment ids) and the train-config fields LoRA+ and gradient checkpointing, through ctypes."""

import numpy as np
import pytest

import peftkit

LORA = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn", "c_proj"]}


def _records():
    rng = np.random.default_rng(3)
    return [rng.integers(1, 250, n).astype(np.int32) for n in (5, 7, 4)]


def _packed(records, seq_len):
    ids = np.zeros(seq_len, np.int32)
    seg = np.full(seq_len, len(records), np.int32)  # padding: a segment of its own
    labels = np.full(seq_len, peftkit.IGNORE_INDEX, np.int32)
    t = 0
    for k, r in enumerate(records):
        ids[t:t + len(r)] = r
        labels[t:t + len(r)] = r
        seg[t:t + len(r)] = k
        t += len(r)
    return ids[None], labels[None], seg[None]


@pytest.fixture
def lora_model():
    with peftkit.Model.create(seed=4) as m:
        m.attach_adapter("a", LORA)
        m.set_active_adapter("a")
        # Move B away from zero so that the adapter changes the logits.
        m.train_step(np.arange(1, 17, dtype=np.int32)[None], learning_rate=1e-2)
        yield m


def test_packed_logits_and_loss_equal_records_alone(lora_model):
    recs = _records()
    ids, labels, seg = _packed(recs, 20)
    logits = lora_model.forward(ids, segment_ids=seg)
    t, loss_sum, tokens = 0, 0.0, 0
    for r in recs:
        alone = lora_model.forward(r[None])
        np.testing.assert_allclose(logits[0, t:t + len(r)], alone[0], rtol=0, atol=1e-5 * np.abs(alone).max())
        ev = lora_model.evaluate(r[None])
        loss_sum += ev.loss * ev.tokens
        tokens += ev.tokens
        t += len(r)
    packed = lora_model.evaluate(ids, labels, segment_ids=seg)
    assert packed.tokens == tokens == sum(len(r) - 1 for r in recs)
    assert packed.loss == pytest.approx(loss_sum / tokens, rel=1e-5)
    # Without segment ids the records see each other: different logits.
    assert not np.allclose(lora_model.forward(ids)[0, 5:12], logits[0, 5:12], atol=1e-4)


def test_packed_gradients_equal_records_one_by_one(lora_model):
    recs = _records()
    ids, labels, seg = _packed(recs, 20)
    total = sum(len(r) - 1 for r in recs)
    _, tok = lora_model.compute_gradients(ids, labels, loss_divisor=total, segment_ids=seg)
    assert tok == total
    packed = lora_model.gradients().copy()
    ref = np.zeros_like(packed)
    for r in recs:
        lora_model.compute_gradients(r[None], loss_divisor=total)
        ref += lora_model.gradients()
    assert np.abs(ref).max() > 1e-5
    assert np.abs(packed - ref).max() <= 1e-5 * np.abs(ref).max()
    lora_model.apply_gradients(learning_rate=0)


def test_packed_train_step_and_new_train_config_fields(lora_model):
    ids, labels, seg = _packed(_records(), 20)
    first = lora_model.train_step(ids, labels, segment_ids=seg, learning_rate=1e-2, gradient_checkpointing=True,
                                  lora_plus_ratio=4.0)
    for _ in range(5):
        last = lora_model.train_step(ids, labels, segment_ids=seg, learning_rate=1e-2, gradient_checkpointing=True,
                                     lora_plus_ratio=4.0)
    assert last.loss < first.loss
    assert first.tokens == last.tokens == 13


def test_train_config_fields_reach_the_library():
    s = peftkit.TrainConfig(lora_plus_ratio=16.0, gradient_checkpointing=True)._to_struct()
    assert s.lora_plus_ratio == 16.0 and s.gradient_checkpointing == 1
    d = peftkit.TrainConfig()._to_struct()
    assert d.lora_plus_ratio == 0.0 and d.gradient_checkpointing == 0
    with pytest.raises(TypeError):
        peftkit.TrainConfig(gradient_checkpointing=1)._to_struct()


def test_bad_segment_ids_and_refused_methods(lora_model):
    ids, labels, seg = _packed(_records(), 20)
    with pytest.raises(peftkit.InvalidArgumentError):
        lora_model.train_step(ids, segment_ids=seg[:, :10])
    with pytest.raises(peftkit.InvalidArgumentError):
        lora_model.forward(ids, segment_ids=seg.astype(np.float32))
    with pytest.raises(peftkit.InvalidArgumentError):
        lora_model.train_step(ids, lora_plus_ratio=-1.0)
    lora_model.attach_adapter("p", {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2})
    lora_model.set_active_adapter("p")
    with pytest.raises(peftkit.UnsupportedError, match="packed"):
        lora_model.train_step(ids, labels, segment_ids=seg)
