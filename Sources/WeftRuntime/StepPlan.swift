import WeftModel
// The runtime's API is spelled in WeftSchedule's types (EngineConfiguration's
// CommMode, Engine.schedule(for:)'s Schedule, Engine.runner): whoever imports
// the runtime gets them too.
@_exported import WeftSchedule

/// What every rank does in one engine step, decided by rank 0's scheduler and
/// broadcast to the others: free the KV blocks of sequences that ended, run
/// one flattened batch, or leave the engine loop. All ranks apply the same
/// plans in the same order, so their KV caches and collectives stay in step.
public struct StepPlan: Sendable, Equatable {
    /// Sequences whose KV blocks every rank frees before running the batch.
    public var releases: [Int] = []
    /// The tokens to run (may be empty: a step that only frees blocks).
    public var batch = FlatBatch()
    /// Every rank leaves the engine loop after this step.
    public var stop = false

    public init(releases: [Int] = [], batch: FlatBatch = FlatBatch(), stop: Bool = false) {
        self.releases = releases
        self.batch = batch
        self.stop = stop
    }

    /// Wire format: [stop, release count, releases…, batch encoding…].
    public func encoded() -> [Int32] {
        [stop ? 1 : 0, Int32(releases.count)] + releases.map { Int32($0) } + batch.encoded()
    }

    public init(encoded: [Int32]) throws {
        guard encoded.count >= 2, encoded[0] == 0 || encoded[0] == 1, encoded[1] >= 0,
              2 + Int(encoded[1]) <= encoded.count else {
            throw RuntimeError.invalidInput("malformed step plan of \(encoded.count) integers")
        }
        stop = encoded[0] == 1
        let count = Int(encoded[1])
        releases = encoded[2..<2 + count].map { Int($0) }
        if let bad = releases.first(where: { $0 < 0 }) { throw RuntimeError.invalidInput("step plan releases sequence \(bad)") }
        batch = try FlatBatch(encoded: Array(encoded[(2 + count)...]))
    }
}

/// The fuzzing entry point for the step-plan wire format (`weft-fuzz`): the
/// bytes as little-endian 32-bit integers. Decoding must throw or succeed,
/// never trap, and a decoded plan must survive its own wire format unchanged.
public enum StepPlanFuzz {
    public static func run(_ data: [UInt8]) {
        var integers: [Int32] = []
        integers.reserveCapacity(data.count / 4)
        var index = 0
        while index + 4 <= data.count {
            integers.append(Int32(bitPattern: UInt32(data[index]) | UInt32(data[index + 1]) << 8
                                  | UInt32(data[index + 2]) << 16 | UInt32(data[index + 3]) << 24))
            index += 4
        }
        guard let plan = try? StepPlan(encoded: integers) else { return }
        guard let again = try? StepPlan(encoded: plan.encoded()), again == plan else {
            fatalError("a decoded step plan does not survive its own wire format: \(integers)")
        }
    }
}
