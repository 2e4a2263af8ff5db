import WeftModel

/// How one forward pass runs its two reductions per layer (after attention's
/// output projection and after the MLP's, plus the embedding's): a value that
/// can only describe a pass the runner can run, so `DecoderRunner.forward`
/// has no combination to reject at run time. The user's choice (`CommMode`,
/// with `auto`) is resolved into one of these per batch.
public enum Schedule: Sendable, Equatable {
    /// `MPI_Allreduce` of every row, then residual + RMSNorm of every row on every rank.
    case baseline
    /// The fused collective (reduce-scatter, residual + RMSNorm of this rank's
    /// rows, all-gather) over the whole batch.
    case fused
    /// The batch cut into chunks, each chunk's compute running while the
    /// other chunks' fused collectives are in flight (TokenWeave's stagger).
    case overlap(Cuts)
    /// No reductions at all: every rank normalizes its own partial sums, so
    /// results are wrong on more than one rank. It is the compute-only ideal
    /// benchmarks measure the others against; `BenchmarkOnly` keeps serving
    /// code from ever constructing it.
    case skipReductions(BenchmarkOnly)

    /// Whether the pass needs the fused collective.
    public var usesFusedCollective: Bool {
        switch self {
        case .fused, .overlap: return true
        case .baseline, .skipReductions: return false
        }
    }

    /// Where a batch of `rows` tokens is cut into chunks: consecutive,
    /// non-empty row ranges covering the batch, at least two of them. The
    /// initializers refuse anything else, so a `Cuts` in hand is always one
    /// the stagger can run (for a batch of `rows` tokens).
    public struct Cuts: Sendable, Equatable, CustomStringConvertible {
        /// The chunks' rows, in batch order.
        public let chunks: [Range<Int>]

        /// Cuts a batch of `rows` tokens at `cuts`, the first rows of chunks
        /// 2…K: at least one, increasing, each inside 1..<rows.
        public init(_ cuts: [Int], rows: Int) throws {
            guard !cuts.isEmpty, cuts.allSatisfy({ $0 > 0 && $0 < rows }),
                  zip(cuts, cuts.dropFirst()).allSatisfy({ $0 < $1 }) else {
                throw ModelError.input("an overlapped pass needs increasing cuts inside the batch of \(rows) tokens, got \(cuts)")
            }
            let bounds = [0] + cuts + [rows]
            chunks = zip(bounds, bounds.dropFirst()).map { $0 ..< $1 }
        }

        /// Chunks of these row counts, in order: at least two, each at least one row.
        public init(chunkRows: [Int]) throws {
            guard chunkRows.count >= 2, chunkRows.allSatisfy({ $0 > 0 }) else {
                throw ModelError.input("an overlapped pass needs at least two chunks of at least one token, got \(chunkRows)")
            }
            var start = 0
            chunks = chunkRows.map { count in
                defer { start += count }
                return start ..< start + count
            }
        }

        /// Rows of the batch these cuts were made for.
        public var rows: Int { chunks[chunks.count - 1].upperBound }
        /// The first rows of chunks 2…K.
        public var cuts: [Int] { chunks.dropFirst().map(\.lowerBound) }
        public var description: String { cuts.map(String.init).joined(separator: ",") }
    }
}

/// The token of `Schedule.skipReductions`: only code that imports the
/// `Benchmarks` SPI (`@_spi(Benchmarks) import …`), i.e. the benchmarks and
/// tests, can create one, so a serving path cannot be configured into
/// returning wrong logits.
public struct BenchmarkOnly: Sendable, Equatable {
    @_spi(Benchmarks) public init() {}
}

/// How each layer's reductions run, as a user or embedder chooses it
/// (`EngineConfiguration.commMode`): resolved for every batch into the
/// `Schedule` the pass runs (`schedule(for:planner:)`), since `auto`, and
/// `overlap`'s cuts, depend on the batch and the calibrated planner. Skipping
/// the reductions is not a choice here: only benchmarks may
/// (`Schedule.skipReductions`).
public enum CommMode: String, Sendable, CaseIterable {
    /// Every reduction an `MPI_Allreduce`, then residual + RMSNorm of every row (`Schedule.baseline`).
    case baseline
    /// The fused collective over the whole batch (`Schedule.fused`).
    case fused
    /// Always overlapped, at the planner's best cuts whether or not they pay
    /// (fused when the batch is too small to cut).
    case overlap
    /// Chosen per batch by the cost model: overlapped when the planner predicts a gain, fused otherwise.
    case auto

    /// This choice resolved for a batch at `positions` (the same on every
    /// rank: every rank plans with rank 0's costs); nil when the mode needs
    /// cuts and there are none (no planner, or a batch too small to cut), where
    /// the engine runs the batch fused.
    public func schedule(for positions: [Int32], planner: TokenSplitPlanner?) -> Schedule? {
        switch self {
        case .baseline: return .baseline
        case .fused: return .fused
        case .overlap: return planner?.overlapSchedule(positions: positions)
        case .auto: return planner?.schedule(positions: positions)
        }
    }
}
