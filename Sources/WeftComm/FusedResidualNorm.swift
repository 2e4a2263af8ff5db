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
/// Operations are numbered by an epoch that advances identically on every
/// rank; they execute in the order begun, either inline (`run`) or on the
/// comm thread (`begin` … `finish`) while compute continues.
public final class FusedResidualNorm {
    public let transport: CommTransport
    public let hidden: Int
    public private(set) var capacity = 0
    let communicator: Communicator
    let rank: Int
    let size: Int
    let timeout: Double

    /// Where this rank's row-parallel GEMM writes partial sums, [capacity × hidden].
    public private(set) var partials: UnsafeMutablePointer<Float>!
    /// Normalized rows of every shard, [capacity × hidden], local to this rank.
    /// Normalized rows of every shard, [capacity × hidden]: with shared memory
    /// one array in the window that every rank writes its shard into and reads
    /// whole (no copy); otherwise a local buffer.
    public private(set) var normed: UnsafeMutablePointer<Float>!
    private var localNormed: FloatBuffer?

    private var epoch: UInt64 = 0
    /// Records the comm thread's spans (reduce-scatter, norm, all-gather) when set.
    public var trace: TraceRecorder?
    // Node topology: the ranks sharing memory with this one, and the ranks of
    // the same local index on the other nodes.
    let nodeComm: MPI_Comm
    let crossComm: MPI_Comm
    public let localRank: Int
    public let localSize: Int
    /// World rank of each local rank (to name a peer in errors).
    let nodeRanks: [Int]
    public let nodeIndex: Int
    public let nodeCount: Int
    // Shared memory: the window and every local rank's segment.
    private var window: MPI_Win?
    private var segments: [UnsafeMutableRawPointer] = []
    private var readyFlags: [UnsafeMutablePointer<UInt64>] = []
    private var doneFlags: [UnsafeMutablePointer<UInt64>] = []
    private var peerPartials: [UnsafePointer<Float>?] = []
    private var peerNormed: [UnsafeMutablePointer<Float>] = []
    // Between nodes: the pairwise exchange, and (hierarchical) the node's sum of its block.
    public let wire: WireFormat
    private var exchange: CrossNodeExchange?
    private var localPartials: FloatBuffer?
    private var sendStage: FloatBuffer?

    static let flagBytes = 128   // ready and done flags, each on its own cache line

    /// - Parameters:
    ///   - transport: nil chooses shared memory when all ranks share a node,
    ///     MPI when every rank is alone on its node, hierarchical otherwise.
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
        self.rank = communicator.rank
        self.size = communicator.size
        self.timeout = timeout
        let size = communicator.size, rank = communicator.rank
        if let ranksPerNode, ranksPerNode < 1 || size % ranksPerNode != 0 {
            throw CommError.unsupported("--ranks-per-node \(ranksPerNode) does not divide the \(size) ranks")
        }
        let (node, cross, local, localCount, index, nodes, uniform, worldRanks) = try communicator.thread.run {
            () throws -> (MPI_Comm, MPI_Comm, Int, Int, Int, Int, Bool, [Int]) in
            var node: MPI_Comm? = nil, cross: MPI_Comm? = nil
            if let ranksPerNode {
                try check(MPI_Comm_split(CMPI_COMM_WORLD(), Int32(rank / ranksPerNode), Int32(rank), &node), "MPI_Comm_split")
            } else {
                try check(MPI_Comm_split_type(CMPI_COMM_WORLD(), CMPI_COMM_TYPE_SHARED(), Int32(rank), CMPI_INFO_NULL(), &node),
                          "MPI_Comm_split_type")
            }
            var local: Int32 = 0, localCount: Int32 = 0
            MPI_Comm_rank(node, &local)
            MPI_Comm_size(node, &localCount)
            try check(MPI_Comm_split(CMPI_COMM_WORLD(), local, Int32(rank), &cross), "MPI_Comm_split")
            var worldGroup: MPI_Group? = nil, nodeGroup: MPI_Group? = nil
            MPI_Comm_group(CMPI_COMM_WORLD(), &worldGroup)
            MPI_Comm_group(node, &nodeGroup)
            var locals = (0..<localCount).map { Int32($0) }
            var worlds = [Int32](repeating: 0, count: Int(localCount))
            try check(MPI_Group_translate_ranks(nodeGroup, localCount, &locals, worldGroup, &worlds), "MPI_Group_translate_ranks")
            MPI_Group_free(&worldGroup)
            MPI_Group_free(&nodeGroup)
            var index: Int32 = 0, nodes: Int32 = 0
            MPI_Comm_rank(cross, &index)
            MPI_Comm_size(cross, &nodes)
            var counts: (Int64, Int64) = (Int64(localCount), -Int64(localCount))
            var extremes: (Int64, Int64) = (0, 0)
            try check(MPI_Allreduce(&counts, &extremes, 2, CMPI_INT64(), CMPI_MAX(), CMPI_COMM_WORLD()), "MPI_Allreduce")
            return (node!, cross!, Int(local), Int(localCount), Int(index), Int(nodes), extremes.0 == -extremes.1, worlds.map { Int($0) })
        }
        nodeRanks = worldRanks
        nodeComm = node
        crossComm = cross
        localRank = local
        localSize = localCount
        nodeIndex = index
        nodeCount = nodes
        if transport == .sharedMemory && localCount != size {
            throw CommError.unsupported("--comm-transport shm needs every rank on one node, but only \(localCount) of \(size) ranks share this node; use --comm-transport mpi, hier (or auto)")
        }
        if transport == .hierarchical && !uniform {
            throw CommError.unsupported("--comm-transport hier needs the same number of ranks on every node")
        }
        if let transport {
            self.transport = transport
        } else if localCount == size {
            self.transport = .sharedMemory
        } else if localCount == 1 || !uniform {
            self.transport = .mpi
        } else {
            self.transport = .hierarchical
        }
        if let wire {
            self.wire = wire
        } else {
            let machine = ranksPerNode == nil ? localCount : try communicator.nodeSize()
            self.wire = machine == size ? .f32 : .bf16
        }
        let wire = self.wire
        switch self.transport {
        case .mpi: exchange = CrossNodeExchange(parts: size, index: rank, hidden: hidden, comm: communicator.comm, wire: wire)
        case .hierarchical: exchange = CrossNodeExchange(parts: nodes, index: index, hidden: hidden, comm: cross, wire: wire)
        case .sharedMemory: exchange = nil
        }
    }

    deinit { releaseWindow() }

    /// Frees the shared window now (a collective: every rank must call it at
    /// the same point). For owners whose last reference may go away on some
    /// other thread after MPI has been finalized.
    public func close() { releaseWindow() }

    /// Part `index` of `rows` cut into `parts` blocks of ⌈count/parts⌉ rows.
    static func block(_ rows: Range<Int>, parts: Int, index: Int) -> Range<Int> {
        let size = (rows.count + parts - 1) / parts
        let lower = min(rows.upperBound, rows.lowerBound + index * size)
        return lower ..< min(rows.upperBound, lower + size)
    }

    /// Rows of `rows` this rank reduces and normalizes (and whose residual it keeps).
    public func shard(of rows: Range<Int>) -> Range<Int> {
        switch transport {
        case .hierarchical:
            let local = Self.block(rows, parts: localSize, index: localRank)
            return Self.block(local, parts: nodeCount, index: nodeIndex)
        default:
            return Self.block(rows, parts: size, index: rank)
        }
    }

    /// Rows whose normalized values a local peer publishes in its segment.
    func published(of rows: Range<Int>, localPeer: Int) -> Range<Int> {
        Self.block(rows, parts: localSize, index: localPeer)
    }

    /// Makes room for batches of `rows` rows. Collective: every rank calls it
    /// with the same value (the batch is the same on every rank).
    public func reserve(rows: Int) throws {
        guard rows > capacity else { return }
        let newCapacity = max(rows, 64)
        switch transport {
        case .sharedMemory: try allocateWindow(rows: newCapacity)
        case .hierarchical:
            try allocateWindow(rows: newCapacity)
            let localBlock = (newCapacity + localSize - 1) / localSize
            sendStage = FloatBuffer(count: localBlock * hidden)
            exchange!.reserve(rows: localBlock)
        case .mpi:
            localPartials = FloatBuffer(count: newCapacity * hidden)
            partials = localPartials!.pointer
            exchange!.reserve(rows: newCapacity)
        }
        if transport != .sharedMemory {
            localNormed = FloatBuffer(count: newCapacity * hidden)
            normed = localNormed!.pointer
        }
        capacity = newCapacity
    }

    private func allocateWindow(rows: Int) throws {
        releaseWindow()
        let bytes = FusedResidualNorm.flagBytes + 2 * rows * hidden * MemoryLayout<Float>.stride
        // Shared memory: local rank 0's segment also holds the normalized-rows
        // array all ranks share. Its pages are first touched by the ranks that
        // write each shard, so each shard lands on its writer's NUMA node.
        let sharedBytes = transport == .sharedMemory ? rows * hidden * MemoryLayout<Float>.stride : 0
        let mine = bytes + (localRank == 0 ? sharedBytes : 0)
        let size = self.localSize, node = self.nodeComm
        let (win, bases) = try communicator.thread.run { () throws -> (MPI_Win, [UnsafeMutableRawPointer]) in
            var base: UnsafeMutableRawPointer? = nil
            var win: MPI_Win? = nil
            // Non-contiguous: each segment is allocated (and placed) by its own rank.
            var info: MPI_Info? = nil
            MPI_Info_create(&info)
            MPI_Info_set(info, "alloc_shared_noncontig", "true")
            try check(MPI_Win_allocate_shared(MPI_Aint(mine), 1, info, node, &base, &win), "MPI_Win_allocate_shared")
            MPI_Info_free(&info)
            var bases: [UnsafeMutableRawPointer] = []
            for peer in 0..<size {
                var segmentSize: MPI_Aint = 0, unit: Int32 = 0
                var peerBase: UnsafeMutableRawPointer? = nil
                try check(MPI_Win_shared_query(win, Int32(peer), &segmentSize, &unit, &peerBase), "MPI_Win_shared_query")
                bases.append(peerBase!)
            }
            return (win!, bases)
        }
        window = win
        segments = bases
        // First touch of our own segment by this rank (NUMA placement), flags zeroed.
        memset(bases[localRank], 0, bytes)
        readyFlags = bases.map { $0.assumingMemoryBound(to: UInt64.self) }
        doneFlags = bases.map { ($0 + 64).assumingMemoryBound(to: UInt64.self) }
        let floats = bases.map { ($0 + FusedResidualNorm.flagBytes).assumingMemoryBound(to: Float.self) }
        peerPartials = floats.map { UnsafePointer($0) }
        peerNormed = floats.map { $0 + rows * hidden }
        partials = floats[localRank]
        if transport == .sharedMemory {
            normed = (bases[0] + bytes).assumingMemoryBound(to: Float.self)
        }
        epoch = 0
        // Everyone has zeroed its flags before anyone uses them.
        try communicator.barrier()
    }

    private func releaseWindow() {
        guard window != nil else { return }
        // MPI_Win_free is collective: with a failed peer it would never return.
        guard !Communicator.hasPeerFailure else { window = nil; return }
        var win = window
        _ = try? communicator.thread.run { MPI_Win_free(&win) }
        window = nil
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

    struct Arguments: @unchecked Sendable {
        let residual: UnsafeMutablePointer<Float>
        let weight: UnsafePointer<Float>
        let eps: Float
    }

    /// Runs the operation to completion on the calling thread, spreading the
    /// reduction of this rank's shard over `pool`.
    public func run(rows: Range<Int>, residual: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>, eps: Float, pool: ComputePool) throws {
        epoch += 1
        let sequence = communicator.monitor.enter()
        let args = Arguments(residual: residual, weight: weight, eps: eps)
        switch transport {
        case .sharedMemory:
            try sharedMemoryOperation(rows: rows, epoch: epoch, args: args, pool: pool)
        case .mpi, .hierarchical:
            let op = Operation(rows: rows, epoch: epoch, sequence: sequence)
            op.work = communicator.thread.submit(transport == .mpi ? mpiStateMachine(op, args: args) : hierarchicalStateMachine(op, args: args))
            try finish(op)
        }
    }

    /// Starts the operation on the comm thread and returns at once; the caller
    /// must not touch `rows` of `partials`, `normed` or the residual until `finish`.
    public func begin(rows: Range<Int>, residual: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>, eps: Float) -> Operation {
        epoch += 1
        let op = Operation(rows: rows, epoch: epoch, sequence: communicator.monitor.enter())
        let args = Arguments(residual: residual, weight: weight, eps: eps)
        switch transport {
        case .sharedMemory: op.work = communicator.thread.submit(sharedMemoryStateMachine(op, args: args))
        case .mpi: op.work = communicator.thread.submit(mpiStateMachine(op, args: args))
        case .hierarchical: op.work = communicator.thread.submit(hierarchicalStateMachine(op, args: args))
        }
        return op
    }

    public func finish(_ op: Operation) throws {
        if let work = op.work { communicator.thread.wait(work) }
        if let error = op.error { throw reported(error) }
    }

    /// A peer timeout found here is recorded and told to the other ranks, so
    /// ranks waiting elsewhere stop with the same cause.
    private func reported(_ error: Error) -> Error {
        if let error = error as? CommError, case .peerTimeout = error {
            communicator.monitor.failFromAnyThread(error, thread: communicator.thread)
        }
        return error
    }

    // MARK: Shared memory

    private func sharedMemoryOperation(rows: Range<Int>, epoch: UInt64, args: Arguments, pool: ComputePool) throws {
        weft_flag_publish(readyFlags[localRank], epoch)
        try waitFlags(readyFlags, epoch: epoch, what: "the fused all-reduce (partials ready)")
        let mine = shard(of: rows)
        if !mine.isEmpty {
            let sources = peerPartials
            pool.run { t, n in
                let part = evenSplit(mine.count, parts: n, index: t)
                guard !part.isEmpty else { return }
                self.reduceRows(mine.lowerBound + part.lowerBound ..< mine.lowerBound + part.upperBound, sources: sources, args: args)
            }
        }
        weft_flag_publish(doneFlags[localRank], epoch)
        // Once every rank is done, all rows are in the shared array: nothing to copy.
        try waitFlags(doneFlags, epoch: epoch, what: "the fused all-reduce (rows normalized)")
    }

    /// Sums all ranks' partials of `rows`, adds the residual, normalizes into the shared array.
    private func reduceRows(_ rows: Range<Int>, sources: [UnsafePointer<Float>?], args: Arguments) {
        let h = hidden, offset = rows.lowerBound * h
        var pointers = sources.map { $0! + offset }
        pointers.withUnsafeMutableBufferPointer { list in
            list.withMemoryRebound(to: UnsafePointer<Float>?.self) { rebound in
                weft_reduce_add_rmsnorm(rebound.baseAddress, Int32(localSize), h, args.residual + offset, h, args.weight,
                                        normed + offset, h, Int32(rows.count), Int32(h), args.eps)
            }
        }
    }

    /// The first local peer whose flag is still below `epoch`, or -1 (never blocks).
    func peerBehind(_ flags: [UnsafeMutablePointer<UInt64>], epoch: UInt64) -> Int32 {
        var list = flags.map { Optional($0) }
        return weft_flags_behind(&list, Int32(localSize), Int32(localRank), epoch)
    }

    private func waitFlags(_ flags: [UnsafeMutablePointer<UInt64>], epoch: UInt64, what: String) throws {
        var list = flags.map { Optional($0) }
        let behind = weft_flags_wait(&list, Int32(localSize), Int32(localRank), epoch, timeout)
        if behind >= 0 { throw reported(CommError.peerTimeout(rank: nodeRanks[Int(behind)], seconds: timeout, collective: what)) }
    }

    /// The same steps as `sharedMemoryOperation`, as a state machine the comm
    /// thread polls (single-threaded reduction, non-blocking flag checks).
    private func sharedMemoryStateMachine(_ op: Operation, args: Arguments) -> () -> Bool {
        var state = 0
        let sources = peerPartials
        return { [self] in
            func behind(_ flags: [UnsafeMutablePointer<UInt64>]) -> Int32 { peerBehind(flags, epoch: op.epoch) }
            func timedOut(_ peer: Int32, _ what: String) -> Bool { op.giveUp(waitingFor: nodeRanks[Int(peer)], timeout: timeout, what: what) }
            switch state {
            case 0:
                weft_flag_publish(readyFlags[localRank], op.epoch)
                state = 1
                fallthrough
            case 1:
                let peer = behind(readyFlags)
                if peer >= 0 { return timedOut(peer, "the fused all-reduce (partials ready)") }
                let mine = shard(of: op.rows)
                if !mine.isEmpty { reduceRows(mine, sources: sources, args: args) }
                weft_flag_publish(doneFlags[localRank], op.epoch)
                op.deadline = .distantFuture
                state = 2
                fallthrough
            default:
                let peer = behind(doneFlags)
                if peer >= 0 { return timedOut(peer, "the fused all-reduce (rows normalized)") }
                return true
            }
        }
    }

    // MARK: MPI

    /// Every rank alone on its node: the pairwise exchange of `CrossNodeExchange` over all ranks.
    private func mpiStateMachine(_ op: Operation, args: Arguments) -> () -> Bool {
        var state = 0
        let rows = op.rows, h = hidden
        let exchange = self.exchange!, monitor = communicator.monitor
        let source = UnsafePointer(partials + rows.lowerBound * h)
        let trace = self.trace
        var mark: UInt64 = 0
        return { [self] in
            do {
                switch state {
                case 0:
                    guard !rows.isEmpty else { return true }
                    mark = TraceRecorder.now()
                    try exchange.startReduceScatter(rows: rows, source: source)
                    state = 1
                    return false
                case 1:
                    guard try exchange.reduceScatterDone() else {
                        try op.checkDeadline(monitor: monitor, timeout: timeout, what: "the fused all-reduce (reduce-scatter between nodes)")
                        return false
                    }
                    op.deadline = .distantFuture
                    let now = TraceRecorder.now()
                    trace?.add("reduce-scatter \(rows.count) rows", lane: .comm, from: mark, to: now,
                               bytes: exchange.bytesSent(rows: rows, phase: .reduceScatter))
                    try exchange.normalizeAndStartGather(rows: rows, source: source, residual: args.residual, weight: args.weight, eps: args.eps)
                    mark = TraceRecorder.now()
                    trace?.add("norm", lane: .comm, from: now, to: mark)
                    state = 2
                    return false
                default:
                    guard try exchange.gatherDone() else {
                        try op.checkDeadline(monitor: monitor, timeout: timeout, what: "the fused all-reduce (MPI all-gather)")
                        return false
                    }
                    exchange.finishGather(rows: rows, into: normed + rows.lowerBound * h)
                    trace?.add("all-gather \(rows.count) rows", lane: .comm, from: mark, to: TraceRecorder.now(),
                               bytes: exchange.bytesSent(rows: rows, phase: .allGather))
                    return true
                }
            } catch {
                op.error = error
                return true
            }
        }
    }
}

extension FusedResidualNorm {
    /// Hierarchical: (1) inside the node, local rank i sums the node's partials
    /// of its local block L_i (shared memory); (2) the ranks of local index i on
    /// all nodes reduce-scatter L_i over MPI, each keeping 1/nodes of it, add
    /// their residual rows and normalize; (3) an MPI all-gather returns all of
    /// L_i normalized, published in the segment; (4) local peers copy each
    /// other's blocks. Only 1/localSize of the rows cross the network per rank.
    func hierarchicalStateMachine(_ op: Operation, args: Arguments) -> () -> Bool {
        var state = 0
        let h = hidden
        let local = Self.block(op.rows, parts: localSize, index: localRank)
        let send = sendStage!.pointer
        let exchange = self.exchange!, monitor = communicator.monitor
        let sources = peerPartials
        return { [self] in
            func behind(_ flags: [UnsafeMutablePointer<UInt64>]) -> Int32 { peerBehind(flags, epoch: op.epoch) }
            func timedOut(_ peer: Int32, _ what: String) -> Bool { op.giveUp(waitingFor: nodeRanks[Int(peer)], timeout: timeout, what: what) }
            do {
                switch state {
                case 0:
                    weft_flag_publish(readyFlags[localRank], op.epoch)
                    state = 1
                    return false
                case 1:
                    let peer = behind(readyFlags)
                    if peer >= 0 { return timedOut(peer, "the hierarchical all-reduce (partials ready on the node)") }
                    op.deadline = .distantFuture
                    if !local.isEmpty {
                        var pointers = sources.map { $0! + local.lowerBound * h }
                        pointers.withUnsafeMutableBufferPointer { list in
                            list.withMemoryRebound(to: UnsafePointer<Float>?.self) { rebound in
                                weft_sum_rows(rebound.baseAddress, Int32(localSize), h, send, h, Int32(local.count), Int32(h))
                            }
                        }
                        try exchange.startReduceScatter(rows: local, source: send)
                    }
                    state = 2
                    return false
                case 2:
                    if !local.isEmpty {
                        guard try exchange.reduceScatterDone() else {
                            try op.checkDeadline(monitor: monitor, timeout: timeout, what: "the hierarchical all-reduce (reduce-scatter between nodes)")
                            return false
                        }
                        op.deadline = .distantFuture
                        try exchange.normalizeAndStartGather(rows: local, source: send, residual: args.residual, weight: args.weight, eps: args.eps)
                    }
                    state = 3
                    return false
                case 3:
                    if !local.isEmpty {
                        guard try exchange.gatherDone() else {
                            try op.checkDeadline(monitor: monitor, timeout: timeout, what: "the hierarchical all-reduce (MPI all-gather between nodes)")
                            return false
                        }
                        op.deadline = .distantFuture
                        exchange.finishGather(rows: local, into: peerNormed[localRank] + local.lowerBound * h)
                    }
                    weft_flag_publish(doneFlags[localRank], op.epoch)
                    state = 4
                    return false
                default:
                    let peer = behind(doneFlags)
                    if peer >= 0 { return timedOut(peer, "the hierarchical all-reduce (rows normalized on the node)") }
                    for p in 0..<localSize {
                        let rowsOfPeer = published(of: op.rows, localPeer: p)
                        guard !rowsOfPeer.isEmpty else { continue }
                        let offset = rowsOfPeer.lowerBound * h
                        (normed + offset).update(from: peerNormed[p] + offset, count: rowsOfPeer.count * h)
                    }
                    return true
                }
            } catch {
                op.error = error
                return true
            }
        }
    }
}

extension Communicator {
    /// Ranks sharing this rank's node (an MPI shared-memory domain).
    public func nodeSize() throws -> Int {
        try thread.run {
            var node: MPI_Comm? = nil
            try check(MPI_Comm_split_type(CMPI_COMM_WORLD(), CMPI_COMM_TYPE_SHARED(), 0, CMPI_INFO_NULL(), &node), "MPI_Comm_split_type")
            var n: Int32 = 0
            MPI_Comm_size(node, &n)
            MPI_Comm_free(&node)
            return Int(n)
        }
    }
}
