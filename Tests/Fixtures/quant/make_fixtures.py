#!/usr/bin/env python3
"""Writes the fixtures of Weft's block-quantization tests (Tests/WeftKernelTests/QuantTests.swift):
small float32 inputs and what the `gguf` package's numpy reference (gguf.quants.quantize /
dequantize, bit-exact with ggml's quantize_row_*_ref) makes of them in Q8_0, Q4_0 and Q4_1.

    pip install gguf==0.19.0 numpy
    python3 Tests/Fixtures/quant/make_fixtures.py

The outputs are committed, so the Swift tests need no Python. Files:
  <case>.f32          the input, little-endian float32 (a multiple of 32 values)
  <case>.<type>       the quantized blocks (q8_0, q4_0, q4_1), ggml's layout
  <case>.<type>.deq   gguf.quants.dequantize of those blocks, little-endian float32
  cases.json          the case names, their lengths and a note on each
"""
import json
import os
import warnings

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

HERE = os.path.dirname(os.path.abspath(__file__))
TYPES = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1}


def cases():
    rng = np.random.default_rng(20261130)
    out = []
    out.append(("random_normal", "8 blocks of N(0, 1)", rng.standard_normal(256)))
    out.append(("random_uniform_wide", "16 blocks, uniform, magnitudes 1e-3..1e3 per block",
                np.concatenate([rng.uniform(-1, 1, 32) * 10.0 ** rng.uniform(-3, 3) for _ in range(16)])))
    out.append(("zeros", "two all-zero blocks (d = 0, id = 0)", np.zeros(64)))
    huge = rng.standard_normal(64) * 0.01
    huge[5] = 1.0e4
    huge[32 + 17] = 7.0e5  # q4_0: d = -87500 overflows fp16 to -inf
    out.append(("one_huge", "a block with one huge value among small ones; 7e5 overflows q4_0's fp16 d", huge))
    neg = rng.uniform(-1, 1, 64)
    neg[3] = -5.0
    neg[32 + 31] = -2.5
    neg[32 + 0] = 2.5  # a tie in magnitude: the first one (positive) wins for q4_0
    out.append(("negative_max", "the largest magnitude negative; a +-2.5 tie (first wins in q4_0)", neg))
    # Values whose scaled form lands exactly on .5:
    # q8_0: amax = 127 -> d = 1, id = 1; q4_0: max = -8 -> d = 1; q4_1: min 0, max 15 -> d = 1.
    half8 = np.array([127.0] + [k + 0.5 for k in range(-16, 15)], dtype=np.float64)
    half4_0 = np.array([-8.0] + [k / 2 for k in range(-15, 15)] + [7.5])
    half4_1 = np.array([0.0, 15.0] + [k + 0.5 for k in range(15)] + [k + 0.25 for k in range(15)])
    out.append(("round_half", "blocks whose scaled values are exactly .5 (d = 1 for each format)",
                np.concatenate([half8, half4_0, half4_1])))
    tiny = rng.standard_normal(64) * 1e-6
    out.append(("tiny", "magnitudes ~1e-6: fp16 scales are subnormal", tiny))
    const = np.full(32, 0.3)
    out.append(("constant", "one constant block (q4_1: d = 0, m = value)", const))
    return out


def main():
    manifest = {"gguf_version": getattr(gguf, "__version__", None), "cases": []}
    try:
        from importlib.metadata import version
        manifest["gguf_version"] = version("gguf")
    except Exception:
        pass
    for name, note, values in cases():
        x = np.asarray(values, dtype=np.float32)
        assert x.size % 32 == 0, name
        x.astype("<f4").tofile(os.path.join(HERE, f"{name}.f32"))
        for tname, qtype in TYPES.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fp16 overflow in one_huge is intended
                q = gguf.quants.quantize(x.reshape(1, -1), qtype)
                d = gguf.quants.dequantize(q, qtype)
            q.tofile(os.path.join(HERE, f"{name}.{tname}"))
            np.asarray(d, dtype="<f4").tofile(os.path.join(HERE, f"{name}.{tname}.deq"))
        manifest["cases"].append({"name": name, "count": int(x.size), "note": note})
    with open(os.path.join(HERE, "cases.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
