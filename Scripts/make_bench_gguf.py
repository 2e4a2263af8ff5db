#!/usr/bin/env python3
"""Write a GGUF file of the "bench-1b" shape with random weights, for benchmarking
Weft and llama.cpp (`llama-bench`) side by side on the very same bytes.

The shape is Llama-3.2-1B's geometry (Configs/models/llama-3.2-1b.json: hidden 2048,
intermediate 8192, 16 layers, 32 attention heads, 8 KV heads, head_dim 64, rope_theta
500000, RMSNorm eps 1e-5, tied embeddings) with a 32000-token vocabulary. The llama3
rope scaling of the real model is not written (no rope_freqs.weight): it changes no
timing.

Weights are N(0, 0.02); norm weights are 1 + N(0, 0.02). Every tensor is drawn from its
own generator seeded by (--seed, tensor index), so the files written for different
--type values hold the same underlying float32 weights, each rounded/quantized once with
the `gguf` package's numpy quantizers (`gguf.quants.quantize`, ggml's reference
round-to-nearest rules). Every 2-D weight, token_embd.weight included, is stored in the
chosen type; norm weights stay F32.

Tensor names and layout are ggml's: token_embd.weight, blk.N.attn_norm.weight,
blk.N.attn_q/attn_k/attn_v/attn_output.weight, blk.N.ffn_norm.weight,
blk.N.ffn_gate/ffn_up/ffn_down.weight, output_norm.weight, and no output.weight (tied to
token_embd). A 2-D tensor is written as its numpy array of shape (out_features,
in_features), i.e. ggml ne = [in_features, out_features], as llama.cpp's converter does.

q/k layout: llama.cpp's converter (convert_hf_to_gguf.py) permutes the rows of a Hugging
Face Llama checkpoint's q_proj/k_proj for ggml's RoPE (rotate-half pairs (i, i+d/2) become
adjacent pairs (2i, 2i+1) within each head). The attn_q/attn_k written here are random,
so they are to be read as ALREADY in that permuted layout: they ARE the GGUF convention,
and a reader must treat them exactly as it treats attn_q/attn_k of any converted llama
GGUF (un-permute to get the Hugging Face layout). For speed this makes no difference.

The tokenizer is a minimal valid SentencePiece-style ("llama") vocabulary so that
llama.cpp loads the file: <unk>=0, <s>=1 (bos), </s>=2 (eos), the 256 byte tokens
<0x00>..<0xFF>, then dummy pieces up to --vocab entries, with scores and token types.

Uses only numpy and the `gguf` Python package. Tensors are generated and written one at
a time (memory stays near the size of the largest tensor).

    python3 Scripts/make_bench_gguf.py --type q4_0 --out /work/peers/gguf/bench-1b-q4_0.gguf
    python3 Scripts/make_bench_gguf.py --type f32 --layers 2 --vocab 1000 --out /tmp/small.gguf
"""
import argparse
import sys

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as QT
    from gguf import LlamaFileType as FT
except ImportError:
    sys.exit("error: make_bench_gguf.py needs the `gguf` Python package (pip install gguf)")

HIDDEN = 2048
INTERMEDIATE = 8192
HEADS = 32
KV_HEADS = 8
HEAD_DIM = 64
ROPE_THETA = 500000.0
RMS_EPS = 1e-5
CONTEXT = 131072

TYPES = {
    "f32": (QT.F32, FT.ALL_F32),
    "f16": (QT.F16, FT.MOSTLY_F16),
    "bf16": (QT.BF16, FT.MOSTLY_BF16),
    "q8_0": (QT.Q8_0, FT.MOSTLY_Q8_0),
    "q4_0": (QT.Q4_0, FT.MOSTLY_Q4_0),
    "q4_1": (QT.Q4_1, FT.MOSTLY_Q4_1),
}


def tensor_plan(vocab, layers):
    """(name, numpy shape, is_norm) in file order."""
    plan = [("token_embd.weight", (vocab, HIDDEN), False)]
    for i in range(layers):
        p = f"blk.{i}."
        plan += [
            (p + "attn_norm.weight", (HIDDEN,), True),
            (p + "attn_q.weight", (HEADS * HEAD_DIM, HIDDEN), False),
            (p + "attn_k.weight", (KV_HEADS * HEAD_DIM, HIDDEN), False),
            (p + "attn_v.weight", (KV_HEADS * HEAD_DIM, HIDDEN), False),
            (p + "attn_output.weight", (HIDDEN, HEADS * HEAD_DIM), False),
            (p + "ffn_norm.weight", (HIDDEN,), True),
            (p + "ffn_gate.weight", (INTERMEDIATE, HIDDEN), False),
            (p + "ffn_up.weight", (INTERMEDIATE, HIDDEN), False),
            (p + "ffn_down.weight", (HIDDEN, INTERMEDIATE), False),
        ]
    plan.append(("output_norm.weight", (HIDDEN,), True))
    return plan


def make_tensor(seed, index, shape, is_norm):
    rng = np.random.default_rng([seed, index])
    w = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    if is_norm:
        w += np.float32(1.0)
    return w


def encode(w, qtype, is_norm):
    """The array to write and its ggml type."""
    if is_norm or qtype == QT.F32:
        return w, QT.F32
    return gguf.quants.quantize(w, qtype), qtype


def stored_nbytes(shape, qtype):
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape))
    if n % block:
        sys.exit(f"error: tensor shape {shape} is not a multiple of the {qtype.name} block ({block})")
    return n // block * type_size


def add_tokenizer(w, vocab):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    scores = [0.0] * len(tokens)
    for i in range(len(tokens), vocab):
        tokens.append(f"\u2581t{i}")
        types.append(gguf.TokenType.NORMAL)
        scores.append(-float(i))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


def main():
    ap = argparse.ArgumentParser(description="Write a bench-1b (Llama-3.2-1B geometry) GGUF with random weights.")
    ap.add_argument("--type", default="f32", choices=sorted(TYPES), help="storage type of the 2-D weights (norms stay F32)")
    ap.add_argument("--out", required=True, help="output .gguf path")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--layers", type=int, default=16)
    args = ap.parse_args()
    if args.layers < 1:
        sys.exit(f"error: --layers {args.layers} must be at least 1")
    if args.vocab < 259:
        sys.exit(f"error: --vocab {args.vocab} is below 259 (3 special + 256 byte tokens)")

    qtype, ftype = TYPES[args.type]
    plan = tensor_plan(args.vocab, args.layers)

    w = gguf.GGUFWriter(args.out, arch="llama")
    w.add_name(f"bench-1b-{args.type}")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTERMEDIATE)
    w.add_block_count(args.layers)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_vocab_size(args.vocab)
    w.add_file_type(int(ftype))
    if qtype not in (QT.F32, QT.F16, QT.BF16):
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_tokenizer(w, args.vocab)

    for name, shape, is_norm in plan:
        t = QT.F32 if is_norm else qtype
        nbytes = stored_nbytes(shape, t)
        # tensor_shape is the numpy (logical) shape; with an explicit raw_dtype and a
        # non-uint8 dtype the writer takes it as is.
        w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=t)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    total = 0
    for index, (name, shape, is_norm) in enumerate(plan):
        data, t = encode(make_tensor(args.seed, index, shape, is_norm), qtype, is_norm)
        assert data.nbytes == stored_nbytes(shape, t), name
        w.write_tensor_data(data)
        total += data.nbytes
    w.close()
    print(f"wrote {args.out}: {len(plan)} tensors, {total / 2**20:.1f} MiB of weights, "
          f"type {args.type}, vocab {args.vocab}, layers {args.layers}, seed {args.seed}")


if __name__ == "__main__":
    main()
