"""Preference tuning through the C ABI: Model.preference_step (DPO, ORPO)."""

import math

import numpy as np
import peftkit
import pytest

P, T = 2, 8


def lora_model(seed=7):
    m = peftkit.Model.create(seed=seed)
    m.attach_adapter("l", {"peft_type": "LORA", "r": 4, "lora_alpha": 8})
    m.set_active_adapter("l")
    return m


def pairs():
    rng = np.random.default_rng(3)
    chosen = rng.integers(0, 100, size=(P, T), dtype=np.int32)
    rejected = chosen.copy()
    rejected[:, 4:] = (chosen[:, 4:] + 11) % 100
    cmask = np.zeros((P, T), dtype=np.int32)
    cmask[:, 4:] = 1
    rmask = np.zeros((P, T), dtype=bool)
    rmask[:, 4:7] = True
    return chosen, cmask, rejected, rmask


def test_dpo_steps_raise_the_margin_and_report_consistent_stats():
    m = lora_model()
    c, cm, r, rm = pairs()
    first = m.preference_step(c, cm, r, rm, objective="dpo", beta=0.5, learning_rate=2e-2, schedule="constant")
    # LoRA's B starts at zero: the policy is the reference, so the loss is log 2 and the rewards 0.
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(first["reward_margin"]) < 1e-5
    assert set(peftkit.Model.PREFERENCE_STATS) <= set(first)
    margins = [first["reward_margin"]]
    for _ in range(4):
        s = m.preference_step(c, cm, r, rm, objective="dpo", beta=0.5, learning_rate=2e-2, schedule="constant")
        assert s["reward_margin"] == pytest.approx(s["chosen_reward"] - s["rejected_reward"], abs=1e-6)
        margins.append(s["reward_margin"])
    assert margins[-1] > margins[0] + 0.05, margins
    assert s["step"] == 5 and s["tokens"] == P * 4 + P * 3 and s["grad_norm"] > 0


def test_orpo_loss_is_nll_minus_lambda_log_sigmoid():
    m = lora_model()
    c, cm, r, rm = pairs()
    s = m.preference_step(c, cm, r, rm, objective="orpo", beta=0.25, learning_rate=0)
    assert s["loss"] == pytest.approx(s["nll"] - 0.25 * s["log_odds_ratio"], rel=1e-5)
    assert s["nll"] > 0 and s["log_odds_ratio"] < 0


def test_bad_preference_input_is_refused_and_changes_nothing():
    m = lora_model()
    c, cm, r, rm = pairs()
    with pytest.raises(peftkit.InvalidArgumentError):
        m.preference_step(c, cm, r, rm, objective="kto")
    with pytest.raises(peftkit.InvalidArgumentError):
        m.preference_step(c, cm, r, rm, beta=0.0)
    bad = cm.copy()
    bad[0, 5] = 2
    with pytest.raises(peftkit.InvalidArgumentError, match="0 or 1"):
        m.preference_step(c, bad, r, rm)
    with pytest.raises(peftkit.InvalidArgumentError, match="no response token"):
        m.preference_step(c, np.zeros_like(cm), r, rm)
    with pytest.raises(peftkit.InvalidArgumentError):
        m.preference_step(c, cm, r[:1], rm[:1])
    m.set_active_adapter(None)
    with pytest.raises(peftkit.StateError):
        m.preference_step(c, cm, r, rm)
    m.set_active_adapter("l")
    s = m.preference_step(c, cm, r, rm, learning_rate=0)
    assert s["step"] == 1 and s["loss"] == pytest.approx(math.log(2), abs=1e-5)
