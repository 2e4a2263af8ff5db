#!/usr/bin/env python3
"""Writes the small GGUF files the GGUF reader's tests read (Tests/WeftModelTests/GGUFTests.swift)
and expected.json: what the `gguf` package's own reader (gguf.GGUFReader) sees in each of them.

    pip install gguf==0.19.0 numpy
    python3 Tests/Fixtures/gguf/make_fixtures.py

The outputs are committed, so the Swift tests need no Python. Files:
  v3-all-types.gguf   GGUF v3, every metadata value type (nested arrays and a string array too),
                      general.alignment = 64, tensors of F32, F16, Q8_0 and Q4_0 (1 to 4 dims)
  v2-small.gguf       the same writer's output with the version field set to 2 (v2 and v3 have the
                      same little-endian layout), default alignment 32
  no-tensors.gguf     metadata only
"""
import json
import os
import struct

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V

HERE = os.path.dirname(os.path.abspath(__file__))


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def write_v3(path):
    w = gguf.GGUFWriter(path, arch="llama")  # writes general.architecture first
    w.add_custom_alignment(64)
    w.add_uint8("test.uint8", 255)
    w.add_int8("test.int8", -128)
    w.add_uint16("test.uint16", 65535)
    w.add_int16("test.int16", -32768)
    w.add_uint32("test.uint32", 4294967295)
    w.add_int32("test.int32", -2147483648)
    w.add_float32("test.float32", -1.25)
    w.add_float32("test.float32_inexact", 0.1)
    w.add_bool("test.bool_true", True)
    w.add_bool("test.bool_false", False)
    w.add_string("test.string", "Grüße, 東京 🚀")
    w.add_key_value("test.empty_string", "", V.STRING)  # add_string skips empty strings
    w.add_uint64("test.uint64", 18446744073709551615)
    w.add_int64("test.int64", -9223372036854775808)
    w.add_float64("test.float64", 2.718281828459045)
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 500000.0)
    w.add_key_value("test.array_int32", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.array_uint8", [0, 7, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.array_float32", [0.5, -0.25, 0.1], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.array_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("test.array_uint64", [0, 18446744073709551615], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.array_float64", [1.5, -1e300], V.ARRAY, sub_type=V.FLOAT64)
    w.add_token_list(["<s>", "</s>", "hello", " wörld", ""])
    w.add_key_value("test.nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY)  # ARRAY of ARRAY of INT32
    w.add_key_value("test.nested_strings", [["a", "bc"], ["δ"]], V.ARRAY)  # ARRAY of ARRAY of STRING
    w.add_key_value("test.nested3", [[[1.5], [2.5, 3.5]]], V.ARRAY)  # three levels, FLOAT32 inside

    rng = np.random.default_rng(7)
    w.add_tensor("token_embd.weight", rng.standard_normal((3, 8), dtype=np.float32))  # ne [8, 3]
    w.add_tensor("blk.0.attn_norm.weight", rng.standard_normal(8, dtype=np.float32))  # ne [8]
    w.add_tensor("blk.0.cube", rng.standard_normal((2, 3, 4), dtype=np.float32))  # ne [4, 3, 2]
    w.add_tensor("blk.0.ffn_up.weight", rng.standard_normal((4, 16)).astype(np.float16))  # F16
    w.add_tensor("blk.0.four_d", rng.standard_normal((1, 2, 1, 3)).astype(np.float16))  # ne [3, 1, 2, 1]
    q8 = gguf.quants.quantize(rng.standard_normal((2, 64), dtype=np.float32), Q.Q8_0)
    w.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=Q.Q8_0)  # ne [64, 2]
    q4 = gguf.quants.quantize(rng.standard_normal((3, 32), dtype=np.float32), Q.Q4_0)
    w.add_tensor("blk.0.ffn_down.weight", q4, raw_dtype=Q.Q4_0)  # ne [32, 3]
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_v2(path):
    w = gguf.GGUFWriter(path, arch="qwen2")
    w.add_uint32("qwen2.block_count", 1)
    w.add_string("general.name", "v2 fixture")
    w.add_key_value("test.array_int64", [-1, 9223372036854775807], V.ARRAY, sub_type=V.INT64)
    rng = np.random.default_rng(2)
    w.add_tensor("output_norm.weight", rng.standard_normal(5, dtype=np.float32))
    w.add_tensor("output.weight", rng.standard_normal((2, 5)).astype(np.float16))
    q8 = gguf.quants.quantize(rng.standard_normal((1, 32), dtype=np.float32), Q.Q8_0)
    w.add_tensor("blk.0.q8", q8, raw_dtype=Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 2))


def write_no_tensors(path):
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_uint32("llama.context_length", 4096)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def scalar(vtype, part):
    v = part[0]
    if vtype in (V.FLOAT32, V.FLOAT64):
        return repr(float(v))  # the shortest decimal that reads back as the same double
    if vtype == V.BOOL:
        return bool(v)
    return str(int(v))  # numbers as decimal strings, so 64-bit integers and floats stay exact in JSON


def decode(parts, i, vtype):
    """A value from the reader's parsed parts starting at parts[i]: (json value, next index)."""
    if vtype == V.STRING:
        return {"type": "STRING", "value": bytes(parts[i + 1]).decode("utf-8")}, i + 2
    if vtype == V.ARRAY:
        etype = V(int(parts[i][0]))
        count = int(parts[i + 1][0])
        i += 2
        items = []
        for _ in range(count):
            item, i = decode(parts, i, etype)
            items.append(item)
        return {"type": "ARRAY", "element_type": etype.name, "value": items}, i
    return {"type": vtype.name, "value": scalar(vtype, parts[i])}, i + 1


def describe(path):
    r = gguf.GGUFReader(path)
    with open(path, "rb") as f:
        raw = f.read()
    kv = []
    for name, field in r.fields.items():
        if name.startswith("GGUF."):  # the reader's pseudo-fields for the header
            continue
        # parts: key length, key bytes, value type, then the value's parts.
        vtype = V(int(field.parts[2][0]))
        value, end = decode(field.parts, 3, vtype)
        assert end == len(field.parts), name
        kv.append({"key": name, **value})
    tensors = []
    for t in r.tensors:
        start, count = int(t.data_offset), int(t.n_bytes)
        tensors.append({
            "name": t.name,
            "ne": [int(d) for d in t.shape],
            "type": t.tensor_type.name,
            "type_id": int(t.tensor_type),
            "n_elements": int(t.n_elements),
            "offset": start,
            "n_bytes": count,
            "fnv1a64": fnv1a64(raw[start:start + count]),
        })
    return {
        "version": int(r.fields["GGUF.version"].parts[0][0]),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "file_size": len(raw),
        "kv": kv,
        "tensors": tensors,
    }


def main():
    files = {
        "v3-all-types.gguf": write_v3,
        "v2-small.gguf": write_v2,
        "no-tensors.gguf": write_no_tensors,
    }
    expected = {}
    for name, make in files.items():
        path = os.path.join(HERE, name)
        make(path)
        expected[name] = describe(path)
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for name in files:
        print(name, os.path.getsize(os.path.join(HERE, name)), "bytes")


if __name__ == "__main__":
    main()
