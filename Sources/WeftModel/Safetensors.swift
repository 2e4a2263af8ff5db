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

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped `.safetensors` file. Pages are read only when a rank
/// copies its slice of a tensor, and released again afterwards.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorInfo]
    let base: UnsafeMutableRawPointer
    let mappedLength: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ModelError.file(path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ModelError.file(path, "cannot stat: \(String(cString: strerror(errno)))") }
        let length = Int(st.st_size)
        guard length >= 8 else { throw ModelError.file(path, "truncated: \(length) bytes, a safetensors file starts with an 8-byte header length") }
        guard let mapped = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw ModelError.file(path, "cannot map: \(String(cString: strerror(errno)))")
        }
        base = mapped
        mappedLength = length
        do {
            tensors = try SafetensorsFile.parseHeader(base: mapped, length: length, path: path)
        } catch {
            munmap(mapped, length)
            throw error
        }
    }

    deinit { munmap(base, mappedLength) }

    static func parseHeader(base: UnsafeMutableRawPointer, length: Int, path: String) throws -> [String: TensorInfo] {
        let headerLength = Int(UInt64(littleEndian: base.loadUnaligned(as: UInt64.self)))
        guard headerLength > 0, headerLength <= length - 8 else {
            throw ModelError.file(path, "truncated or corrupt: header length \(headerLength) but the file has \(length) bytes")
        }
        let headerData = Data(bytes: base + 8, count: headerLength)
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: headerData) } catch {
            throw ModelError.file(path, "malformed header JSON: \(ModelError.reason(error))")
        }
        guard let header = object as? [String: Any] else { throw ModelError.file(path, "malformed header JSON: expected an object") }
        let dataStart = 8 + headerLength
        let dataLength = length - dataStart
        var tensors: [String: TensorInfo] = [:]
        for (name, value) in header where name != "__metadata__" {
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shapeNumbers = entry["shape"] as? [NSNumber],
                  let offsets = entry["data_offsets"] as? [NSNumber], offsets.count == 2 else {
                throw ModelError.tensor(path, name, "malformed header entry (needs dtype, shape, data_offsets)")
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw ModelError.tensor(path, name, "unsupported dtype \(dtypeName) (expected F32, BF16 or F16)")
            }
            let shape = shapeNumbers.map(\.intValue)
            let begin = offsets[0].intValue, end = offsets[1].intValue
            guard shape.allSatisfy({ $0 >= 0 }), begin >= 0, end >= begin else {
                throw ModelError.tensor(path, name, "invalid shape \(shape) or data_offsets [\(begin), \(end)]")
            }
            guard end <= dataLength else {
                throw ModelError.file(path, "truncated: tensor \"\(name)\" ends at byte \(dataStart + end) but the file has \(length) bytes")
            }
            let elements = shape.reduce(1, *)
            guard elements * dtype.byteSize == end - begin else {
                throw ModelError.tensor(path, name, "data_offsets span \(end - begin) bytes but shape \(shape) of \(dtypeName) needs \(elements * dtype.byteSize)")
            }
            tensors[name] = TensorInfo(name: name, dtype: dtype, shape: shape, byteOffset: dataStart + begin,
                                       byteCount: end - begin, file: path)
        }
        return tensors
    }

    /// Address of a tensor's first byte inside the mapping.
    func address(of info: TensorInfo) -> UnsafeRawPointer { UnsafeRawPointer(base + info.byteOffset) }

    /// Drops the pages of a tensor from this process's memory once its slice is
    /// copied, so resident memory holds only converted, rank-local weights.
    func release(_ info: TensorInfo) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = info.byteOffset / page * page
        let end = min(mappedLength, info.byteOffset + info.byteCount)
        guard end > start else { return }
        madvise(base + start, end - start, Int32(MADV_DONTNEED))
    }
}
