import CKernels
import Foundation

/// The compute threads of one rank, pinned to its cores.
///
/// Kernels run on it through the C entry points of `weft_ops.h`; Swift code
/// can also run a closure on every thread with `run(_:)`. Not thread-safe: one
/// owner submits work at a time (the engine's step loop).
public final class ComputePool: @unchecked Sendable {
    public let raw: OpaquePointer
    public let threadCount: Int
    public let cpus: [Int]

    /// - Parameters:
    ///   - threads: number of compute threads; nil uses one per CPU in this
    ///     process's affinity mask (the cores mpirun bound the rank to).
    ///   - pin: pin thread i to the i-th CPU of the mask.
    public init(threads: Int? = nil, pin: Bool = true) throws {
        let available = ComputePool.affinityCPUs()
        let count = threads ?? max(1, available.count)
        guard count >= 1 else { throw TensorError.invalidParameter("ComputePool(threads:)", "must be at least 1, got \(count)") }
        // Pin only when each thread gets a CPU of its own; more threads than
        // CPUs (or an empty mask) runs unpinned and lets the kernel schedule.
        let pinned = pin && !available.isEmpty && count <= available.count
        let chosen = pinned ? Array(available.prefix(count)) : []
        let pool: OpaquePointer? = chosen.withUnsafeBufferPointer { cpuList in
            let cpuArgs: [Int32] = cpuList.map { Int32($0) }
            return cpuArgs.withUnsafeBufferPointer {
                weft_pool_create(Int32(count), pinned ? $0.baseAddress : nil, 2000)
            }
        }
        guard let pool else { throw TensorError.system("weft_pool_create(\(count))", errno) }
        raw = pool
        threadCount = count
        cpus = chosen
    }

    deinit { weft_pool_destroy(raw) }

    /// CPUs in the affinity mask of the calling thread.
    public static func affinityCPUs() -> [Int] {
        var cpus = [Int32](repeating: 0, count: 1024)
        let n = weft_affinity_cpus(&cpus, Int32(cpus.count))
        return cpus.prefix(Int(n)).map(Int.init)
    }

    /// Runs `body(threadIndex, threadCount)` on every pool thread, the caller's included.
    public func run(_ body: (Int, Int) -> Void) {
        withoutActuallyEscaping(body) { escapable in
            let box = Unmanaged.passRetained(ClosureBox(escapable))
            weft_pool_run(raw, { context, index, count in
                let box = Unmanaged<ClosureBox>.fromOpaque(context!).takeUnretainedValue()
                box.body(Int(index), Int(count))
            }, box.toOpaque())
            box.release()
        }
    }

    private final class ClosureBox {
        let body: (Int, Int) -> Void
        init(_ body: @escaping (Int, Int) -> Void) { self.body = body }
    }
}

public enum TensorError: Error, CustomStringConvertible {
    /// A parameter of this library (e.g. `ComputePool(threads:)`) and what is wrong with it.
    case invalidParameter(String, String)
    case system(String, Int32)

    public var description: String {
        switch self {
        case .invalidParameter(let name, let problem): return InvalidParameter(name, problem).description
        case .system(let call, let code): return "\(call) failed: \(String(cString: strerror(code)))"
        }
    }
}

extension TensorError: ParameterError {
    public var parameter: InvalidParameter? {
        if case .invalidParameter(let name, let problem) = self { return InvalidParameter(name, problem) }
        return nil
    }
}
