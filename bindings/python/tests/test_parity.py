"""Parity with PyTorch + transformers + AdapterHub through the Python API: the fixtures of the Swift
parity tests (Tests/Fixtures, see its README), reproduced via ctypes.

Tolerances as in Tests/PEFTKitTests/ParityTests.swift: |diff| <= rel * max(1, max|ref|).
"""

import numpy as np
import peftkit
import pytest
from conftest import FIXTURES
from safetensors_np import read_safetensors

KINDS = ["seq_bn", "double_seq_bn"]
ARCHS = ["gpt2", "llama"]
ADAMW = dict(learning_rate=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)


def assert_close(what, got, want, rel):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    scale = max(1.0, float(np.max(np.abs(want))))
    print(f"{what}: max |diff| = {diff:.3g} (max |ref| = {float(np.max(np.abs(want))):.3g})")
    assert diff <= rel * scale, f"{what}: max |diff| {diff} > {rel} * {scale}"


def reference(arch, kind):
    r = read_safetensors(FIXTURES / arch / kind / "reference.safetensors")
    return r, r["input_ids"], r["labels"]


@pytest.mark.parametrize("arch", ARCHS)
def test_base_logits_and_loss(arch):
    r, ids, labels = reference(arch, "base")
    assert ids.shape == (2, 12) and ids.dtype == np.int32
    folders = ["model"] + (["model_sharded"] if arch == "llama" else [])
    cases = [(f, "logits", "loss") for f in folders]
    if arch == "gpt2":
        cases.append(("model_f16", "logits_f16_weights", "loss_f16_weights"))
    for folder, logits_key, loss_key in cases:
        with peftkit.Model.load(FIXTURES / arch / folder) as m:
            assert m.active_adapter is None
            logits = m.forward(ids)
            assert logits.shape == (2, 12, 97) and logits.dtype == np.float32
            assert_close(f"{arch}/{folder} logits", logits, r[logits_key], 1e-4)
            ev = m.evaluate(ids, labels)
            assert ev.tokens == 17  # 8 + 9 counted targets, see the fixtures' README
            assert_close(f"{arch}/{folder} loss", [ev.loss], r[loss_key], 1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_adapter_logits_loss_and_gradient_norm(arch, kind):
    r, ids, labels = reference(arch, kind)
    with peftkit.Model.load(FIXTURES / arch / "model") as m:
        name = m.load_adapter(FIXTURES / arch / kind / "adapter")
        assert name == "fixture"
        assert m.adapters == ["fixture"] and m.active_adapter is None
        init = {k[len("init."):]: v for k, v in r.items() if k.startswith("init.")}
        assert m.adapter_num_params("fixture") == sum(v.size for v in init.values())
        m.set_active_adapter("fixture")
        assert_close(f"{arch}/{kind} logits", m.forward(ids), r["logits"], 1e-4)
        assert_close(f"{arch}/{kind} loss", [m.loss(ids, labels)], r["loss"], 1e-5)

        # The C ABI exposes the global gradient norm of a step (lr 0, no decay: weights unchanged).
        res = m.train_step(ids, labels, learning_rate=0.0, weight_decay=0.0)
        loss = res.loss
        assert res.loss == loss and res.step == 1 and res.tokens == 17 and res.learning_rate == 0.0
        want_norm = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2))
                                for k, v in r.items() if k.startswith("grad.")))
        assert_close(f"{arch}/{kind} grad norm", [res.grad_norm], [want_norm], 2e-4)
        assert_close(f"{arch}/{kind} loss after lr-0 step", [m.loss(ids, labels)], r["loss"], 1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_ten_adamw_steps(arch, kind, tmp_path):
    r, ids, labels = reference(arch, kind)
    with peftkit.Model.load(FIXTURES / arch / "model") as m:
        # Loaded under the fixture's own name, so that the saved tensor names equal the reference's.
        assert m.load_adapter(FIXTURES / arch / kind / "adapter", name="fixture") == "fixture"
        m.set_active_adapter("fixture")
        config = peftkit.TrainConfig(**ADAMW)
        results = [m.train_step(ids, labels, config) for _ in range(10)]
        losses = [r.loss for r in results]
        assert results[-1].step == 10
        assert_close(f"{arch}/{kind} 10 AdamW losses", losses, r["adam_losses"], 1e-5)
        assert_close(f"{arch}/{kind} loss after 10 steps", [m.loss(ids, labels)], r["final_loss"], 1e-5)

        # The trained weights, read back from a saved adapter, equal PyTorch's after the same steps.
        m.save_adapter("fixture", tmp_path / "trained")
        saved = read_safetensors(tmp_path / "trained" / "adapter.safetensors")
        final = {k[len("final."):]: v for k, v in r.items() if k.startswith("final.")}
        assert set(saved) == set(final)
        for k, v in final.items():
            assert_close(f"final {k}", saved[k], v, 1e-4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(arch, kind, tmp_path):
    r, ids, labels = reference(arch, kind)
    src = FIXTURES / arch / kind / "adapter"
    with peftkit.Model.load(FIXTURES / arch / "model") as m:
        m.load_adapter(src, name="fixture")
        m.save_adapter("fixture", tmp_path / "saved")
        assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["adapter.safetensors",
                                                                         "adapter_config.json"]
        assert m.load_adapter(tmp_path / "saved", name="again") == "again"
        assert m.adapters == ["fixture", "again"]
        orig = read_safetensors(src / "adapter.safetensors")
        mine = read_safetensors(tmp_path / "saved" / "adapter.safetensors")
        assert set(orig) == set(mine)
        for k in orig:
            assert np.array_equal(orig[k], mine[k]), k
        m.set_active_adapter("fixture")
        a = m.forward(ids)
        m.set_active_adapter("again")
        b = m.forward(ids)
        assert np.array_equal(a, b)
