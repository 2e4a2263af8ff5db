#!/usr/bin/env python3
"""An independent float64 NumPy implementation of Hugging Face's Llama/Qwen2
forward pass (RMSNorm, rotate-half RoPE with optional llama3 scaling, GQA,
SwiGLU, q/k/v biases, tied embeddings), reading safetensors (F32/BF16/F16,
single file or sharded) directly.

It exists to produce expected outputs for model variants the shipped Hugging
Face reference does not cover. `check` first shows it reproduces that
reference (tests/Fixtures/tiny-llama/reference.json); `variant` builds the
derived test model and its expected logits.

    python3 Scripts/numpy_reference.py check Tests/Fixtures/tiny-llama
    python3 Scripts/numpy_reference.py variant Tests/Fixtures/tiny-llama Tests/Fixtures/tiny-qwen2-variant
"""
import json, math, os, struct, sys
import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = data[a:b]
        if e["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif e["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif e["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: {name}: dtype {e['dtype']}")
        out[name] = arr.reshape(e["shape"]).astype(np.float64)
    return out


def load(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    index = os.path.join(folder, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(index):
        for shard in sorted(set(json.load(open(index))["weight_map"].values())):
            tensors.update(read_safetensors(os.path.join(folder, shard)))
    else:
        tensors = read_safetensors(os.path.join(folder, "model.safetensors"))
    return cfg, tensors


def inv_freq(cfg):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    rs = cfg.get("rope_scaling")
    if rs:
        assert rs.get("rope_type", rs.get("type")) == "llama3"
        factor, lo, hi, orig = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
        low_wl, high_wl = orig / lo, orig / hi
        wl = 2 * math.pi / inv
        scaled = np.where(wl > low_wl, inv / factor, inv)
        smooth = (orig / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wl < high_wl) & ~(wl > low_wl)
        inv = np.where(medium, smoothed, scaled)
    return inv


def forward(cfg, t, tokens, matmul=None):
    """Logits of every position. `matmul(x, name)` computes x @ t[name].T
    (a caller can round x first, as a quantized engine does)."""
    if matmul is None:
        matmul = lambda x, name: x @ t[name].T
    h = cfg["hidden_size"]; nh = cfg["num_attention_heads"]; nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or h // nh; eps = cfg.get("rms_norm_eps", 1e-6)
    bias = cfg["architectures"][0] == "Qwen2ForCausalLM" or cfg.get("attention_bias", False)
    def norm(x, w):
        return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))
    n = len(tokens)
    pos = np.arange(n, dtype=np.float64)
    ang = np.outer(pos, inv_freq(cfg))
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    def rope(x):  # x [n, heads, hd]
        half = hd // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return x * cos[:, None, :] + rot * sin[:, None, :]
    x = t["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = norm(x, t[p + "input_layernorm.weight"])
        q = matmul(a, p + "self_attn.q_proj.weight")
        k = matmul(a, p + "self_attn.k_proj.weight")
        v = matmul(a, p + "self_attn.v_proj.weight")
        if bias:
            q += t[p + "self_attn.q_proj.bias"]; k += t[p + "self_attn.k_proj.bias"]; v += t[p + "self_attn.v_proj.bias"]
        q = rope(q.reshape(n, nh, hd)); k = rope(k.reshape(n, nkv, hd)); v = v.reshape(n, nkv, hd)
        g = nh // nkv
        out = np.zeros((n, nh, hd))
        for head in range(nh):
            s = q[:, head] @ k[:, head // g].T / math.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
            out[:, head] = s @ v[:, head // g]
        x = x + matmul(out.reshape(n, nh * hd), p + "self_attn.o_proj.weight")
        m = norm(x, t[p + "post_attention_layernorm.weight"])
        gate = matmul(m, p + "mlp.gate_proj.weight"); up = matmul(m, p + "mlp.up_proj.weight")
        x = x + matmul(gate / (1 + np.exp(-gate)) * up, p + "mlp.down_proj.weight")
    x = norm(x, t["model.norm.weight"])
    return matmul(x, "model.embed_tokens.weight" if cfg.get("tie_word_embeddings") else "lm_head.weight")


def check(folder):
    cfg, t = load(folder)
    ref = json.load(open(os.path.join(folder, "reference.json")))
    for case in ref["logits_cases"]:
        got = forward(cfg, t, case["tokens"]); want = np.array(case["logits"])
        err = np.abs(got - want).max() / np.abs(want).max()
        print(f"{len(case['tokens'])} tokens: max |error| / max |logit| = {err:.2e}")
        assert err < 1e-4


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        arr = tensors[name].astype(np.float16 if dtype == "F16" else np.float32)
        b = arr.tobytes(); header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b); off += len(b)
    hj = json.dumps(header).encode(); hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj))); f.write(hj); [f.write(b) for b in blobs]


def variant(src, dst):
    """Qwen2 architecture with q/k/v biases, tied embeddings, llama3 RoPE
    scaling, GQA 4:1, 2 layers, stored as F16 in two shards."""
    cfg, t = load(src)
    rng = np.random.default_rng(7)
    os.makedirs(dst, exist_ok=True)
    keep = {k: v for k, v in t.items() if k.startswith("model.embed") or k == "model.norm.weight" or
            any(k.startswith(f"model.layers.{i}.") for i in range(2))}
    hd, nkv = 32, 2
    for i in range(2):
        p = f"model.layers.{i}.self_attn."
        keep[p + "k_proj.weight"] = keep[p + "k_proj.weight"][: nkv * hd]
        keep[p + "v_proj.weight"] = keep[p + "v_proj.weight"][: nkv * hd]
        keep[p + "q_proj.bias"] = rng.normal(0, 0.5, 8 * hd)
        keep[p + "k_proj.bias"] = rng.normal(0, 0.5, nkv * hd)
        keep[p + "v_proj.bias"] = rng.normal(0, 0.5, nkv * hd)
    # Round through F16 so the reference sees exactly the stored values.
    keep = {k: v.astype(np.float16).astype(np.float64) for k, v in keep.items()}
    c = dict(cfg)
    c.update({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "num_hidden_layers": 2,
              "num_key_value_heads": nkv, "tie_word_embeddings": True, "rope_theta": 1000.0,
              "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
              "torch_dtype": "float16"})
    c.pop("_generator", None)
    json.dump(c, open(os.path.join(dst, "config.json"), "w"), indent=2)
    names = sorted(keep); half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    wm = {}
    for shard, ns in shards.items():
        write_safetensors(os.path.join(dst, shard), {n: keep[n] for n in ns}, "F16")
        wm.update({n: shard for n in ns})
    json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(dst, "model.safetensors.index.json"), "w"), indent=1)
    cases = []
    ref = json.load(open(os.path.join(src, "reference.json")))
    for case in ref["logits_cases"]:
        cases.append({"tokens": case["tokens"], "logits": np.round(forward(c, keep, case["tokens"]), 6).tolist()})
    json.dump({"generator": "Scripts/numpy_reference.py variant (float64 NumPy)", "logits_cases": cases},
              open(os.path.join(dst, "expected.json"), "w"))
    print("wrote", dst)


if __name__ == "__main__":
    {"check": lambda: check(sys.argv[2]), "variant": lambda: variant(sys.argv[2], sys.argv[3])}[sys.argv[1]]()
