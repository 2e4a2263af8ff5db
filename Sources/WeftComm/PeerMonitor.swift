import CMPI
import Foundation

/// Tells a rank whether the peers it waits for are still there.
///
/// Every wait on a peer is bounded by the communicator's peer timeout. When a
/// wait runs past it, the waiting rank surveys the job on a control
/// communicator of its own (a duplicate of the world's, so its messages never
/// match a collective's): it pings every peer, and each live peer's comm
/// thread answers with the number of collectives its rank has entered. A peer
/// that does not answer within a grace period is stopped, dead or cut off; a
/// peer that answers but has entered fewer collectives than the waiting one
/// has stopped advancing (its compute is stuck). Either way the waiting rank
/// tells every peer that answered (so they stop waiting too, with the same
/// cause) and fails with an error naming the rank. A peer that answered and is
/// not behind is not at fault; a wait marked `patient` (the next step plan,
/// start-up agreement while ranks load) goes on as long as the peer answers.
///
/// All MPI calls run on the comm thread; `enter()` and `reportedFailure` may
/// be called from any thread.
final class PeerMonitor: @unchecked Sendable {
    static let pingTag: Int32 = 1, pongTag: Int32 = 2, failTag: Int32 = 3
    /// Longest message a failure notice carries.
    static let maxNoticeBytes = 4096

    let comm: MPI_Comm
    let rank: Int
    let size: Int

    private let lock = NSLock()
    private var entered: Int64 = 0
    private var failure: CommError?

    // Comm thread only.
    private var sends: [(request: MPI_Request?, buffer: UnsafeMutableRawPointer)] = []
    private var nonce: Int64 = 0

    init(comm: MPI_Comm, rank: Int, size: Int) {
        self.comm = comm
        self.rank = rank
        self.size = size
    }

    /// Counts a collective this rank enters and returns its sequence number.
    /// Every rank enters the same collectives in the same order, so equal
    /// numbers on two ranks mean the same collective.
    func enter() -> Int64 {
        lock.lock()
        defer { lock.unlock() }
        entered += 1
        return entered
    }

    var collectivesEntered: Int64 {
        lock.lock()
        defer { lock.unlock() }
        return entered
    }

    /// A failure a peer reported, or one this rank found; once set, every
    /// wait on a peer throws it.
    var reportedFailure: CommError? {
        lock.lock()
        defer { lock.unlock() }
        return failure
    }

    private func record(_ error: CommError) {
        lock.lock()
        if failure == nil { failure = error }
        lock.unlock()
        Communicator.markPeerFailure()
    }

    // MARK: On the comm thread

    /// Answers pings and takes failure notices that have arrived; finishes
    /// sends that completed. Cheap when nothing is pending.
    func service() {
        guard size > 1 else { return }
        while true {
            var flag: Int32 = 0
            var status = MPI_Status()
            guard MPI_Iprobe(CMPI_ANY_SOURCE(), Self.pingTag, comm, &flag, &status) == CMPI_SUCCESS(), flag != 0 else { break }
            let source = CMPI_status_source(&status)
            var ping: Int64 = 0
            guard MPI_Recv(&ping, 1, CMPI_INT64(), source, Self.pingTag, comm, CMPI_STATUS_IGNORE()) == CMPI_SUCCESS() else { break }
            send([ping, collectivesEntered], to: source, tag: Self.pongTag)
        }
        while true {
            var flag: Int32 = 0
            var status = MPI_Status()
            guard MPI_Iprobe(CMPI_ANY_SOURCE(), Self.failTag, comm, &flag, &status) == CMPI_SUCCESS(), flag != 0 else { break }
            let source = CMPI_status_source(&status)
            var count: Int32 = 0
            MPI_Get_count(&status, CMPI_BYTE(), &count)
            var bytes = [UInt8](repeating: 0, count: Int(max(0, min(count, Int32(Self.maxNoticeBytes)))))
            guard count >= 0, count <= Int32(Self.maxNoticeBytes),
                  MPI_Recv(&bytes, count, CMPI_BYTE(), source, Self.failTag, comm, CMPI_STATUS_IGNORE()) == CMPI_SUCCESS()
            else { break }
            record(.peerReported(rank: Int(source), message: String(decoding: bytes, as: UTF8.self)))
        }
        sends.removeAll { send in
            var request = send.request
            var flag: Int32 = 0
            MPI_Test(&request, &flag, CMPI_STATUS_IGNORE())
            if flag != 0 { send.buffer.deallocate() }
            return flag != 0
        }
    }

    private func send(_ values: [Int64], to peer: Int32, tag: Int32) {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: values.count * 8, alignment: 8)
        values.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: values.count * 8) }
        sendBuffer(buffer, count: Int32(values.count), type: CMPI_INT64(), to: peer, tag: tag)
    }

    private func sendBuffer(_ buffer: UnsafeMutableRawPointer, count: Int32, type: MPI_Datatype, to peer: Int32, tag: Int32) {
        var request: MPI_Request? = CMPI_REQUEST_NULL()
        if MPI_Isend(buffer, count, type, peer, tag, comm, &request) == CMPI_SUCCESS() {
            sends.append((request, buffer))
        } else {
            buffer.deallocate()
        }
    }

    /// Pings every peer and waits up to `grace` seconds for the answers
    /// (answering other ranks' pings meanwhile). Returns, per rank, the number
    /// of collectives it had entered, or nil if it did not answer.
    func survey(grace: Double) -> [Int64?] {
        nonce += 1
        let mine = nonce
        var answers = [Int64?](repeating: nil, count: size)
        answers[rank] = collectivesEntered
        for peer in 0..<size where peer != rank { send([mine], to: Int32(peer), tag: Self.pingTag) }
        let deadline = Date().addingTimeInterval(grace)
        while answers.contains(where: { $0 == nil }) && Date() < deadline {
            service()
            if reportedFailure != nil { break }   // another rank already found the culprit
            var flag: Int32 = 0
            var status = MPI_Status()
            if MPI_Iprobe(CMPI_ANY_SOURCE(), Self.pongTag, comm, &flag, &status) == CMPI_SUCCESS(), flag != 0 {
                let source = CMPI_status_source(&status)
                var pong: (Int64, Int64) = (0, 0)
                if MPI_Recv(&pong, 2, CMPI_INT64(), source, Self.pongTag, comm, CMPI_STATUS_IGNORE()) == CMPI_SUCCESS(),
                   pong.0 == mine, source >= 0, Int(source) < size {
                    answers[Int(source)] = pong.1
                }
            } else {
                usleep(1000)
            }
        }
        return answers
    }

    /// Called when a wait on a peer at collective `sequence` (`what`) has
    /// lasted `timeout` seconds: throws the failure naming the rank at fault,
    /// or returns if every peer answered and none is behind (or the wait is
    /// patient and every peer answered) so the caller waits another period.
    func diagnose(sequence: Int64, what: String, timeout: Double, patient: Bool) throws {
        if let failure = reportedFailure { throw failure }
        let answers = survey(grace: min(timeout, 5))
        if let failure = reportedFailure { throw failure }
        let silent = answers.indices.filter { answers[$0] == nil }
        let error: CommError
        if !silent.isEmpty {
            error = .peerUnresponsive(ranks: silent, seconds: timeout, collective: what)
        } else if !patient,
                  let laggard = answers.indices.filter({ answers[$0]! < sequence }).min(by: { answers[$0]! < answers[$1]! }) {
            error = .peerStalled(rank: laggard, peerAt: answers[laggard]!, selfAt: sequence, seconds: timeout, collective: what)
        } else {
            return
        }
        fail(error, notifying: answers.indices.filter { $0 != rank && answers[$0] != nil })
        throw error
    }

    /// Records `error` as this rank's failure and tells `peers` (so their waits
    /// end with it too instead of running into their own timeouts).
    func fail(_ error: CommError, notifying peers: [Int]) {
        record(error)
        let notice = Array("\(error)".utf8.prefix(Self.maxNoticeBytes))
        for peer in peers {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(notice.count, 1), alignment: 8)
            notice.withUnsafeBytes { if let base = $0.baseAddress { buffer.copyMemory(from: base, byteCount: notice.count) } }
            sendBuffer(buffer, count: Int32(notice.count), type: CMPI_BYTE(), to: Int32(peer), tag: Self.failTag)
        }
        // Linger a moment before the process exits: the notices leave, and the
        // peers can report before mpirun, seeing this rank exit, ends them.
        let deadline = Date().addingTimeInterval(0.5)
        while Date() < deadline { service(); usleep(1000) }
    }

    /// A failure found outside the comm thread (a shared-memory flag that did
    /// not advance): record it and tell every other peer.
    func failFromAnyThread(_ error: CommError, thread: CommThread) {
        record(error)
        thread.submit { [self] in
            fail(error, notifying: (0..<size).filter { $0 != rank })
            return true
        }
    }
}
