#!/usr/bin/env python3
"""Runs the GGUF files of make_gguf_moe.py through llama.cpp and compares its
logits and greedy tokens with reference.json. Not needed by the tests; it is
how the files and the routing described in make_gguf_moe.py were confirmed.

llama.cpp refuses a file without tokenizer.ggml.model, and the fixtures carry
no tokenizer, so this writes copies to a temporary folder with tiny-llama's
byte-level BPE vocabulary added (tokenizer.ggml.model gpt2, pre "default",
tokens, token types, merges, bos/eos); their tensors are checked to be byte
for byte those of the fixtures. A small C program (below) linked against
libllama feeds the token ids directly (no tokenization), prints the logits of
every position and 12 greedy tokens (F32 KV cache, one token per step,
flash attention off: llama.cpp's default F16 cache alone moves the f32 file's
logits by ~3e-3).

  python3 Tests/Fixtures/gguf-moe/check_llama_cpp.py /path/to/llama.cpp
(llama.cpp built with build/bin/libllama.so, e.g. llama.cpp 0c1e570 as vendored
by llama-cpp-python 0.3.36.)
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_gguf_moe as M  # noqa: E402

C_SOURCE = r'''
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
static void quiet(enum ggml_log_level level, const char * text, void * data) { (void)level; (void)text; (void)data; }
int main(int argc, char ** argv) {
    if (argc < 4) return 2;
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    int n_greedy = atoi(argv[2]);
    int n = argc - 3;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 64; cp.n_batch = 64; cp.n_ubatch = 64; cp.n_threads = 1; cp.n_threads_batch = 1;
    cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32;              /* default F16 cache rounds K and V */
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "context failed\n"); return 1; }
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_batch b = llama_batch_init(64, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = atoi(argv[3 + i]); b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
    int last = 0;
    for (int i = 0; i < n; i++) {
        float * l = llama_get_logits_ith(ctx, i);
        printf("%d", i);
        for (int j = 0; j < n_vocab; j++) printf(" %.9g", l[j]);
        printf("\n");
        if (i == n - 1) { last = 0; for (int j = 1; j < n_vocab; j++) if (l[j] > l[last]) last = j; }
    }
    printf("greedy");
    int pos = n;
    for (int s = 0; s < n_greedy; s++) {
        printf(" %d", last);
        b.token[0] = last; b.pos[0] = pos++; b.n_seq_id[0] = 1; b.seq_id[0][0] = 0; b.logits[0] = 1; b.n_tokens = 1;
        if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
        float * l = llama_get_logits_ith(ctx, 0);
        last = 0; for (int j = 1; j < n_vocab; j++) if (l[j] > l[last]) last = j;
    }
    printf("\n");
    llama_batch_free(b); llama_free(ctx); llama_model_free(model);
    return 0;
}
'''


def tokenizer_kv(folder):
    tok = json.load(open(os.path.join(folder, "tokenizer.json")))
    cfg = json.load(open(os.path.join(folder, "config.json")))
    vocab = {i: s for s, i in tok["model"]["vocab"].items()}
    types = {i: gguf.TokenType.NORMAL for i in vocab}
    for a in tok["added_tokens"]:
        vocab[a["id"]] = a["content"]; types[a["id"]] = gguf.TokenType.CONTROL
    n = cfg["vocab_size"]
    tokens = [vocab.get(i, f"[PAD{i}]") for i in range(n)]
    ttypes = [types.get(i, gguf.TokenType.UNUSED) for i in range(n)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    def add(writer):
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types(ttypes)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(cfg["bos_token_id"])
        writer.add_eos_token_id(cfg["eos_token_id"])
    return add


def main():
    llama = os.path.abspath(sys.argv[1])
    ref = json.load(open(os.path.join(HERE, "reference.json")))
    tmp = tempfile.mkdtemp(prefix="gguf-moe-llama-cpp-")
    exe = os.path.join(tmp, "logits")
    subprocess.run(["cc", "-O1", "-x", "c", "-", "-o", exe, f"-I{llama}/include", f"-I{llama}/ggml/include",
                    f"-L{llama}/build/bin", "-lllama", f"-Wl,-rpath,{llama}/build/bin"],
                   input=C_SOURCE.encode(), check=True)
    all_ok = True
    for key, entry in ref["files"].items():
        model, ftype = entry["source"], key.rsplit("-", 1)[1]
        folder = os.path.join(M.FIXTURES, model)
        cfg, hf = M.numpy_reference.load(folder)
        path = os.path.join(tmp, entry["file"])
        M.write(path, model, cfg, hf, ftype, extra_kv=tokenizer_kv(folder))
        mine = {t.name: t for t in gguf.GGUFReader(os.path.join(HERE, entry["file"])).tensors}
        theirs = {t.name: t for t in gguf.GGUFReader(path).tensors}
        assert mine.keys() == theirs.keys()
        for name, t in mine.items():
            assert t.tensor_type == theirs[name].tensor_type and np.array_equal(
                np.asarray(t.data).view(np.uint8), np.asarray(theirs[name].data).view(np.uint8)), name
        for i, seq in enumerate(ref["sequences"]):
            steps = 12 if i == 0 else 0
            out = subprocess.run([exe, path, str(steps)] + [str(x) for x in seq], capture_output=True, text=True)
            if out.returncode != 0:
                print(key, "llama.cpp failed:", out.stderr.strip()); all_ok = False; break
            lines = out.stdout.strip().split("\n")
            got = np.array([[float(v) for v in l.split()[1:]] for l in lines[:-1]])
            want = np.array(entry["logits"][i])
            e = np.abs(got - want).max()
            line = f"{key} seq {i}: max |llama.cpp - reference| = {e:.2e}"
            if "logits_8bit_activations" in entry:
                w8 = np.array(entry["logits_8bit_activations"][i])
                line += f", vs 8-bit-activation reference {np.abs(got - w8).max():.2e}"
            line += f" (max |logit| {np.abs(want).max():.2f}); argmax equal at {(got.argmax(-1) == want.argmax(-1)).sum()}/{len(want)}"
            print(line)
            if steps:
                g = [int(x) for x in lines[-1].split()[1:]]
                want_g = entry["greedy"].get("continuation_8bit_activations", entry["greedy"]["continuation"])
                same = g == want_g
                print(f"{key} greedy: llama.cpp {g} {'==' if same else '!='} reference {want_g}"
                      + ("" if same else f" (float-activation reference {entry['greedy']['continuation']})"))
    print("temporary files in", tmp)


if __name__ == "__main__":
    main()
