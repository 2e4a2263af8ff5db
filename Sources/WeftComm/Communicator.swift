import CKernels
import CMPI
import Foundation

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
        return Communicator(comm: comm, rank: rank, size: size, thread: thread)
    }

    /// One comm thread per process: MPI may be initialized only once.
    static let sharedThread = CommThread(name: "weft-comm")

    init(comm: MPI_Comm, rank: Int, size: Int, thread: CommThread) {
        self.comm = comm
        self.rank = rank
        self.size = size
        self.thread = thread
    }

    /// Shuts MPI down; call once, on every rank, after the last collective.
    public static func finalize() {
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

    // MARK: Blocking collectives (run on the comm thread; the caller waits)

    /// Sums `count` floats element-wise across ranks, in place.
    public func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws {
        guard size > 1, count > 0 else { return }
        let comm = self.comm
        let pointer = SendablePointer(data)
        try thread.run {
            try check(MPI_Allreduce(CMPI_IN_PLACE(), pointer.raw, Int32(count), CMPI_FLOAT(), CMPI_SUM(), comm), "MPI_Allreduce")
        }
    }

    public func barrier() throws {
        let comm = self.comm
        try thread.run { try check(MPI_Barrier(comm), "MPI_Barrier") }
    }

    /// Broadcasts 32-bit integers from `root` (the receiving array is resized).
    public func broadcast(_ values: inout [Int32], root: Int = 0) throws {
        guard size > 1 else { return }
        let comm = self.comm, isRoot = rank == root
        let input = values
        values = try thread.run { () throws -> [Int32] in
            var values = input
            var count = Int64(values.count)
            try check(MPI_Bcast(&count, 1, CMPI_INT64(), Int32(root), comm), "MPI_Bcast")
            if !isRoot { values = [Int32](repeating: 0, count: Int(count)) }
            if count > 0 {
                try check(MPI_Bcast(&values, Int32(count), CMPI_INT32(), Int32(root), comm), "MPI_Bcast")
            }
            return values
        }
    }

    /// Broadcasts like `broadcast(_:root:)`, for a receiver that may wait a
    /// long time (a serving rank idle between requests): the length travels in
    /// an `MPI_Ibcast` the comm thread tests with growing sleeps, instead of a
    /// blocking `MPI_Bcast` that Open MPI would spin on at 100 % of a core.
    /// Every rank must call this (not `broadcast`) for the same message.
    public func broadcastWhenReady(_ values: inout [Int32], root: Int = 0) throws {
        guard size > 1 else { return }
        let comm = self.comm
        let header = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        defer { header.deallocate() }
        header.pointee = Int64(values.count)
        let headerPointer = SendablePointer(header)
        final class Box: @unchecked Sendable { var error: Error? }
        let box = Box()
        var request: MPI_Request? = CMPI_REQUEST_NULL()
        var started = false
        let work = thread.submit {
            do {
                if !started {
                    started = true
                    try check(MPI_Ibcast(headerPointer.raw, 1, CMPI_INT64(), Int32(root), comm, &request), "MPI_Ibcast")
                }
                var flag: Int32 = 0
                try check(MPI_Test(&request, &flag, CMPI_STATUS_IGNORE()), "MPI_Test")
                return flag != 0
            } catch {
                box.error = error
                return true
            }
        }
        thread.wait(work)
        if let error = box.error { throw error }
        let count = Int(header.pointee)
        guard count > 0 else { values = []; return }
        let input = rank == root ? values : [Int32](repeating: 0, count: count)
        values = try thread.run { () throws -> [Int32] in
            var values = input
            try check(MPI_Bcast(&values, Int32(count), CMPI_INT32(), Int32(root), comm), "MPI_Bcast")
            return values
        }
    }

    public func broadcast(_ string: inout String, root: Int = 0) throws {
        guard size > 1 else { return }
        var bytes = Array(string.utf8).map { Int32($0) }
        try broadcast(&bytes, root: root)
        if rank != root { string = String(decoding: bytes.map { UInt8(truncatingIfNeeded: $0) }, as: UTF8.self) }
    }

    public func allReduceMin(_ value: Int) throws -> Int { try allReduce(value, CMPI_MIN()) }
    public func allReduceMax(_ value: Int) throws -> Int { try allReduce(value, CMPI_MAX()) }

    private func allReduce(_ value: Int, _ op: MPI_Op) throws -> Int {
        let comm = self.comm
        return try thread.run {
            var v = Int64(value), result = Int64(0)
            try check(MPI_Allreduce(&v, &result, 1, CMPI_INT64(), op, comm), "MPI_Allreduce")
            return Int(result)
        }
    }

    /// Gathers each rank's `local` floats at `root`, concatenated in rank order
    /// (counts may differ per rank). Returns the concatenation on root, [] elsewhere.
    public func gather(_ local: UnsafePointer<Float>, count: Int, root: Int = 0) throws -> [Float] {
        if size == 1 { return Array(UnsafeBufferPointer(start: local, count: count)) }
        let comm = self.comm, size = self.size, isRoot = rank == root
        let pointer = SendablePointer(UnsafeMutablePointer(mutating: local))
        return try thread.run {
            var myCount = Int32(count)
            var counts = [Int32](repeating: 0, count: size)
            try check(MPI_Gather(&myCount, 1, CMPI_INT32(), &counts, 1, CMPI_INT32(), Int32(root), comm), "MPI_Gather")
            var displacements = [Int32](repeating: 0, count: size)
            if isRoot { for i in 1..<size { displacements[i] = displacements[i - 1] + counts[i - 1] } }
            let total = isRoot ? Int(counts.reduce(0, +)) : 0
            var result = [Float](repeating: 0, count: total)
            try result.withUnsafeMutableBufferPointer { out in
                try check(MPI_Gatherv(pointer.raw, myCount, CMPI_FLOAT(), out.baseAddress, &counts, &displacements,
                                      CMPI_FLOAT(), Int32(root), comm), "MPI_Gatherv")
            }
            return result
        }
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
        let firstFailing = try allReduceMin(failed ? rank : size)
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
    /// A failure every rank agreed on (see `agree`): the failing rank and its message.
    case failedOnRank(Int, String)
    /// A peer stopped answering inside a collective.
    case peerTimeout(rank: Int, seconds: Double, collective: String)

    public var description: String {
        switch self {
        case .mpi(let call, let code):
            var buffer = [CChar](repeating: 0, count: 512)
            var length: Int32 = 0
            MPI_Error_string(Int32(code), &buffer, &length)
            return "\(call) failed: \(String(cString: buffer)) (code \(code))"
        case .unsupported(let message): return message
        case .failedOnRank(_, let message): return message
        case .peerTimeout(let rank, let seconds, let collective):
            return "rank \(rank) did not reach \(collective) within \(Int(seconds)) s (it may have died); giving up"
        }
    }
}
