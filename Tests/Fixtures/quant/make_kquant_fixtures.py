#!/usr/bin/env python3
"""Writes the k-quant fixtures of Weft's tests (Tests/WeftKernelTests/QuantKTests.swift).

Weights: random valid Q4_K, Q5_K and Q6_K blocks (ggml's layouts, 144 / 176 / 210 bytes per
256 weights) and what the `gguf` package's numpy reference makes of them
(gguf.quants.dequantize, which follows ggml's dequantize_row_q*_K). The package has no
k-quant quantizer, so the blocks are random bytes with chosen fp16 scales.

Activations: float32 rows and their Q8_K blocks (float d, 256 int8, 16 int16 bsums) from
quantize_row_q8_K_ref below, a numpy transcription of ggml's (the package has no Q8_K).

    pip install gguf==0.19.0 numpy
    python3 Tests/Fixtures/quant/make_kquant_fixtures.py

Files (committed; the Swift tests need no Python):
  kq_<case>.<type>       the blocks (q4_K, q5_K, q6_K)
  kq_<case>.<type>.deq   gguf.quants.dequantize of them, little-endian float32
  q8k_<case>.f32         an activation row, little-endian float32 (a multiple of 256 values)
  q8k_<case>.q8_K        its Q8_K blocks
  kquant.json            the case names, block counts and a note on each
"""
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

HERE = os.path.dirname(os.path.abspath(__file__))
QK_K = 256
TYPES = {"q4_K": (Q.Q4_K, 144), "q5_K": (Q.Q5_K, 176), "q6_K": (Q.Q6_K, 210)}


def fp16_bytes(values):
    return np.asarray(values, dtype="<f2").view(np.uint8).reshape(-1, 2)


def random_blocks(rng, tname, nblocks, scale_mode):
    """Random bytes with fp16 d (and dmin) placed per ggml's struct."""
    _, size = TYPES[tname]
    b = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    if scale_mode == "random":
        d = rng.standard_normal(nblocks) * 10.0 ** rng.uniform(-4, 1, nblocks)
        dmin = rng.standard_normal(nblocks) * 10.0 ** rng.uniform(-4, 1, nblocks)
    else:  # edge: zero, negative zero, subnormal, the largest fp16, tiny and negative scales
        picks = np.array([0.0, -0.0, 6e-8, 3e-6, 65504.0, -65504.0, 1.0, -0.5, 1e-3, 2.0 ** -14])
        d = picks[rng.integers(0, len(picks), nblocks)]
        dmin = picks[rng.integers(0, len(picks), nblocks)]
        # Extreme bytes in some blocks: all scales/mins 63, every quant at its maximum or 0.
        b[0, :] = 0xFF
        b[1, :] = 0x00
    if tname == "q6_K":
        b[:, 208:210] = fp16_bytes(d)
    else:
        b[:, 0:2] = fp16_bytes(d)
        b[:, 2:4] = fp16_bytes(dmin)
    return b


def quantize_row_q8_K_ref(x):
    """ggml's quantize_row_q8_K_ref in float32 numpy (bit-exact: IEEE single operations)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, QK_K)
    out = bytearray()
    for row in x:
        ax = np.abs(row)
        amax = np.float32(0)
        mx = np.float32(0)
        for j in range(QK_K):  # first strict maximum, NaN ignored (as `ax > amax`)
            if ax[j] > amax:
                amax = ax[j]
                mx = row[j]
        if amax == 0:
            out += np.float32(0).tobytes() + bytes(QK_K) + bytes(32)
            continue
        iscale = np.float32(-127.0) / mx
        with np.errstate(invalid="ignore", over="ignore"):
            v = (iscale * row).astype(np.float32) + np.float32(12582912.0)
        i = (v.view(np.int32) & 0x007FFFFF) - 0x00400000
        q = np.minimum(i, 127).astype(np.int8)
        bsums = q.reshape(16, 16).astype(np.int32).sum(axis=1).astype("<i2")
        out += np.float32(np.float32(1.0) / iscale).astype("<f4").tobytes() + q.tobytes() + bsums.tobytes()
    return bytes(out)


def activation_cases(rng):
    out = []
    out.append(("random_normal", "4 blocks of N(0, 1)", rng.standard_normal(4 * QK_K)))
    out.append(("wide", "8 blocks, uniform, magnitudes 1e-4..1e4 per block",
                np.concatenate([rng.uniform(-1, 1, QK_K) * 10.0 ** rng.uniform(-4, 4) for _ in range(8)])))
    z = np.zeros(2 * QK_K)
    z[QK_K + 7] = -0.0
    out.append(("zeros", "an all-zero block (d = 0, zero bsums) and one with a -0", z))
    tie = rng.uniform(-1, 1, 2 * QK_K)
    tie[10], tie[200] = 3.0, -3.0  # first of equal magnitude wins: max = +3
    tie[QK_K + 5], tie[QK_K + 6] = -2.0, 2.0  # max = -2
    out.append(("ties", "equal largest magnitudes of both signs: the first one sets the sign", tie))
    half = np.concatenate([[-127.0], (np.arange(QK_K - 1) - 127) + 0.5])  # iscale = 1: exact .5 ties
    half[1:] = np.clip(half[1:], -126.5, 126.5)
    out.append(("round_half", "max = -127 so iscale = 1: values k + 0.5 round to even", half))
    huge = rng.standard_normal(QK_K) * 1e-3
    huge[100] = 3.0e38
    out.append(("one_huge", "one value near float32's max among small ones", huge))
    out.append(("tiny", "magnitudes ~1e-30", rng.standard_normal(QK_K) * 1e-30))
    return out


def main():
    rng = np.random.default_rng(20261130 + 256)
    manifest = {"gguf_version": None, "weights": [], "activations": []}
    try:
        from importlib.metadata import version
        manifest["gguf_version"] = version("gguf")
    except Exception:
        pass
    for case, nblocks, mode, note in [("random", 12, "random", "random bytes, fp16 scales ~N(0,1)*10^U(-4,1)"),
                                      ("edge", 10, "edge", "zero/subnormal/largest/negative scales; all-0xFF and all-0 blocks")]:
        for tname, (qtype, size) in TYPES.items():
            b = random_blocks(rng, tname, nblocks, mode)
            b.tofile(os.path.join(HERE, f"kq_{case}.{tname}"))
            with np.errstate(over="ignore"):
                d = gguf.quants.dequantize(b.reshape(1, -1), qtype)
            np.asarray(d, dtype="<f4").tofile(os.path.join(HERE, f"kq_{case}.{tname}.deq"))
        manifest["weights"].append({"name": case, "blocks": nblocks, "note": note})
    for case, note, values in activation_cases(rng):
        x = np.asarray(values, dtype=np.float32)
        assert x.size % QK_K == 0, case
        x.astype("<f4").tofile(os.path.join(HERE, f"q8k_{case}.f32"))
        with open(os.path.join(HERE, f"q8k_{case}.q8_K"), "wb") as f:
            f.write(quantize_row_q8_K_ref(x))
        manifest["activations"].append({"name": case, "count": int(x.size), "note": note})
    with open(os.path.join(HERE, "kquant.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
