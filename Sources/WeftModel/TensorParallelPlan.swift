import WeftTensor

/// How one model is split across `size` ranks, Megatron style:
/// q/k/v and gate/up by output rows (attention by heads, KV heads following
/// the query heads that use them), o and down by input columns, embedding and
/// LM head by vocabulary rows.
public struct TensorParallelPlan: Sendable, Equatable {
    /// How query heads are shared out when the degree does not divide them.
    public enum HeadSplit: String, Sendable, Equatable, CaseIterable {
        /// Query heads as evenly as possible (9 heads on 2 ranks: 5 + 4); a KV
        /// head whose group straddles two ranks is held (and its k/v rows
        /// computed) on both. The MLP splits evenly. Each layer has two
        /// barriers (the collectives after attention and after the MLP), so a
        /// layer takes the slowest rank's attention plus the slowest rank's
        /// MLP: this split makes each of the two as short as it can be.
        case even
        /// Whole KV groups per rank while the degree is at most the KV head
        /// count (9 heads / 3 KV heads on 2 ranks: 6 + 3), so no KV head is
        /// held twice; beyond it, as `even`. The MLP rows are then shared
        /// unevenly so that every rank holds the same number of weights per
        /// layer (attention + MLP).
        case kvGroups = "kv-groups"
    }

    /// How a mixture-of-experts model's routed experts are shared out.
    public enum MoEPlacement: String, Sendable, Equatable, CaseIterable {
        /// Tensor-parallel experts: every rank holds 1/N of every expert's
        /// intermediate range, like a dense MLP, and computes its slice of
        /// every chosen expert.
        case tensorParallel = "tp"
        /// Expert parallelism: each rank holds whole experts (an even,
        /// contiguous share) and computes only its own experts' contributions;
        /// the reduction after the MoE sums them, as it sums partial products.
        case expertParallel = "ep"
    }

    /// The split of query heads this plan was made with.
    public let headSplit: HeadSplit
    /// The placement of routed experts (meaningful for MoE models only).
    public let moePlacement: MoEPlacement
    /// Routed experts this rank holds: all of them with tensor-parallel
    /// experts, its own share with expert parallelism (empty for dense models).
    public let experts: Range<Int>
    /// Rows of each held expert's gate/up (columns of its down) on this rank:
    /// a slice with tensor-parallel experts, the whole expert with expert parallelism.
    public let expertIntermediate: Range<Int>
    /// Rows of the shared expert's gate/up on this rank (always tensor-parallel).
    public let sharedExpertIntermediate: Range<Int>
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
    public init(config: ModelConfig, rank: Int, size: Int, intermediateAlignment: Int = 1,
                headSplit: HeadSplit = .even, moePlacement: MoEPlacement = .tensorParallel) throws {
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
        self.headSplit = headSplit
        self.intermediateAlignment = max(1, intermediateAlignment)
        let allHeads = Self.headRanges(config: config, size: size, split: headSplit)
        heads = allHeads[rank]
        let group = config.headCount / config.kvHeadCount
        func kv(_ h: Range<Int>) -> Range<Int> { h.lowerBound / group ..< (h.upperBound - 1) / group + 1 }
        kvHeads = kv(heads)
        if headSplit == .kvGroups {
            // Weights per layer in units of hidden-size rows: q and o one row
            // per head dimension each, k and v one per KV head dimension each,
            // gate, up and down one each per intermediate row.
            let attention = allHeads.map { Double((2 * $0.count + 2 * kv($0).count) * config.headDim) }
            intermediate = Self.balancedSplit(config.intermediateSize, weightPerItem: 3, fixed: attention,
                                              index: rank, alignment: self.intermediateAlignment)
        } else {
            intermediate = Self.alignedSplit(config.intermediateSize, parts: size, index: rank, alignment: intermediateAlignment)
        }
        vocabulary = Self.evenSplit(config.vocabularySize, parts: size, index: rank)
        self.moePlacement = moePlacement
        if let moe = config.moe {
            switch moePlacement {
            case .tensorParallel:
                guard moe.expertIntermediateSize >= size else {
                    throw ModelError.parallelism("tensor-parallel degree \(size) exceeds the experts' intermediate size \(moe.expertIntermediateSize): use expert parallelism")
                }
                experts = 0..<moe.expertCount
                expertIntermediate = Self.alignedSplit(moe.expertIntermediateSize, parts: size, index: rank, alignment: self.intermediateAlignment)
            case .expertParallel:
                guard moe.expertCount >= size else {
                    throw ModelError.parallelism("expert parallelism at degree \(size) needs at least \(size) experts; the model has \(moe.expertCount)")
                }
                experts = Self.heldExperts(moe.expertCount, size: size, rank: rank)
                expertIntermediate = 0..<moe.expertIntermediateSize
            }
            let shared = moe.sharedExpertIntermediateSize
            guard shared == 0 || shared >= size else {
                throw ModelError.parallelism("tensor-parallel degree \(size) exceeds the shared expert's intermediate size \(shared)")
            }
            sharedExpertIntermediate = Self.alignedSplit(shared, parts: size, index: rank, alignment: self.intermediateAlignment)
        } else {
            experts = 0..<0
            expertIntermediate = 0..<0
            sharedExpertIntermediate = 0..<0
        }
    }

    /// The experts rank `rank` of `size` holds under expert parallelism: an
    /// even, contiguous share (the one rule `experts`, `owner(ofExpert:)` and
    /// `ExpertLoad.perRank` use).
    public static func heldExperts(_ expertCount: Int, size: Int, rank: Int) -> Range<Int> {
        evenSplit(expertCount, parts: size, index: rank)
    }

    /// The rank holding routed expert `expert` under expert parallelism; nil
    /// with tensor-parallel experts (every rank holds a slice of each).
    public func owner(ofExpert expert: Int, expertCount: Int) -> Int? {
        guard moePlacement == .expertParallel else { return nil }
        return (0..<size).first { Self.heldExperts(expertCount, size: size, rank: $0).contains(expert) }
    }

    /// Every rank's query heads under `split`.
    static func headRanges(config: ModelConfig, size: Int, split: HeadSplit) -> [Range<Int>] {
        let group = config.headCount / config.kvHeadCount
        return (0..<size).map { r in
            if split == .kvGroups && size <= config.kvHeadCount {
                let groups = evenSplit(config.kvHeadCount, parts: size, index: r)
                return groups.lowerBound * group ..< groups.upperBound * group
            }
            return evenSplit(config.headCount, parts: size, index: r)
        }
    }

    /// Part `index` of `total` items (each weighing `weightPerItem`) shared so
    /// that every part's `fixed` load plus its items' weight is as equal as
    /// the `alignment` allows: water-filling (a part whose fixed load alone
    /// exceeds the level gets the minimum), every part at least one aligned
    /// unit, every start a multiple of `alignment` (the last part ends at
    /// `total`). Falls back to `evenSplit` when there are fewer units than parts.
    public static func balancedSplit(_ total: Int, weightPerItem: Double, fixed: [Double], index: Int, alignment: Int) -> Range<Int> {
        let parts = fixed.count
        let alignment = max(1, alignment)
        let units = (total + alignment - 1) / alignment
        guard units >= parts, parts > 0 else { return evenSplit(total, parts: parts, index: index) }
        // Fixed loads in units of one aligned item block.
        let load = fixed.map { $0 / (weightPerItem * Double(alignment)) }
        // Level L with Σ max(1, L - load_r) = units (monotone in L: bisect).
        func assigned(_ level: Double) -> Double { load.reduce(0) { $0 + max(1, level - $1) } }
        var low = load.min()!, high = load.max()! + Double(units)
        for _ in 0..<100 {
            let mid = (low + high) / 2
            if assigned(mid) < Double(units) { low = mid } else { high = mid }
        }
        let shares = load.map { max(1, high - $0) }
        // Cumulative rounding keeps the sum and every part ≥ 1 unit.
        var bounds = [0]
        var cumulative = 0.0
        for r in 0..<parts {
            cumulative += shares[r]
            let remaining = parts - r - 1
            let rounded = r == parts - 1 ? units : Int(cumulative.rounded())
            bounds.append(min(max(rounded, bounds[r] + 1), units - remaining))
        }
        return min(bounds[index] * alignment, total) ..< min(bounds[index + 1] * alignment, total)
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
