import CKernels
import CMPI
import Foundation
import WeftTensor

/// How the fused collective moves data between ranks.
public enum CommTransport: String, Sendable, CaseIterable {
    /// MPI-3 shared-memory window: peers read each other's partial sums directly.
    case sharedMemory = "shm"
    /// `MPI_Ireduce_scatter_block` + fused residual/norm + `MPI_Iallgather` (between nodes).
    case mpi = "mpi"
    /// Several ranks on each of several nodes: shared memory inside each node,
    /// MPI between the nodes' ranks of the same local index.
    case hierarchical = "hier"
}

/// The fused AllReduce + residual + RMSNorm, sequence-parallel.
///
/// Each rank's row-parallel GEMM (o_proj, down_proj, or the embedding lookup)
/// writes partial sums for every batch row into `partials`. For a range of
/// rows, every rank then reduces only its own shard of those rows
/// (`shard(of:)`), adds the reduced sum into its residual rows (the residual
/// stream stays sharded and in float32), RMS-normalizes them, and the
/// normalized rows of all shards end up in `normed` on every rank. Compared with
/// all-reduce followed by a norm on every token, each rank normalizes 1/N of the
/// rows and each partial row crosses the node once.
///
/// How the rows move is a `FusedTransport` (shared memory, MPI, hierarchical),
/// chosen from the node topology. Operations are numbered by an epoch that
/// advances identically on every rank; they execute in the order begun, either
/// inline (`run`) or on the comm thread (`begin` … `finish`) while compute
/// continues.
public final class FusedResidualNorm {
    public let transport: CommTransport
    /// The number format between nodes (shared memory always moves float32).
    public let wire: WireFormat
    public let hidden: Int
    public private(set) var capacity = 0
    /// Records the comm thread's spans (reduce-scatter, norm, all-gather) when set.
    public var trace: TraceRecorder?
    private let communicator: Communicator
    private let implementation: FusedTransport
    private var epoch: UInt64 = 0

    /// Where this rank's row-parallel GEMM writes partial sums, [capacity × hidden].
    public var partials: UnsafeMutablePointer<Float>! { implementation.partials }
    /// Normalized rows of every shard, [capacity × hidden]: with shared memory
    /// one array in the window that every rank writes its shard into and reads
    /// whole (no copy); otherwise a local buffer.
    public var normed: UnsafeMutablePointer<Float>! { implementation.normed }

    /// - Parameters:
    ///   - transport: nil chooses shared memory when all ranks share a node,
    ///     MPI when every rank is alone on its node, hierarchical otherwise.
    ///   - timeout: seconds a rank waits for a peer inside a collective before
    ///     naming it as failed.
    ///   - ranksPerNode: treat consecutive groups of this many ranks as nodes
    ///     (to exercise the inter-node and hierarchical paths on one machine);
    ///     nil asks MPI which ranks share memory.
    ///   - wire: the number format between nodes (shared memory always moves
    ///     float32); nil: bf16 when the ranks are on several machines (half
    ///     the bytes; see `WireFormat`), f32 when they all share one (a
    ///     transport or node grouping forced on one machine stays exact).
    public init(communicator: Communicator, hidden: Int, transport: CommTransport?, timeout: Double = 120,
                ranksPerNode: Int? = nil, wire: WireFormat? = nil) throws {
        self.communicator = communicator
        self.hidden = hidden
        let size = communicator.size
        if let ranksPerNode, ranksPerNode < 1 || size % ranksPerNode != 0 {
            throw CommError.invalidParameter("FusedResidualNorm(ranksPerNode:)", "\(ranksPerNode) does not divide the \(size) ranks")
        }
        let topology = try NodeTopology.discover(communicator, ranksPerNode: ranksPerNode)
        if transport == .sharedMemory && topology.localSize != size {
            throw CommError.invalidParameter("FusedResidualNorm(transport:)",
                                             "shm needs every rank on one node, but only \(topology.localSize) of \(size) ranks share this node; use mpi, hier (or auto)")
        }
        if transport == .hierarchical && !topology.uniform {
            throw CommError.invalidParameter("FusedResidualNorm(transport:)", "hier needs the same number of ranks on every node")
        }
        let chosen: CommTransport
        if let transport {
            chosen = transport
        } else if topology.localSize == size {
            chosen = .sharedMemory
        } else if topology.localSize == 1 || !topology.uniform {
            chosen = .mpi
        } else {
            chosen = .hierarchical
        }
        if let wire {
            self.wire = wire
        } else {
            let machine = ranksPerNode == nil ? topology.localSize : try communicator.nodeSize()
            self.wire = machine == size ? .f32 : .bf16
        }
        self.transport = chosen
        switch chosen {
        case .sharedMemory:
            implementation = SharedMemoryTransport(communicator: communicator, topology: topology, hidden: hidden, timeout: timeout)
        case .mpi:
            implementation = MPITransport(communicator: communicator, hidden: hidden, wire: self.wire, timeout: timeout)
        case .hierarchical:
            implementation = HierarchicalTransport(communicator: communicator, topology: topology, hidden: hidden,
                                                   wire: self.wire, timeout: timeout)
        }
    }

    /// Frees the shared window now (a collective: every rank must call it at
    /// the same point). For owners whose last reference may go away on some
    /// other thread after MPI has been finalized.
    public func close() { implementation.close() }

    /// Part `index` of `rows` cut into `parts` blocks of ⌈count/parts⌉ rows.
    static func block(_ rows: Range<Int>, parts: Int, index: Int) -> Range<Int> {
        rowBlock(rows, parts: parts, index: index)
    }

    /// Rows of `rows` this rank reduces and normalizes (and whose residual it keeps).
    public func shard(of rows: Range<Int>) -> Range<Int> { implementation.shard(of: rows) }

    /// Makes room for batches of `rows` rows. Collective: every rank calls it
    /// with the same value (the batch is the same on every rank).
    public func reserve(rows: Int) throws {
        guard rows > capacity else { return }
        let newCapacity = max(rows, 64)
        try implementation.reserve(rows: newCapacity)
        capacity = newCapacity
        epoch = 0   // a new shared window starts with its flags at zero
    }

    // MARK: Running an operation

    /// One pending operation on rows `rows`.
    public final class Operation: @unchecked Sendable {
        let rows: Range<Int>
        let epoch: UInt64
        /// The peer monitor's number for this collective.
        let sequence: Int64
        var work: CommThread.Work?
        var error: Error?
        /// When the peer being waited for is declared dead (set on the first wait).
        var deadline = Date.distantFuture

        /// Starts the clock on the first call; once a peer has lagged `timeout`
        /// seconds, records the error naming it and returns true (give up).
        func giveUp(waitingFor peer: Int, timeout: Double, what: String) -> Bool {
            if deadline == .distantFuture { deadline = Date().addingTimeInterval(timeout) }
            guard Date() > deadline else { return false }
            error = CommError.peerTimeout(rank: peer, seconds: timeout, collective: what)
            return true
        }

        /// For a wait on an MPI request (on the comm thread): once it has
        /// lasted `timeout`, asks the peer monitor which rank is at fault and
        /// throws its error (or waits another period if no peer is at fault).
        func checkDeadline(monitor: PeerMonitor, timeout: Double, what: String) throws {
            if let failure = monitor.reportedFailure { throw failure }
            if deadline == .distantFuture { deadline = Date().addingTimeInterval(timeout); return }
            guard Date() > deadline else { return }
            try monitor.diagnose(sequence: sequence, what: what, timeout: timeout, patient: false)
            deadline = Date().addingTimeInterval(timeout)
        }

        init(rows: Range<Int>, epoch: UInt64, sequence: Int64) {
            self.rows = rows
            self.epoch = epoch
            self.sequence = sequence
        }
    }

    /// Runs the operation to completion on the calling thread (with shared
    /// memory, spreading the reduction of this rank's shard over `pool`).
    public func run(rows: Range<Int>, residual: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>, eps: Float, pool: ComputePool) throws {
        let op = next(rows)
        do {
            try implementation.run(op, FusedStep(rows: rows, residual: residual, weight: weight, eps: eps), pool: pool, trace: trace)
        } catch {
            throw reported(error)
        }
    }

    /// Starts the operation on the comm thread and returns at once; the caller
    /// must not touch `rows` of `partials`, `normed` or the residual until `finish`.
    public func begin(rows: Range<Int>, residual: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>, eps: Float) -> Operation {
        let op = next(rows)
        let step = FusedStep(rows: rows, residual: residual, weight: weight, eps: eps)
        op.work = communicator.thread.submit(implementation.stateMachine(for: op, step, trace: trace))
        return op
    }

    public func finish(_ op: Operation) throws {
        if let work = op.work { communicator.thread.wait(work) }
        if let error = op.error { throw reported(error) }
    }

    private func next(_ rows: Range<Int>) -> Operation {
        epoch += 1
        return Operation(rows: rows, epoch: epoch, sequence: communicator.monitor.enter())
    }

    /// A peer timeout found here is recorded and told to the other ranks, so
    /// ranks waiting elsewhere stop with the same cause.
    private func reported(_ error: Error) -> Error {
        if let error = error as? CommError, case .peerTimeout = error {
            communicator.monitor.failFromAnyThread(error, thread: communicator.thread)
        }
        return error
    }
}
