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

    public init(config: ModelConfig, rank: Int, size: Int) throws {
        guard size >= 1, rank >= 0, rank < size else {
            throw ModelError.parallelism("invalid rank \(rank) of \(size)")
        }
        guard config.headCount % size == 0 else {
            throw ModelError.parallelism("tensor-parallel degree \(size) does not divide num_attention_heads \(config.headCount); use a degree that divides it (\(Self.divisors(config.headCount).map(String.init).joined(separator: ", ")))")
        }
        guard config.intermediateSize >= size, config.vocabularySize >= size else {
            throw ModelError.parallelism("tensor-parallel degree \(size) exceeds intermediate_size \(config.intermediateSize) or vocab_size \(config.vocabularySize)")
        }
        self.rank = rank
        self.size = size
        let perRank = config.headCount / size
        heads = rank * perRank ..< (rank + 1) * perRank
        let group = config.headCount / config.kvHeadCount
        kvHeads = heads.lowerBound / group ..< (heads.upperBound - 1) / group + 1
        intermediate = Self.evenSplit(config.intermediateSize, parts: size, index: rank)
        vocabulary = Self.evenSplit(config.vocabularySize, parts: size, index: rank)
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
