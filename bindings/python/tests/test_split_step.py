"""The train step in two halves (compute_gradients / gradients() / apply_gradients): what a host needs to
train data-parallel with its own communicator."""

import numpy as np
import peftkit
import pytest


def lora_model(seed=5, dropout=0.1):
    m = peftkit.Model.create(seed=seed)
    m.attach_adapter("l", {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": dropout})
    m.set_active_adapter("l")
    return m


def ids(batch=4, seq=12):
    return (np.arange(batch * seq, dtype=np.int32).reshape(batch, seq) * 7 + 3) % 200


def test_halves_equal_train_step():
    with lora_model() as a, lora_model() as b:
        for _ in range(3):
            ra = a.train_step(ids(), learning_rate=1e-2, max_grad_norm=0.5)
            l, tokens = b.compute_gradients(ids(), learning_rate=1e-2, max_grad_norm=0.5)
            r = b.apply_gradients(learning_rate=1e-2, max_grad_norm=0.5)
            assert (l, tokens) == (ra.loss, ra.tokens)
            assert r == ra
        assert np.array_equal(a.forward(ids()), b.forward(ids()))


def test_two_ranks_summing_numpy_views_equal_the_whole_batch():
    x = ids()
    # No dropout: each rank would draw its own masks, unlike the one process over the whole batch.
    with lora_model(dropout=0) as whole, lora_model(dropout=0) as r0, lora_model(dropout=0) as r1:
        rw = whole.train_step(x, learning_rate=1e-2)
        total = rw.tokens
        l0, _ = r0.compute_gradients(x[:2], learning_rate=1e-2, loss_divisor=total)
        l1, _ = r1.compute_gradients(x[2:], learning_rate=1e-2, loss_divisor=total)
        assert abs(l0 + l1 - rw.loss) <= 1e-6 * rw.loss
        g0, g1 = r0.gradients(), r1.gradients()
        assert g0.dtype == np.float32 and g0.shape == (r0.adapter_num_params("l"),)
        s = g0 + g1
        g0[:] = s  # in place: the views are the library's buffers
        g1[:] = s
        r0.apply_gradients(learning_rate=1e-2)
        r1.apply_gradients(learning_rate=1e-2)
        f0, f1, fw = r0.forward(x), r1.forward(x), whole.forward(x)
        assert np.array_equal(f0, f1)
        np.testing.assert_allclose(f0, fw, rtol=0, atol=1e-5 * np.abs(fw).max())


def test_apply_without_compute_and_nan_gradients_are_refused():
    with lora_model() as m:
        with pytest.raises(peftkit.StateError):
            m.apply_gradients()
        before = m.forward(ids())
        m.compute_gradients(ids())
        m.gradients()[0] = np.nan
        with pytest.raises(peftkit.NumericalError):
            m.apply_gradients()
        assert np.array_equal(m.forward(ids()), before)
        with pytest.raises(peftkit.InvalidArgumentError):
            m.compute_gradients(ids(), loss_divisor=0)
