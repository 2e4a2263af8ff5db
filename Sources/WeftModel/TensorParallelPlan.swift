import WeftTensor

/// How one model is split across `size` ranks, Megatron style:
/// q/k/v and gate/up by output rows (attention by heads, KV heads following
/// the query heads that use them), o and down by input columns, embedding and
/// LM head by vocabulary rows.
public struct TensorParallelPlan: Sendable, Equatable {
    public let rank: Int
    public let size: Int
    /// Query heads of this rank.
    public let heads: Range<Int>
    /// KV heads this rank needs: those its query heads attend with. When the
    /// degree exceeds the KV head count, neighbouring ranks hold the same KV
    /// heads (replication); otherwise each KV head lives on exactly one rank.
    public let kvHeads: Range<Int>
    /// Rows of gate/up (and columns of down) on this rank; may be uneven.
    public let intermediate: Range<Int>
    /// Vocabulary rows of the embedding and LM head on this rank; may be uneven.
    public let vocabulary: Range<Int>
    /// The alignment the intermediate range was split with.
    public let intermediateAlignment: Int

    /// - Parameter intermediateAlignment: the intermediate (MLP) range of every
    ///   rank starts at a multiple of this (the block size of a quantized
    ///   down_proj, whose columns split along K) when the size allows it.
    public init(config: ModelConfig, rank: Int, size: Int, intermediateAlignment: Int = 1) throws {
        guard size >= 1, rank >= 0, rank < size else {
            throw ModelError.parallelism("invalid rank \(rank) of \(size)")
        }
        guard size <= config.headCount else {
            throw ModelError.parallelism("tensor-parallel degree \(size) exceeds num_attention_heads \(config.headCount): every rank needs at least one attention head")
        }
        guard config.intermediateSize >= size, config.vocabularySize >= size else {
            throw ModelError.parallelism("tensor-parallel degree \(size) exceeds intermediate_size \(config.intermediateSize) or vocab_size \(config.vocabularySize)")
        }
        self.rank = rank
        self.size = size
        self.intermediateAlignment = max(1, intermediateAlignment)
        // Query heads as evenly as possible (uneven when the degree does not
        // divide them, e.g. 9 heads on 2 or 4 ranks); each rank holds the KV
        // heads its query heads use.
        heads = Self.evenSplit(config.headCount, parts: size, index: rank)
        let group = config.headCount / config.kvHeadCount
        kvHeads = heads.lowerBound / group ..< (heads.upperBound - 1) / group + 1
        intermediate = Self.alignedSplit(config.intermediateSize, parts: size, index: rank, alignment: intermediateAlignment)
        vocabulary = Self.evenSplit(config.vocabularySize, parts: size, index: rank)
    }

    /// Like `evenSplit`, but every range starts at a multiple of `alignment`
    /// (the last one ends at `total`); falls back to `evenSplit` when there
    /// are fewer aligned units than parts.
    public static func alignedSplit(_ total: Int, parts: Int, index: Int, alignment: Int) -> Range<Int> {
        guard alignment > 1 else { return evenSplit(total, parts: parts, index: index) }
        let units = (total + alignment - 1) / alignment
        guard units >= parts else { return evenSplit(total, parts: parts, index: index) }
        let u = evenSplit(units, parts: parts, index: index)
        return min(u.lowerBound * alignment, total) ..< min(u.upperBound * alignment, total)
    }

    /// The part `index` of `total` items split into `parts` near-equal ranges
    /// (earlier parts take the remainder).
    public static func evenSplit(_ total: Int, parts: Int, index: Int) -> Range<Int> {
        WeftTensor.evenSplit(total, parts: parts, index: index)
    }

    static func divisors(_ n: Int) -> [Int] { (1...n).filter { n % $0 == 0 } }

    /// The local KV head (index into `kvHeads`) each local query head uses.
    public func kvHeadOfLocalHead(config: ModelConfig) -> [Int32] {
        let group = config.headCount / config.kvHeadCount
        return heads.map { Int32($0 / group - kvHeads.lowerBound) }
    }
}
