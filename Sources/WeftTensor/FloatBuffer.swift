import CKernels
import CNuma
import Foundation

/// An owned, 64-byte aligned array of `Float`, placed on one NUMA node.
///
/// Pages are not touched here: the threads that will use a region write it
/// first, so Linux places each page where it is used (first touch). With
/// libnuma available the allocation is bound to `node`; otherwise it falls
/// back to ordinary aligned memory.
public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>
    private let byteCount: Int
    private let fromNuma: Bool

    /// - Parameters:
    ///   - count: number of floats.
    ///   - node: NUMA node to bind the pages to, or nil for the default policy.
    ///   - zeroed: write zeros now (touching every page from this thread).
    public init(count: Int, node: Int? = nil, zeroed: Bool = false) {
        precondition(count >= 0, "FloatBuffer count must be non-negative")
        self.count = count
        self.byteCount = max(count, 1) * MemoryLayout<Float>.stride
        if let node, NumaTopology.isAvailable, let raw = numa_alloc_onnode(byteCount, Int32(node)) {
            pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
            fromNuma = true
        } else {
            var raw: UnsafeMutableRawPointer?
            guard posix_memalign(&raw, 64, byteCount) == 0, let raw else {
                fatalError("out of memory allocating \(byteCount) bytes")
            }
            pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
            fromNuma = false
        }
        if zeroed { pointer.initialize(repeating: 0, count: count) }
    }

    public convenience init(_ values: [Float], node: Int? = nil) {
        self.init(count: values.count, node: node)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit {
        if fromNuma { numa_free(pointer, byteCount) } else { free(pointer) }
    }

    public subscript(index: Int) -> Float {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }

    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    public func fill(_ value: Float) { pointer.update(repeating: value, count: count) }
}

/// Facts about the NUMA layout this process runs on.
public enum NumaTopology {
    public static let isAvailable: Bool = numa_available() >= 0

    /// The NUMA node of the CPU the calling thread runs on (0 without libnuma).
    public static var currentNode: Int {
        guard isAvailable else { return 0 }
        let cpu = weft_current_cpu()
        guard cpu >= 0 else { return 0 }
        return Int(max(0, numa_node_of_cpu(cpu)))
    }

    public static var nodeCount: Int { isAvailable ? Int(numa_num_configured_nodes()) : 1 }
}
