import WeftModel

extension FuzzTargets {
    /// The bytes as a whole GGUF file: parse, then touch every metadata value
    /// and check every promise the parser makes about the tensor table.
    public static func gguf(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            guard let header = try? GGUFFile.parse(bytes: buffer, fileLength: bytes.count, path: "fuzz") else { return }
            promise(header.keys.count == header.metadata.count, "keys and metadata differ")
            for key in header.keys {
                guard let value = header[key] else { return promise(false, "key \(key) without a value") }
                touch(value, depth: 0)
                _ = try? header.int(key)
                _ = try? header.uint(key)
                _ = try? header.double(key)
                _ = try? header.string(key)
                _ = try? header.strings(key)
                _ = try? header.ints(key)
                _ = try? header.doubles(key)
            }
            let alignment = header.alignment
            promise(alignment > 0 && alignment & (alignment - 1) == 0, "alignment \(alignment)")
            promise(header.dataOffset % alignment == 0, "data section not aligned")
            var ranges: [(Int, Int)] = []
            var checksum: UInt8 = 0
            for (i, t) in header.tensors.enumerated() {
                promise(header.tensor(t.name) == t && header.tensorIndex[t.name] == i, "tensor \(t.name) index")
                promise(t.ne.count <= 4 && t.ne.allSatisfy { $0 >= 0 }, "tensor \(t.name) ne \(t.ne)")
                promise(t.relativeOffset % alignment == 0, "tensor \(t.name) misaligned")
                promise(t.byteOffset == header.dataOffset + t.relativeOffset, "tensor \(t.name) offset")
                promise(t.byteOffset >= 24 && t.byteCount >= 0 && t.byteOffset + t.byteCount <= bytes.count,
                        "tensor \(t.name) outside the file")
                promise(t.columns % t.type.blockSize == 0, "tensor \(t.name) ne[0] not whole blocks")
                promise(t.rows * t.columns == t.elementCount, "tensor \(t.name) element count")
                promise(t.rows * t.rowByteCount == t.byteCount, "tensor \(t.name) byte count")
                promise(t.shape == Array(t.ne.reversed()) && t.matrixShape == [t.rows, t.columns], "tensor \(t.name) shape")
                if t.byteCount > 0 {
                    checksum ^= buffer[t.byteOffset] ^ buffer[t.byteOffset + t.byteCount - 1]
                    ranges.append((t.byteOffset, t.byteOffset + t.byteCount))
                }
            }
            ranges.sort { $0.0 < $1.0 }
            for (a, b) in zip(ranges, ranges.dropFirst()) { promise(b.0 >= a.1, "overlapping tensors accepted") }
            _ = checksum
        }
    }

    private static func touch(_ value: GGUFValue, depth: Int) {
        promise(depth <= 8, "arrays nested \(depth) deep")
        _ = value.description
        guard case .array(let a) = value else {
            if case .string(let s) = value { _ = s.utf8.count }
            return
        }
        for i in 0..<a.count { touch(a[i], depth: depth + 1) }
    }
}
