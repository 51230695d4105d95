"""The Model API on the tiny default model: configs, adapters, training, forward, token arrays."""

import numpy as np
import peftkit
import pytest
from conftest import BATCH


def test_create_with_config_mapping_and_fields():
    cfg = peftkit.ModelConfig(architecture="llama", vocab_size=97, hidden_size=32, num_layers=2, num_heads=4,
                              num_kv_heads=2, max_positions=64)
    with peftkit.Model.create(cfg, seed=3) as m:
        c = m.config
        assert c.architecture is peftkit.Architecture.LLAMA
        assert (c.vocab_size, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim) == (97, 32, 4, 2, 8)
        assert c.intermediate_size == 128 and c.norm_eps == 1e-6 and c.max_positions == 64
        assert (c.qkv_bias, c.output_bias, c.mlp_bias) == (False, False, False)
    with peftkit.Model.create({"vocab_size": 50}, num_layers=1) as m:
        assert (m.config.vocab_size, m.config.num_layers, m.config.hidden_size) == (50, 1, 64)
        assert m.config.architecture is peftkit.Architecture.GPT2 and m.config.norm_eps == 1e-5
    with peftkit.Model.create(peftkit.ModelConfig(), vocab_size=40) as m:
        assert m.config.vocab_size == 40


def test_equal_seeds_give_equal_models():
    ids = np.array(BATCH, dtype=np.int32)
    with peftkit.Model.create(seed=7) as a, peftkit.Model.create(seed=7) as b, peftkit.Model.create(seed=8) as c:
        assert np.array_equal(a.forward(ids), b.forward(ids))
        assert not np.array_equal(a.forward(ids), c.forward(ids))


def test_adapters_list_activate_remove_and_count(model):
    assert model.adapters == [] and model.active_adapter is None
    model.attach_adapter("a")
    model.attach_adapter("b", peftkit.BottleneckConfig.double_seq_bn(reduction_factor=8))
    model.attach_adapter("c", peftkit.BottleneckConfig(reduction_factor=20, leave_out=[0], non_linearity="gelu"))
    model.attach_adapter("d", peftkit.BottleneckConfig.houlsby().to_dict(), ln_before=True, ln_after=True)
    assert model.adapters == ["a", "b", "c", "d"]
    assert "b" in model and "z" not in model
    h = 64
    # Pfeiffer (one adapter per layer), bottleneck 64/16 = 4: 2 layers * (4*64 + 4 + 64*4 + 64)
    assert model.adapter_num_params("a") == 2 * (h * 4 + 4 + 4 * h + h)
    assert model.adapter_num_params("b") == 2 * 2 * (h * 8 + 8 + 8 * h + h)  # Houlsby: two per layer
    assert model.adapter_num_params("c") == 1 * (h * 3 + 3 + 3 * h + h)      # one layer only, 64 // 20 = 3
    # Houlsby, bottleneck 4, plus a LayerNorm (weight + bias) on each adapter's input and output.
    assert model.adapter_num_params("d") == 2 * 2 * (h * 4 + 4 + 4 * h + h + 2 * 2 * h)
    model.set_active_adapter("b")
    assert model.active_adapter == "b"
    model.remove_adapter("b")
    assert model.adapters == ["a", "c", "d"] and model.active_adapter is None
    model.set_active_adapter("c")
    model.set_active_adapter(None)
    assert model.active_adapter is None
    assert "adapters=['a', 'c', 'd']" in repr(model)


def test_long_adapter_names(model, tmp_path, monkeypatch):
    name = "task_" + "x" * 122 + "-"  # the longest name the library takes: 128 bytes
    # Shrink the first name buffer so that every name read takes the grow-and-retry path.
    monkeypatch.setattr(peftkit.model, "_NAME_CAP", 8)
    model.attach_adapter(name)
    model.set_active_adapter(name)
    assert model.adapters == [name] and model.active_adapter == name
    model.save_adapter(name, tmp_path / "long")
    model.remove_adapter(name)
    assert model.load_adapter(tmp_path / "long") == name  # the name stored in the folder, in full
    assert model.load_adapter(tmp_path / "long", name="short") == "short"
    assert model.adapters == [name, "short"]


@pytest.mark.parametrize("bad", ["", "x" * 129, "задача", "a b", "a/b"])
def test_invalid_adapter_names(model, bad):
    # The library takes 1 to 128 bytes of ASCII letters, digits, '_' and '-'.
    with pytest.raises(peftkit.InvalidArgumentError, match="name"):
        model.attach_adapter(bad)
    assert model.adapters == []


def test_adapter_identity_init_leaves_the_base_output(model):
    ids = np.array(BATCH, dtype=np.int32)
    base = model.forward(ids)
    model.attach_adapter("zero", init_weights="mam_adapter")
    model.set_active_adapter("zero")
    assert np.array_equal(model.forward(ids), base)
    model.attach_adapter("rand", init_weights="bert", seed=5)
    model.set_active_adapter("rand")
    assert not np.array_equal(model.forward(ids), base)


def test_training_lowers_the_loss_and_reports_each_step(trained_model):
    m = trained_model
    ids = np.array(BATCH, dtype=np.int32)
    before = m.loss(ids)
    results = [m.train_step(ids, learning_rate=1e-2) for _ in range(30)]
    losses = [r.loss for r in results]
    after = m.loss(ids)
    assert isinstance(losses[0], float)
    assert losses[-1] < losses[0] - 0.5 and after < before - 0.5, (before, losses, after)
    r = results[-1]
    with pytest.warns(DeprecationWarning):
        assert m.last_train_result == r  # the deprecated alias
    assert isinstance(r, peftkit.TrainResult)
    assert r.step == 30 and r.tokens == 2 * 7 and r.loss == losses[-1] and r.grad_norm > 0
    assert r.learning_rate == pytest.approx(1e-2)


def test_train_config_schedule_labels_and_micro_batches(trained_model):
    m = trained_model
    ids = np.array(BATCH, dtype=np.int32)
    cfg = peftkit.TrainConfig(learning_rate=1e-2, schedule="linear", warmup_steps=2, total_steps=10,
                              max_grad_norm=1.0, micro_batch_size=1)
    lrs = []
    for _ in range(4):
        lrs.append(m.train_step(ids, config=cfg).learning_rate)
    # Linear warm-up from 0 over 2 steps, then linear decay to 0 at step 10.
    assert lrs == pytest.approx([0.0, 5e-3, 1e-2, 1e-2 * 7 / 8]), lrs
    labels = ids.copy()
    labels[:, :5] = peftkit.IGNORE_INDEX
    assert m.train_step(ids, labels, cfg).tokens == 2 * 3
    assert m.evaluate(ids, labels).tokens == 6
    assert m.evaluate(ids, np.full_like(ids, -100)) == peftkit.EvalResult(0.0, 0)


def test_base_weights_are_untouched_by_training(model):
    ids = np.array(BATCH, dtype=np.int32)
    base = model.forward(ids)
    model.attach_adapter("a")
    model.set_active_adapter("a")
    for _ in range(3):
        model.train_step(ids, learning_rate=1e-2)
    assert not np.array_equal(model.forward(ids), base)
    model.set_active_adapter(None)
    assert np.array_equal(model.forward(ids), base)


def test_forward_shapes_and_inputs(model):
    v = model.config.vocab_size
    ids = np.array(BATCH, dtype=np.int32)
    logits = model.forward(ids)
    assert logits.shape == (2, 8, v) and logits.dtype == np.float32 and logits.flags.c_contiguous
    # 1-D means batch 1; lists, tuples, other integer dtypes and non-contiguous arrays are converted.
    one = model.forward(ids[0])
    assert one.shape == (1, 8, v)
    np.testing.assert_allclose(one[0], logits[0], rtol=0, atol=1e-5)
    for variant in (BATCH, tuple(map(tuple, BATCH)), ids.astype(np.int64), ids.astype(np.uint8),
                    np.asfortranarray(ids), ids.astype(">i4")):
        np.testing.assert_array_equal(model.forward(variant), logits)
    wide = np.zeros((2, 16), dtype=np.int32)
    wide[:, ::2] = ids
    np.testing.assert_array_equal(model.forward(wide[:, ::2]), logits)
    # Loss: labels default to the inputs.
    assert model.loss(ids) == model.loss(ids, ids)
    assert model.evaluate(ids).tokens == 2 * 7


def test_forward_into_a_preallocated_buffer(model):
    ids = np.array(BATCH, dtype=np.int32)
    want = model.forward(ids)
    out = np.full(2 * 8 * 256 + 10, np.nan, dtype=np.float32)
    got = model.forward(ids, out=out)
    assert got.shape == (2, 8, 256) and np.shares_memory(got, out)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(out[-10:]).all()


def test_zero_copy_for_int32_arrays(model, monkeypatch):
    """A C-contiguous int32 array is handed to the library as is; anything else is converted once."""
    from peftkit import _arrays
    ids = np.array(BATCH, dtype=np.int32)
    assert _arrays.int32_tokens(ids, "x") is ids
    assert _arrays.int32_tokens(ids.astype(np.int64), "x") is not ids
    seen = []
    real = peftkit.model._lib.peftkit_forward

    class Spy:
        def __call__(self, h, ids_ptr, *rest):
            seen.append(ids_ptr)
            return real(h, ids_ptr, *rest)

    monkeypatch.setattr(peftkit.model, "_lib", type("L", (), {"peftkit_forward": Spy()})())
    model.forward(ids)
    assert seen == [ids.ctypes.data]


def test_save_then_load_into_another_model(tmp_path):
    ids = np.array(BATCH, dtype=np.int32)
    with peftkit.Model.create(seed=1) as a:
        a.attach_adapter("task", peftkit.BottleneckConfig.double_seq_bn())
        a.set_active_adapter("task")
        for _ in range(5):
            a.train_step(ids, learning_rate=1e-2)
        want = a.forward(ids)
        a.save_adapter("task", tmp_path / "task")
        a.save_adapter("task", str(tmp_path / "task"))  # overwrite in place
    with peftkit.Model.create(seed=1) as b:
        assert b.load_adapter(tmp_path / "task") == "task"
        assert b.active_adapter is None
        b.set_active_adapter("task")
        np.testing.assert_array_equal(b.forward(ids), want)


def test_set_num_threads():
    ids = np.array(BATCH, dtype=np.int32)
    with peftkit.Model.create(seed=2) as m:
        want = m.forward(ids)
        for n in (1, 2, 0, -5, 5000):
            peftkit.set_num_threads(n)
            np.testing.assert_allclose(m.forward(ids), want, rtol=0, atol=1e-5)
    peftkit.set_num_threads(0)
    with pytest.raises(peftkit.InvalidArgumentError):
        peftkit.set_num_threads(1.5)


def test_full_fine_tuning_trains_the_base_and_refuses_an_active_adapter(model):
    ids = np.array(BATCH, dtype=np.int32)
    base = model.forward(ids)
    model.set_full_fine_tuning(True)
    losses = [model.train_step(ids, learning_rate=1e-2).loss for _ in range(10)]
    assert losses[-1] < losses[0] - 0.5, losses
    assert not np.array_equal(model.forward(ids), base)
    model.attach_adapter("a")
    model.set_active_adapter("a")
    with pytest.raises(peftkit.StateError):
        model.train_step(ids)
    model.set_full_fine_tuning(False)
    model.train_step(ids)
