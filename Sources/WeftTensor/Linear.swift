import CKernels
import CNuma
import Foundation

/// How a weight matrix is held in memory: float32 packed panels, 16-bit
/// floats, or one of ggml's block formats (GGUF's layouts, byte for byte).
/// Raw values are ggml's type numbers.
public enum WeightFormat: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q8_0 = 8, q4_K = 12, q5_K = 13, q6_K = 14, bf16 = 30

    /// The lower-case name used by `--weight-dtype` and llama.cpp (`q4_K` as ggml writes it).
    public var description: String {
        switch self {
        case .f32: "f32"
        case .f16: "f16"
        case .bf16: "bf16"
        case .q8_0: "q8_0"
        case .q4_0: "q4_0"
        case .q4_1: "q4_1"
        case .q4_K: "q4_K"
        case .q5_K: "q5_K"
        case .q6_K: "q6_K"
        }
    }

    public init?(name: String) {
        guard let format = Self.allCases.first(where: { $0.description.lowercased() == name.lowercased() }) else { return nil }
        self = format
    }

    /// The kernels can multiply this format (k-quants arrive with their kernels).
    public var isSupported: Bool { weft_wtype_supported(rawValue) != 0 }
    /// Elements per block: 1 (floats), 32 or 256 (k-quants).
    public var blockElements: Int { Int(weft_wtype_block_elements(rawValue)) }
    public var blockBytes: Int { Int(weft_wtype_block_bytes(rawValue)) }
    /// Bytes of a row of `k` elements; nil unless `k` is a positive multiple of the block.
    public func rowBytes(_ k: Int) -> Int? {
        let bytes = weft_wtype_row_bytes(rawValue, Int64(k))
        return bytes == 0 ? nil : Int(bytes)
    }
    /// Formats Weft can write from float32 (quantize at load).
    public var canQuantize: Bool { [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1].contains(self) }
}

/// An owned, 64-byte aligned byte array placed on one NUMA node, first
/// touched by whoever writes it first (see `FloatBuffer`).
public final class ByteBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutableRawPointer
    private let fromNuma: Bool

    public init(count: Int, node: Int? = nil) {
        precondition(count >= 0, "ByteBuffer count must be non-negative")
        self.count = count
        let bytes = max(count, 64)
        if let node, NumaTopology.isAvailable, let raw = numa_alloc_onnode(bytes, Int32(node)) {
            pointer = raw
            fromNuma = true
        } else {
            var raw: UnsafeMutableRawPointer?
            guard posix_memalign(&raw, 64, bytes) == 0, let raw else { fatalError("out of memory allocating \(bytes) bytes") }
            pointer = raw
            fromNuma = false
        }
    }

    deinit { if fromNuma { numa_free(pointer, max(count, 64)) } else { free(pointer) } }
}

/// Working memory the block-format kernels need per call (quantized
/// activations, dequantized panels), grown on demand and reused. One per
/// model: a model's linear layers run one at a time on its compute thread.
public final class WeightScratch: @unchecked Sendable {
    private var buffer: ByteBuffer?
    public init() {}
    func pointer(bytes: Int) -> (UnsafeMutableRawPointer, Int) {
        if buffer == nil || buffer!.count < bytes { buffer = ByteBuffer(count: bytes + bytes / 4) }
        return (buffer!.pointer, buffer!.count)
    }
}

/// A weight of `outFeatures` rows of `inFeatures` elements in a block format
/// (or 16-bit floats), rows in ggml's layout; filled by the pool threads
/// that multiply them.
public final class BlockWeight: @unchecked Sendable {
    public let format: WeightFormat
    public let outFeatures: Int
    public let inFeatures: Int
    public let rowBytes: Int
    public let storage: ByteBuffer
    let scratch: WeightScratch

    /// `fillRows(firstRow, rowCount, destination)` writes rows in `format`
    /// (each `rowBytes`, contiguous); it runs on the pool thread that will
    /// multiply those rows.
    public init(format: WeightFormat, outFeatures: Int, inFeatures: Int, node: Int?, pool: ComputePool, scratch: WeightScratch,
                fillRows: (_ firstRow: Int, _ rowCount: Int, _ destination: UnsafeMutableRawPointer) -> Void) {
        precondition(format != .f32 && format.isSupported, "BlockWeight holds a supported non-float32 format")
        guard let rowBytes = format.rowBytes(inFeatures) else {
            preconditionFailure("\(inFeatures) is not a multiple of \(format)'s block of \(format.blockElements)")
        }
        self.format = format
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.rowBytes = rowBytes
        self.scratch = scratch
        storage = ByteBuffer(count: outFeatures * rowBytes, node: node)
        let base = storage.pointer
        pool.run { t, n in
            var j0 = 0, j1 = 0
            weft_wgemm_thread_rows(format.rawValue, Int32(outFeatures), Int32(n), Int32(t), &j0, &j1)
            guard j0 < j1 else { return }
            // In chunks, so a thread's first touches stay in its own pages.
            var row = j0
            while row < j1 {
                let count = min(j1 - row, 64)
                fillRows(row, count, base + row * rowBytes)
                row += count
            }
        }
    }

    /// y[0..<m, 0..<outFeatures] = x[0..<m, 0..<inFeatures] · Wᵀ.
    public func apply(pool: ComputePool, rows m: Int, x: UnsafePointer<Float>, ldx: Int,
                      y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard m > 0, outFeatures > 0 else { return }
        let need = weft_wgemm_scratch_bytes(format.rawValue, Int32(m), Int32(outFeatures), Int32(inFeatures), Int32(pool.threadCount))
        let (space, bytes) = scratch.pointer(bytes: Int(need))
        let status = weft_wgemm(format.rawValue, Int32(m), Int32(outFeatures), Int32(inFeatures), x, ldx,
                                storage.pointer, y, ldy, space, bytes, pool.raw)
        precondition(status == 0, "weft_wgemm refused \(format) \(m)x\(outFeatures)x\(inFeatures)")
    }

    /// Row `row` as float32 into `out` (`inFeatures` floats).
    public func dequantizeRow(_ row: Int, into out: UnsafeMutablePointer<Float>) {
        _ = weft_dequantize_row(format.rawValue, storage.pointer + row * rowBytes, out, Int64(inFeatures))
    }

    public var byteCount: Int { outFeatures * rowBytes }
}

/// A linear layer's weight: one matrix, or several stacked along the output
/// (a fused q/k/v or gate/up whose parts are stored in different formats,
/// as a Q4_K_M file's are). Each part writes its own output columns.
public final class Linear: @unchecked Sendable {
    public enum Part: @unchecked Sendable {
        case packed(PackedWeight)
        case blocks(BlockWeight)

        public var outFeatures: Int {
            switch self { case .packed(let w): w.outFeatures; case .blocks(let w): w.outFeatures }
        }
        public var format: WeightFormat {
            switch self { case .packed: .f32; case .blocks(let w): w.format }
        }
        public var byteCount: Int {
            switch self { case .packed(let w): w.storage.count * 4; case .blocks(let w): w.byteCount }
        }
    }

    public let parts: [Part]
    public let outFeatures: Int
    public let inFeatures: Int

    public init(parts: [Part], inFeatures: Int) {
        self.parts = parts
        self.inFeatures = inFeatures
        outFeatures = parts.reduce(0) { $0 + $1.outFeatures }
    }

    public convenience init(_ weight: PackedWeight) { self.init(parts: [.packed(weight)], inFeatures: weight.inFeatures) }

    /// Bytes of weights held (what a decode step streams).
    public var byteCount: Int { parts.reduce(0) { $0 + $1.byteCount } }

    /// The formats of the parts, e.g. "q4_K+q6_K".
    public var formatDescription: String {
        var seen: [String] = []
        for p in parts where !seen.contains(p.format.description) { seen.append(p.format.description) }
        return seen.joined(separator: "+")
    }

    /// y[0..<m, 0..<outFeatures] = x[0..<m, 0..<inFeatures] · Wᵀ.
    public func apply(pool: ComputePool, rows m: Int, x: UnsafePointer<Float>, ldx: Int,
                      y: UnsafeMutablePointer<Float>, ldy: Int) {
        var column = 0
        for part in parts {
            switch part {
            case .packed(let w): w.apply(pool: pool, rows: m, x: x, ldx: ldx, y: y + column, ldy: ldy)
            case .blocks(let w): w.apply(pool: pool, rows: m, x: x, ldx: ldx, y: y + column, ldy: ldy)
            }
            column += part.outFeatures
        }
    }

    /// Output row `row` of the weight (an embedding lookup of a tied LM head) as float32.
    public func row(_ row: Int, into out: UnsafeMutablePointer<Float>) {
        var first = 0
        for part in parts {
            defer { first += part.outFeatures }
            guard row < first + part.outFeatures else { continue }
            let local = row - first
            switch part {
            case .packed(let w):
                let nr = PackedWeight.panelRows, k = w.inFeatures
                let panel = w.storage.pointer + (local / nr) * nr * k + local % nr
                for i in 0..<k { out[i] = panel[i * nr] }
            case .blocks(let w):
                w.dequantizeRow(local, into: out)
            }
            return
        }
    }
}
