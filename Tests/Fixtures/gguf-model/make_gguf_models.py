#!/usr/bin/env python3
"""GGUF files of the tiny-llama fixture and their float64 NumPy references.

Writes, next to this script:
  tiny-llama-f32.gguf   every tensor F32 (bf16 weights widened exactly)
  tiny-llama-f16.gguf   matrices F16, norms F32
  tiny-llama-q8_0.gguf  matrices Q8_0 (gguf's numpy quantizer); F16 where a
                        row is not a multiple of 32 (down_proj: 688), as
                        llama.cpp's converter falls back
  tiny-llama-q4_k.gguf  q/k/v/o, gate/up and the embedding Q4_K (the
                        quantizer below), LM head Q8_0, down_proj F16
  reference.json        for each file, logits of every position of two token
                        sequences, computed in float64 from the weights as
                        gguf.quants.dequantize reads them back; for the
                        quantized files also with each product's input
                        rounded to 8-bit blocks first, as llama.cpp computes

The q and k matrices are stored with llama.cpp's row permutation for its
interleaved RoPE (convert_hf_to_gguf.py's LlamaModel.permute), as real llama
files are; the reference undoes it and applies Hugging Face's rotate-half
RoPE, so a reader that forgets to undo it fails.

Uses numpy, the gguf package (0.19.0) and Scripts/numpy_reference.py (the
project's float64 Hugging Face forward pass); no Weft engine code. Run:
  python3 Tests/Fixtures/gguf-model/make_gguf_models.py
"""
import json
import os
import struct

import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = os.path.dirname(os.path.abspath(__file__))
# The project's float64 Hugging Face forward pass and safetensors reader.
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "Scripts"))
import numpy_reference  # noqa: E402
SOURCE = os.path.join(HERE, "..", "tiny-llama")
QK_K = 256


def permute(w, n_head):
    """llama.cpp's LlamaModel.permute (rows of each head interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def quantize_q4_k(x):
    """A plain Q4_K quantizer (per 32-element sub-block min/max, 6-bit scales
    and mins relative to fp16 super-scales). Not ggml's search, but any valid
    encoding is a valid file: the reference reads it back with gguf's dequantizer."""
    rows, k = x.shape
    assert k % QK_K == 0
    blocks = x.reshape(-1, 8, 32).astype(np.float32)
    mn = np.minimum(blocks.min(axis=-1), 0)          # value = d*sc*q - dmin*m, q in 0..15
    mx = blocks.max(axis=-1)
    scale = (mx - mn) / 15
    mins = -mn
    d = (scale.max(axis=-1) / 63).astype(np.float16)
    dmin = (mins.max(axis=-1) / 63).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.where(d32 > 0, np.clip(np.rint(scale / np.where(d32 > 0, d32, 1)), 0, 63), 0).astype(np.uint8)
    m = np.where(dmin32 > 0, np.clip(np.rint(mins / np.where(dmin32 > 0, dmin32, 1)), 0, 63), 0).astype(np.uint8)
    eff_d = (d32 * sc)[:, :, None]
    eff_m = (dmin32 * m)[:, :, None]
    q = np.where(eff_d > 0, np.rint((blocks + eff_m) / np.where(eff_d > 0, eff_d, 1)), 0)
    q = np.clip(q, 0, 15).astype(np.uint8)
    # 12 bytes of scales/mins (gguf's Q4_K.get_scale_min, inverted).
    s = np.zeros((blocks.shape[0], 12), dtype=np.uint8)
    s[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    s[:, 4:8] = (m[:, 0:4] & 0x3F) | ((m[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    # Nibbles: 32 bytes per pair of sub-blocks, low nibble the first.
    pairs = q.reshape(-1, 4, 2, 32)
    qs = (pairs[:, :, 0, :] | (pairs[:, :, 1, :] << 4)).reshape(-1, 128)
    out = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), s, qs], axis=1)
    return out.reshape(rows, -1)


def encode(w, qtype):
    """Bytes of a 2-D matrix in qtype (uint8 [rows, row_bytes]) or a float array."""
    if qtype == T.F32:
        return w.astype(np.float32)
    if qtype == T.F16:
        return w.astype(np.float16)
    if qtype == T.Q4_K:
        return quantize_q4_k(w)
    return gguf.quants.quantize(w.astype(np.float32), qtype)


def decode(data, qtype, shape):
    if qtype in (T.F32, T.F16):
        return data.astype(np.float64).reshape(shape)
    return gguf.quants.dequantize(data, qtype).astype(np.float64).reshape(shape)


def plan(kind, name, w):
    """The type of a tensor in a file of `kind`."""
    if w.ndim == 1 or kind == "f32":
        return T.F32
    if kind == "f16":
        return T.F16
    k = w.shape[1]
    if kind == "q8_0":
        return T.Q8_0 if k % 32 == 0 else T.F16
    if kind == "q4_k":
        if name == "output.weight":
            return T.Q8_0
        return T.Q4_K if k % QK_K == 0 else (T.Q8_0 if k % 32 == 0 else T.F16)
    raise ValueError(kind)


def quantize_activations(x, qtype):
    """x rounded as ggml rounds the activations of a matrix product with a
    weight of qtype: Q8_0 blocks of 32 (gguf's quantizer) for Q8_0/Q4_0,
    Q8_K blocks of 256 (ggml's quantize_row_q8_K_ref) for the k-quants."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    if qtype in (T.Q8_0, T.Q4_0):
        return gguf.quants.dequantize(gguf.quants.quantize(x32, T.Q8_0), T.Q8_0).astype(np.float64).reshape(x.shape)
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        b = x32.reshape(-1, QK_K)
        idx = np.abs(b).argmax(axis=-1)
        mx = b[np.arange(b.shape[0]), idx]
        iscale = np.where(mx != 0, np.float32(-128) / np.where(mx != 0, mx, 1), 0).astype(np.float32)
        q = np.minimum(127, np.rint((iscale[:, None] * b).astype(np.float32)))   # nearest_int: ties to even
        d = np.where(iscale != 0, np.float32(1) / np.where(iscale != 0, iscale, 1), 0).astype(np.float32)
        return (q * d[:, None]).astype(np.float64).reshape(x.shape)
    return x


HF_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(name):
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight",
             "model.norm.weight": "output_norm.weight"}
    if name in fixed:
        return fixed[name]
    _, _, i, rest = name.split(".", 3)
    return f"blk.{i}.{HF_TO_GGUF[rest]}"


def main():
    cfg, hf = numpy_reference.load(SOURCE)
    reference = json.load(open(os.path.join(SOURCE, "reference.json")))
    sequences = [reference["logits_cases"][0]["tokens"], reference["logits_cases"][1]["tokens"]]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = {"sequences": sequences, "files": {}}
    for kind in ["f32", "f16", "q8_0", "q4_k"]:
        path = os.path.join(HERE, f"tiny-llama-{kind}.gguf")
        writer = gguf.GGUFWriter(path, "llama")
        writer.add_name("tiny-llama")
        writer.add_context_length(cfg["max_position_embeddings"])
        writer.add_embedding_length(cfg["hidden_size"])
        writer.add_feed_forward_length(cfg["intermediate_size"])
        writer.add_block_count(cfg["num_hidden_layers"])
        writer.add_head_count(nh)
        writer.add_head_count_kv(nkv)
        writer.add_rope_dimension_count(cfg["head_dim"])
        writer.add_rope_freq_base(cfg["rope_theta"])
        writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        writer.add_vocab_size(cfg["vocab_size"])
        writer.add_bos_token_id(cfg["bos_token_id"])
        writer.add_eos_token_id(cfg["eos_token_id"])
        dequantized, types = {}, {}
        for name in sorted(hf):
            g = gguf_name(name)
            w = hf[name].astype(np.float32)
            qtype = plan(kind, g, w)
            data = encode(w, qtype)
            back = decode(data, qtype, w.shape)
            if g.endswith("attn_q.weight") or g.endswith("attn_k.weight"):
                heads = nh if g.endswith("attn_q.weight") else nkv
                data = permute(data, heads)   # row order as llama.cpp writes it
            writer.add_tensor(g, data, raw_dtype=qtype if qtype not in (T.F32, T.F16) else None)
            dequantized[name] = back         # Hugging Face names and row order
            types[name] = qtype
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

        def rounded(x, name):
            return quantize_activations(x, types[name]) @ dequantized[name].T

        def run(tokens, matmul=None):
            return numpy_reference.forward(cfg, dequantized, np.array(tokens), matmul).astype(np.float32).tolist()

        logits = [run(s) for s in sequences]
        ggml = [run(s, rounded) for s in sequences]
        names = sorted(set(t.name for t in types.values()))
        out["files"][kind] = {"file": os.path.basename(path), "logits": logits, "types": names}
        if kind in ("q8_0", "q4_k"):
            out["files"][kind]["logits_8bit_activations"] = ggml
        print(kind, os.path.getsize(path), "bytes", names)
    # The float32 file's reference also equals transformers' (bf16 weights widened exactly).
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))


def write_bad_files():
    """Small broken models (1 layer, hidden 64) for the loader's error paths:
    bad/<case>.gguf, each with one defect named in its file name."""
    folder = os.path.join(HERE, "bad")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(5)
    h, ffn, vocab, heads = 64, 128, 64, 2

    def write(case, drop_key=None, keys=None, arch="llama", shapes=None, types=None, drop_tensor=None):
        writer = gguf.GGUFWriter(os.path.join(folder, case + ".gguf"), arch)
        values = {"context_length": 128, "embedding_length": h, "feed_forward_length": ffn, "block_count": 1,
                  "attention.head_count": heads, "attention.head_count_kv": heads}
        values.update(keys or {})
        for key, value in values.items():
            if key == drop_key:
                continue
            name = f"{arch}.{key}"
            if isinstance(value, str):
                writer.add_string(name, value)
            else:
                writer.add_uint32(name, value)
        writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
        tensors = {"token_embd.weight": (vocab, h), "output_norm.weight": (h,), "blk.0.attn_norm.weight": (h,),
                   "blk.0.ffn_norm.weight": (h,), "blk.0.attn_q.weight": (h, h), "blk.0.attn_k.weight": (h, h),
                   "blk.0.attn_v.weight": (h, h), "blk.0.attn_output.weight": (h, h), "blk.0.ffn_gate.weight": (ffn, h),
                   "blk.0.ffn_up.weight": (ffn, h), "blk.0.ffn_down.weight": (h, ffn)}
        tensors.update(shapes or {})
        for name, shape in tensors.items():
            if name == drop_tensor:
                continue
            w = rng.normal(0, 0.02, shape).astype(np.float32)
            qtype = (types or {}).get(name)
            if qtype is None:
                writer.add_tensor(name, w)
            else:
                writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    write("valid")
    write("missing-key-block_count", drop_key="block_count")
    write("wrong-type-embedding_length", keys={"embedding_length": "64"})
    write("zero-head_count", keys={"attention.head_count": 0})
    write("unsupported-architecture", arch="gpt2")
    write("shape-mismatch-ffn_up", shapes={"blk.0.ffn_up.weight": (100, h)})
    write("unsupported-type-q5_0", types={"blk.0.attn_q.weight": T.Q5_0})
    write("missing-tensor-ffn_down", drop_tensor="blk.0.ffn_down.weight")


if __name__ == "__main__":
    main()
    write_bad_files()
