#!/usr/bin/env python3
"""An independent float64 NumPy implementation of Hugging Face's Llama/Qwen2
forward pass (RMSNorm, rotate-half RoPE with optional llama3 scaling, GQA,
SwiGLU, q/k/v biases, tied embeddings), reading safetensors (F32/BF16/F16,
single file or sharded) directly, and of the mixture-of-experts models
Mixtral, Qwen2-MoE and Qwen3-MoE as transformers defines them
(modeling_mixtral / modeling_qwen2_moe / modeling_qwen3_moe):

  Mixtral    router block_sparse_moe.gate [E, h]; softmax over all E (float64
             here, float32 in transformers), top-k, the k weights renormalized
             to sum 1; experts block_sparse_moe.experts.{e}.w1 (gate), w3 (up),
             w2 (down); out = sum_e w_e * down(silu(gate x) * up x).
  Qwen2-MoE  router mlp.gate; softmax, top-k, renormalized only if
             norm_topk_prob; experts mlp.experts.{e}.{gate,up,down}_proj; shared
             expert mlp.shared_expert.{gate,up,down}_proj scaled by
             sigmoid(mlp.shared_expert_gate [1, h] . x) and added; a layer i is
             sparse iff i not in mlp_only_layers and num_experts > 0 and
             (i + 1) % decoder_sparse_step == 0, else dense (mlp.gate_proj ...
             with intermediate_size); q/k/v biases.
  Qwen3-MoE  as Qwen2-MoE without the shared expert and without biases, plus
             self_attn.q_norm / k_norm (RMSNorm over head_dim, per head, on q
             and k after the projection, before RoPE); explicit head_dim.

Top-k order: the k largest probabilities, ties broken towards the lower expert
index (a stable sort). torch.topk does not document its tie order; with random
weights and float64 probabilities ties do not occur, so this never matters for
the fixtures (`forward(..., stats=...)` records the smallest gap between the
k-th and (k+1)-th probability so a caller can see it).

It exists to produce expected outputs for model variants the shipped Hugging
Face reference does not cover. `check` first shows it reproduces that
reference (a fixture's reference.json: logits_cases, and greedy / greedy_cases
when present); `variant` builds the derived test model and its expected logits;
`qwen3moe` and `skewed` build the MoE fixtures that have no transformers
reference (see their docstrings).

    python3 Scripts/numpy_reference.py check Tests/Fixtures/tiny-llama
    python3 Scripts/numpy_reference.py check Tests/Fixtures/tiny-mixtral
    python3 Scripts/numpy_reference.py check Tests/Fixtures/tiny-qwen2moe
    python3 Scripts/numpy_reference.py variant Tests/Fixtures/tiny-llama Tests/Fixtures/tiny-qwen2-variant
    python3 Scripts/numpy_reference.py qwen3moe Tests/Fixtures/tiny-mixtral Tests/Fixtures/tiny-qwen3moe
    python3 Scripts/numpy_reference.py skewed Tests/Fixtures/tiny-mixtral Tests/Fixtures/tiny-mixtral-skewed
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


def moe_kind(cfg):
    """'mixtral', 'qwen2_moe', 'qwen3_moe' or None (dense Llama/Qwen2)."""
    arch = cfg["architectures"][0]
    return {"MixtralForCausalLM": "mixtral", "Qwen2MoeForCausalLM": "qwen2_moe",
            "Qwen3MoeForCausalLM": "qwen3_moe"}.get(arch)


def is_sparse_layer(cfg, i):
    """Whether layer i has experts (Qwen2/3-MoE: mlp_only_layers, decoder_sparse_step)."""
    kind = moe_kind(cfg)
    if kind == "mixtral":
        return True
    if kind in ("qwen2_moe", "qwen3_moe"):
        return (i not in cfg.get("mlp_only_layers", [])) and cfg.get("num_experts", 0) > 0 and \
            (i + 1) % cfg.get("decoder_sparse_step", 1) == 0
    return False


def route(logits, k, normalize):
    """Softmax over all experts, top-k (ties to the lower index), optionally
    renormalized. Returns (indices [n, k], weights [n, k], gap [n]) where gap is
    the k-th minus the (k+1)-th probability."""
    p = np.exp(logits - logits.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
    order = np.argsort(-p, axis=-1, kind="stable")
    idx = order[:, :k]
    w = np.take_along_axis(p, idx, -1)
    srt = np.take_along_axis(p, order, -1)
    gap = srt[:, k - 1] - srt[:, k] if p.shape[1] > k else np.full(p.shape[0], np.inf)
    if normalize:
        w = w / w.sum(-1, keepdims=True)
    return idx, w, gap


def moe_names(cfg, p):
    """(router, [(gate, up, down) per expert], shared or None, shared gate or None)."""
    kind = moe_kind(cfg)
    if kind == "mixtral":
        E = cfg["num_local_experts"]
        b = p + "block_sparse_moe."
        return b + "gate.weight", [(f"{b}experts.{e}.w1.weight", f"{b}experts.{e}.w3.weight",
                                    f"{b}experts.{e}.w2.weight") for e in range(E)], None, None
    E = cfg["num_experts"]
    b = p + "mlp."
    experts = [(f"{b}experts.{e}.gate_proj.weight", f"{b}experts.{e}.up_proj.weight",
                f"{b}experts.{e}.down_proj.weight") for e in range(E)]
    if kind == "qwen2_moe":
        s = b + "shared_expert."
        return b + "gate.weight", experts, (s + "gate_proj.weight", s + "up_proj.weight", s + "down_proj.weight"), \
            b + "shared_expert_gate.weight"
    return b + "gate.weight", experts, None, None


def forward(cfg, t, tokens, matmul=None, normalize_top_k=None, stats=None):
    """Logits of every position. `matmul(x, name)` computes x @ t[name].T
    (a caller can round x first, as a quantized engine does).
    `normalize_top_k` overrides the config's choice of renormalizing the top-k
    routing weights (Mixtral: always; Qwen-MoE: norm_topk_prob), e.g. to follow
    llama.cpp. `stats`, a dict, receives per layer "expert_counts" (tokens
    routed to each expert; dense layers: None) and "min_gap" (smallest gap
    between the k-th and (k+1)-th routing probability)."""
    if matmul is None:
        matmul = lambda x, name: x @ t[name].T
    kind = moe_kind(cfg)
    h = cfg["hidden_size"]; nh = cfg["num_attention_heads"]; nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or h // nh; eps = cfg.get("rms_norm_eps", 1e-6)
    bias = cfg["architectures"][0] in ("Qwen2ForCausalLM", "Qwen2MoeForCausalLM") or cfg.get("attention_bias", False)
    if normalize_top_k is None:
        normalize_top_k = True if kind == "mixtral" else bool(cfg.get("norm_topk_prob", False))
    if stats is not None:
        stats.setdefault("expert_counts", []); stats.setdefault("min_gap", [])
    def norm(x, w):
        return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))
    def swiglu(x, names, rows=None):
        g, u, d = names
        gate = matmul(x, g); up = matmul(x, u)
        return matmul(gate / (1 + np.exp(-gate)) * up, d)
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
        q = q.reshape(n, nh, hd); k = k.reshape(n, nkv, hd); v = v.reshape(n, nkv, hd)
        if p + "self_attn.q_norm.weight" in t:   # Qwen3: RMSNorm over head_dim, per head, before RoPE
            q = norm(q, t[p + "self_attn.q_norm.weight"]); k = norm(k, t[p + "self_attn.k_norm.weight"])
        q = rope(q); k = rope(k)
        g = nh // nkv
        out = np.zeros((n, nh, hd))
        for head in range(nh):
            s = q[:, head] @ k[:, head // g].T / math.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
            out[:, head] = s @ v[:, head // g]
        x = x + matmul(out.reshape(n, nh * hd), p + "self_attn.o_proj.weight")
        m = norm(x, t[p + "post_attention_layernorm.weight"])
        if not is_sparse_layer(cfg, i):
            x = x + swiglu(m, (p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"))
            if stats is not None:
                stats["expert_counts"].append(None); stats["min_gap"].append(None)
            continue
        router, experts, shared, shared_gate = moe_names(cfg, p)
        idx, w, gap = route(matmul(m, router), cfg["num_experts_per_tok"], normalize_top_k)
        y = np.zeros_like(m)
        counts = []
        for e, names in enumerate(experts):
            rows, slot = np.nonzero(idx == e)
            counts.append(int(len(rows)))
            if len(rows):
                y[rows] += w[rows, slot][:, None] * swiglu(m[rows], names)
        if shared is not None:
            sg = matmul(m, shared_gate)            # [n, 1]
            y += swiglu(m, shared) / (1 + np.exp(-sg))
        x = x + y
        if stats is not None:
            stats["expert_counts"].append(counts); stats["min_gap"].append(float(gap.min()))
    x = norm(x, t["model.norm.weight"])
    return matmul(x, "model.embed_tokens.weight" if cfg.get("tie_word_embeddings") else "lm_head.weight")


def greedy(cfg, t, prompt, steps, margins=None, **kw):
    """Greedy continuation (full recomputation each step; argmax ties to the lower id).
    `margins`, a list, receives each step's top-1 minus top-2 logit."""
    seq = list(prompt)
    for _ in range(steps):
        last = forward(cfg, t, np.array(seq), **kw)[-1]
        top = np.sort(last)[-2:]
        if margins is not None:
            margins.append(round(float(top[1] - top[0]), 6))
        seq.append(int(np.argmax(last)))
    return seq[len(prompt):]


def check(folder):
    """Reproduce a fixture's reference.json: max |error| of every logits case
    (absolute, and relative to the largest |logit|), and the greedy
    continuation(s)."""
    cfg, t = load(folder)
    ref = json.load(open(os.path.join(folder, "reference.json")))
    print(f"{folder}: {ref.get('generator', '')}")
    worst = 0.0
    for case in ref["logits_cases"]:
        got = forward(cfg, t, case["tokens"]); want = np.array(case["logits"])
        abs_err = np.abs(got - want).max()
        err = abs_err / np.abs(want).max()
        worst = max(worst, err)
        print(f"  {len(case['tokens'])} tokens: max |error| = {abs_err:.2e}, / max |logit| ({np.abs(want).max():.2f}) = {err:.2e}, "
              f"argmax equal at {int((got.argmax(-1) == want.argmax(-1)).sum())}/{len(want)} positions")
    assert worst < 1e-4, worst
    greedy_cases = []
    if "greedy" in ref:
        greedy_cases.append((ref["greedy"]["tokens"], ref["greedy"]["continuation"]))
    for case in ref.get("greedy_cases", []):
        greedy_cases.append((case["prompt_tokens"], case["continuation"]))
    for prompt, want in greedy_cases:
        got = greedy(cfg, t, prompt, len(want))
        print(f"  greedy from {len(prompt)} tokens: {'equal' if got == want else 'DIFFERENT'} ({len(want)} tokens) {got}")
        assert got == want, (got, want)


def to_bf16_bits(a):
    """float -> bfloat16 bit patterns (round to nearest even, via float32)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def write_safetensors(path, tensors, dtype, metadata=None):
    """Safetensors by hand: 8-byte little-endian header length, JSON header
    (tensors in name order, padded with spaces to 8 bytes), then the data."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        if dtype == "BF16":
            arr = to_bf16_bits(tensors[name])
        else:
            arr = np.ascontiguousarray(tensors[name], dtype=np.float16 if dtype == "F16" else np.float32)
        b = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
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


TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]


def copy_files(src, dst, names):
    import shutil
    for name in names:
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def rounded_logits(x):
    return np.round(x, 6).tolist()


def qwen3moe(src, dst, seed=2032):
    """Tests/Fixtures/tiny-qwen3moe: a Qwen3MoeForCausalLM (hidden 128, 8 heads,
    4 KV heads, head_dim 32 != hidden/heads, 2 layers, 8 experts, top-2,
    moe_intermediate_size 64, norm_topk_prob false, q/k norms, untied LM head)
    with tiny-llama's tokenizer (copied from `src`, a MoE fixture that has it).
    Weights N(0, 0.08), norms (including q_norm/k_norm) 1 + N(0, 0.1), seed
    2032 (chosen among 2027-2033 for the largest smallest greedy top-1/top-2
    margin, 0.054), stored as BF16; reference.json from this file's float64 forward pass
    on the stored bf16 values, for the token sequences of `src`'s reference."""
    rng = np.random.default_rng(seed)
    c = {"architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
         "bos_token_id": 4094, "decoder_sparse_step": 1, "eos_token_id": 4095, "head_dim": 32,
         "hidden_act": "silu", "hidden_size": 128, "initializer_range": 0.02, "intermediate_size": 256,
         "max_position_embeddings": 512, "max_window_layers": 2, "mlp_only_layers": [],
         "model_type": "qwen3_moe", "moe_intermediate_size": 64, "norm_topk_prob": False,
         "num_attention_heads": 8, "num_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 2,
         "num_key_value_heads": 4, "output_router_logits": False, "rms_norm_eps": 1e-06,
         "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
         "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
         "use_cache": True, "use_sliding_window": False, "vocab_size": 4096,
         "_generator": {"script": "Scripts/numpy_reference.py qwen3moe", "seed": seed, "std": 0.08,
                        "norm": "1 + N(0, 0.1)"}}
    h, nh, nkv, hd, E, f, V = 128, 8, 4, 32, 8, 64, 4096
    shapes = {"model.embed_tokens.weight": (V, h), "lm_head.weight": (V, h), "model.norm.weight": (h,)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (nh * hd, h), p + "self_attn.k_proj.weight": (nkv * hd, h),
                       p + "self_attn.v_proj.weight": (nkv * hd, h), p + "self_attn.o_proj.weight": (h, nh * hd),
                       p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,),
                       p + "mlp.gate.weight": (E, h)})
        for e in range(E):
            shapes.update({f"{p}mlp.experts.{e}.gate_proj.weight": (f, h), f"{p}mlp.experts.{e}.up_proj.weight": (f, h),
                           f"{p}mlp.experts.{e}.down_proj.weight": (h, f)})
    t = {}
    for name in sorted(shapes):
        if name.endswith("norm.weight"):
            w = 1 + rng.normal(0, 0.1, shapes[name])
        else:
            w = rng.normal(0, 0.08, shapes[name])
        t[name] = from_bf16_bits(to_bf16_bits(w))     # the values the file holds
    os.makedirs(dst, exist_ok=True)
    json.dump(c, open(os.path.join(dst, "config.json"), "w"), indent=2)
    write_safetensors(os.path.join(dst, "model.safetensors"), t, "BF16", {"format": "pt"})
    copy_files(src, dst, TOKENIZER_FILES)
    cfg, t2 = load(dst)
    assert all(np.array_equal(t[k], t2[k]) for k in t)
    ref = json.load(open(os.path.join(src, "reference.json")))
    cases = []
    for case in ref["logits_cases"]:
        st = {}
        logits = forward(cfg, t2, case["tokens"], stats=st)
        print(f"  {len(case['tokens'])} tokens: expert counts {st['expert_counts']}, min top-k gap {min(st['min_gap']):.2e}")
        cases.append({"tokens": case["tokens"], "logits": rounded_logits(logits), "expert_counts": st["expert_counts"]})
    prompt = ref["greedy"]["tokens"]
    margins = []
    cont = greedy(cfg, t2, prompt, 12, margins)
    print("  greedy", cont, "top1-top2 margins", margins)
    json.dump({"generator": "Scripts/numpy_reference.py qwen3moe: float64 NumPy forward pass (Hugging Face "
                            "Qwen3-MoE semantics: softmax routing, top-2, norm_topk_prob false, q/k RMSNorm) on the "
                            "stored bf16 weights; logits rounded to 6 decimals; no transformers run",
               "logits_cases": cases, "greedy": {"tokens": prompt, "continuation": cont, "top1_top2_margin": margins}},
              open(os.path.join(dst, "reference.json"), "w"), separators=(",", ":"))
    print("wrote", dst)


def layer0_router_inputs(cfg, t, tokens):
    """The inputs of layer 0's router (post_attention_layernorm output), [n, h].
    They do not depend on any layer-0 MLP weight."""
    got = {}
    def mm(x, name):
        if name == "model.layers.0.block_sparse_moe.gate.weight":
            got["m"] = x.copy()
            raise StopIteration
        return x @ t[name].T
    try:
        forward(cfg, t, np.array(tokens), mm)
    except StopIteration:
        pass
    return got["m"]


def skewed(src, dst, always=6, never=(0, 1, 4)):
    """Tests/Fixtures/tiny-mixtral-skewed: tiny-mixtral with layer 0's router
    (model.layers.0.block_sparse_moe.gate.weight) changed so that, for every
    token of the reference sequences (the logits cases and the greedy prompt
    and continuation), expert `always` is among the top 2 and the experts in
    `never` are not: a batch then leaves at least 3 experts without a token and
    sends every token to one expert.

    How: M holds the router inputs of all those positions (rows); d = pinv(M) 1
    is a direction with m . d = 1 for every one of them (there are fewer
    positions than the 128 dimensions). Row `always` gets + a d, each row in
    `never` gets - b d, with a and b the smallest values giving a 0.5 logit
    margin on every position. The greedy continuation depends on the router,
    so this repeats, adding each new continuation's positions to M, until the
    continuation is one already in M. Every other tensor is tiny-mixtral's, byte for byte; the file is
    F32. reference.json: logits_cases (tiny-mixtral's token sequences, logits
    from the float64 forward pass, rounded to 6 decimals), greedy (12 tokens),
    and per case "expert_counts": per layer, the number of tokens routed to
    each expert.

    Expert 6 and experts 0, 1, 4 were chosen among the choices for experts 3, 5
    and 6 as the one with the largest smallest gap between the 2nd and 3rd
    routing probability (2.8e-3, so engines agree on the second expert) and a
    greedy top-1/top-2 margin of at least 0.02."""
    cfg, t = load(src)
    ref = json.load(open(os.path.join(src, "reference.json")))
    router = "model.layers.0.block_sparse_moe.gate.weight"
    orig = t[router].copy()
    E, k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    prompt = ref["greedy"]["tokens"]
    seqs = [c["tokens"] for c in ref["logits_cases"]]
    extra = []
    margin = 0.5
    for it in range(10):
        M = np.concatenate([layer0_router_inputs(cfg, t, s) for s in seqs + extra])
        d = np.linalg.pinv(M) @ np.ones(len(M))
        assert np.allclose(M @ d, 1)
        base = M @ orig.T                                   # [n, E]
        others = np.delete(base, [always, *never], axis=1)  # experts that stay free
        second = np.sort(others, -1)[:, -(k - 1)] if k > 1 else others.max(-1)
        a = max(0.0, float((second - base[:, always] + margin).max()))
        kth = np.sort(others, -1)[:, -k]                    # the k-th of the free experts
        b = max(0.0, float((base[:, list(never)] - kth[:, None] + margin).max()))
        w = orig.copy()
        w[always] += a * d
        for e in never:
            w[e] -= b * d
        t[router] = w.astype(np.float32).astype(np.float64)
        cont = greedy(cfg, t, prompt, 12)
        new = prompt + cont[:-1]
        if new in extra:
            break
        extra.append(new)
    else:
        raise RuntimeError("greedy continuation did not settle")
    print(f"  router row {always} += {a:.3f} d, rows {list(never)} -= {b:.3f} d, |d| = {np.linalg.norm(d):.3f} "
          f"({it + 1} rounds)")
    os.makedirs(dst, exist_ok=True)
    c = dict(cfg)
    json.dump(c, open(os.path.join(dst, "config.json"), "w"), indent=2)
    write_safetensors(os.path.join(dst, "model.safetensors"), {n: v for n, v in t.items()}, "F32", {"format": "pt"})
    copy_files(src, dst, TOKENIZER_FILES)
    cfg2, t2 = load(dst)
    assert all(np.array_equal(t2[n], t[n]) for n in t)
    cases = []
    for s in seqs:
        st = {}
        logits = forward(cfg2, t2, s, stats=st)
        counts = st["expert_counts"]
        assert counts[0][always] == len(s) and all(counts[0][e] == 0 for e in never), counts
        print(f"  {len(s)} tokens: expert counts {counts}, min top-k gap {st['min_gap']}")
        cases.append({"tokens": s, "logits": rounded_logits(logits), "expert_counts": counts})
    margins = []
    cont = greedy(cfg2, t2, prompt, 12, margins)
    st = {}
    forward(cfg2, t2, np.array(prompt + cont[:-1]), stats=st)
    assert st["expert_counts"][0][always] == len(prompt) + len(cont) - 1
    assert all(st["expert_counts"][0][e] == 0 for e in never)
    print("  greedy", cont, "margins", margins, "counts", st["expert_counts"])
    json.dump({"generator": "Scripts/numpy_reference.py skewed: tiny-mixtral with layer 0's router changed (row "
                            f"{always} + {a:.4f} d, rows {list(never)} - {b:.4f} d, d = pinv(router inputs) 1); "
                            "float64 NumPy forward pass (Hugging Face Mixtral semantics), logits rounded to 6 decimals; "
                            "no transformers run",
               "skew": {"layer": 0, "always_chosen_expert": always, "never_chosen_experts": list(never)},
               "logits_cases": cases,
               "greedy": {"tokens": prompt, "continuation": cont, "top1_top2_margin": margins,
                          "expert_counts": st["expert_counts"]}},
              open(os.path.join(dst, "reference.json"), "w"), separators=(",", ":"))
    print("wrote", dst)


if __name__ == "__main__":
    {"check": lambda: check(sys.argv[2]), "variant": lambda: variant(sys.argv[2], sys.argv[3]),
     "qwen3moe": lambda: qwen3moe(sys.argv[2], sys.argv[3]),
     "skewed": lambda: skewed(sys.argv[2], sys.argv[3])}[sys.argv[1]]()
