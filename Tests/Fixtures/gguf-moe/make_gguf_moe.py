#!/usr/bin/env python3
"""GGUF files of the MoE fixtures, written as llama.cpp's converter writes
them, and their float64 NumPy references.

Writes, next to this script:
  tiny-mixtral-f32.gguf     arch `llama`, every tensor F32
  tiny-mixtral-q8_0.gguf    matrices Q8_0 (gguf's numpy quantizer); router,
                            norms and biases F32 (see "types" below)
  tiny-mixtral-q4_0.gguf    as llama-quantize Q4_0 (no imatrix, not --pure)
                            makes it from the f32 file for 8 experts: Q4_0,
                            except attn_k and attn_v Q8_0 (its n_expert == 8
                            rule), output Q8_0 (Q6_K wanted, 128 columns are
                            not a multiple of 256: falls back to Q8_0), router
                            and norms F32
  tiny-qwen2moe-q8_0.gguf   arch `qwen2moe`
  tiny-qwen3moe-q8_0.gguf   arch `qwen3moe`
  reference.json            for each file, logits of every position of two
                            token sequences (tiny-mixtral's reference cases 0
                            and 2), per layer the tokens routed to each expert
                            and the smallest gap between the k-th and (k+1)-th
                            routing probability (a small gap means quantization
                            noise can change the chosen experts: e.g.
                            tiny-qwen3moe-q8_0's second sequence routes
                            differently with rounded inputs, 0.2 apart in
                            logits), all computed in float64 from the
                            weights as gguf.quants.dequantize reads them back,
                            with llama.cpp's routing (below); for the quantized
                            files also with each product's input rounded to
                            Q8_0 blocks first, as llama.cpp computes on x86
                            (see quantize_activations); and a
                            12-token greedy continuation of the first sequence
                            (both ways)
  With --all also tiny-qwen2moe-f32.gguf and tiny-qwen3moe-f32.gguf (not kept
  in the repository: 14 MB, and the q8_0 files cover the same names and
  layouts).

Names and layouts, as convert_hf_to_gguf.py (conversion/llama.py, qwen.py,
base.py of llama.cpp 0c1e570) and gguf-py's tensor_mapping write them:
  keys       <arch>.block_count, context_length, embedding_length,
             feed_forward_length (config intermediate_size),
             attention.head_count, attention.head_count_kv, rope.freq_base,
             attention.layer_norm_rms_epsilon, expert_count (num_local_experts /
             num_experts), expert_used_count (num_experts_per_tok),
             general.file_type (0 F32, 7 Q8_0, 2 Q4_0);
             llama: + vocab_size, rope.dimension_count (hidden / heads);
             qwen2moe: + expert_feed_forward_length (moe_intermediate_size),
               expert_shared_feed_forward_length (shared_expert_intermediate_size);
             qwen3moe: + expert_feed_forward_length, attention.key_length and
               attention.value_length (config head_dim, 32; no
               rope.dimension_count: llama.cpp rotates key_length dims).
  tensors    token_embd, output_norm, output, blk.N.attn_norm, ffn_norm,
             attn_q/k/v/output (.weight; qwen2moe also attn_q/k/v.bias, F32),
             qwen3moe blk.N.attn_q_norm / attn_k_norm [head_dim] F32,
             blk.N.ffn_gate_inp.weight (router, numpy [E, h], always F32),
             blk.N.ffn_gate_exps / ffn_up_exps (numpy [E, ff, h], GGUF ne
             {h, ff, E}) and ffn_down_exps (numpy [E, h, ff], ne {ff, h, E}):
             the experts stacked in expert order (Mixtral w1 -> gate, w3 -> up,
             w2 -> down);
             qwen2moe: blk.N.ffn_gate_shexp / ffn_up_shexp [shared_ff, h],
             ffn_down_shexp [h, shared_ff], ffn_gate_inp_shexp numpy [1, h]
             (2-D, ne {h, 1}, kept F32 like the router: the converter does not
             squeeze it; llama.cpp reads it as {n_embd}).
  llama only: q and k rows permuted for llama.cpp's interleaved RoPE
             (LlamaModel.permute, k with the KV head count); the reference
             undoes it. qwen2moe/qwen3moe use NEOX RoPE: no permutation.
  No tokenizer metadata (make_gguf_models.py writes none either).
  The Q8_0 fallback to F16 for rows not a multiple of 32 is implemented but
  never taken: every row length here (128, 192, 96, 160, 64, 256) is one.

Routing, as llama.cpp computes it (src/models/*.cpp, build_moe_ffn): softmax
over all experts, top-k, then the k weights renormalized iff the graph passes
norm_w = true:
  llama     (Mixtral) norm_w = true               -> same as transformers
  qwen2moe  norm_w = false, hard-coded            -> NOT renormalized, although
            tiny-qwen2moe's config says norm_topk_prob true (Qwen1.5-MoE's own
            config says false, which is what llama.cpp was written for)
  qwen3moe  norm_w = true, hard-coded             -> renormalized, although
            tiny-qwen3moe's config says norm_topk_prob false (Qwen3 MoE
            checkpoints say true)
The converter writes no <arch>.expert_weights_norm key for these three
architectures, and llama.cpp's qwen2moe / qwen3moe / llama loaders do not read
one (only deepseek2, glm4-moe, dots1, bailingmoe and others do, as
hparams.expert_weights_norm, which then replaces the hard-coded choice in
their graphs). The references follow llama.cpp; reference.json says per file
"normalize_top_k" and how far transformers' routing would be from it
("max_abs_diff_vs_config_routing"). expert_weights_scale is not written and
llama.cpp leaves it at 0, i.e. no scaling. The shared-expert gate is
sigmoid(ffn_gate_inp_shexp . x), as in transformers.

Confirmed with llama.cpp 0c1e570 (x86_64 CPU, F32 KV cache) by
check_llama_cpp.py: every file loads, llama.cpp's logits match
"logits_8bit_activations" (quantized files) or "logits" (f32) within 2e-6 on
both sequences, and its 12 greedy tokens equal the reference's. The Q4_0
file's tensor types and bytes equal what llama-quantize ... Q4_0 writes from
tiny-mixtral-f32.gguf.

Uses numpy, the gguf package (0.19.0) and Scripts/numpy_reference.py; no Weft
engine code. Run:
  python3 Tests/Fixtures/gguf-moe/make_gguf_moe.py [--all]
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "Scripts"))
import numpy_reference  # noqa: E402
FIXTURES = os.path.join(HERE, "..")

ARCH = {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe"}
NORMALIZE_TOP_K = {"llama": True, "qwen2moe": False, "qwen3moe": True}   # llama.cpp's norm_w
FILE_TYPE = {"f32": 0, "q8_0": 7, "q4_0": 2}


def permute(w, n_head):
    """llama.cpp's LlamaModel.permute (rows of each head interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(cfg, hf):
    """[(gguf name, [hf names], kind)] in writing order; a stacked expert
    tensor lists one HF name per expert. kind: 'router', 'norm', 'bias',
    'attn_q', 'attn_k', 'attn_v', 'output', 'token_embd' or 'matrix'."""
    kind = numpy_reference.moe_kind(cfg)
    out = [("token_embd.weight", ["model.embed_tokens.weight"], "token_embd")]
    for i in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        out += [(b + "attn_norm.weight", [p + "input_layernorm.weight"], "norm")]
        for x in "qkv":
            out.append((b + f"attn_{x}.weight", [p + f"self_attn.{x}_proj.weight"], f"attn_{x}"))
            if p + f"self_attn.{x}_proj.bias" in hf:
                out.append((b + f"attn_{x}.bias", [p + f"self_attn.{x}_proj.bias"], "bias"))
        out.append((b + "attn_output.weight", [p + "self_attn.o_proj.weight"], "matrix"))
        if p + "self_attn.q_norm.weight" in hf:
            out += [(b + "attn_q_norm.weight", [p + "self_attn.q_norm.weight"], "norm"),
                    (b + "attn_k_norm.weight", [p + "self_attn.k_norm.weight"], "norm")]
        out.append((b + "ffn_norm.weight", [p + "post_attention_layernorm.weight"], "norm"))
        assert numpy_reference.is_sparse_layer(cfg, i), "llama.cpp's qwen2moe/qwen3moe have no dense layers"
        router, experts, shared, shared_gate = numpy_reference.moe_names(cfg, p)
        out.append((b + "ffn_gate_inp.weight", [router], "router"))
        for j, part in enumerate(["gate", "up", "down"]):
            out.append((b + f"ffn_{part}_exps.weight", [e[j] for e in experts], "matrix"))
        if shared is not None:
            out.append((b + "ffn_gate_inp_shexp.weight", [shared_gate], "router"))
            for j, part in enumerate(["gate", "up", "down"]):
                out.append((b + f"ffn_{part}_shexp.weight", [shared[j]], "matrix"))
    out.append(("output_norm.weight", ["model.norm.weight"], "norm"))
    out.append(("output.weight", ["lm_head.weight"], "output"))
    assert sorted(n for _, ns, _ in out for n in ns) == sorted(hf), "every HF tensor written once"
    return out


def plan(ftype, kind, w, n_expert):
    """The type of a tensor in a file of `ftype`, as the converter (f32, q8_0)
    or llama-quantize (q4_0) chooses it."""
    if kind in ("norm", "bias", "router") or w.ndim == 1 or ftype == "f32":
        return T.F32
    cols = w.shape[-1]
    if ftype == "q8_0":
        return T.Q8_0 if cols % 32 == 0 else T.F16              # converter: QuantError -> F16
    if ftype == "q4_0":
        if kind == "output":
            return T.Q6_K if cols % 256 == 0 else T.Q8_0         # Q6_K wanted; 128 columns -> Q8_0
        if kind in ("attn_k", "attn_v") and n_expert == 8:
            return T.Q8_0
        return T.Q4_0 if cols % 32 == 0 else T.F16
    raise ValueError(ftype)


def encode(w, qtype):
    if qtype == T.F32:
        return w.astype(np.float32)
    if qtype == T.F16:
        return w.astype(np.float16)
    return gguf.quants.quantize(w.astype(np.float32), qtype)


def decode(data, qtype, shape):
    if qtype in (T.F32, T.F16):
        return data.astype(np.float64).reshape(shape)
    return gguf.quants.dequantize(data, qtype).astype(np.float64).reshape(shape)


def quantize_activations(x, qtype):
    """x rounded as ggml rounds a matrix product's input for a weight of qtype
    (Q8_0 blocks of 32 for Q8_0/Q4_0; Q6_K is not used here). F32 weights
    (router, shared-expert gate) take the input unrounded.

    This is ggml's x86 (AVX2) quantize_row_q8_0: scale 127 / max|x| applied by
    multiplication in float32, rounded half to even (_mm256_round_ps), the
    block scale max|x| / 127 stored as fp16. gguf's numpy quantizer divides by
    the scale and rounds half away from zero; the two disagree on a few
    elements, and with tiny-qwen3moe-q8_0 that moved llama.cpp's logits by up to
    4e-2 from a reference rounded the gguf way (ggml's scalar and ARM versions
    use 1 / (max|x| / 127) instead, so on another machine llama.cpp can differ
    from this reference by as much)."""
    if qtype in (T.Q8_0, T.Q4_0):
        b = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 32)
        amax = np.abs(b).max(axis=-1, keepdims=True)
        inv = np.where(amax != 0, np.float32(127) / np.where(amax != 0, amax, 1), 0).astype(np.float32)
        q = np.rint((b * inv).astype(np.float32))
        d = (amax / np.float32(127)).astype(np.float32).astype(np.float16).astype(np.float32)
        return (q * d).astype(np.float64).reshape(x.shape)
    assert qtype in (T.F32, T.F16), qtype
    return x


def write(path, name, cfg, hf, ftype, extra_kv=None):
    """Write one file; returns (dequantized HF-named weights, HF name -> type).
    `extra_kv(writer)` may add keys (check_llama_cpp.py adds a tokenizer)."""
    arch = ARCH[numpy_reference.moe_kind(cfg)]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    E = cfg.get("num_local_experts", cfg.get("num_experts"))
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(name)
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(nh)
    writer.add_head_count_kv(nkv)
    writer.add_rope_freq_base(cfg["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_expert_count(E)
    writer.add_expert_used_count(cfg["num_experts_per_tok"])
    if "head_dim" in cfg:
        writer.add_key_length(cfg["head_dim"])
        writer.add_value_length(cfg["head_dim"])
    writer.add_file_type(FILE_TYPE[ftype])
    if arch == "llama":
        writer.add_vocab_size(cfg["vocab_size"])
        writer.add_rope_dimension_count(cfg.get("head_dim") or cfg["hidden_size"] // nh)
    else:
        writer.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        if cfg.get("shared_expert_intermediate_size") is not None:
            writer.add_expert_shared_feed_forward_length(cfg["shared_expert_intermediate_size"])
    if ftype != "f32":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if extra_kv is not None:
        extra_kv(writer)
    dequantized, types = {}, {}
    for g, names, kind in gguf_tensors(cfg, hf):
        w = np.stack([hf[n] for n in names]) if len(names) > 1 else hf[names[0]]
        w = w.astype(np.float32)
        qtype = plan(ftype, kind, w, E)
        data = encode(w, qtype)
        back = decode(data, qtype, w.shape)
        if arch == "llama" and kind in ("attn_q", "attn_k"):
            data = permute(data, nh if kind == "attn_q" else nkv)   # row order as llama.cpp writes it
        writer.add_tensor(g, data, raw_dtype=qtype if qtype not in (T.F32, T.F16) else None)
        for j, n in enumerate(names):
            dequantized[n] = back[j] if len(names) > 1 else back    # Hugging Face names and row order
            types[n] = qtype
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dequantized, types


def main():
    files = [("tiny-mixtral", "f32"), ("tiny-mixtral", "q8_0"), ("tiny-mixtral", "q4_0"),
             ("tiny-qwen2moe", "q8_0"), ("tiny-qwen3moe", "q8_0")]
    if "--all" in sys.argv:
        files += [("tiny-qwen2moe", "f32"), ("tiny-qwen3moe", "f32")]
    mixtral_ref = json.load(open(os.path.join(FIXTURES, "tiny-mixtral", "reference.json")))
    sequences = [mixtral_ref["logits_cases"][0]["tokens"], mixtral_ref["logits_cases"][2]["tokens"]]
    out = {"generator": "Tests/Fixtures/gguf-moe/make_gguf_moe.py: float64 NumPy forward pass "
                        "(Scripts/numpy_reference.py) on the weights as gguf.quants.dequantize reads them back, "
                        "with llama.cpp's routing per architecture; logits rounded to 6 decimals",
           "sequences": sequences, "files": {}}
    for model, ftype in files:
        cfg, hf = numpy_reference.load(os.path.join(FIXTURES, model))
        arch = ARCH[numpy_reference.moe_kind(cfg)]
        path = os.path.join(HERE, f"{model}-{ftype}.gguf")
        dequantized, types = write(path, model, cfg, hf, ftype)
        norm = NORMALIZE_TOP_K[arch]

        def rounded(x, name):
            return quantize_activations(x, types[name]) @ dequantized[name].T

        def run(tokens, matmul=None, normalize=norm, stats=None):
            return numpy_reference.forward(cfg, dequantized, np.array(tokens), matmul, normalize, stats)

        logits, counts, gaps = [], [], []
        for s in sequences:
            st = {}
            logits.append(run(s, stats=st)); counts.append(st["expert_counts"]); gaps.append(st["min_gap"])
        config_norm = True if arch == "llama" else bool(cfg.get("norm_topk_prob", False))
        diff = max(float(np.abs(run(s, normalize=config_norm) - l).max()) for s, l in zip(sequences, logits))
        entry = {"file": os.path.basename(path), "source": model, "architecture": arch,
                 "types": sorted(set(t.name for t in types.values())),
                 "tensor_types": {g: types[ns[0]].name for g, ns, _ in gguf_tensors(cfg, hf)},
                 "normalize_top_k": norm, "config_norm_topk_prob": config_norm,
                 "max_abs_diff_vs_config_routing": round(diff, 6),
                 "logits": [numpy_reference.rounded_logits(l) for l in logits], "expert_counts": counts,
                 "min_top_k_gap": gaps}
        margins = []
        entry["greedy"] = {"tokens": sequences[0], "continuation": numpy_reference.greedy(
            cfg, dequantized, sequences[0], 12, margins, normalize_top_k=norm), "top1_top2_margin": margins}
        if ftype != "f32":
            l8, c8, g8 = [], [], []
            for s in sequences:
                st = {}
                l8.append(numpy_reference.rounded_logits(run(s, rounded, stats=st)))
                c8.append(st["expert_counts"]); g8.append(st["min_gap"])
            entry["logits_8bit_activations"] = l8
            entry["expert_counts_8bit_activations"] = c8
            entry["min_top_k_gap_8bit_activations"] = g8
            margins = []
            entry["greedy"]["continuation_8bit_activations"] = numpy_reference.greedy(
                cfg, dequantized, sequences[0], 12, margins, matmul=rounded, normalize_top_k=norm)
            entry["greedy"]["top1_top2_margin_8bit_activations"] = margins
        if ftype == "f32" and model == "tiny-mixtral":
            # The float32 file holds the safetensors weights exactly: its reference is transformers'.
            want = np.array(mixtral_ref["logits_cases"][0]["logits"])
            assert np.abs(logits[0] - want).max() < 1e-5
        out["files"][f"{model}-{ftype}"] = entry
        print(f"{model}-{ftype}", os.path.getsize(path), "bytes", entry["types"], "normalize", norm,
              "diff vs config routing", round(diff, 4))
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
