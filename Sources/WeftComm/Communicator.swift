import CKernels
import CMPI
import Foundation
import WeftTensor

/// The ranks of one Weft job and the collectives the model needs.
///
/// MPI itself lives on the communicator's own thread (`CommThread`): every
/// method here hands its MPI calls to that thread and waits, and the
/// nonblocking ones (`submit…`) return a handle to wait on later. Every rank
/// must issue the same collectives in the same order — the step plan
/// guarantees it. Deliberately not `Sendable`: one engine loop owns it.
public final class Communicator {
    public let rank: Int
    public let size: Int
    let comm: MPI_Comm
    let thread: CommThread
    let monitor: PeerMonitor
    /// Longest wait on a peer, seconds: past it the rank finds out which peer
    /// is at fault and the wait throws (see `PeerMonitor`). Every rank should
    /// use the same value.
    public var peerTimeout: Double = 120 {
        didSet { if !(peerTimeout > 0) || !peerTimeout.isFinite { peerTimeout = oldValue } }
    }

    /// Starts the comm thread, initializes MPI on it and returns the world
    /// communicator. Works without `mpirun` too (a singleton job of one rank).
    public static func world() throws -> Communicator {
        let thread = sharedThread
        let (comm, rank, size) = try thread.run { () throws -> (MPI_Comm, Int, Int) in
            if !isInitialized {
                var provided: Int32 = 0
                let rc = MPI_Init_thread(nil, nil, CMPI_THREAD_FUNNELED(), &provided)
                guard rc == CMPI_SUCCESS() else { throw CommError.mpi("MPI_Init_thread", Int(rc)) }
                guard provided >= CMPI_THREAD_FUNNELED() else {
                    throw CommError.unsupported("MPI provides thread level \(provided); Weft needs MPI_THREAD_FUNNELED (all MPI calls on its comm thread)")
                }
                // Errors come back as codes, to be reported with the call's name.
                MPI_Comm_set_errhandler(CMPI_COMM_WORLD(), CMPI_ERRORS_RETURN())
            }
            var r: Int32 = 0, s: Int32 = 0
            try check(MPI_Comm_rank(CMPI_COMM_WORLD(), &r), "MPI_Comm_rank")
            try check(MPI_Comm_size(CMPI_COMM_WORLD(), &s), "MPI_Comm_size")
            return (CMPI_COMM_WORLD(), Int(r), Int(s))
        }
        let monitor = try sharedMonitor(rank: rank, size: size)
        return Communicator(comm: comm, rank: rank, size: size, thread: thread, monitor: monitor)
    }

    /// The process's peer monitor, on a duplicate of the world communicator
    /// (made once: MPI_Comm_dup is itself a collective).
    private static func sharedMonitor(rank: Int, size: Int) throws -> PeerMonitor {
        let thread = sharedThread
        return try thread.run { () throws -> PeerMonitor in
            if let monitor = monitorState.monitor { return monitor }
            var control: MPI_Comm? = nil
            try check(MPI_Comm_dup(CMPI_COMM_WORLD(), &control), "MPI_Comm_dup")
            let monitor = PeerMonitor(comm: control!, rank: rank, size: size)
            monitorState.monitor = monitor
            if size > 1 { thread.service = { monitor.service() } }
            return monitor
        }
    }

    private final class MonitorState: @unchecked Sendable {
        var monitor: PeerMonitor?   // comm thread only
        let lock = NSLock()
        var peerFailed = false
    }
    private static let monitorState = MonitorState()

    /// Records that a peer failed: MPI can no longer be shut down collectively
    /// (`finalize` and window frees would wait for that peer forever).
    static func markPeerFailure() {
        monitorState.lock.lock()
        monitorState.peerFailed = true
        monitorState.lock.unlock()
    }

    /// Whether this process saw a peer fail (then `finalize` skips MPI_Finalize).
    public static var hasPeerFailure: Bool {
        monitorState.lock.lock()
        defer { monitorState.lock.unlock() }
        return monitorState.peerFailed
    }

    /// One comm thread per process: MPI may be initialized only once.
    static let sharedThread = CommThread(name: "weft-comm")

    init(comm: MPI_Comm, rank: Int, size: Int, thread: CommThread, monitor: PeerMonitor) {
        self.comm = comm
        self.rank = rank
        self.size = size
        self.thread = thread
        self.monitor = monitor
    }

    /// Shuts MPI down; call once, on every rank, after the last collective.
    /// After a peer failed it does nothing (MPI_Finalize would wait for the
    /// failed peer); the process then just exits.
    public static func finalize() {
        guard !hasPeerFailure else { return }
        _ = try? sharedThread.run {
            var finalized: Int32 = 0
            MPI_Finalized(&finalized)
            if isInitialized && finalized == 0 { MPI_Finalize() }
        }
    }

    /// Ends every rank of the job at once (used when ranks can no longer agree).
    public static func abort(code: Int32) -> Never {
        MPI_Abort(CMPI_COMM_WORLD(), code)
        exit(code)
    }

    /// Whether MPI_Init has run in this process (MPI keeps that state itself).
    static var isInitialized: Bool {
        var flag: Int32 = 0
        MPI_Initialized(&flag)
        return flag != 0
    }

    public var isRoot: Bool { rank == 0 }

    /// Pins the comm thread to one CPU (a core set aside for communication).
    public func pinCommThread(to cpu: Int) {
        _ = try? thread.run { weft_pin_current_thread(Int32(cpu)) }
    }

    public var processorName: String {
        (try? thread.run {
            var buffer = [CChar](repeating: 0, count: Int(CMPI_MAX_PROCESSOR_NAME()) + 1)
            var length: Int32 = 0
            MPI_Get_processor_name(&buffer, &length)
            return String(cString: buffer)
        }) ?? "unknown"
    }

    // MARK: Collectives (run on the comm thread; the caller waits)
    //
    // Every collective is a nonblocking MPI call that the comm thread tests
    // until it completes, so no wait on a peer is unbounded: past
    // `peerTimeout` seconds the peer monitor finds out which rank is at fault
    // (see `PeerMonitor`) and the wait throws.

    /// Starts a nonblocking collective with `start` and waits for it. A
    /// `patient` wait (a rank idle until the next step plan, ranks loading at
    /// different speeds) goes on past the timeout while every peer answers.
    func collective(_ what: String, patient: Bool = false, start: @escaping () throws -> MPI_Request?) throws {
        let monitor = self.monitor, timeout = peerTimeout
        let sequence = monitor.enter()
        final class Box: @unchecked Sendable { var error: Error? }
        let box = Box()
        var request: MPI_Request? = CMPI_REQUEST_NULL()
        var started = false
        var deadline = Date.distantFuture
        let work = thread.submit {
            do {
                if let failure = monitor.reportedFailure { throw failure }
                if !started {
                    started = true
                    request = try start()
                    deadline = Date().addingTimeInterval(timeout)
                }
                var flag: Int32 = 0
                try check(MPI_Test(&request, &flag, CMPI_STATUS_IGNORE()), "MPI_Test")
                if flag != 0 { return true }
                if Date() > deadline {
                    try monitor.diagnose(sequence: sequence, what: what, timeout: timeout, patient: patient)
                    deadline = Date().addingTimeInterval(timeout)
                }
                return false
            } catch {
                box.error = error
                return true
            }
        }
        thread.wait(work)
        if let error = box.error { throw error }
    }

    /// Sums `count` floats element-wise across ranks, in place.
    public func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws {
        guard size > 1, count > 0 else { return }
        guard let count32 = Int32(exactly: count) else { throw CommError.unsupported("all-reduce of \(count) floats exceeds MPI's count range") }
        let comm = self.comm
        let pointer = SendablePointer(data)
        try collective("MPI_Iallreduce") {
            var request: MPI_Request? = nil
            try check(MPI_Iallreduce(CMPI_IN_PLACE(), pointer.raw, count32, CMPI_FLOAT(), CMPI_SUM(), comm, &request), "MPI_Iallreduce")
            return request
        }
    }

    public func barrier() throws {
        guard size > 1 else { return }
        let comm = self.comm
        try collective("MPI_Ibarrier") {
            var request: MPI_Request? = nil
            try check(MPI_Ibarrier(comm, &request), "MPI_Ibarrier")
            return request
        }
    }

    /// Broadcasts `count` values of `type` at `buffer` from `root`.
    private func broadcastBuffer(_ buffer: UnsafeMutableRawPointer, count: Int, type: MPI_Datatype, root: Int,
                                 what: String, patient: Bool = false) throws {
        guard let count32 = Int32(exactly: count) else { throw CommError.unsupported("broadcast of \(count) values exceeds MPI's count range") }
        let comm = self.comm
        let pointer = SendablePointer(buffer.assumingMemoryBound(to: UInt8.self))
        try collective(what, patient: patient) {
            var request: MPI_Request? = nil
            try check(MPI_Ibcast(pointer.raw, count32, type, Int32(root), comm, &request), "MPI_Ibcast")
            return request
        }
    }

    /// Broadcasts 32-bit integers from `root` (the receiving array is resized).
    /// `patient`: the receivers may wait for the root as long as it answers
    /// (a serving rank idle until the next step plan).
    public func broadcast(_ values: inout [Int32], root: Int = 0, patient: Bool = false) throws {
        guard size > 1 else { return }
        let header = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        defer { header.deallocate() }
        header.pointee = Int64(values.count)
        try broadcastBuffer(header, count: 1, type: CMPI_INT64(), root: root, what: "the broadcast of a message's length from rank \(root)",
                            patient: patient)
        guard header.pointee >= 0, header.pointee <= Int64(Int32.max) else {
            throw CommError.unsupported("rank \(root) broadcast a message of \(header.pointee) values")
        }
        let count = Int(header.pointee)
        guard count > 0 else { values = []; return }
        if rank != root { values = [Int32](repeating: 0, count: count) }
        let payload = UnsafeMutablePointer<Int32>.allocate(capacity: count)
        defer { payload.deallocate() }
        if rank == root { payload.update(from: values, count: count) }
        try broadcastBuffer(payload, count: count, type: CMPI_INT32(), root: root, what: "the broadcast of a message from rank \(root)")
        if rank != root { values = Array(UnsafeBufferPointer(start: payload, count: count)) }
    }

    /// Broadcasts like `broadcast(_:root:)`, for a receiver that may wait a
    /// long time (a serving rank idle between requests): the comm thread
    /// tests the nonblocking broadcast with growing sleeps instead of spinning
    /// at 100 % of a core, and waits as long as the root answers pings.
    public func broadcastWhenReady(_ values: inout [Int32], root: Int = 0) throws {
        try broadcast(&values, root: root, patient: true)
    }

    public func broadcast(_ string: inout String, root: Int = 0) throws {
        guard size > 1 else { return }
        var bytes = Array(string.utf8).map { Int32($0) }
        try broadcast(&bytes, root: root)
        if rank != root { string = String(decoding: bytes.map { UInt8(truncatingIfNeeded: $0) }, as: UTF8.self) }
    }

    public func allReduceMin(_ value: Int, patient: Bool = false) throws -> Int { try allReduce(value, CMPI_MIN(), "a minimum", patient: patient) }
    public func allReduceMax(_ value: Int) throws -> Int { try allReduce(value, CMPI_MAX(), "a maximum", patient: false) }

    private func allReduce(_ value: Int, _ op: MPI_Op, _ what: String, patient: Bool) throws -> Int {
        guard size > 1 else { return value }
        let comm = self.comm
        let buffer = UnsafeMutablePointer<Int64>.allocate(capacity: 2)
        defer { buffer.deallocate() }
        buffer[0] = Int64(value)
        let pointer = SendablePointer(buffer)
        try collective("the all-reduce of \(what)", patient: patient) {
            var request: MPI_Request? = nil
            try check(MPI_Iallreduce(pointer.raw, pointer.raw + 1, 1, CMPI_INT64(), op, comm, &request), "MPI_Iallreduce")
            return request
        }
        return Int(buffer[1])
    }

    /// Gathers each rank's `local` floats at `root`, concatenated in rank order
    /// (counts may differ per rank). Returns the concatenation on root, [] elsewhere.
    public func gather(_ local: UnsafePointer<Float>, count: Int, root: Int = 0) throws -> [Float] {
        if size == 1 { return Array(UnsafeBufferPointer(start: local, count: count)) }
        return try gatherv(local, count: count, type: CMPI_FLOAT(), root: root, what: "rows").values
    }

    /// Gathers each rank's bytes at `root` (lengths may differ): one array per
    /// rank on root, [] elsewhere.
    public func gatherBytes(_ local: [UInt8], root: Int = 0) throws -> [[UInt8]] {
        if size == 1 { return [local] }
        let (values, counts) = try local.withUnsafeBufferPointer { buffer in
            try gatherv(buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!, count: buffer.count, type: CMPI_BYTE(), root: root, what: "bytes")
        }
        guard rank == root else { return [] }
        var result: [[UInt8]] = [], offset = 0
        for count in counts {
            result.append(Array(values[offset ..< offset + count]))
            offset += count
        }
        return result
    }

    /// MPI_Igatherv of `count` values of `type` from every rank: the
    /// concatenation and each rank's count on root, ([], []) elsewhere.
    private func gatherv<T>(_ local: UnsafePointer<T>, count: Int, type: MPI_Datatype, root: Int,
                            what: String) throws -> (values: [T], counts: [Int]) {
        guard let myCount = Int32(exactly: count) else { throw CommError.unsupported("gather of \(count) \(what) exceeds MPI's count range") }
        let comm = self.comm, size = self.size, isRoot = rank == root
        let counts = UnsafeMutablePointer<Int32>.allocate(capacity: size + 1)
        let displacements = UnsafeMutablePointer<Int32>.allocate(capacity: size)
        defer { counts.deallocate(); displacements.deallocate() }
        counts[size] = myCount
        let countsPointer = SendablePointer(counts)
        try collective("the gather of counts at rank \(root)") {
            var request: MPI_Request? = nil
            try check(MPI_Igather(countsPointer.raw + size, 1, CMPI_INT32(), countsPointer.raw, 1, CMPI_INT32(), Int32(root), comm, &request),
                      "MPI_Igather")
            return request
        }
        var total = 0
        if isRoot {
            for i in 0..<size {
                guard counts[i] >= 0 else { throw CommError.unsupported("rank \(i) announced a gather of \(counts[i]) \(what)") }
                displacements[i] = Int32(clamping: total)
                total += Int(counts[i])
            }
            guard total <= Int(Int32.max) else { throw CommError.unsupported("gather of \(total) \(what) exceeds MPI's count range") }
        }
        let result = UnsafeMutablePointer<T>.allocate(capacity: max(total, 1))
        defer { result.deallocate() }
        let input = SendablePointer(UnsafeMutablePointer(mutating: local)), output = SendablePointer(result)
        let displacementsPointer = SendablePointer(displacements)
        try collective("the gather of \(what) at rank \(root)") {
            var request: MPI_Request? = nil
            try check(MPI_Igatherv(input.raw, myCount, type, output.raw, countsPointer.raw, displacementsPointer.raw,
                                   type, Int32(root), comm, &request), "MPI_Igatherv")
            return request
        }
        guard isRoot else { return ([], []) }
        return (Array(UnsafeBufferPointer(start: result, count: total)), (0..<size).map { Int(counts[$0]) })
    }

    // MARK: Agreeing on failure

    /// Runs `body` on every rank and makes all ranks agree on its outcome: if
    /// it threw on any rank, every rank throws `CommError.failedOnRank` with
    /// the message of the lowest failing rank (so every rank can exit non-zero
    /// with the same message, and none is left waiting in a collective for a
    /// rank that gave up). With one rank the error is rethrown as it is.
    public func agree<T>(_ body: () throws -> T) throws -> T {
        var result: Result<T, Error>
        do { result = .success(try body()) } catch { result = .failure(error) }
        if size == 1 { return try result.get() }
        let failed: Bool
        if case .failure = result { failed = true } else { failed = false }
        let firstFailing = try allReduceMin(failed ? rank : size, patient: true)
        if firstFailing == size { return try result.get() }
        var message = ""
        if case .failure(let error) = result, rank == firstFailing { message = String(describing: error) }
        try broadcast(&message, root: firstFailing)
        throw CommError.failedOnRank(firstFailing, message)
    }
}

/// A raw pointer handed to the comm thread; the caller keeps the memory alive
/// until the work it was passed to has finished.
struct SendablePointer<T>: @unchecked Sendable {
    let raw: UnsafeMutablePointer<T>
    init(_ raw: UnsafeMutablePointer<T>) { self.raw = raw }
}

/// Throws `CommError.mpi` naming the MPI function when it did not succeed.
func check(_ rc: Int32, _ call: String) throws {
    guard rc == CMPI_SUCCESS() else { throw CommError.mpi(call, Int(rc)) }
}

public enum CommError: Error, CustomStringConvertible {
    case mpi(String, Int)
    case unsupported(String)
    /// A parameter of this library (e.g. `FusedResidualNorm(ranksPerNode:)`) and what is wrong with it.
    case invalidParameter(String, String)
    /// A failure every rank agreed on (see `agree`): the failing rank and its message.
    case failedOnRank(Int, String)
    /// A peer stopped answering inside a collective.
    case peerTimeout(rank: Int, seconds: Double, collective: String)
    /// Peers that did not answer the peer monitor's ping after a wait ran past the timeout.
    case peerUnresponsive(ranks: [Int], seconds: Double, collective: String)
    /// A peer that answers but has not reached the collective this rank waits in.
    case peerStalled(rank: Int, peerAt: Int64, selfAt: Int64, seconds: Double, collective: String)
    /// Another rank found a peer failure and told this one.
    case peerReported(rank: Int, message: String)

    /// Whether the error means a peer is gone or stuck (MPI cannot be shut
    /// down collectively any more; each rank reports it and exits on its own).
    public var isPeerFailure: Bool {
        switch self {
        case .peerTimeout, .peerUnresponsive, .peerStalled, .peerReported: return true
        default: return false
        }
    }

    private static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : String(format: "%.1f s", value)
    }

    public var description: String {
        switch self {
        case .invalidParameter(let name, let problem):
            return InvalidParameter(name, problem).description
        case .mpi(let call, let code):
            var buffer = [CChar](repeating: 0, count: 512)
            var length: Int32 = 0
            MPI_Error_string(Int32(code), &buffer, &length)
            return "\(call) failed: \(String(cString: buffer)) (code \(code))"
        case .unsupported(let message): return message
        case .failedOnRank(_, let message): return message
        case .peerTimeout(let rank, let seconds, let collective):
            return "rank \(rank) did not reach \(collective) within \(Self.seconds(seconds)) (it may have died); giving up"
        case .peerUnresponsive(let ranks, let seconds, let collective):
            let names = ranks.count == 1 ? "rank \(ranks[0])" : "ranks " + ranks.map(String.init).joined(separator: ", ")
            return "\(names) stopped responding (waited \(Self.seconds(seconds)) in \(collective), then no answer to a ping: stopped, dead or cut off); giving up"
        case .peerStalled(let rank, let peerAt, let selfAt, let seconds, let collective):
            return "rank \(rank) stopped advancing: it answers but is \(selfAt - peerAt) collective(s) behind after \(Self.seconds(seconds)) in \(collective); giving up"
        case .peerReported(let rank, let message):
            return "\(message) (reported by rank \(rank))"
        }
    }
}

extension CommError: ParameterError {
    public var parameter: InvalidParameter? {
        if case .invalidParameter(let name, let problem) = self { return InvalidParameter(name, problem) }
        return nil
    }
}
