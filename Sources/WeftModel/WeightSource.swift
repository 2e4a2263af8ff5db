import CKernels
import Foundation
import WeftTensor

/// Where a rank's weights come from: a checkpoint on disk, or deterministic
/// random values of a given shape (for benchmarks without a checkpoint).
/// Every read names a slice, so a rank never materializes a whole tensor.
public protocol WeightSource: Sendable {
    /// Checks that `name` exists with exactly `shape`.
    func validate(_ name: String, shape: [Int]) throws
    /// Writes `rows` x `columns` of the 2-D tensor `name` as float32 into
    /// `destination` (row stride `ld`).
    func readSlice(_ name: String, rows: Range<Int>, columns: Range<Int>,
                   into destination: UnsafeMutablePointer<Float>, ld: Int)
    /// Called once a tensor's slices have all been read.
    func finished(_ name: String)
    var description: String { get }
    /// The format `name` is stored in (float32 for sources of floats only).
    func storedFormat(_ name: String) -> WeightFormat
    /// Copies `rows` of the 2-D tensor `name` in its stored format, restricted
    /// to `columns` (which start and end on the format's blocks), each row's
    /// bytes `stride` apart in `destination`.
    func readStoredRows(_ name: String, rows: Range<Int>, columns: Range<Int>,
                        into destination: UnsafeMutableRawPointer, stride: Int)
}

extension WeightSource {
    public func storedFormat(_ name: String) -> WeightFormat { .f32 }
    public func readStoredRows(_ name: String, rows: Range<Int>, columns: Range<Int>,
                               into destination: UnsafeMutableRawPointer, stride: Int) {
        precondition(stride % 4 == 0, "float32 rows are 4-byte aligned")
        readSlice(name, rows: rows, columns: columns, into: destination.assumingMemoryBound(to: Float.self), ld: stride / 4)
    }
}

extension WeightSource {
    /// A 1-D tensor's elements `range` (norm weights, biases).
    func readVector(_ name: String, range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        readSlice(name, rows: 0..<1, columns: range, into: destination, ld: range.count)
    }
}

/// A Hugging Face checkpoint folder: `model.safetensors`, or shards listed
/// in `model.safetensors.index.json`.
public final class CheckpointSource: WeightSource, @unchecked Sendable {
    public let directory: URL
    let files: [SafetensorsFile]
    let tensors: [String: (file: SafetensorsFile, info: TensorInfo)]

    public var description: String { directory.path }

    public init(directory: URL) throws {
        self.directory = directory
        let fm = FileManager.default
        let single = directory.appendingPathComponent("model.safetensors")
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        var files: [SafetensorsFile] = []
        var expectedFile: [String: String] = [:]
        if fm.fileExists(atPath: index.path) {
            let data: Data
            do { data = try Data(contentsOf: index) } catch {
                throw ModelError.file(index.path, "cannot read: \(ModelError.reason(error))")
            }
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ModelError.file(index.path, "malformed JSON")
            }
            guard let weightMap = object["weight_map"] as? [String: String] else {
                throw ModelError.field(index.path, "weight_map", "an object mapping tensor names to file names", object["weight_map"].map { "\($0)" } ?? "missing")
            }
            for shard in Set(weightMap.values).sorted() {
                guard !shard.contains("/") else { throw ModelError.field(index.path, "weight_map", "file names inside the model folder", "\"\(shard)\"") }
                files.append(try SafetensorsFile(path: directory.appendingPathComponent(shard).path))
            }
            expectedFile = weightMap
        } else if fm.fileExists(atPath: single.path) {
            files.append(try SafetensorsFile(path: single.path))
        } else {
            throw ModelError.file(directory.path, "no model.safetensors or model.safetensors.index.json in the model folder")
        }
        var tensors: [String: (SafetensorsFile, TensorInfo)] = [:]
        for file in files {
            for (name, info) in file.tensors {
                if let expected = expectedFile[name], !file.path.hasSuffix("/" + expected) { continue }
                tensors[name] = (file, info)
            }
        }
        for (name, shard) in expectedFile where tensors[name] == nil {
            throw ModelError.tensor(directory.appendingPathComponent(shard).path, name, "listed in model.safetensors.index.json but not in the file")
        }
        self.files = files
        self.tensors = tensors
    }

    public func has(_ name: String) -> Bool { tensors[name] != nil }
    /// The names of every tensor in the checkpoint, sorted.
    public var tensorNames: [String] { tensors.keys.sorted() }

    public func validate(_ name: String, shape: [Int]) throws {
        guard let (file, info) = tensors[name] else {
            throw ModelError.tensor(files.count == 1 ? files[0].path : directory.path, name, "missing (expected shape \(shape))")
        }
        // A 1-D tensor may be stored as [n] only; 2-D must match exactly.
        guard info.shape == shape else {
            throw ModelError.tensor(file.path, name, "shape \(info.shape), expected \(shape) from config.json")
        }
    }

    public func readSlice(_ name: String, rows: Range<Int>, columns: Range<Int>,
                          into destination: UnsafeMutablePointer<Float>, ld: Int) {
        let (file, info) = tensors[name]!
        let rowLength = info.shape.count == 1 ? info.shape[0] : info.shape[1]
        let base = file.address(of: info)
        for (i, row) in rows.enumerated() {
            let offset = row * rowLength + columns.lowerBound
            let out = destination + i * ld
            switch info.dtype {
            case .f32:
                out.update(from: (base + offset * 4).assumingMemoryBound(to: Float.self), count: columns.count)
            case .bf16:
                weft_bf16_to_f32((base + offset * 2).assumingMemoryBound(to: UInt16.self), out, columns.count)
            case .f16:
                weft_f16_to_f32((base + offset * 2).assumingMemoryBound(to: UInt16.self), out, columns.count)
            }
        }
    }

    public func finished(_ name: String) {
        if let (file, info) = tensors[name] { file.release(info) }
    }

    public func storedFormat(_ name: String) -> WeightFormat {
        switch tensors[name]?.info.dtype {
        case .bf16: .bf16
        case .f16: .f16
        default: .f32
        }
    }

    public func readStoredRows(_ name: String, rows: Range<Int>, columns: Range<Int>,
                               into destination: UnsafeMutableRawPointer, stride: Int) {
        let (file, info) = tensors[name]!
        let rowLength = info.shape.count == 1 ? info.shape[0] : info.shape[1]
        let size = info.dtype == .f32 ? 4 : 2
        let base = file.address(of: info)
        for (i, row) in rows.enumerated() {
            (destination + i * stride).copyMemory(from: base + (row * rowLength + columns.lowerBound) * size, byteCount: columns.count * size)
        }
    }
}

/// Deterministic pseudo-random weights: element (row, column) of a tensor is a
/// hash of the tensor name and its global index, so every rank produces the
/// same global tensor whatever its slice, and TP results stay comparable.
public struct RandomWeightSource: WeightSource {
    public let seed: UInt64
    public let scale: Float
    public var description: String { "random weights (seed \(seed))" }

    public init(seed: UInt64 = 1, scale: Float = 0.02) {
        self.seed = seed
        self.scale = scale
    }

    public func validate(_ name: String, shape: [Int]) throws {}
    public func finished(_ name: String) {}

    public func readSlice(_ name: String, rows: Range<Int>, columns: Range<Int>,
                          into destination: UnsafeMutablePointer<Float>, ld: Int) {
        var h = seed &* 0x9E37_79B9_7F4A_7C15
        for byte in name.utf8 { h = (h ^ UInt64(byte)) &* 0x1000_0000_01B3 }
        // Norm weights near 1 (as trained models have), everything else small.
        let isNorm = name.hasSuffix("norm.weight")
        for (i, row) in rows.enumerated() {
            let out = destination + i * ld
            for (j, column) in columns.enumerated() {
                var z = h &+ UInt64(row) &* 0xD1B5_4A32_D192_ED03 &+ UInt64(column) &* 0x8CB9_2BA7_2F3D_8DD7
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                z ^= z >> 31
                let unit = Float(z >> 40) / Float(1 << 24) * 2 - 1   // uniform in [-1, 1)
                out[j] = isNorm ? 1 + 0.1 * unit : scale * 1.7320508 * unit
            }
        }
    }
}
