import Foundation
import XCTest

@testable import WeftModel

/// The GGUF reader against the `gguf` Python package's reader (the fixtures in
/// Tests/Fixtures/gguf and expected.json, written by make_fixtures.py), and
/// hostile files: each must fail with one error line naming the file and the
/// key or tensor, never trap.
final class GGUFTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/gguf")

    static func expected() throws -> [String: Any] {
        let data = try Data(contentsOf: directory.appendingPathComponent("expected.json"))
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func fnv1a64(_ bytes: UnsafeRawBufferPointer) -> String {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    // MARK: - The fixtures, compared with what the Python reader saw

    /// Compares one value with its expected.json form ({type, value[, element_type]}).
    func check(_ value: GGUFValue, _ json: [String: Any], _ what: String) {
        XCTAssertEqual(value.type.name, json["type"] as? String, what)
        switch value {
        case .array(let a):
            XCTAssertEqual(a.elementType.name, json["element_type"] as? String, what)
            guard let items = json["value"] as? [[String: Any]] else { return XCTFail("\(what): no items in expected.json") }
            XCTAssertEqual(a.count, items.count, what)
            for (i, item) in items.enumerated() where i < a.count { check(a[i], item, "\(what)[\(i)]") }
        case .string(let s): XCTAssertEqual(s, json["value"] as? String, what)
        case .bool(let b): XCTAssertEqual(b, json["value"] as? Bool, what)
        // Floats are decimal strings (JSONSerialization's own number parsing is not exact).
        case .float32(let f): XCTAssertEqual(Double(f), (json["value"] as? String).flatMap(Double.init), what)
        case .float64(let d): XCTAssertEqual(d, (json["value"] as? String).flatMap(Double.init), what)
        case .uint8(let v): XCTAssertEqual("\(v)", json["value"] as? String, what)
        case .int8(let v): XCTAssertEqual("\(v)", json["value"] as? String, what)
        case .uint16(let v): XCTAssertEqual("\(v)", json["value"] as? String, what)
        case .int16(let v): XCTAssertEqual("\(v)", json["value"] as? String, what)
        case .uint32(let v): XCTAssertEqual("\(v)", json["value"] as? String, what)
        case .int32(let v): XCTAssertEqual("\(v)", json["value"] as? String, what)
        case .uint64(let v): XCTAssertEqual("\(v)", json["value"] as? String, what)
        case .int64(let v): XCTAssertEqual("\(v)", json["value"] as? String, what)
        }
    }

    func testFixturesMatchThePythonReader() throws {
        let expected = try Self.expected()
        XCTAssertEqual(expected.keys.sorted(), ["no-tensors.gguf", "v2-small.gguf", "v3-all-types.gguf"])
        for (name, entry) in expected {
            let e = try XCTUnwrap(entry as? [String: Any])
            let file = try GGUFFile(path: Self.directory.appendingPathComponent(name).path)
            XCTAssertEqual(file.version, e["version"] as? Int, name)
            XCTAssertEqual(file.alignment, e["alignment"] as? Int, name)
            XCTAssertEqual(file.header.dataOffset, e["data_offset"] as? Int, name)
            XCTAssertEqual(file.header.fileLength, e["file_size"] as? Int, name)

            let kv = try XCTUnwrap(e["kv"] as? [[String: Any]])
            XCTAssertEqual(file.header.keys, kv.compactMap { $0["key"] as? String }, name)
            XCTAssertEqual(file.metadata.count, kv.count, name)
            for item in kv {
                let key = try XCTUnwrap(item["key"] as? String)
                guard let value = file.metadata[key] else { XCTFail("\(name): \(key) missing"); continue }
                check(value, item, "\(name): \(key)")
            }

            let tensors = try XCTUnwrap(e["tensors"] as? [[String: Any]])
            XCTAssertEqual(file.tensors.map(\.name), tensors.compactMap { $0["name"] as? String }, name)
            for (t, x) in zip(file.tensors, tensors) {
                let what = "\(name): \(t.name)"
                XCTAssertEqual(t.ne, x["ne"] as? [Int], what)
                XCTAssertEqual(t.type.name, x["type"] as? String, what)
                XCTAssertEqual(Int(t.type.rawValue), x["type_id"] as? Int, what)
                XCTAssertEqual(t.elementCount, x["n_elements"] as? Int, what)
                XCTAssertEqual(t.byteOffset, x["offset"] as? Int, what)
                XCTAssertEqual(t.byteCount, x["n_bytes"] as? Int, what)
                XCTAssertEqual(Self.fnv1a64(file.bytes(of: t)), x["fnv1a64"] as? String, what)
                XCTAssertEqual(file.tensor(t.name), t, what)
            }
        }
    }

    func testAccessorsAndShapes() throws {
        let file = try GGUFFile(path: Self.directory.appendingPathComponent("v3-all-types.gguf").path)
        let h = file.header
        XCTAssertEqual(try h.uint("llama.block_count"), 2)
        XCTAssertEqual(try h.int("llama.block_count"), 2)
        XCTAssertEqual(try h.int("test.int64"), Int.min)
        XCTAssertEqual(try h.uint("test.uint64"), UInt64.max)
        XCTAssertEqual(try h.double("llama.rope.freq_base"), 500000)
        XCTAssertEqual(try h.string("general.architecture"), "llama")
        XCTAssertEqual(try h.bool("test.bool_true"), true)
        XCTAssertEqual(try h.strings("tokenizer.ggml.tokens"), ["<s>", "</s>", "hello", " wörld", ""])
        XCTAssertEqual(try h.ints("test.array_int32"), [1, -2, 3])
        XCTAssertEqual(try h.doubles("test.array_float32"), [0.5, -0.25, Double(Float(0.1))])
        XCTAssertNil(try h.uint("llama.missing"))
        XCTAssertEqual(h["test.nested"]?.array?[2].array?.values, [.int32(4), .int32(5), .int32(6)])

        XCTAssertThrowsError(try h.uint("test.int8")) {
            XCTAssertEqual("\($0)", "\(file.path): field \"test.int8\": expected a non-negative integer, found int8 -128")
        }
        XCTAssertThrowsError(try h.int("test.uint64")) {
            XCTAssertEqual("\($0)", "\(file.path): field \"test.uint64\": expected an integer in Int's range, found uint64 18446744073709551615")
        }
        XCTAssertThrowsError(try h.string("llama.block_count")) {
            XCTAssertEqual("\($0)", "\(file.path): field \"llama.block_count\": expected a string, found uint32 2")
        }
        XCTAssertThrowsError(try h.strings("test.array_int32")) {
            XCTAssertEqual("\($0)", "\(file.path): field \"test.array_int32\": expected an array of strings, found an array of 3 int32")
        }
        XCTAssertThrowsError(try h.ints("test.array_uint64")) { XCTAssertTrue("\($0)".contains("\"test.array_uint64\""), "\($0)") }

        let cube = try XCTUnwrap(file.tensor("blk.0.cube"))
        XCTAssertEqual(cube.ne, [4, 3, 2])
        XCTAssertEqual(cube.shape, [2, 3, 4])
        XCTAssertEqual(cube.matrixShape, [6, 4])
        let q8 = try XCTUnwrap(file.tensor("blk.0.attn_q.weight"))
        XCTAssertEqual(q8.type, .q8_0)
        XCTAssertEqual(q8.matrixShape, [2, 64])
        XCTAssertEqual(q8.rowByteCount, 68)
        XCTAssertEqual(q8.relativeOffset % 64, 0)
        let q4 = try XCTUnwrap(file.tensor("blk.0.ffn_down.weight"))
        XCTAssertEqual(q4.byteCount, 3 * 18)
        XCTAssertNil(file.tensor("nope"))
    }

    func testTypeTableMatchesGGML() {
        // (block size, bytes per block) from ggml's type_traits / gguf's GGML_QUANT_SIZES.
        let table: [GGMLType: (Int, Int)] = [
            .f32: (1, 4), .f16: (1, 2), .q4_0: (32, 18), .q4_1: (32, 20), .q5_0: (32, 22), .q5_1: (32, 24),
            .q8_0: (32, 34), .q8_1: (32, 40), .q2_K: (256, 84), .q3_K: (256, 110), .q4_K: (256, 144),
            .q5_K: (256, 176), .q6_K: (256, 210), .q8_K: (256, 292), .i8: (1, 1), .i16: (1, 2), .i32: (1, 4),
            .i64: (1, 8), .f64: (1, 8), .bf16: (1, 2),
        ]
        XCTAssertEqual(table.count, GGMLType.allCases.count)
        for type in GGMLType.allCases {
            XCTAssertEqual(type.blockSize, table[type]?.0, type.name)
            XCTAssertEqual(type.bytesPerBlock, table[type]?.1, type.name)
        }
        XCTAssertEqual(GGMLType.bf16.rawValue, 30)
        XCTAssertEqual(GGMLType.q6_K.rawValue, 14)
    }

    // MARK: - Hostile files

    static func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func le64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func str(_ s: String) -> [UInt8] { le64(UInt64(s.utf8.count)) + Array(s.utf8) }
    static func kv(_ key: String, _ type: UInt32, _ payload: [UInt8]) -> [UInt8] { str(key) + le32(type) + payload }
    static func info(_ name: String, _ ne: [UInt64], type: UInt32 = 0, offset: UInt64 = 0) -> [UInt8] {
        str(name) + le32(UInt32(ne.count)) + ne.flatMap(le64) + le32(type) + le64(offset)
    }

    /// A GGUF image: header (counts as given, or the real ones), entries, padding
    /// to `alignment`, then `data` zero bytes.
    static func image(version: UInt32 = 3, tensorCount: UInt64? = nil, kvCount: UInt64? = nil,
                      kvs: [[UInt8]] = [], infos: [[UInt8]] = [], alignment: Int = 32, data: Int = 64) -> [UInt8] {
        var out = Array("GGUF".utf8) + le32(version)
        out += le64(tensorCount ?? UInt64(infos.count)) + le64(kvCount ?? UInt64(kvs.count))
        out += kvs.flatMap { $0 } + infos.flatMap { $0 }
        while out.count % alignment != 0 { out.append(0) }
        return out + [UInt8](repeating: 0, count: data)
    }

    static func parseError(_ bytes: [UInt8], fileLength: Int? = nil) -> String {
        do {
            let h = try bytes.withUnsafeBytes {
                try GGUFFile.parse(bytes: $0, fileLength: fileLength ?? bytes.count, path: "m.gguf")
            }
            return "no error (\(h.tensors.count) tensors, \(h.metadata.count) keys)"
        } catch {
            return "\(error)"
        }
    }

    /// Asserts one error line for the file that contains every fragment.
    func assertError(_ bytes: [UInt8], _ fragments: String..., file: StaticString = #filePath, line: UInt = #line) {
        let e = Self.parseError(bytes)
        XCTAssertTrue(e.hasPrefix("m.gguf: "), e, file: file, line: line)
        XCTAssertFalse(e.contains("\n"), e, file: file, line: line)
        for f in fragments { XCTAssertTrue(e.contains(f), "\"\(f)\" not in: \(e)", file: file, line: line) }
    }

    func testAValidImageParses() throws {
        let bytes = Self.image(kvs: [Self.kv("general.alignment", 4, Self.le32(64))],
                               infos: [Self.info("a", [8, 2], type: 0, offset: 0), Self.info("b", [32], type: 8, offset: 64)],
                               alignment: 64, data: 128)
        let h = try bytes.withUnsafeBytes { try GGUFFile.parse(bytes: $0, fileLength: bytes.count, path: "m.gguf") }
        XCTAssertEqual(h.alignment, 64)
        XCTAssertEqual(h.dataOffset % 64, 0)
        XCTAssertEqual(h.tensors.map(\.byteCount), [64, 34])
        XCTAssertEqual(h.tensors[1].byteOffset, h.dataOffset + 64)
        XCTAssertEqual(h.dataOffset + 128, bytes.count)
    }

    func testTruncatedAtEvery7thByte() throws {
        for name in ["v3-all-types.gguf", "v2-small.gguf"] {
            let bytes = Array(try Data(contentsOf: Self.directory.appendingPathComponent(name)))
            let full = try bytes.withUnsafeBytes { try GGUFFile.parse(bytes: $0, fileLength: bytes.count, path: "m.gguf") }
            // The writer pads the last tensor's data to the alignment; cutting that padding is harmless.
            let dataEnd = full.tensors.map { $0.byteOffset + $0.byteCount }.max() ?? full.dataOffset
            XCTAssertLessThan(bytes.count - dataEnd, full.alignment, name)
            var n = 0
            while n < bytes.count {
                let e = Self.parseError(Array(bytes[0..<n]))
                if n < dataEnd {
                    XCTAssertTrue(e.hasPrefix("m.gguf: ") && !e.contains("\n"), "\(name) cut at \(n): \(e)")
                    XCTAssertTrue(e.contains("truncated") || e.contains("outside the data section") || e.contains("cannot fit")
                                  || e.contains("bytes left in the file"), "\(name) cut at \(n): \(e)")
                } else {
                    XCTAssertEqual(e, "no error (\(full.tensors.count) tensors, \(full.metadata.count) keys)", "\(name) cut at \(n)")
                }
                n += 7
            }
            XCTAssertTrue(Self.parseError(Array(bytes[0..<(dataEnd - 1)])).contains("outside the data section"), name)
            // The header read from a prefix of a longer file reports the shortfall too.
            let e = Self.parseError(Array(bytes[0..<100]), fileLength: bytes.count)
            XCTAssertTrue(e.contains("truncated at byte") || e.contains("cannot fit in the 100 bytes read of a \(bytes.count)-byte file"), e)
        }
        XCTAssertEqual(Self.parseError([]), "m.gguf: truncated: 0 bytes, a GGUF file starts with a 24-byte header")
    }

    func testMagicVersionAndEndianness() {
        var bytes = Self.image()
        bytes[0] = UInt8(ascii: "X")
        XCTAssertEqual(Self.parseError(bytes), "m.gguf: not a GGUF file: starts with \"XGUF\", expected \"GGUF\"")
        XCTAssertEqual(Self.parseError(Self.image(version: 1)),
                       "m.gguf: GGUF version 1 is not supported (only versions 2 and 3): convert the file again with a current llama.cpp")
        XCTAssertEqual(Self.parseError(Self.image(version: 4)), "m.gguf: unsupported GGUF version 4 (only versions 2 and 3)")
        XCTAssertEqual(Self.parseError(Self.image(version: UInt32(3).byteSwapped)),
                       "m.gguf: big-endian GGUF (version 3) is not supported: only little-endian files can be read")
        XCTAssertEqual(Self.parseError(Self.image(version: 2)), "no error (0 tensors, 0 keys)")
    }

    func testHugeCountsAndLengths() {
        assertError(Self.image(tensorCount: UInt64.max), "18446744073709551615 tensors cannot fit")
        assertError(Self.image(tensorCount: 1 << 40), "1099511627776 tensors cannot fit")
        assertError(Self.image(kvCount: 1 << 62), "4611686018427387904 metadata entries cannot fit")
        // A key whose length is 2^64 − 1.
        assertError(Self.image(kvCount: 1, kvs: [Self.le64(UInt64.max) + [0, 0, 0, 0]]),
                    "metadata key #0: string length 18446744073709551615 exceeds")
        // A string value and an array whose lengths exceed the file.
        assertError(Self.image(kvs: [Self.kv("k.s", 8, Self.le64(1 << 63))]), "metadata \"k.s\": string length 9223372036854775808")
        assertError(Self.image(kvs: [Self.kv("k.a", 9, Self.le32(10) + Self.le64(UInt64.max))]),
                    "metadata \"k.a\": array of 18446744073709551615 uint64 cannot fit")
        assertError(Self.image(kvs: [Self.kv("k.a", 9, Self.le32(8) + Self.le64(100))]),
                    "metadata \"k.a\": array of 100 string cannot fit")
        // A tensor name of huge length.
        assertError(Self.image(tensorCount: 1, infos: [Self.le64(1 << 60) + [UInt8](repeating: 0, count: 24)]),
                    "the name of tensor #0: string length 1152921504606846976")
    }

    func testBadMetadataValues() {
        assertError(Self.image(kvs: [Self.kv("k.t", 13, [0])]), "metadata \"k.t\": unknown value type 13")
        assertError(Self.image(kvs: [Self.kv("k.a", 9, Self.le32(77) + Self.le64(1))]),
                    "the elements of metadata \"k.a\": unknown value type 77")
        assertError(Self.image(kvs: [Self.kv("k.b", 7, [2])]), "metadata \"k.b\": bool byte 2")
        assertError(Self.image(kvs: [Self.le64(2) + [0xC3, 0x28] + Self.le32(0) + [1]]), "metadata key #0: string at byte 32 is not valid UTF-8")
        assertError(Self.image(kvs: [Self.kv("k.s", 8, Self.le64(1) + [0xFF])]), "metadata \"k.s\": string at byte")
        // Arrays of arrays nested 9 deep (the recursion is bounded, not the stack).
        var nested = Self.le32(0) + Self.le64(0)
        for _ in 0..<9 { nested = Self.le32(9) + Self.le64(1) + nested }
        assertError(Self.image(kvs: [Self.kv("k.n", 9, nested)]), "metadata \"k.n\"", "nested deeper than 8 levels")
        // 8 deep is fine.
        var ok = Self.le32(0) + Self.le64(0)
        for _ in 0..<7 { ok = Self.le32(9) + Self.le64(1) + ok }
        XCTAssertEqual(Self.parseError(Self.image(kvs: [Self.kv("k.n", 9, ok)])), "no error (0 tensors, 1 keys)")
        assertError(Self.image(kvs: [Self.kv("k.d", 4, Self.le32(1)), Self.kv("k.d", 0, [1])]), "duplicate metadata key \"k.d\"")
    }

    func testAlignment() {
        for (payload, found) in [(Self.le32(48), "found 48"), (Self.le32(0), "found 0"), (Self.le32(1 << 30), "found 1073741824")] {
            assertError(Self.image(kvs: [Self.kv("general.alignment", 4, payload)]),
                        "field \"general.alignment\": expected a power of two in 1...1048576", found)
        }
        assertError(Self.image(kvs: [Self.kv("general.alignment", 10, Self.le64(64))]),
                    "field \"general.alignment\": expected a uint32, found uint64 64")
        // Alignment 1 is allowed: the data section starts right after the table.
        let bytes = Self.image(kvs: [Self.kv("general.alignment", 4, Self.le32(1))], infos: [Self.info("t", [3], type: 24, offset: 5)], alignment: 1, data: 8)
        XCTAssertEqual(Self.parseError(bytes), "no error (1 tensors, 1 keys)")
    }

    func testBadTensorEntries() {
        assertError(Self.image(infos: [Self.info("blk.0.x", [1, 1, 1, 1, 1])]), "tensor \"blk.0.x\": 5 dimensions, at most 4")
        assertError(Self.image(infos: [Self.info("blk.0.x", [32], type: 99)]), "tensor \"blk.0.x\": unsupported ggml type 99")
        assertError(Self.image(infos: [Self.info("blk.0.x", [32], type: 4)]), "unsupported ggml type 4")  // Q4_2, removed from ggml
        assertError(Self.image(infos: [Self.info("q", [16, 2], type: 2)]), "tensor \"q\": ne[0] = 16 is not a multiple of the Q4_0 block size 32")
        assertError(Self.image(infos: [Self.info("k", [512, 2], type: 12)], data: 2 * 144), "tensor \"k\"", "outside the data section")
        assertError(Self.image(infos: [Self.info("big", [1 << 32, 1 << 32, 4])]), "tensor \"big\": ne [4294967296, 4294967296, 4] has too many elements")
        assertError(Self.image(infos: [Self.info("big", [1 << 61, 2])]), "tensor \"big\": ne [2305843009213693952, 2] of F32 has too many bytes")
        assertError(Self.image(infos: [Self.info("neg", [UInt64.max])]), "tensor \"neg\": ne[0] = 18446744073709551615 is out of range")
        // A zero dimension gives zero bytes, but the other dimensions are still checked.
        assertError(Self.image(infos: [Self.info("z", [1 << 60, 0, 2])]), "tensor \"z\": ne [1152921504606846976, 0, 2] of F32 has too many bytes")
        XCTAssertEqual(Self.parseError(Self.image(infos: [Self.info("z", [8, 0])])), "no error (1 tensors, 0 keys)")
        assertError(Self.image(infos: [Self.info("d", [8]), Self.info("d", [8], offset: 32)]), "tensor \"d\": appears twice")
    }

    func testTensorOffsets() {
        assertError(Self.image(infos: [Self.info("m", [4], offset: 16)]), "tensor \"m\": offset 16 is not a multiple of the alignment 32")
        assertError(Self.image(infos: [Self.info("o", [8], offset: 64)], data: 64), "tensor \"o\": data at offset 64 + 32 bytes lies outside the data section (64 bytes")
        assertError(Self.image(infos: [Self.info("o", [8], offset: 1 << 63)]), "tensor \"o\": offset 9223372036854775808 is out of range")
        assertError(Self.image(infos: [Self.info("o", [8], offset: (1 << 63) - 32)]), "tensor \"o\": data at offset 9223372036854775776 + 32 bytes lies outside")
        assertError(Self.image(infos: [Self.info("o", [1 << 60])]), "tensor \"o\": data at offset 0 + 4611686018427387904 bytes lies outside")
        assertError(Self.image(infos: [Self.info("a", [16]), Self.info("b", [8], offset: 32)]),
                    "tensor \"b\": data at offset 32 overlaps tensor \"a\" (offset 0, 64 bytes)")
        assertError(Self.image(infos: [Self.info("a", [8]), Self.info("b", [8])]), "overlaps tensor")
        // Touching ranges and tensors out of file order are fine.
        XCTAssertEqual(Self.parseError(Self.image(infos: [Self.info("b", [8], offset: 32), Self.info("a", [8])])), "no error (2 tensors, 0 keys)")
    }

    func testErrorsThroughTheFile() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("weft-gguf-\(getpid()).gguf")
        defer { try? FileManager.default.removeItem(at: url) }
        try Data(Self.image(infos: [Self.info("blk.0.x", [32], type: 99)])).write(to: url)
        XCTAssertThrowsError(try GGUFFile(path: url.path)) {
            XCTAssertEqual("\($0)", "\(url.path): tensor \"blk.0.x\": unsupported ggml type 99")
        }
        try Data([0x47, 0x47]).write(to: url)
        XCTAssertThrowsError(try GGUFFile(path: url.path)) {
            XCTAssertEqual("\($0)", "\(url.path): truncated: 2 bytes, a GGUF file starts with a 24-byte header")
        }
        XCTAssertThrowsError(try GGUFFile(path: url.path + ".missing")) {
            XCTAssertEqual("\($0)", "\(url.path).missing: cannot open: No such file or directory")
        }
    }
}

extension GGUFTests {
    /// The fuzzer's seeds (copies of the fixtures) parse, so fuzzing starts past the header.
    func testFuzzSeedsParse() throws {
        let dir = Self.directory.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/gguf")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".gguf") }.sorted()
        XCTAssertEqual(names, ["no-tensors.gguf", "v2-small.gguf", "v3-all-types.gguf"])
        for name in names {
            let bytes = Array(try Data(contentsOf: dir.appendingPathComponent(name)))
            XCTAssertEqual(bytes, Array(try Data(contentsOf: Self.directory.appendingPathComponent(name))), name)
        }
    }
}
