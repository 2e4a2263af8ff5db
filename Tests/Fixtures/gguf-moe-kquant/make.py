#!/usr/bin/env python3
"""A mixture-of-experts GGUF file whose experts are k-quants, as in a Q4_K_M
file, and its float64 NumPy reference.

Writes, next to this script:
  tiny-moe-q4_k_m.gguf  arch `llama` (Mixtral semantics): hidden 256, 4 heads
                        of 64, 2 KV heads, 2 layers, 4 experts, 2 used per
                        token, expert intermediate (feed_forward_length) 512,
                        vocabulary 512 (token ids 0..511, no tokenizer
                        metadata), untied output. Stored types:
                          token_embd                     Q4_K
                          blk.N.attn_q/k/output          Q4_K
                          blk.N.attn_v                   Q6_K
                          blk.N.ffn_gate_exps/up_exps    Q4_K
                          blk.0.ffn_down_exps            Q6_K
                          blk.1.ffn_down_exps            Q5_K
                          output                         Q6_K
                          router ffn_gate_inp, norms     F32
                        general.file_type 15 (MOSTLY_Q4_K_M).
  reference.json        logits of every position of two token sequences (8
                        and 5 tokens), per layer the tokens routed to each
                        expert and the smallest gap between the 2nd and 3rd
                        routing probability, and a 12-token greedy
                        continuation of the first sequence, computed in
                        float64 from the weights as gguf.quants.dequantize
                        reads them back, with llama.cpp's llama-arch routing
                        (softmax over the 4 experts, top-2, renormalized);
                        and the same with every matrix product's input
                        rounded as llama.cpp rounds it for a k-quant weight
                        (Q8_K blocks of 256, see quantize_activations).

Weights: seeded NumPy normals in Hugging Face Mixtral naming (never written as
safetensors), N(0, 0.08) for every matrix except the routers, N(0, 0.15)
(router logits with a standard deviation of about 2.4, so routing is far from
uniform: e.g. the 5-token sequence sends no token to expert 1 in either
layer), norms 1 + N(0, 0.1). SEED 1 was chosen among 1..12 (--search-seed)
for the largest smallest gap between the 2nd and 3rd router logit over both
sequences, both reference variants and both layers (0.258; recorded per
sequence and layer as "min_router_logit_gap"), so an engine's rounding cannot
change which experts are chosen. The token sequences are drawn from SEED too.

reference.json: {"generator", "seed", "config" (the shapes above in
transformers' names), "sequences": [[8 ids], [5 ids]], "files":
{"tiny-moe-q4_k_m": {"file", "architecture", "types", "tensor_types" (GGUF
name -> type name), "normalize_top_k": true, "logits" [seq][position][512],
"expert_counts" [seq][layer][expert], "min_top_k_gap" [seq][layer] (k-th minus
(k+1)-th routing probability, as make_gguf_moe.py records),
"min_router_logit_gap" [seq][layer], the same four with the suffix
"_8bit_activations", and "greedy": {"tokens", "continuation",
"top1_top2_margin", "continuation_8bit_activations",
"top1_top2_margin_8bit_activations"} (12 tokens from the first sequence)}}}.
Logits are rounded to 6 decimals. The two variants differ by up to 0.21 in
logits (Q8_K's 1/127-of-the-block-max steps), and their greedy continuations
differ from the first token on (margin 0.026): compare an engine with the
variant it computes.

llama.cpp 0c1e570 (llama-cpp-python 0.3.36's vendored build, x86_64 AVX2, F32
KV cache, 1 thread; --check-llama-cpp) loads a copy with a tokenizer added
and its tensors byte for byte these. With use_extra_bufts = false its logits
match "logits_8bit_activations" within 1.4e-6 at every position of both
sequences, and its 12 greedy tokens equal "continuation_8bit_activations".
With its default CPU repack buffer (Q4_K weights with a multiple of 8 rows
repacked to Q4_Kx8 and multiplied by the AVX2 gemm with 4 activation rows
quantized together by ggml_quantize_mat_q8_K_4x8) one position per sequence
is off (seq 0 position 2: 5.9e-3, seq 1 position 0: 7.0e-3; all others
<= 1.2e-6; greedy tokens still equal). Storing attn_q/attn_k/attn_output as
Q5_K (not repacked on x86) removes it; the stacked experts (MUL_MAT_ID, whose
activations are quantized row by row) are not involved. Not an int16
overflow of the integer dot products (checked); the cause inside ggml's
repacked kernel was not found.

Names, keys and layouts are those of Tests/Fixtures/gguf-moe/make_gguf_moe.py
(the converter's): llama.block_count, context_length, embedding_length,
feed_forward_length, attention.head_count, attention.head_count_kv,
rope.freq_base, attention.layer_norm_rms_epsilon, expert_count,
expert_used_count, vocab_size, rope.dimension_count, general.file_type,
general.quantization_version; the experts stacked as ffn_gate_exps /
ffn_up_exps (numpy [E, ff, h], GGUF ne {h, ff, E}) and ffn_down_exps (numpy
[E, h, ff], ne {ff, h, E}); q and k rows permuted for llama.cpp's interleaved
RoPE (the reference undoes it).

The quantizers are plain ones (per sub-block min/max or absmax, 6-bit or
8-bit sub-block scales relative to an fp16 super-block scale), not ggml's
error-minimizing search: any valid encoding is a valid file, and the
reference reads it back with gguf's dequantizer. gguf 0.19.0 can dequantize
Q4_K/Q5_K/Q6_K but not quantize them.

Uses numpy, the gguf package (0.19.0), Scripts/numpy_reference.py and
gguf_tensors() / permute() of Tests/Fixtures/gguf-moe/make_gguf_moe.py; no
Weft engine code. Run:
  python3 Tests/Fixtures/gguf-moe-kquant/make.py [--search-seed]
  python3 Tests/Fixtures/gguf-moe-kquant/make.py --check-llama-cpp /path/to/llama.cpp
(the second compares llama.cpp's logits with reference.json; see
check_llama_cpp below).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "Scripts"))
sys.path.insert(0, os.path.join(HERE, "..", "gguf-moe"))
import numpy_reference  # noqa: E402
import make_gguf_moe as moe  # noqa: E402

QK_K = 256
ROUTER_STD = 0.15
CHOSEN_SEED = 1   # see --search-seed
NAME = "tiny-moe-q4_k_m"
FILE_TYPE_Q4_K_M = 15

CFG = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 256,
       "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
       "num_hidden_layers": 2, "num_local_experts": 4, "num_experts_per_tok": 2, "vocab_size": 512,
       "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
       "tie_word_embeddings": False}


# ---------------------------------------------------------------- quantizers

def _fp16(x):
    return x.astype(np.float16)


def _scales_mins(x, nmax):
    """Q4_K / Q5_K: per 32-element sub-block value = d*sc*q - dmin*m with q in
    0..nmax, sc and m 6-bit, d and dmin fp16. Returns d, dmin (fp16 [nb]),
    sc, m (uint8 [nb, 8]), q (uint8 [nb, 8, 32])."""
    blocks = x.reshape(-1, 8, 32).astype(np.float32)
    mn = np.minimum(blocks.min(axis=-1), 0)
    mx = blocks.max(axis=-1)
    scale = (mx - mn) / nmax
    mins = -mn
    d = _fp16(scale.max(axis=-1) / 63)
    dmin = _fp16(mins.max(axis=-1) / 63)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.where(d32 > 0, np.clip(np.rint(scale / np.where(d32 > 0, d32, 1)), 0, 63), 0).astype(np.uint8)
    m = np.where(dmin32 > 0, np.clip(np.rint(mins / np.where(dmin32 > 0, dmin32, 1)), 0, 63), 0).astype(np.uint8)
    eff_d = (d32 * sc)[:, :, None]
    eff_m = (dmin32 * m)[:, :, None]
    q = np.where(eff_d > 0, np.rint((blocks + eff_m) / np.where(eff_d > 0, eff_d, 1)), 0)
    return d, dmin, sc, m, np.clip(q, 0, nmax).astype(np.uint8)


def _pack_scales(sc, m):
    """12 bytes of 6-bit scales and mins (gguf's Q4_K.get_scale_min, inverted)."""
    s = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    s[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    s[:, 4:8] = (m[:, 0:4] & 0x3F) | ((m[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    return s


def _nibbles(q):
    """32 bytes per pair of sub-blocks, the low nibble the first."""
    pairs = (q & 0x0F).reshape(-1, 4, 2, 32)
    return (pairs[:, :, 0, :] | (pairs[:, :, 1, :] << 4)).reshape(-1, 128)


def quantize_q4_k(x):
    """144-byte blocks: d, dmin (fp16), 12 bytes scales/mins, 128 bytes nibbles."""
    rows, k = x.shape
    assert k % QK_K == 0
    d, dmin, sc, m, q = _scales_mins(x, 15)
    out = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2),
                          _pack_scales(sc, m), _nibbles(q)], axis=1)
    return out.reshape(rows, -1)


def quantize_q5_k(x):
    """176-byte blocks: d, dmin, 12 bytes scales/mins, 32 bytes qh (bit i of
    byte l = the fifth bit of element l of sub-block i), 128 bytes low nibbles."""
    rows, k = x.shape
    assert k % QK_K == 0
    d, dmin, sc, m, q = _scales_mins(x, 31)
    hi = (q >> 4) & 1                                          # [nb, 8, 32]
    qh = np.zeros((q.shape[0], 32), dtype=np.uint8)
    for i in range(8):
        qh |= (hi[:, i, :] << i).astype(np.uint8)
    out = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2),
                          _pack_scales(sc, m), qh, _nibbles(q)], axis=1)
    return out.reshape(rows, -1)


def quantize_q6_k(x):
    """210-byte blocks: ql (128), qh (64), 16 int8 scales, d (fp16); value =
    d * scale[j] * (q - 32), q in 0..63, one scale per 16 elements. Per half
    (128 elements) h: ql[64h + l] = low nibbles of elements 128h + l (low) and
    128h + 64 + l (high); qh[32h + l] bits 2s..2s+1 = bits 4..5 of element
    128h + 32s + l."""
    rows, k = x.shape
    assert k % QK_K == 0
    blocks = x.reshape(-1, 16, 16).astype(np.float32)
    scale = np.abs(blocks).max(axis=-1) / 31                   # q - 32 in -31..31
    d = _fp16(scale.max(axis=-1) / 127)
    d32 = d.astype(np.float32)[:, None]
    sc = np.where(d32 > 0, np.clip(np.rint(scale / np.where(d32 > 0, d32, 1)), 0, 127), 0).astype(np.int8)
    eff = (d32 * sc.astype(np.float32))[:, :, None]
    q = np.where(eff > 0, np.rint(blocks / np.where(eff > 0, eff, 1)), 0)
    q6 = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 128)   # [nb, half, 128]
    ql = ((q6[:, :, 0:64] & 0x0F) | ((q6[:, :, 64:128] & 0x0F) << 4)).reshape(-1, 128)
    hi = ((q6 >> 4) & 3).reshape(-1, 2, 4, 32)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(-1, 64)
    out = np.concatenate([ql, qh.astype(np.uint8), sc.view(np.uint8), d.view(np.uint8).reshape(-1, 2)], axis=1)
    return out.reshape(rows, -1)


QUANTIZERS = {T.Q4_K: quantize_q4_k, T.Q5_K: quantize_q5_k, T.Q6_K: quantize_q6_k}


def encode(w, qtype):
    """float32 array, or uint8 [..., row_bytes] (stacked experts: per expert)."""
    if qtype == T.F32:
        return w.astype(np.float32)
    flat = QUANTIZERS[qtype](w.reshape(-1, w.shape[-1]).astype(np.float32))
    return flat.reshape(*w.shape[:-1], flat.shape[-1])


def decode(data, qtype, shape):
    if qtype == T.F32:
        return data.astype(np.float64).reshape(shape)
    return gguf.quants.dequantize(data, qtype).astype(np.float64).reshape(shape)


def quantize_activations(x, qtype):
    """x rounded as ggml (llama.cpp 0c1e570) rounds a matrix product's input
    for a Q4_K/Q5_K/Q6_K weight: Q8_K, blocks of 256 along the row
    (quantize_row_q8_K_ref, which x86 uses, and the AVX2 ggml_quantize_mat_q8_K_4x8
    of the repacked Q4_K path, which rounds the same): max = the element of
    largest |x| (the first one), iscale = -127 / max in float32, q =
    min(127, round-half-even(iscale * x)) in float32, d = 1 / iscale (float32);
    the value is q * d. (Older ggml used -128 / max.) F32 weights (the router)
    take the input unrounded."""
    if qtype == T.F32:
        return x
    assert qtype in (T.Q4_K, T.Q5_K, T.Q6_K), qtype
    b = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, QK_K)
    mx = b[np.arange(b.shape[0]), np.abs(b).argmax(axis=-1)]
    nz = mx != 0
    iscale = np.where(nz, np.float32(-127) / np.where(nz, mx, np.float32(1)), np.float32(0)).astype(np.float32)
    q = np.minimum(127, np.rint((iscale[:, None] * b).astype(np.float32)))
    d = np.where(nz, np.float32(1) / np.where(nz, iscale, np.float32(1)), np.float32(0)).astype(np.float32)
    return (q.astype(np.float64) * d.astype(np.float64)[:, None]).reshape(x.shape)


# ------------------------------------------------------------------- weights

def weights(seed):
    """Hugging Face Mixtral names -> float64 arrays (float32 values)."""
    rng = np.random.default_rng(seed)
    h, nh, nkv, hd = CFG["hidden_size"], CFG["num_attention_heads"], CFG["num_key_value_heads"], CFG["head_dim"]
    E, f, V = CFG["num_local_experts"], CFG["intermediate_size"], CFG["vocab_size"]
    shapes = {"model.embed_tokens.weight": (V, h), "lm_head.weight": (V, h), "model.norm.weight": (h,)}
    for i in range(CFG["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (nh * hd, h), p + "self_attn.k_proj.weight": (nkv * hd, h),
                       p + "self_attn.v_proj.weight": (nkv * hd, h), p + "self_attn.o_proj.weight": (h, nh * hd),
                       p + "block_sparse_moe.gate.weight": (E, h)})
        for e in range(E):
            b = f"{p}block_sparse_moe.experts.{e}."
            shapes.update({b + "w1.weight": (f, h), b + "w3.weight": (f, h), b + "w2.weight": (h, f)})
    t = {}
    for name in sorted(shapes):
        if name.endswith("norm.weight"):
            w = 1 + rng.normal(0, 0.1, shapes[name])
        elif name.endswith("block_sparse_moe.gate.weight"):
            w = rng.normal(0, ROUTER_STD, shapes[name])
        else:
            w = rng.normal(0, 0.08, shapes[name])
        t[name] = w.astype(np.float32).astype(np.float64)
    return t


def sequences(seed):
    rng = np.random.default_rng(seed + 1000)
    return [[int(v) for v in rng.integers(0, CFG["vocab_size"], n)] for n in (8, 5)]


def plan(g):
    """The stored type of GGUF tensor g."""
    if g.endswith("norm.weight") or g.endswith("ffn_gate_inp.weight"):
        return T.F32
    if g == "output.weight" or g.endswith("attn_v.weight") or g == "blk.0.ffn_down_exps.weight":
        return T.Q6_K
    if g == "blk.1.ffn_down_exps.weight":
        return T.Q5_K
    return T.Q4_K


def build(hf):
    """[(gguf name, stored data, qtype, kind)] and the dequantized HF weights."""
    nh, nkv = CFG["num_attention_heads"], CFG["num_key_value_heads"]
    tensors, dequantized, types = [], {}, {}
    for g, names, kind in moe.gguf_tensors(CFG, hf):
        w = np.stack([hf[n] for n in names]) if len(names) > 1 else hf[names[0]]
        w = w.astype(np.float32)
        qtype = plan(g)
        data = encode(w, qtype)
        back = decode(data, qtype, w.shape)
        if kind in ("attn_q", "attn_k"):
            data = moe.permute(data, nh if kind == "attn_q" else nkv)   # row order as llama.cpp writes it
        tensors.append((g, data, qtype))
        for j, n in enumerate(names):
            dequantized[n] = back[j] if len(names) > 1 else back
            types[n] = qtype
    return tensors, dequantized, types


def write(path, tensors, extra_kv=None):
    nh = CFG["num_attention_heads"]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(NAME)
    writer.add_block_count(CFG["num_hidden_layers"])
    writer.add_context_length(CFG["max_position_embeddings"])
    writer.add_embedding_length(CFG["hidden_size"])
    writer.add_feed_forward_length(CFG["intermediate_size"])
    writer.add_head_count(nh)
    writer.add_head_count_kv(CFG["num_key_value_heads"])
    writer.add_rope_freq_base(CFG["rope_theta"])
    writer.add_layer_norm_rms_eps(CFG["rms_norm_eps"])
    writer.add_expert_count(CFG["num_local_experts"])
    writer.add_expert_used_count(CFG["num_experts_per_tok"])
    writer.add_file_type(FILE_TYPE_Q4_K_M)
    writer.add_vocab_size(CFG["vocab_size"])
    writer.add_rope_dimension_count(CFG["hidden_size"] // nh)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if extra_kv is not None:
        extra_kv(writer)
    for g, data, qtype in tensors:
        writer.add_tensor(g, data, raw_dtype=qtype if qtype != T.F32 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def runners(dequantized, types):
    def rounded(x, name):
        return quantize_activations(x, types[name]) @ dequantized[name].T

    def run(tokens, matmul=None, stats=None):
        return numpy_reference.forward(CFG, dequantized, np.array(tokens), matmul, True, stats)
    run.weights = dequantized
    return rounded, run


def router_logit_gaps(run, tokens, matmul):
    """Per layer, the smallest gap between the 2nd and 3rd largest router
    logit over the positions of `tokens` (how far an engine's rounding is from
    changing the chosen experts)."""
    gaps = []
    inner = matmul or (lambda x, name: x @ run.weights[name].T)

    def spy(x, name):
        y = inner(x, name)
        if name.endswith("block_sparse_moe.gate.weight"):
            srt = np.sort(y, axis=-1)[:, ::-1]
            k = CFG["num_experts_per_tok"]
            gaps.append(float((srt[:, k - 1] - srt[:, k]).min()))
        return y
    run(tokens, spy)
    return gaps


def min_gap(seed):
    hf = weights(seed)
    _, dequantized, types = build(hf)
    rounded, run = runners(dequantized, types)
    return min(g for s in sequences(seed) for mm in (None, rounded) for g in router_logit_gaps(run, s, mm))


def self_test():
    """The quantizers' bytes read back by gguf give the values they encode, close to the input."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.08, (8, 512)).astype(np.float32)
    x[0, :256] = 0
    x[1, 3] = 1.0
    for qtype, tol in ((T.Q4_K, 0.2), (T.Q5_K, 0.1), (T.Q6_K, 0.05)):
        back = decode(encode(x, qtype), qtype, x.shape)
        err = np.abs(back - x).max(axis=-1) / np.abs(x).max(axis=-1)
        assert err.max() < tol, (qtype.name, err)
        assert np.all(back[0, :256] == 0)
    a = rng.normal(0, 1, (3, 512))
    r = quantize_activations(a, T.Q4_K)
    assert np.abs(r - a).max() <= np.abs(a).max() / 127 / 2 * 1.0001


def main():
    self_test()
    if "--search-seed" in sys.argv:
        gaps = {}
        for s in range(1, 13):
            gaps[s] = min_gap(s)
            print("seed", s, "min 2nd-3rd router logit gap", round(gaps[s], 5), flush=True)
        print("best seed", max(gaps, key=gaps.get))
        return
    hf = weights(CHOSEN_SEED)
    seqs = sequences(CHOSEN_SEED)
    tensors, dequantized, types = build(hf)
    path = os.path.join(HERE, NAME + ".gguf")
    write(path, tensors)
    # What a reader gets back from the file is what the reference used.
    r = gguf.GGUFReader(path)
    stored = {t.name: t for t in r.tensors}
    for g, data, qtype in tensors:
        assert stored[g].tensor_type == qtype and np.array_equal(
            np.asarray(stored[g].data).view(np.uint8).reshape(-1), np.ascontiguousarray(data).view(np.uint8).reshape(-1)), g
    rounded, run = runners(dequantized, types)
    entry = {"file": os.path.basename(path), "architecture": "llama",
             "types": sorted(set(q.name for _, _, q in tensors)),
             "tensor_types": {g: q.name for g, _, q in tensors},
             "normalize_top_k": True}
    for suffix, mm in (("", None), ("_8bit_activations", rounded)):
        logits, counts, gaps = [], [], []
        for s in seqs:
            st = {}
            logits.append(numpy_reference.rounded_logits(run(s, mm, st)))
            counts.append(st["expert_counts"]); gaps.append(st["min_gap"])
        entry["logits" + suffix] = logits
        entry["expert_counts" + suffix] = counts
        entry["min_top_k_gap" + suffix] = gaps
        entry["min_router_logit_gap" + suffix] = [[round(g, 6) for g in router_logit_gaps(run, s, mm)] for s in seqs]
    entry["greedy"] = {"tokens": seqs[0]}
    for suffix, mm in (("", None), ("_8bit_activations", rounded)):
        margins = []
        entry["greedy"]["continuation" + suffix] = numpy_reference.greedy(
            CFG, dequantized, seqs[0], 12, margins, matmul=mm, normalize_top_k=True)
        entry["greedy"]["top1_top2_margin" + suffix] = margins
    out = {"generator": "Tests/Fixtures/gguf-moe-kquant/make.py: float64 NumPy forward pass "
                        "(Scripts/numpy_reference.py, Mixtral semantics = llama.cpp's llama arch routing) on the "
                        "weights as gguf.quants.dequantize reads them back; logits rounded to 6 decimals; "
                        "*_8bit_activations: every k-quant product's input rounded to Q8_K (blocks of 256) first",
           "seed": CHOSEN_SEED, "config": {k: v for k, v in CFG.items() if k != "architectures"},
           "sequences": seqs, "files": {NAME: entry}}
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(NAME, os.path.getsize(path), "bytes", entry["types"])
    for i, s in enumerate(seqs):
        print(f"  seq {i} ({len(s)} tokens): expert counts {entry['expert_counts'][i]} / 8-bit "
              f"{entry['expert_counts_8bit_activations'][i]}, min top-k gap {entry['min_top_k_gap'][i]} / "
              f"{entry['min_top_k_gap_8bit_activations'][i]}, max |logits - 8-bit| "
              f"{np.abs(np.array(entry['logits'][i]) - np.array(entry['logits_8bit_activations'][i])).max():.3e}")
    print("  greedy", entry["greedy"]["continuation"], entry["greedy"]["continuation_8bit_activations"],
          "min margin", min(entry["greedy"]["top1_top2_margin"] + entry["greedy"]["top1_top2_margin_8bit_activations"]))


def tokenizer_kv():
    """A byte-level BPE vocabulary for llama.cpp, which refuses a file without
    tokenizer.ggml.model: tiny-mixtral's first 512 tokens (the 256 byte
    symbols and 256 merges), the merges among them, bos 0, eos 1 (only for
    the temporary copy; tokens are fed as ids)."""
    tok = json.load(open(os.path.join(HERE, "..", "tiny-mixtral", "tokenizer.json")))
    inv = {i: s for s, i in tok["model"]["vocab"].items()}
    tokens = [inv[i] for i in range(CFG["vocab_size"])]
    have = set(tokens)
    merges = []
    for m in tok["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in have and b in have and a + b in have:
            merges.append(f"{a} {b}")

    def add(writer):
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
        writer.add_token_merges(merges)
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(1)
    return add


def check_llama_cpp(llama):
    """Loads a copy of the file (plus tokenizer_kv) in llama.cpp through the C
    program of Tests/Fixtures/gguf-moe/check_llama_cpp.py (token ids fed
    directly, F32 KV cache, flash attention off, 1 thread, logits of every
    position, 12 greedy tokens) and compares with reference.json."""
    sys.path.insert(0, os.path.join(HERE, "..", "gguf-moe"))
    import check_llama_cpp as C
    llama = os.path.abspath(llama)
    ref = json.load(open(os.path.join(HERE, "reference.json")))
    entry = ref["files"][NAME]
    assert ref["seed"] == CHOSEN_SEED
    tmp = tempfile.mkdtemp(prefix="gguf-moe-kquant-llama-cpp-")
    exe = os.path.join(tmp, "logits")
    source = C.C_SOURCE.replace("mp.n_gpu_layers = 0;",
                                "mp.n_gpu_layers = 0; if (getenv(\"NO_REPACK\")) mp.use_extra_bufts = false;")
    assert source != C.C_SOURCE
    subprocess.run(["cc", "-O1", "-x", "c", "-", "-o", exe, f"-I{llama}/include", f"-I{llama}/ggml/include",
                    f"-L{llama}/build/bin", "-lllama", f"-Wl,-rpath,{llama}/build/bin"],
                   input=source.encode(), check=True)
    tensors, _, _ = build(weights(CHOSEN_SEED))
    path = os.path.join(tmp, entry["file"])
    write(path, tensors, extra_kv=tokenizer_kv())
    mine = {t.name: t for t in gguf.GGUFReader(os.path.join(HERE, entry["file"])).tensors}
    theirs = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert mine.keys() == theirs.keys()
    for name, t in mine.items():
        assert t.tensor_type == theirs[name].tensor_type and np.array_equal(
            np.asarray(t.data).view(np.uint8), np.asarray(theirs[name].data).view(np.uint8)), name
    for repack in (True, False):
        print("llama.cpp", "with the CPU repack buffer (the default)" if repack else "with use_extra_bufts = false")
        env = dict(os.environ)
        env.pop("NO_REPACK", None)
        if not repack:
            env["NO_REPACK"] = "1"
        for i, seq in enumerate(ref["sequences"]):
            steps = 12 if i == 0 else 0
            out = subprocess.run([exe, path, str(steps)] + [str(x) for x in seq], capture_output=True, text=True,
                                 env=env)
            if out.returncode != 0:
                print("llama.cpp failed:", out.stderr.strip())
                return
            lines = out.stdout.strip().split("\n")
            got = np.array([[float(v) for v in l.split()[1:]] for l in lines[:-1]])
            want, w8 = np.array(entry["logits"][i]), np.array(entry["logits_8bit_activations"][i])
            print(f"seq {i}: max |llama.cpp - reference| = {np.abs(got - want).max():.2e}, "
                  f"vs 8-bit-activation reference {np.abs(got - w8).max():.2e} (max |logit| {np.abs(w8).max():.2f}); "
                  f"argmax equal to the 8-bit reference at {(got.argmax(-1) == w8.argmax(-1)).sum()}/{len(w8)}; "
                  f"per position {' '.join(f'{e:.1e}' for e in np.abs(got - w8).max(-1))}")
            if steps:
                g = [int(x) for x in lines[-1].split()[1:]]
                want_g = entry["greedy"]["continuation_8bit_activations"]
                print(f"greedy: llama.cpp {g} {'==' if g == want_g else '!='} 8-bit reference {want_g}")
    print("temporary files in", tmp)


if __name__ == "__main__":
    if "--check-llama-cpp" in sys.argv:
        check_llama_cpp(sys.argv[sys.argv.index("--check-llama-cpp") + 1])
    else:
        main()
