import Foundation

/// Element types a checkpoint may store; all are computed in float32.
public enum DType: String, Sendable {
    case f32 = "F32"
    case bf16 = "BF16"
    case f16 = "F16"

    public var byteSize: Int { self == .f32 ? 4 : 2 }
}

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range within the file (header offsets are relative to the data section).
    public let byteOffset: Int
    public let byteCount: Int
    public let file: String

    /// The header check guarantees this product does not overflow (it is
    /// `byteCount / dtype.byteSize`).
    public var elementCount: Int { byteCount / dtype.byteSize }
}

/// A memory-mapped `.safetensors` file. Pages are read only when a rank
/// copies its slice of a tensor, and released again afterwards.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorInfo]
    let mapping: MappedFile

    public init(path: String) throws {
        self.path = path
        mapping = try MappedFile(path: path, minimumLength: 8) {
            "truncated: \($0) bytes, a safetensors file starts with an 8-byte header length"
        }
        tensors = try SafetensorsHeader.parse(mapping.bytes, fileLength: mapping.length, path: path)
    }

    /// Address of a tensor's first byte inside the mapping.
    func address(of info: TensorInfo) -> UnsafeRawPointer { UnsafeRawPointer(mapping.base + info.byteOffset) }

    /// Drops the pages of a tensor from this process's memory once its slice is
    /// copied, so resident memory holds only converted, rank-local weights.
    func release(_ info: TensorInfo) { mapping.release(byteOffset: info.byteOffset, byteCount: info.byteCount) }
}

/// Reading and validating a safetensors header: the one place every number
/// from the file is checked before any arithmetic uses it.
///
/// Layout: an 8-byte little-endian header length N, N bytes of JSON mapping
/// tensor names to `{dtype, shape, data_offsets: [begin, end]}` (offsets
/// relative to the data section after the header), then the data section.
public enum SafetensorsHeader {
    /// The format's own limit (the reference `safetensors` library refuses
    /// longer headers too); real checkpoints use well under 10 MB.
    public static let maxHeaderLength = 100_000_000

    /// Parses and validates the header at the start of `bytes`, the first
    /// bytes of a file of `fileLength` bytes (`bytes` may stop after the
    /// header; nothing past it is read). Offsets returned are from the
    /// start of the file.
    ///
    /// Checked: the header length fits the file; the JSON is an object of
    /// entries with a supported dtype, a shape of non-negative integers whose
    /// element count and byte size do not overflow, and integer data_offsets
    /// with begin ≤ end ≤ the data section, begin a multiple of the dtype
    /// size, and end − begin = elements × dtype size; no two tensors' byte
    /// ranges overlap.
    public static func parse(_ bytes: UnsafeRawBufferPointer, fileLength: Int, path: String) throws -> [String: TensorInfo] {
        guard fileLength >= 8, bytes.count >= 8 else {
            throw ModelError.file(path, "truncated: \(fileLength) bytes, a safetensors file starts with an 8-byte header length")
        }
        let rawLength = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        // fileLength ≥ 8, so the subtraction cannot overflow; the comparison is
        // done in UInt64 so that a length ≥ 2^63 is reported as written.
        guard rawLength > 0, rawLength <= UInt64(fileLength - 8) else {
            throw ModelError.file(path, "truncated or corrupt: header length \(rawLength) but the file has \(fileLength) bytes")
        }
        guard rawLength <= UInt64(maxHeaderLength) else {
            throw ModelError.file(path, "corrupt: header length \(rawLength) exceeds the format's limit of \(maxHeaderLength) bytes")
        }
        let headerLength = Int(rawLength)
        guard bytes.count >= 8 + headerLength else {
            throw ModelError.file(path, "truncated: header length \(headerLength) but only \(bytes.count) bytes were read")
        }
        let headerData = Data(bytes: bytes.baseAddress! + 8, count: headerLength)
        let header: [String: HeaderJSON]
        do {
            let top = try JSONDecoder().decode(HeaderJSON.self, from: headerData)
            guard case .object(let object) = top else {
                throw ModelError.file(path, "malformed header JSON: expected an object")
            }
            header = object
        } catch let error as ModelError {
            throw error
        } catch {
            throw ModelError.file(path, "malformed header JSON: \(ModelError.reason(error))")
        }
        // A JSON decoder keeps one of two equal keys: count them in the text.
        if let duplicate = duplicateTopLevelKey(headerData, decodedCount: header.count) {
            throw ModelError.file(path, "corrupt: the header names tensor \"\(duplicate)\" twice")
        }
        let dataStart = 8 + headerLength
        let dataLength = fileLength - dataStart
        var tensors: [String: TensorInfo] = [:]
        for (name, value) in header where name != "__metadata__" {
            let info = try entry(name: name, value: value, dataStart: dataStart, dataLength: dataLength,
                                 fileLength: fileLength, path: path)
            tensors[name] = info
        }
        try checkOverlaps(tensors.values, dataStart: dataStart, path: path)
        return tensors
    }

    /// The first key that the top-level object of `json` (already decoded as
    /// an object of `decodedCount` distinct keys) lists twice, if any. Scans
    /// the text once, skipping nested values and strings.
    static func duplicateTopLevelKey(_ json: Data, decodedCount: Int) -> String? {
        var keys: [String] = []
        var depth = 0, index = json.startIndex, expectKey = false
        while index < json.endIndex {
            let byte = json[index]
            switch byte {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                expectKey = byte == UInt8(ascii: "{") && depth == 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            case UInt8(ascii: ","): expectKey = depth == 1
            case UInt8(ascii: "\""):
                // A string: find its closing quote (a backslash escapes the next byte).
                var end = index + 1
                while end < json.endIndex && json[end] != UInt8(ascii: "\"") { end += json[end] == UInt8(ascii: "\\") ? 2 : 1 }
                guard end < json.endIndex else { return nil }   // the decoder accepted it, so this cannot happen
                if expectKey {
                    // Decode the key as JSON does (escapes), to compare what the decoder compared.
                    let literal = json[index...end]
                    keys.append((try? JSONDecoder().decode(String.self, from: Data(literal))) ?? String(decoding: literal, as: UTF8.self))
                    expectKey = false
                }
                index = end
            default: break
            }
            index += 1
        }
        guard keys.count > decodedCount else { return nil }
        var seen = Set<String>()
        return keys.first { !seen.insert($0).inserted }
    }

    private static func entry(name: String, value: HeaderJSON, dataStart: Int, dataLength: Int,
                              fileLength: Int, path: String) throws -> TensorInfo {
        guard case .object(let fields) = value,
              case .string(let dtypeName)? = fields["dtype"],
              case .array(let shapeValues)? = fields["shape"],
              case .array(let offsetValues)? = fields["data_offsets"] else {
            throw ModelError.tensor(path, name, "malformed header entry (needs dtype, shape, data_offsets)")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw ModelError.tensor(path, name, "unsupported dtype \(dtypeName) (expected F32, BF16 or F16)")
        }
        var shape: [Int] = []
        for (i, dimension) in shapeValues.enumerated() {
            guard case .int(let d) = dimension, d >= 0 else {
                throw ModelError.tensor(path, name, "shape[\(i)]: expected a non-negative integer, found \(dimension)")
            }
            shape.append(d)
        }
        // Element count and byte size with checked arithmetic. Zero dimensions
        // are multiplied as 1 first so that [0, 2^62, 2^62] is refused too
        // (later code multiplies dimensions other than the zero one).
        var product = 1
        for d in shape {
            let (p, overflow) = product.multipliedReportingOverflow(by: max(d, 1))
            guard !overflow else { throw ModelError.tensor(path, name, "shape \(shape) has too many elements to address") }
            product = p
        }
        let elements = shape.contains(0) ? 0 : product
        let (needed, overflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow else { throw ModelError.tensor(path, name, "shape \(shape) of \(dtypeName) has too many bytes to address") }

        guard offsetValues.count == 2 else {
            throw ModelError.tensor(path, name, "data_offsets: expected [begin, end], found \(offsetValues.count) numbers")
        }
        var offsets: [Int] = []
        for (i, offset) in offsetValues.enumerated() {
            guard case .int(let o) = offset, o >= 0 else {
                throw ModelError.tensor(path, name, "data_offsets[\(i)]: expected a non-negative integer byte offset, found \(offset)")
            }
            offsets.append(o)
        }
        let begin = offsets[0], end = offsets[1]
        guard end >= begin else {
            throw ModelError.tensor(path, name, "data_offsets [\(begin), \(end)]: end before begin")
        }
        guard end <= dataLength else {
            // dataStart + end may overflow: report the data-section offset and size instead.
            throw ModelError.file(path, "truncated: tensor \"\(name)\" ends at data offset \(end) but the data section has \(dataLength) bytes (file \(fileLength) bytes)")
        }
        guard begin % dtype.byteSize == 0 else {
            throw ModelError.tensor(path, name, "data_offsets [\(begin), \(end)]: begin is not a multiple of the \(dtypeName) size \(dtype.byteSize)")
        }
        guard end - begin == needed else {
            throw ModelError.tensor(path, name, "data_offsets span \(end - begin) bytes but shape \(shape) of \(dtypeName) needs \(needed)")
        }
        // end ≤ dataLength = fileLength − dataStart, so dataStart + begin cannot overflow.
        return TensorInfo(name: name, dtype: dtype, shape: shape, byteOffset: dataStart + begin,
                          byteCount: end - begin, file: path)
    }

    /// No two tensors share a byte: sorted by start, each non-empty range
    /// starts at or after the end of the previous one.
    private static func checkOverlaps(_ tensors: some Collection<TensorInfo>, dataStart: Int, path: String) throws {
        let ranges = tensors.filter { $0.byteCount > 0 }
            .sorted { ($0.byteOffset, $0.name) < ($1.byteOffset, $1.name) }
        for (previous, next) in zip(ranges, ranges.dropFirst()) where next.byteOffset < previous.byteOffset + previous.byteCount {
            let range = { (t: TensorInfo) in "[\(t.byteOffset - dataStart), \(t.byteOffset - dataStart + t.byteCount)]" }
            throw ModelError.tensor(path, next.name, "data_offsets \(range(next)) overlap tensor \"\(previous.name)\" at \(range(previous))")
        }
    }
}

/// A JSON value as the header holds it; integers are kept exact (a number
/// that is not an integer in Int's range stays a Double and is refused).
indirect enum HeaderJSON: Decodable, CustomStringConvertible {
    case null
    case bool(Bool)
    case int(Int)
    /// An integer above Int.max, kept exact for the error message.
    case bigInt(UInt64)
    case number(Double)
    case string(String)
    case array([HeaderJSON])
    case object([String: HeaderJSON])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let b = try? container.decode(Bool.self) { self = .bool(b) }
        else if let i = try? container.decode(Int.self) { self = .int(i) }
        else if let u = try? container.decode(UInt64.self) { self = .bigInt(u) }
        else if let d = try? container.decode(Double.self) { self = .number(d) }
        else if let s = try? container.decode(String.self) { self = .string(s) }
        else if let a = try? container.decode([HeaderJSON].self) { self = .array(a) }
        else { self = .object(try container.decode([String: HeaderJSON].self)) }
    }

    var description: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return "\(b)"
        case .int(let i): return "\(i)"
        case .bigInt(let u): return "\(u)"
        case .number(let d): return "\(d)"
        case .string(let s): return "\"\(s)\""
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}
