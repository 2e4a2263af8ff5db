import WeftTensor

/// Keys and values of every layer in fixed-size blocks (paged), shared by
/// all sequences: a sequence owns a list of blocks (its block table) that
/// grows as it does, and returns them when it ends.
///
/// Each rank holds only its KV heads. All ranks make the same allocation
/// decisions from the same step plans, so block tables agree across ranks.
public final class PagedKVCache {
    public let layerCount: Int
    public let blockSize: Int
    public let blockCount: Int
    /// Floats per position per layer: local KV heads × head_dim.
    public let kvWidth: Int
    let keys: [FloatBuffer]
    let values: [FloatBuffer]
    private var freeBlocks: [Int32]
    private(set) var tables: [Int: [Int32]] = [:]

    public init(layerCount: Int, blockSize: Int, blockCount: Int, kvWidth: Int, node: Int?) {
        precondition(blockSize > 0 && blockCount > 0)
        self.layerCount = layerCount
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.kvWidth = kvWidth
        let floats = blockSize * blockCount * kvWidth
        keys = (0..<layerCount).map { _ in FloatBuffer(count: floats, node: node) }
        values = (0..<layerCount).map { _ in FloatBuffer(count: floats, node: node) }
        freeBlocks = (0..<Int32(blockCount)).reversed()
    }

    public var freeBlockCount: Int { freeBlocks.count }
    public var usedBlockCount: Int { blockCount - freeBlocks.count }
    public var byteCount: Int { 2 * layerCount * blockSize * blockCount * kvWidth * 4 }

    public func blocksNeeded(forLength length: Int) -> Int { (length + blockSize - 1) / blockSize }

    /// Ensures `sequence` has room for positions 0..<length.
    public func reserve(sequence: Int, length: Int) throws {
        var table = tables[sequence] ?? []
        let needed = blocksNeeded(forLength: length) - table.count
        guard needed <= freeBlocks.count else {
            throw ModelError.input("KV cache full: sequence \(sequence) needs \(needed) more blocks of \(blockSize) positions, \(freeBlocks.count) free of \(blockCount)")
        }
        if needed > 0 { for _ in 0..<needed { table.append(freeBlocks.removeLast()) } }
        tables[sequence] = table
    }

    /// Returns a sequence's blocks to the pool.
    public func release(sequence: Int) {
        if let table = tables.removeValue(forKey: sequence) { freeBlocks += table.reversed() }
    }

    public func capacity(of sequence: Int) -> Int { (tables[sequence]?.count ?? 0) * blockSize }
}
