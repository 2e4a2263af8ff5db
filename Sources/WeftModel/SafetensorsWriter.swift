import Foundation

/// Writes a `.safetensors` file: an 8-byte little-endian header length, the
/// JSON header, then the tensors' bytes. Used to save random-weight models and
/// by tests that build malformed checkpoints.
public enum SafetensorsWriter {
    public struct Entry {
        public var name: String
        /// The dtype name written to the header (any string, so tests can write unknown ones).
        public var dtype: String
        public var shape: [Int]
        public var bytes: Data

        public init(name: String, dtype: String, shape: [Int], bytes: Data) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }
    }

    public static func write(_ entries: [Entry], to url: URL) throws {
        var header: [String: Any] = [:]
        var offset = 0
        for entry in entries {
            header[entry.name] = ["dtype": entry.dtype, "shape": entry.shape, "data_offsets": [offset, offset + entry.bytes.count]]
            offset += entry.bytes.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }   // pad with spaces, as the format allows
        var out = Data()
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(json)
        for entry in entries { out.append(entry.bytes) }
        try out.write(to: url)
    }

    /// The entries of an existing file, bytes included (for tests that alter a checkpoint).
    public static func read(_ path: String) throws -> [Entry] {
        let file = try SafetensorsFile(path: path)
        return file.tensors.values.sorted { $0.byteOffset < $1.byteOffset }.map { info in
            Entry(name: info.name, dtype: info.dtype.rawValue, shape: info.shape,
                  bytes: Data(bytes: file.address(of: info), count: info.byteCount))
        }
    }
}
