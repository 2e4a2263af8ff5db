import Foundation
import WeftTensor

/// One operation's inputs besides the partial sums: the residual rows the
/// reduced sums are added into, and the RMSNorm applied after.
struct FusedStep: @unchecked Sendable {
    let rows: Range<Int>
    let residual: UnsafeMutablePointer<Float>
    let weight: UnsafePointer<Float>
    let eps: Float
}

/// How the fused all-reduce + residual + RMSNorm moves data: one type per
/// transport (`SharedMemoryTransport`, `MPITransport`, `HierarchicalTransport`).
/// `FusedResidualNorm` numbers the operations and runs them through one of these.
protocol FusedTransport: AnyObject {
    var communicator: Communicator { get }
    /// Where this rank's row-parallel GEMM writes partial sums, [capacity × hidden]
    /// (nil before the first `reserve`).
    var partials: UnsafeMutablePointer<Float>! { get }
    /// Normalized rows of every shard, [capacity × hidden], after an operation.
    var normed: UnsafeMutablePointer<Float>! { get }
    /// Rows of `rows` this rank reduces and normalizes (and whose residual it keeps).
    func shard(of rows: Range<Int>) -> Range<Int>
    /// Room for `rows` rows (collective; earlier contents are lost).
    func reserve(rows: Int) throws
    /// The operation as a state machine the comm thread calls until it
    /// returns true (never blocking; an error is left in `op.error`).
    func stateMachine(for op: FusedResidualNorm.Operation, _ step: FusedStep, trace: TraceRecorder?) -> () -> Bool
    /// Runs the operation to completion on the calling thread.
    func run(_ op: FusedResidualNorm.Operation, _ step: FusedStep, pool: ComputePool, trace: TraceRecorder?) throws
    /// Frees what other ranks share (collective).
    func close()
}

extension FusedTransport {
    /// By default the comm thread runs the state machine while the caller waits.
    func run(_ op: FusedResidualNorm.Operation, _ step: FusedStep, pool: ComputePool, trace: TraceRecorder?) throws {
        let work = communicator.thread.submit(stateMachine(for: op, step, trace: trace))
        op.work = work
        communicator.thread.wait(work)
        if let error = op.error { throw error }
    }

    func close() {}
}

/// Part `index` of `rows` cut into `parts` blocks of ⌈count/parts⌉ rows.
func rowBlock(_ rows: Range<Int>, parts: Int, index: Int) -> Range<Int> {
    let size = (rows.count + parts - 1) / parts
    let lower = min(rows.upperBound, rows.lowerBound + index * size)
    return lower ..< min(rows.upperBound, lower + size)
}
