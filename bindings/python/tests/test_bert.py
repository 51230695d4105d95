"""Encoders (BERT) through the C ABI: hidden states, embeddings and task heads with attention masks and token
types, against the transformers reference of Tests/Fixtures/bert (scripts/make_bert_fixtures.py)."""

import numpy as np
import peftkit
import pytest
from conftest import FIXTURES
from safetensors_np import read_safetensors

BERT_A = FIXTURES / "bert" / "a"


@pytest.fixture()
def bert():
    with peftkit.Model.load(BERT_A / "model") as m:
        yield m


@pytest.fixture()
def ref():
    return read_safetensors(BERT_A / "reference.safetensors")


def test_hidden_states_with_mask_and_types_match_transformers(bert, ref):
    h = bert.hidden_states(ref["input_ids"], attention_mask=ref["attention_mask"], token_type_ids=ref["token_type_ids"])
    assert h.dtype == np.float32 and h.shape == ref["hidden"].shape
    np.testing.assert_allclose(h, ref["hidden"], rtol=1e-5, atol=1e-5 * np.abs(ref["hidden"]).max())
    # Without the mask the padded rows differ: the mask is really passed.
    h2 = bert.hidden_states(ref["input_ids"], token_type_ids=ref["token_type_ids"])
    assert np.abs(h2 - ref["hidden"]).max() > 1e-3


def test_embed_is_the_masked_mean_normalised(bert, ref):
    ids, mask, types = ref["input_ids"], ref["attention_mask"], ref["token_type_ids"]
    e = bert.embed(ids, attention_mask=mask, token_type_ids=types)
    m = mask[..., None].astype(np.float64)
    mean = (ref["hidden"] * m).sum(1) / m.sum(1)
    want = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    assert e.shape == (ids.shape[0], ref["hidden"].shape[2])
    np.testing.assert_allclose(e, want, rtol=1e-4, atol=1e-5)
    raw = bert.embed(ids, attention_mask=mask, token_type_ids=types, normalize=False)
    np.testing.assert_allclose(raw, mean, rtol=1e-4, atol=1e-5)


def test_bad_masks_and_types_are_refused(bert, ref):
    ids, mask, types = ref["input_ids"], ref["attention_mask"].copy(), ref["token_type_ids"].copy()
    bad = mask.copy()
    bad[0, 0] = 2
    with pytest.raises(peftkit.InvalidArgumentError, match="attention_mask"):
        bert.hidden_states(ids, attention_mask=bad)
    bad = mask.copy()
    bad[1, :] = 0
    with pytest.raises(peftkit.InvalidArgumentError, match="masks every position"):
        bert.embed(ids, attention_mask=bad)
    bad = types.copy()
    bad[0, 1] = 2
    with pytest.raises(peftkit.InvalidArgumentError, match="token_type_ids"):
        bert.hidden_states(ids, token_type_ids=bad)
    with pytest.raises(peftkit.InvalidArgumentError, match="does not match"):
        bert.hidden_states(ids, attention_mask=mask[:, :3])


@pytest.mark.parametrize("kind,k", [("classification", 3), ("regression", 1), ("tokens", 4)])
def test_heads_shapes_training_and_refusals(bert, ref, kind, k):
    ids, mask, types = ref["input_ids"], ref["attention_mask"], ref["token_type_ids"]
    b, t = ids.shape
    with pytest.raises(peftkit.StateError):
        bert.attach_head(kind, k)  # no active adapter
    bert.attach_adapter("bn", peftkit.BottleneckConfig.double_seq_bn(reduction_factor=8))
    bert.set_active_adapter("bn")
    n_adapter = bert.gradients().size
    bert.attach_head(kind, k, seed=1)
    assert bert.head == (kind, k)
    assert bert.gradients().size == n_adapter + k * ref["hidden"].shape[2] + k  # one optimiser state
    rng = np.random.default_rng(0)
    if kind == "classification":
        args = {"labels": np.array([2, 0, 1], dtype=np.int32)}
        bad = {"labels": np.array([3, 0, 1], dtype=np.int32)}
    elif kind == "tokens":
        lab = rng.integers(0, k, size=(b, t)).astype(np.int32)
        lab[mask == 0] = -100
        args = {"labels": lab}
        bad = {"labels": np.where(mask == 0, -100, k).astype(np.int32)}
    else:
        args = {"targets": np.array([[0.5], [-1.0], [2.0]], dtype=np.float32)}
        bad = {"targets": np.array([[0.5], [np.nan], [2.0]], dtype=np.float32)}
    out, loss0 = bert.head_forward(ids, mask, types, **args)
    assert out.shape == ((b, t, k) if kind == "tokens" else (b, k)) and loss0 is not None and np.isfinite(loss0)
    with pytest.raises(peftkit.InvalidArgumentError):
        bert.head_train_step(ids, mask, types, **bad)
    results = [bert.head_train_step(ids, mask, types, **args, learning_rate=1e-2, weight_decay=0) for _ in range(20)]
    losses = [r.loss for r in results]
    assert losses[0] == pytest.approx(loss0, rel=1e-5)
    assert losses[-1] < 0.6 * losses[0]
    assert results[-1].step == 20
    _, loss1 = bert.head_forward(ids, mask, types, **args)
    assert loss1 < losses[0]
    np.testing.assert_array_equal(bert.classify(ids, mask, types), bert.head_forward(ids, mask, types)[0])
