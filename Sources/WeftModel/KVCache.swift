import CKernels
import WeftTensor

/// The element type of the KV cache: keys and values are rounded to it (round
/// to nearest even) when written; attention widens them back to float32 and
/// computes in float32.
public enum KVDType: String, Sendable, CaseIterable {
    case f32, f16, bf16

    /// Bytes per stored element.
    public var byteSize: Int { self == .f32 ? 4 : 2 }

    /// The kernels' `weft_kv_dtype`.
    var kernelValue: Int32 {
        switch self {
        case .f32: Int32(WEFT_KV_F32.rawValue)
        case .f16: Int32(WEFT_KV_F16.rawValue)
        case .bf16: Int32(WEFT_KV_BF16.rawValue)
        }
    }
}

/// Keys and values of every layer in fixed-size blocks (paged), shared by
/// all sequences: a sequence owns a list of blocks (its block table) that
/// grows as it does, and returns them when it ends.
///
/// Each rank holds only its KV heads. Blocks are handed out one of two
/// ways, never both in one cache: by the cache itself (`reserve`, for
/// single-request generation, benchmarks and tests), or by rank 0's serving
/// scheduler, whose step plans name every sequence's blocks (`apply`; shared
/// prefix blocks may then appear in several tables). Either way all ranks
/// make the same decisions, so block tables agree across ranks.
public final class PagedKVCache {
    public let layerCount: Int
    public let blockSize: Int
    public let blockCount: Int
    /// Elements per position per layer: local KV heads × head_dim.
    public let kvWidth: Int
    /// How keys and values are stored.
    public let dtype: KVDType
    /// Each layer's pools, `dtype` elements in `FloatBuffer`s used as raw,
    /// 64-byte aligned memory (float32 caches are ordinary float arrays).
    let keys: [FloatBuffer]
    let values: [FloatBuffer]
    private var freeBlocks: [Int32]
    private(set) var tables: [Int: [Int32]] = [:]
    /// Tables come from step plans (`apply`): `reserve` only checks them.
    public private(set) var isPlanned = false

    public init(layerCount: Int, blockSize: Int, blockCount: Int, kvWidth: Int, node: Int?, dtype: KVDType = .f32) {
        precondition(blockSize > 0 && blockCount > 0)
        self.layerCount = layerCount
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.kvWidth = kvWidth
        self.dtype = dtype
        let bytes = blockSize * blockCount * kvWidth * dtype.byteSize
        let floats = (bytes + 3) / 4
        keys = (0..<layerCount).map { _ in FloatBuffer(count: floats, node: node) }
        values = (0..<layerCount).map { _ in FloatBuffer(count: floats, node: node) }
        freeBlocks = (0..<Int32(blockCount)).reversed()
    }

    public var freeBlockCount: Int { freeBlocks.count }
    /// Blocks in use: held by sequences (self-allocated), or listed in at
    /// least one table (planned).
    public var usedBlockCount: Int { isPlanned ? Set(tables.values.joined()).count : blockCount - freeBlocks.count }
    public var byteCount: Int { 2 * layerCount * blockSize * blockCount * kvWidth * dtype.byteSize }

    /// Layer `layer`'s key and value pools, as the attention kernels take them.
    func pools(layer: Int) -> (keys: UnsafeMutableRawPointer, values: UnsafeMutableRawPointer) {
        (UnsafeMutableRawPointer(keys[layer].pointer), UnsafeMutableRawPointer(values[layer].pointer))
    }

    /// Blocks that hold positions 0..<length of one sequence: the one place
    /// this is computed (the engine's cache sizing, the batch scheduler's
    /// reservations and the cache itself agree by calling it). Cannot
    /// overflow; 0 for an empty (or negative) length.
    public static func blocksNeeded(forLength length: Int, blockSize: Int) -> Int {
        precondition(blockSize > 0)
        return length <= 0 ? 0 : (length - 1) / blockSize + 1
    }

    public func blocksNeeded(forLength length: Int) -> Int { Self.blocksNeeded(forLength: length, blockSize: blockSize) }

    /// Ensures `sequence` has room for positions 0..<length.
    public func reserve(sequence: Int, length: Int) throws {
        var table = tables[sequence] ?? []
        let needed = blocksNeeded(forLength: length) - table.count
        if isPlanned && needed > 0 {
            throw ModelError.input("KV cache: the step plan gave sequence \(sequence) \(table.count) blocks of \(blockSize) positions, its batch reaches position \(length - 1)")
        }
        guard needed <= freeBlocks.count else {
            throw ModelError.input("KV cache full: sequence \(sequence) needs \(needed) more blocks of \(blockSize) positions, \(freeBlocks.count) free of \(blockCount)")
        }
        if needed > 0 { for _ in 0..<needed { table.append(freeBlocks.removeLast()) } }
        tables[sequence] = table
    }

    /// Returns a sequence's blocks to the pool (with planned tables, just
    /// drops the table: rank 0's scheduler keeps the free list).
    public func release(sequence: Int) {
        if let table = tables.removeValue(forKey: sequence), !isPlanned { freeBlocks += table.reversed() }
    }

    /// Applies a step plan's block decisions: drops the `releases`' tables,
    /// then appends each allocation's blocks to its sequence's table. The
    /// first call turns the cache over to the plans for good (it must hold
    /// no self-allocated table then).
    public func apply(releases: [Int], allocations: [(sequence: Int, blocks: [Int32])]) throws {
        if !isPlanned {
            guard tables.isEmpty else {
                throw ModelError.input("KV cache: step plans cannot take over a cache that holds \(tables.count) sequences of its own")
            }
            isPlanned = true
        }
        for sequence in releases { tables.removeValue(forKey: sequence) }
        for (sequence, blocks) in allocations {
            if let bad = blocks.first(where: { $0 < 0 || Int($0) >= blockCount }) {
                throw ModelError.input("KV cache: the step plan gives sequence \(sequence) block \(bad) of \(blockCount)")
            }
            tables[sequence, default: []] += blocks
        }
    }

    /// `sequence`'s block table (nil: it holds none).
    public func table(of sequence: Int) -> [Int32]? { tables[sequence] }

    /// Sequences holding blocks (planned tables: every rank should hold the
    /// same, and none once every request has ended).
    public var sequenceCount: Int { tables.count }

    public func capacity(of sequence: Int) -> Int { (tables[sequence]?.count ?? 0) * blockSize }
}
