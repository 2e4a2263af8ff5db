import WeftModel
// The runtime's API is spelled in WeftSchedule's types (EngineConfiguration's
// CommMode, Engine.schedule(for:)'s Schedule, Engine.runner): whoever imports
// the runtime gets them too.
@_exported import WeftSchedule

/// What every rank does in one engine step, decided by rank 0's scheduler and
/// broadcast to the others: drop the block tables of sequences that ended or
/// were preempted, give sequences the KV blocks they grow into (shared
/// prefix blocks included), run one flattened batch, or leave the engine
/// loop. All ranks apply the same plans in the same order, so their KV
/// caches and collectives stay in step; only rank 0 decides which block is
/// whose.
public struct StepPlan: Sendable, Equatable {
    /// Blocks a sequence appends to its table.
    public struct Allocation: Sendable, Equatable {
        public var sequence: Int
        public var blocks: [Int32]
    }

    /// Sequences whose block tables every rank drops first.
    public var releases: [Int] = []
    /// Then the blocks sequences append to their tables (in this order).
    public var allocations: [Allocation] = []
    /// The tokens to run (may be empty: a step that only frees blocks).
    public var batch = FlatBatch()
    /// Every rank leaves the engine loop after this step.
    public var stop = false

    public init(releases: [Int] = [], allocations: [Allocation] = [], batch: FlatBatch = FlatBatch(), stop: Bool = false) {
        self.releases = releases
        self.allocations = allocations
        self.batch = batch
        self.stop = stop
    }

    /// Adds `blocks` to what `sequence` appends this step.
    mutating func allocate(_ blocks: [Int32], to sequence: Int) {
        if let index = allocations.firstIndex(where: { $0.sequence == sequence }) {
            allocations[index].blocks += blocks
        } else {
            allocations.append(Allocation(sequence: sequence, blocks: blocks))
        }
    }

    /// Wire format: [stop, release count, releases…, allocation count,
    /// (sequence, block count, blocks…)…, batch encoding…].
    public func encoded() -> [Int32] {
        var out: [Int32] = [stop ? 1 : 0, Int32(releases.count)] + releases.map { Int32($0) }
        out.append(Int32(allocations.count))
        for allocation in allocations {
            out += [Int32(allocation.sequence), Int32(allocation.blocks.count)] + allocation.blocks
        }
        return out + batch.encoded()
    }

    public init(encoded: [Int32]) throws {
        var reader = encoded[...]
        func next(_ what: String) throws -> Int {
            guard let value = reader.popFirst(), value >= 0 else {
                throw RuntimeError.invalidInput("malformed step plan of \(encoded.count) integers: bad or missing \(what)")
            }
            return Int(value)
        }
        func take(_ count: Int, _ what: String) throws -> ArraySlice<Int32> {
            guard count <= reader.count else {
                throw RuntimeError.invalidInput("malformed step plan of \(encoded.count) integers: \(count) \(what) announced, \(reader.count) integers left")
            }
            defer { reader = reader.dropFirst(count) }
            return reader.prefix(count)
        }
        let flag = try next("stop flag")
        guard flag <= 1 else { throw RuntimeError.invalidInput("malformed step plan: stop flag \(flag)") }
        stop = flag == 1
        releases = try take(try next("release count"), "releases").map { Int($0) }
        if let bad = releases.first(where: { $0 < 0 }) { throw RuntimeError.invalidInput("step plan releases sequence \(bad)") }
        let allocationCount = try next("allocation count")
        guard allocationCount <= reader.count / 2 else {
            throw RuntimeError.invalidInput("malformed step plan: \(allocationCount) allocations in \(reader.count) integers")
        }
        for _ in 0..<allocationCount {
            let sequence = try next("allocated sequence")
            let blocks = Array(try take(try next("allocated block count"), "allocated blocks"))
            if let bad = blocks.first(where: { $0 < 0 }) { throw RuntimeError.invalidInput("step plan allocates block \(bad)") }
            allocations.append(Allocation(sequence: sequence, blocks: blocks))
        }
        batch = try FlatBatch(encoded: Array(reader))
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
