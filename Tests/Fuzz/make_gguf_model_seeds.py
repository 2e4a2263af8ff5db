#!/usr/bin/env python3
"""Seeds of the gguf-model fuzz target (Tests/Fuzz/corpus/gguf-model/): whole
GGUF models small enough for the fuzzer (each < 8 KB; Scripts/fuzz runs the
target with -max_len 16384), written as llama.cpp's converter writes them
(names, keys and layouts as in Tests/Fixtures/gguf-moe/make_gguf_moe.py).
Random weights (seed 7): only the file structure matters here.

  llama.gguf          dense llama, hidden 16, 2 heads / 1 KV head, ff 32,
                      vocab 16, tied embedding; q/k permuted; q/k/v/o/up F16,
                      gate BF16, embedding F16, down Q8_0, rope_freqs.weight
                      (Llama 3 scaling factors), bos/eos ids
  mixtral.gguf        arch llama with expert_count 2 / expert_used_count 1
                      (feed_forward_length 64 is the experts' size), hidden 8,
                      2 heads; stacked ffn_{gate,up}_exps F16 (numpy
                      [E, ff, h]) and ffn_down_exps Q4_0 ([E, h, ff]: rows of
                      64, so its blocks fall on a 2-rank split), router and
                      embedding F32, untied output F16
  qwen2moe.gguf       hidden 8, 2 heads / 1 KV head, q/k/v biases, 2 experts
                      top-1 of ff 32 (down Q8_0), shared expert of ff 32
                      (ffn_{gate,up,down}_shexp, down Q8_0) and its gate
                      ffn_gate_inp_shexp numpy [1, h] (GGUF ne {h, 1}, F32)
  qwen3moe.gguf       hidden 8, 2 heads of key_length 8 (not hidden / heads),
                      attn_q_norm / attn_k_norm, 3 experts top-2 of ff 32
                      (down Q8_0; 3 experts split 2 + 1 under expert
                      parallelism), F16 elsewhere
  qwen3moe-q8.gguf    qwen3moe.gguf plus one byte: the target loads a file
                      whose length is 1 mod 4 with every weight converted to
                      q8_0 (2: bf16, 3: q4_1), see GGUFModelFuzz.swift

Uses numpy and the gguf package (0.19.0). Run:
  python3 Tests/Fuzz/make_gguf_model_seeds.py
"""
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf-model")
rng = np.random.default_rng(7)


def w(*shape):
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def permute(x, n_head):
    """llama.cpp's LlamaModel.permute (rows of each head interleaved)."""
    return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def add(writer, name, x, qtype=T.F32):
    if qtype == T.F32:
        writer.add_tensor(name, x.astype(np.float32))
    elif qtype == T.F16:
        writer.add_tensor(name, x.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(x.astype(np.float32), qtype), raw_dtype=qtype)


def header(writer, *, layers=1, hidden, heads, kv, ff, context=64, eps=1e-5, theta=10000.0):
    writer.add_block_count(layers)
    writer.add_context_length(context)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(eps)


def attention(writer, arch, hidden, heads, kv, hd, qtype=T.F16, bias=False):
    q, k = w(heads * hd, hidden), w(kv * hd, hidden)
    if arch == "llama":
        q, k = permute(q, heads), permute(k, kv)
    add(writer, "blk.0.attn_norm.weight", 1 + w(hidden))
    add(writer, "blk.0.attn_q.weight", q, qtype)
    add(writer, "blk.0.attn_k.weight", k, qtype)
    add(writer, "blk.0.attn_v.weight", w(kv * hd, hidden), qtype)
    if bias:
        add(writer, "blk.0.attn_q.bias", w(heads * hd))
        add(writer, "blk.0.attn_k.bias", w(kv * hd))
        add(writer, "blk.0.attn_v.bias", w(kv * hd))
    add(writer, "blk.0.attn_output.weight", w(hidden, heads * hd), qtype)
    add(writer, "blk.0.ffn_norm.weight", 1 + w(hidden))


def experts(writer, hidden, count, ff, updown=T.F16, down=T.Q8_0):
    add(writer, "blk.0.ffn_gate_inp.weight", w(count, hidden))
    add(writer, "blk.0.ffn_gate_exps.weight", w(count, ff, hidden), updown)
    add(writer, "blk.0.ffn_up_exps.weight", w(count, ff, hidden), updown)
    add(writer, "blk.0.ffn_down_exps.weight", w(count, hidden, ff), down)


def finish(writer, path):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    size = os.path.getsize(path)
    assert size < 8192, (path, size)
    print(os.path.basename(path), size, "bytes")


def llama(path):
    h, heads, kv, ff, vocab = 16, 2, 1, 32, 16
    hd = h // heads
    writer = gguf.GGUFWriter(path, "llama")
    header(writer, hidden=h, heads=heads, kv=kv, ff=ff, theta=500000.0)
    writer.add_vocab_size(vocab)
    writer.add_rope_dimension_count(hd)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_file_type(7)
    add(writer, "token_embd.weight", w(vocab, h), T.F16)
    add(writer, "rope_freqs.weight", np.array([1, 1, 2, 8], dtype=np.float32))
    attention(writer, "llama", h, heads, kv, hd)
    add(writer, "blk.0.ffn_gate.weight", w(ff, h), T.BF16)
    add(writer, "blk.0.ffn_up.weight", w(ff, h), T.F16)
    add(writer, "blk.0.ffn_down.weight", w(h, ff), T.Q8_0)
    add(writer, "output_norm.weight", 1 + w(h))
    finish(writer, path)


def mixtral(path):
    h, heads, kv, ff, vocab, E = 8, 2, 2, 64, 16, 2
    hd = h // heads
    writer = gguf.GGUFWriter(path, "llama")
    header(writer, hidden=h, heads=heads, kv=kv, ff=ff)
    writer.add_expert_count(E)
    writer.add_expert_used_count(1)
    writer.add_vocab_size(vocab)
    writer.add_rope_dimension_count(hd)
    writer.add_file_type(2)
    add(writer, "token_embd.weight", w(vocab, h))
    attention(writer, "llama", h, heads, kv, hd)
    experts(writer, h, E, ff, down=T.Q4_0)
    add(writer, "output_norm.weight", 1 + w(h))
    add(writer, "output.weight", w(vocab, h), T.F16)
    finish(writer, path)


def qwen2moe(path):
    h, heads, kv, vocab, E, ff, shared = 8, 2, 1, 16, 2, 32, 32
    hd = h // heads
    writer = gguf.GGUFWriter(path, "qwen2moe")
    header(writer, hidden=h, heads=heads, kv=kv, ff=48, eps=1e-6)
    writer.add_expert_count(E)
    writer.add_expert_used_count(1)
    writer.add_expert_feed_forward_length(ff)
    writer.add_expert_shared_feed_forward_length(shared)
    writer.add_file_type(7)
    add(writer, "token_embd.weight", w(vocab, h))
    attention(writer, "qwen2moe", h, heads, kv, hd, qtype=T.F16, bias=True)
    experts(writer, h, E, ff)
    add(writer, "blk.0.ffn_gate_inp_shexp.weight", w(1, h))
    add(writer, "blk.0.ffn_gate_shexp.weight", w(shared, h), T.F16)
    add(writer, "blk.0.ffn_up_shexp.weight", w(shared, h), T.F16)
    add(writer, "blk.0.ffn_down_shexp.weight", w(h, shared), T.Q8_0)
    add(writer, "output_norm.weight", 1 + w(h))
    add(writer, "output.weight", w(vocab, h), T.F16)
    finish(writer, path)


def qwen3moe(path):
    h, heads, kv, hd, vocab, E, ff = 8, 2, 1, 8, 16, 3, 32
    writer = gguf.GGUFWriter(path, "qwen3moe")
    header(writer, hidden=h, heads=heads, kv=kv, ff=64, eps=1e-6, theta=1000000.0)
    writer.add_expert_count(E)
    writer.add_expert_used_count(2)
    writer.add_expert_feed_forward_length(ff)
    writer.add_key_length(hd)
    writer.add_value_length(hd)
    writer.add_file_type(7)
    add(writer, "token_embd.weight", w(vocab, h), T.F16)
    attention(writer, "qwen3moe", h, heads, kv, hd)
    add(writer, "blk.0.attn_q_norm.weight", 1 + w(hd))
    add(writer, "blk.0.attn_k_norm.weight", 1 + w(hd))
    experts(writer, h, E, ff)
    add(writer, "output_norm.weight", 1 + w(h))
    add(writer, "output.weight", w(vocab, h), T.F16)
    finish(writer, path)


def main():
    os.makedirs(HERE, exist_ok=True)
    for name, make in [("llama", llama), ("mixtral", mixtral), ("qwen2moe", qwen2moe), ("qwen3moe", qwen3moe)]:
        make(os.path.join(HERE, name + ".gguf"))
    data = open(os.path.join(HERE, "qwen3moe.gguf"), "rb").read()
    with open(os.path.join(HERE, "qwen3moe-q8.gguf"), "wb") as f:
        f.write(data + b"\0" * ((1 - len(data)) % 4))
    print("qwen3moe-q8.gguf", os.path.getsize(os.path.join(HERE, "qwen3moe-q8.gguf")), "bytes")


if __name__ == "__main__":
    main()
