#!/usr/bin/env python3
"""Tiny qwen2moe GGUF files, one valid and each of the others broken in one
way (the file name says how), for BadGGUFTests' mixture-of-experts cases.
hidden 16, 2 heads of 8, 1 KV head, 1 layer, vocabulary 16, 4 experts of 8
(2 per token), a shared expert of 8; float32; random weights (seed 7).
Keys and layouts as llama.cpp's converter writes qwen2moe (see
../make_gguf_moe.py). Run: python3 Tests/Fixtures/gguf-moe/bad/make_bad.py
"""
import os
import numpy as np
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
H, HEADS, KV, HD, V, E, K, FF, SH = 16, 2, 1, 8, 16, 4, 2, 8, 8


def write(name, keys_edit=None, tensor_edit=None):
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(os.path.join(HERE, name + ".gguf"), "qwen2moe")
    keys = {
        "block_count": 1, "context_length": 64, "embedding_length": H, "feed_forward_length": 32,
        "attention.head_count": HEADS, "attention.head_count_kv": KV, "expert_count": E, "expert_used_count": K,
        "expert_feed_forward_length": FF, "expert_shared_feed_forward_length": SH,
    }
    if keys_edit:
        keys_edit(keys)
    for k, v in keys.items():
        w.add_uint32(f"qwen2moe.{k}", v)
    w.add_float32("qwen2moe.rope.freq_base", 10000.0)
    w.add_float32("qwen2moe.attention.layer_norm_rms_epsilon", 1e-6)

    def t(shape, norm=False):
        return (1 + 0.1 * rng.standard_normal(shape) if norm else 0.3 * rng.standard_normal(shape)).astype(np.float32)

    tensors = {
        "token_embd.weight": t((V, H)), "output_norm.weight": t((H,), True), "output.weight": t((V, H)),
        "blk.0.attn_norm.weight": t((H,), True), "blk.0.ffn_norm.weight": t((H,), True),
        "blk.0.attn_q.weight": t((HEADS * HD, H)), "blk.0.attn_q.bias": t((HEADS * HD,)),
        "blk.0.attn_k.weight": t((KV * HD, H)), "blk.0.attn_k.bias": t((KV * HD,)),
        "blk.0.attn_v.weight": t((KV * HD, H)), "blk.0.attn_v.bias": t((KV * HD,)),
        "blk.0.attn_output.weight": t((H, HEADS * HD)),
        "blk.0.ffn_gate_inp.weight": t((E, H)),
        "blk.0.ffn_gate_exps.weight": t((E, FF, H)), "blk.0.ffn_up_exps.weight": t((E, FF, H)),
        "blk.0.ffn_down_exps.weight": t((E, H, FF)),
        "blk.0.ffn_gate_inp_shexp.weight": t((1, H)),
        "blk.0.ffn_gate_shexp.weight": t((SH, H)), "blk.0.ffn_up_shexp.weight": t((SH, H)),
        "blk.0.ffn_down_shexp.weight": t((H, SH)),
    }
    if tensor_edit:
        tensor_edit(tensors)
    for n, a in tensors.items():
        w.add_tensor(n, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


write("valid")
write("missing-key-expert_feed_forward_length", keys_edit=lambda k: k.pop("expert_feed_forward_length"))
write("used-exceeds-count", keys_edit=lambda k: k.update(expert_used_count=5))
write("zero-expert_count", keys_edit=lambda k: k.update(expert_count=0))


def three_experts(t):
    t["blk.0.ffn_up_exps.weight"] = t["blk.0.ffn_up_exps.weight"][:3].copy()


write("stacked-experts-mismatch-ffn_up_exps", tensor_edit=three_experts)
write("missing-tensor-ffn_down_exps", tensor_edit=lambda t: t.pop("blk.0.ffn_down_exps.weight"))
