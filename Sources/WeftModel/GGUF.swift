import Foundation

// Reading GGUF files (llama.cpp's format), versions 2 and 3, little-endian.
//
// Layout (all integers little-endian):
//   "GGUF"  u32 version  u64 tensor_count  u64 kv_count
//   kv_count × { string key, u32 value_type, value }
//   tensor_count × { string name, u32 n_dims, n_dims × u64 ne, u32 ggml_type, u64 offset }
//   padding to general.alignment (default 32), then the data section; each
//   tensor's offset is relative to the data section's start.
//   string = u64 length + UTF-8 bytes; array = u32 element type + u64 count + elements.
//
// Every count, length and offset read from the file is range-checked before
// any arithmetic or allocation uses it, so a hostile file fails with one error
// line naming the file and the key or tensor, never a trap.

/// A GGUF metadata value type, numbered as in the file.
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6
    case bool = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// The name the `gguf` Python package uses (`GGUFValueType.name`).
    public var name: String {
        switch self {
        case .uint8: return "UINT8"
        case .int8: return "INT8"
        case .uint16: return "UINT16"
        case .int16: return "INT16"
        case .uint32: return "UINT32"
        case .int32: return "INT32"
        case .float32: return "FLOAT32"
        case .bool: return "BOOL"
        case .string: return "STRING"
        case .array: return "ARRAY"
        case .uint64: return "UINT64"
        case .int64: return "INT64"
        case .float64: return "FLOAT64"
        }
    }

    /// The fewest bytes one value of this type takes in the file (a string is
    /// at least its length field, an array at least its type and count).
    var minimumSize: Int {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64, .string: return 8
        case .array: return 12
        }
    }
}

/// A metadata value, with the type the file gave it.
public indirect enum GGUFValue: Sendable, Equatable, CustomStringConvertible {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    case array(GGUFArray)

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    /// Any integer type, if its value fits in Int.
    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(exactly: v)
        default: return nil
        }
    }

    /// Any non-negative integer.
    public var uint: UInt64? {
        switch self {
        case .uint8(let v): return UInt64(v)
        case .uint16(let v): return UInt64(v)
        case .uint32(let v): return UInt64(v)
        case .uint64(let v): return v
        case .int8(let v): return UInt64(exactly: v)
        case .int16(let v): return UInt64(exactly: v)
        case .int32(let v): return UInt64(exactly: v)
        case .int64(let v): return UInt64(exactly: v)
        default: return nil
        }
    }

    /// A float32 or float64 (integers are not converted).
    public var double: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return nil
        }
    }

    public var bool: Bool? { if case .bool(let v) = self { return v } else { return nil } }
    public var string: String? { if case .string(let v) = self { return v } else { return nil } }
    public var array: GGUFArray? { if case .array(let v) = self { return v } else { return nil } }

    /// A short form for error messages ("uint32 7", "a string", "an array of 3 int32").
    public var description: String {
        switch self {
        case .string(let s): return s.utf8.count <= 40 ? "string \"\(s)\"" : "a string of \(s.utf8.count) bytes"
        case .array(let a): return "an array of \(a.count) \(a.elementType.name.lowercased())"
        case .bool(let b): return "bool \(b)"
        case .float32(let v): return "float32 \(v)"
        case .float64(let v): return "float64 \(v)"
        default: return "\(type.name.lowercased()) \(uint.map { "\($0)" } ?? int.map { "\($0)" } ?? "?")"
        }
    }
}

/// A metadata array: one element type, stored compactly per type.
public enum GGUFArray: Sendable, Equatable {
    case uint8([UInt8]), int8([Int8]), uint16([UInt16]), int16([Int16]), uint32([UInt32]), int32([Int32])
    case float32([Float]), bool([Bool]), string([String]), uint64([UInt64]), int64([Int64]), float64([Double])
    /// Nested arrays; each inner array has its own element type.
    case array([GGUFArray])

    public var elementType: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    public var count: Int {
        switch self {
        case .uint8(let a): return a.count
        case .int8(let a): return a.count
        case .uint16(let a): return a.count
        case .int16(let a): return a.count
        case .uint32(let a): return a.count
        case .int32(let a): return a.count
        case .float32(let a): return a.count
        case .bool(let a): return a.count
        case .string(let a): return a.count
        case .array(let a): return a.count
        case .uint64(let a): return a.count
        case .int64(let a): return a.count
        case .float64(let a): return a.count
        }
    }

    /// Element `i` as a value (0 ≤ i < count).
    public subscript(i: Int) -> GGUFValue {
        switch self {
        case .uint8(let a): return .uint8(a[i])
        case .int8(let a): return .int8(a[i])
        case .uint16(let a): return .uint16(a[i])
        case .int16(let a): return .int16(a[i])
        case .uint32(let a): return .uint32(a[i])
        case .int32(let a): return .int32(a[i])
        case .float32(let a): return .float32(a[i])
        case .bool(let a): return .bool(a[i])
        case .string(let a): return .string(a[i])
        case .array(let a): return .array(a[i])
        case .uint64(let a): return .uint64(a[i])
        case .int64(let a): return .int64(a[i])
        case .float64(let a): return .float64(a[i])
        }
    }

    /// Every element as a value (convenient, not compact).
    public var values: [GGUFValue] { (0..<count).map { self[$0] } }
}

/// A ggml tensor type: its block of `blockSize` elements takes `bytesPerBlock`
/// bytes (ggml's `type_traits`; the `gguf` package's `GGML_QUANT_SIZES`).
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, bf16 = 30

    public var name: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q8_1: return "Q8_1"
        case .q2_K: return "Q2_K"
        case .q3_K: return "Q3_K"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        case .q8_K: return "Q8_K"
        case .i8: return "I8"
        case .i16: return "I16"
        case .i32: return "I32"
        case .i64: return "I64"
        case .f64: return "F64"
        case .bf16: return "BF16"
        }
    }

    /// Elements per block (1 for plain types, 32 for the legacy quants, 256 for k-quants).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1: return 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K: return 256
        }
    }

    /// Bytes per block.
    public var bytesPerBlock: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .f64: return 8
        case .i8: return 1
        case .i16: return 2
        case .i32: return 4
        case .i64: return 8
        case .q4_0: return 18   // f16 scale + 16 bytes of nibbles
        case .q4_1: return 20   // f16 scale, f16 min + 16
        case .q5_0: return 22   // f16 scale + 4 bytes of high bits + 16
        case .q5_1: return 24   // f16 scale, f16 min + 4 + 16
        case .q8_0: return 34   // f16 scale + 32 int8
        case .q8_1: return 40   // f32 scale, f32 sum + 32 int8
        case .q2_K: return 84
        case .q3_K: return 110
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        case .q8_K: return 292
        }
    }
}

/// One tensor's entry in a GGUF file's tensor table.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions in ggml order: `ne[0]` is the innermost (contiguous) one.
    public let ne: [Int]
    public let type: GGMLType
    /// Offset of the first byte from the start of the data section, as stored.
    public let relativeOffset: Int
    /// Offset of the first byte from the start of the file.
    public let byteOffset: Int
    public let byteCount: Int
    public let elementCount: Int

    /// The row-major (NumPy / safetensors) shape: `ne` reversed.
    public var shape: [Int] { ne.reversed() }
    /// Elements per row: `ne[0]` (1 for a scalar).
    public var columns: Int { ne.first ?? 1 }
    /// Rows: the product of the outer dimensions (checked not to overflow when parsed).
    public var rows: Int { ne.dropFirst().reduce(1, *) }
    /// The 2-D row-major view, [rows, columns].
    public var matrixShape: [Int] { [rows, columns] }
    /// Bytes of one row (`columns / blockSize` blocks).
    public var rowByteCount: Int { columns / type.blockSize * type.bytesPerBlock }
    public var byteRange: Range<Int> { byteOffset..<(byteOffset + byteCount) }
}

/// Everything a GGUF file's header says, validated.
public struct GGUFHeader: Sendable {
    public let path: String
    public let version: Int
    /// Metadata keys in file order.
    public let keys: [String]
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let tensorIndex: [String: Int]
    /// `general.alignment`, or 32.
    public let alignment: Int
    /// Start of the data section (the end of the tensor table, padded to the alignment).
    public let dataOffset: Int
    public let fileLength: Int

    public func tensor(_ name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    public subscript(key: String) -> GGUFValue? { metadata[key] }

    // Typed accessors: nil when the key is absent, an error naming the key
    // when it holds a value of another type.

    /// An integer of any width that fits in Int.
    public func int(_ key: String) throws -> Int? {
        guard let value = metadata[key] else { return nil }
        guard let v = value.int else { throw mismatch(key, "an integer in Int's range", value) }
        return v
    }

    /// A non-negative integer of any width.
    public func uint(_ key: String) throws -> UInt64? {
        guard let value = metadata[key] else { return nil }
        guard let v = value.uint else { throw mismatch(key, "a non-negative integer", value) }
        return v
    }

    /// A float32 or float64.
    public func double(_ key: String) throws -> Double? {
        guard let value = metadata[key] else { return nil }
        guard let v = value.double else { throw mismatch(key, "a float", value) }
        return v
    }

    public func bool(_ key: String) throws -> Bool? {
        guard let value = metadata[key] else { return nil }
        guard let v = value.bool else { throw mismatch(key, "a bool", value) }
        return v
    }

    public func string(_ key: String) throws -> String? {
        guard let value = metadata[key] else { return nil }
        guard let v = value.string else { throw mismatch(key, "a string", value) }
        return v
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    public func strings(_ key: String) throws -> [String]? {
        guard let value = metadata[key] else { return nil }
        guard case .array(.string(let v)) = value else { throw mismatch(key, "an array of strings", value) }
        return v
    }

    /// An array of any integer type, each element fitting in Int.
    public func ints(_ key: String) throws -> [Int]? {
        guard let value = metadata[key] else { return nil }
        guard case .array(let a) = value, a.elementType != .array else { throw mismatch(key, "an array of integers", value) }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for i in 0..<a.count {
            guard let v = a[i].int else { throw mismatch(key, "an array of integers", value) }
            out.append(v)
        }
        return out
    }

    /// An array of float32 or float64 (e.g. `tokenizer.ggml.scores`).
    public func doubles(_ key: String) throws -> [Double]? {
        guard let value = metadata[key] else { return nil }
        switch value {
        case .array(.float32(let a)): return a.map(Double.init)
        case .array(.float64(let a)): return a
        default: throw mismatch(key, "an array of floats", value)
        }
    }

    private func mismatch(_ key: String, _ expected: String, _ found: GGUFValue) -> ModelError {
        .field(path, key, expected, found.description)
    }
}

/// A memory-mapped GGUF file: the validated header and the tensors' bytes in place.
public final class GGUFFile: @unchecked Sendable {
    public let header: GGUFHeader
    let mapping: MappedFile

    public var path: String { header.path }
    public var version: Int { header.version }
    public var metadata: [String: GGUFValue] { header.metadata }
    public var tensors: [GGUFTensorInfo] { header.tensors }
    public var alignment: Int { header.alignment }
    public func tensor(_ name: String) -> GGUFTensorInfo? { header.tensor(name) }

    public init(path: String) throws {
        mapping = try MappedFile(path: path, minimumLength: GGUFParser.fixedHeaderSize) {
            "truncated: \($0) bytes, a GGUF file starts with a \(GGUFParser.fixedHeaderSize)-byte header"
        }
        header = try GGUFFile.parse(bytes: mapping.bytes, fileLength: mapping.length, path: path)
    }

    /// A tensor's bytes inside the mapping (valid while this file is alive).
    /// `info` must come from this file's `tensors`.
    public func bytes(of info: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        precondition(info.byteOffset >= 0 && info.byteCount >= 0 && info.byteOffset <= mapping.length - info.byteCount,
                     "tensor \(info.name) is not from \(path)")
        return UnsafeRawBufferPointer(start: mapping.base + info.byteOffset, count: info.byteCount)
    }

    /// Drops a tensor's pages from this process's memory (after copying what it needs).
    public func release(_ info: GGUFTensorInfo) { mapping.release(byteOffset: info.byteOffset, byteCount: info.byteCount) }

    /// Parses and validates a GGUF header from the first `bytes.count` bytes
    /// of a file of `fileLength` bytes (`bytes` must reach at least the end of
    /// the tensor table; tensor data past it is range-checked against
    /// `fileLength` but not read).
    public static func parse(bytes: UnsafeRawBufferPointer, fileLength: Int, path: String) throws -> GGUFHeader {
        var parser = GGUFParser(bytes: bytes, fileLength: fileLength, path: path)
        return try parser.parse()
    }
}

/// The parser behind `GGUFFile.parse`; each read is bounds-checked.
struct GGUFParser {
    static let fixedHeaderSize = 24
    static let defaultAlignment = 32
    /// `general.alignment` above this is refused (real files use 32; a page is 4–64 KiB).
    static let maxAlignment = 1 << 20
    /// ggml's GGML_MAX_DIMS.
    static let maxDims = 4
    /// Nesting of arrays inside arrays (the recursion is bounded by this, not the file).
    static let maxArrayDepth = 8
    /// Smallest possible key-value entry (empty key, uint8 value) and tensor entry
    /// (empty name, no dimensions): used to refuse impossible counts before looping.
    static let minKVSize = 8 + 4 + 1
    static let minTensorInfoSize = 8 + 4 + 4 + 8

    let bytes: UnsafeRawBufferPointer
    let fileLength: Int
    let path: String
    var position = 0

    init(bytes: UnsafeRawBufferPointer, fileLength: Int, path: String) {
        self.bytes = bytes
        self.fileLength = fileLength
        self.path = path
    }

    func fail(_ message: String) -> ModelError { .file(path, message) }

    var remaining: Int { bytes.count - position }

    /// What the counts were checked against, for messages.
    var extent: String {
        bytes.count == fileLength ? "a file of \(fileLength) bytes" : "the \(bytes.count) bytes read of a \(fileLength)-byte file"
    }

    /// Reads `size` bytes' worth of a fixed-width integer, or fails naming `what`.
    mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else {
            throw fail("truncated at byte \(position) reading \(what()) (file \(fileLength) bytes)")
        }
        let v = T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
        position += size
        return v
    }

    /// A string: u64 length (bounded by the bytes left) and UTF-8 bytes.
    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let length = try load(UInt64.self, "the length of \(what())")
        guard length <= UInt64(remaining) else {
            throw fail("\(what()): string length \(length) exceeds the \(remaining) bytes left in the file")
        }
        let n = Int(length)
        let slice = UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
        guard let s = String(validating: slice.bindMemory(to: UInt8.self), as: UTF8.self) else {
            throw fail("\(what()): string at byte \(position) is not valid UTF-8")
        }
        position += n
        return s
    }

    mutating func valueType(_ what: @autoclosure () -> String) throws -> GGUFValueType {
        let raw = try load(UInt32.self, "the value type of \(what())")
        guard let type = GGUFValueType(rawValue: raw) else {
            throw fail("\(what()): unknown value type \(raw) (expected 0...12)")
        }
        return type
    }

    mutating func value(_ type: GGUFValueType, depth: Int, _ what: String) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, what))
        case .int8: return .int8(try load(Int8.self, what))
        case .uint16: return .uint16(try load(UInt16.self, what))
        case .int16: return .int16(try load(Int16.self, what))
        case .uint32: return .uint32(try load(UInt32.self, what))
        case .int32: return .int32(try load(Int32.self, what))
        case .uint64: return .uint64(try load(UInt64.self, what))
        case .int64: return .int64(try load(Int64.self, what))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, what)))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, what)))
        case .bool: return .bool(try boolean(what))
        case .string: return .string(try string(what))
        case .array: return .array(try array(depth: depth, what))
        }
    }

    mutating func boolean(_ what: @autoclosure () -> String) throws -> Bool {
        let b = try load(UInt8.self, what())
        guard b <= 1 else { throw fail("\(what()): bool byte \(b) at byte \(position - 1) is neither 0 nor 1") }
        return b == 1
    }

    mutating func array(depth: Int, _ what: String) throws -> GGUFArray {
        guard depth < Self.maxArrayDepth else {
            throw fail("\(what): arrays nested deeper than \(Self.maxArrayDepth) levels")
        }
        let elementType = try valueType("the elements of \(what)")
        let rawCount = try load(UInt64.self, "the element count of \(what)")
        // Each element takes at least minimumSize bytes, so a count the rest of
        // the file cannot hold is refused before anything is allocated.
        guard rawCount <= UInt64(remaining / elementType.minimumSize) else {
            throw fail("\(what): array of \(rawCount) \(elementType.name.lowercased()) cannot fit in the \(remaining) bytes left in the file")
        }
        let count = Int(rawCount)
        func each<T>(_ read: (inout GGUFParser, Int) throws -> T) throws -> [T] {
            var out: [T] = []
            out.reserveCapacity(count)
            for i in 0..<count { out.append(try read(&self, i)) }
            return out
        }
        switch elementType {
        case .uint8: return .uint8(try each { p, i in try p.load(UInt8.self, "\(what)[\(i)]") })
        case .int8: return .int8(try each { p, i in try p.load(Int8.self, "\(what)[\(i)]") })
        case .uint16: return .uint16(try each { p, i in try p.load(UInt16.self, "\(what)[\(i)]") })
        case .int16: return .int16(try each { p, i in try p.load(Int16.self, "\(what)[\(i)]") })
        case .uint32: return .uint32(try each { p, i in try p.load(UInt32.self, "\(what)[\(i)]") })
        case .int32: return .int32(try each { p, i in try p.load(Int32.self, "\(what)[\(i)]") })
        case .uint64: return .uint64(try each { p, i in try p.load(UInt64.self, "\(what)[\(i)]") })
        case .int64: return .int64(try each { p, i in try p.load(Int64.self, "\(what)[\(i)]") })
        case .float32: return .float32(try each { p, i in Float(bitPattern: try p.load(UInt32.self, "\(what)[\(i)]")) })
        case .float64: return .float64(try each { p, i in Double(bitPattern: try p.load(UInt64.self, "\(what)[\(i)]")) })
        case .bool: return .bool(try each { p, i in try p.boolean("\(what)[\(i)]") })
        case .string: return .string(try each { p, i in try p.string("\(what)[\(i)]") })
        case .array: return .array(try each { p, i in try p.array(depth: depth + 1, "\(what)[\(i)]") })
        }
    }

    mutating func parse() throws -> GGUFHeader {
        guard fileLength >= Self.fixedHeaderSize, bytes.count >= Self.fixedHeaderSize, bytes.count <= fileLength else {
            throw fail("truncated: \(min(fileLength, bytes.count)) bytes, a GGUF file starts with a \(Self.fixedHeaderSize)-byte header")
        }
        let magic = Array(bytes[0..<4])
        guard magic == Array("GGUF".utf8) else {
            let shown = magic.map { $0 >= 0x20 && $0 < 0x7f ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
            throw fail("not a GGUF file: starts with \"\(shown)\", expected \"GGUF\"")
        }
        position = 4
        let version = try load(UInt32.self, "the version")
        if version == 1 {
            throw fail("GGUF version 1 is not supported (only versions 2 and 3): convert the file again with a current llama.cpp")
        }
        if version & 0xFFFF == 0, (2...3).contains(version.byteSwapped) {
            throw fail("big-endian GGUF (version \(version.byteSwapped)) is not supported: only little-endian files can be read")
        }
        guard version == 2 || version == 3 else {
            throw fail("unsupported GGUF version \(version) (only versions 2 and 3)")
        }
        let tensorCount = try load(UInt64.self, "the tensor count")
        let kvCount = try load(UInt64.self, "the metadata count")
        guard kvCount <= UInt64(remaining / Self.minKVSize) else {
            throw fail("corrupt: \(kvCount) metadata entries cannot fit in \(extent)")
        }
        guard tensorCount <= UInt64(remaining / Self.minTensorInfoSize) else {
            throw fail("corrupt: \(tensorCount) tensors cannot fit in \(extent)")
        }

        var keys: [String] = []
        var metadata: [String: GGUFValue] = [:]
        for i in 0..<Int(kvCount) {
            let key = try string("metadata key #\(i)")
            let what = "metadata \"\(key)\""
            let type = try valueType(what)
            let value = try self.value(type, depth: 0, what)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw fail("duplicate metadata key \"\(key)\"")
            }
            keys.append(key)
        }

        var alignment = Self.defaultAlignment
        if let value = metadata["general.alignment"] {
            guard case .uint32(let a) = value else {
                throw ModelError.field(path, "general.alignment", "a uint32", value.description)
            }
            guard a > 0, a & (a - 1) == 0, a <= Self.maxAlignment else {
                throw ModelError.field(path, "general.alignment", "a power of two in 1...\(Self.maxAlignment)", "\(a)")
            }
            alignment = Int(a)
        }

        struct Entry { let name: String; let ne: [Int]; let type: GGMLType; let offset: Int; let bytes: Int; let elements: Int }
        var entries: [Entry] = []
        var tensorIndex: [String: Int] = [:]
        for i in 0..<Int(tensorCount) {
            let name = try string("the name of tensor #\(i)")
            func bad(_ problem: String) -> ModelError { .tensor(path, name, problem) }
            guard tensorIndex[name] == nil else { throw bad("appears twice in the tensor table") }
            let nDims = try load(UInt32.self, "the dimension count of tensor \"\(name)\"")
            guard nDims <= UInt32(Self.maxDims) else {
                throw bad("\(nDims) dimensions, at most \(Self.maxDims) are supported")
            }
            var ne: [Int] = []
            for d in 0..<Int(nDims) {
                let raw = try load(UInt64.self, "ne[\(d)] of tensor \"\(name)\"")
                guard raw <= UInt64(Int64.max) else { throw bad("ne[\(d)] = \(raw) is out of range") }
                ne.append(Int(raw))
            }
            let rawType = try load(UInt32.self, "the type of tensor \"\(name)\"")
            guard let type = GGMLType(rawValue: rawType) else {
                throw bad("unsupported ggml type \(rawType)")
            }
            let rawOffset = try load(UInt64.self, "the offset of tensor \"\(name)\"")

            // Elements and bytes with checked arithmetic; a zero dimension is
            // multiplied as 1 first so the other dimensions' product is checked too.
            var product = 1
            for d in ne {
                let (p, overflow) = product.multipliedReportingOverflow(by: max(d, 1))
                guard !overflow else { throw bad("ne \(ne) has too many elements to address") }
                product = p
            }
            let elements = ne.contains(0) ? 0 : product
            let columns = ne.first ?? 1
            guard columns % type.blockSize == 0 else {
                throw bad("ne[0] = \(columns) is not a multiple of the \(type.name) block size \(type.blockSize)")
            }
            // Bytes = (ne[0] / blockSize × bytesPerBlock) per row × rows, checked
            // with zero dimensions counted as 1 (so rowByteCount cannot overflow either).
            let outer = ne.dropFirst().reduce(1) { $0 * max($1, 1) }  // ≤ product, checked above
            let (rowBytes, o1) = (columns / type.blockSize).multipliedReportingOverflow(by: type.bytesPerBlock)
            let (allBytes, o2) = rowBytes.multipliedReportingOverflow(by: outer)
            guard !o1, !o2 else { throw bad("ne \(ne) of \(type.name) has too many bytes to address") }
            let byteCount = elements == 0 ? 0 : allBytes
            guard rawOffset <= UInt64(Int64.max) else { throw bad("offset \(rawOffset) is out of range") }
            let offset = Int(rawOffset)
            guard offset % alignment == 0 else {
                throw bad("offset \(offset) is not a multiple of the alignment \(alignment)")
            }
            tensorIndex[name] = i
            entries.append(Entry(name: name, ne: ne, type: type, offset: offset, bytes: byteCount, elements: elements))
        }

        // The data section starts at the end of the tensor table, padded.
        let tableEnd = position
        let dataOffset = (tableEnd + alignment - 1) / alignment * alignment  // tableEnd ≤ bytes.count, alignment ≤ 2^20
        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(entries.count)
        for e in entries {
            // dataOffset + offset + bytes ≤ fileLength, checked without overflow.
            let available = fileLength - dataOffset  // may be negative when there is no data section
            guard e.offset <= available, e.bytes <= available - e.offset else {
                throw ModelError.tensor(path, e.name, "data at offset \(e.offset) + \(e.bytes) bytes lies outside the data section (\(max(available, 0)) bytes from byte \(dataOffset), file \(fileLength) bytes)")
            }
            tensors.append(GGUFTensorInfo(name: e.name, ne: e.ne, type: e.type, relativeOffset: e.offset,
                                          byteOffset: dataOffset + e.offset, byteCount: e.bytes, elementCount: e.elements))
        }
        // No two tensors share a byte.
        let sorted = tensors.filter { $0.byteCount > 0 }.sorted { ($0.byteOffset, $0.name) < ($1.byteOffset, $1.name) }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where next.byteOffset < previous.byteOffset + previous.byteCount {
            throw ModelError.tensor(path, next.name, "data at offset \(next.relativeOffset) overlaps tensor \"\(previous.name)\" (offset \(previous.relativeOffset), \(previous.byteCount) bytes)")
        }
        return GGUFHeader(path: path, version: Int(version), keys: keys, metadata: metadata, tensors: tensors,
                          tensorIndex: tensorIndex, alignment: alignment, dataOffset: dataOffset, fileLength: fileLength)
    }
}
