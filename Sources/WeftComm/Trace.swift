import Foundation

/// Spans of one rank's work during a forward pass, for a Chrome trace
/// (chrome://tracing, ui.perfetto.dev): what the compute thread computed, how
/// long it waited for a reduction (exposed communication), and what the comm
/// thread had in flight (reduce-scatter, norm, all-gather, with bytes sent).
/// Recording is off unless a model or collective is given a recorder.
public final class TraceRecorder: @unchecked Sendable {
    /// A trace's lanes (Chrome trace thread ids).
    public enum Lane: Int, Sendable, CaseIterable {
        case compute = 1, wait = 2, comm = 3
        public var name: String {
            switch self {
            case .compute: "compute"
            case .wait: "waiting for a reduction"
            case .comm: "comm thread"
            }
        }
    }

    public struct Span: Codable, Sendable {
        public var name: String
        public var lane: Int
        /// Microseconds since the recorder's origin.
        public var start: Double
        public var duration: Double
        /// Bytes this rank sent during the span (comm lane).
        public var bytes: Int?
    }

    private let lock = NSLock()
    private var spans: [Span] = []
    private var origin: UInt64

    public init() { origin = Self.now() }

    public static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Forgets every span and counts time from now.
    public func restart() {
        lock.lock()
        spans = []
        origin = Self.now()
        lock.unlock()
    }

    public func add(_ name: String, lane: Lane, from start: UInt64, to end: UInt64, bytes: Int? = nil) {
        lock.lock()
        let begin = Double(Int64(bitPattern: start &- origin)) / 1e3
        spans.append(Span(name: name, lane: lane.rawValue, start: begin, duration: Double(end &- start) / 1e3, bytes: bytes))
        lock.unlock()
    }

    public func measure<T>(_ name: @autoclosure () -> String, lane: Lane, _ body: () throws -> T) rethrows -> T {
        let start = Self.now()
        defer { add(name(), lane: lane, from: start, to: Self.now()) }
        return try body()
    }

    public var recorded: [Span] {
        lock.lock()
        defer { lock.unlock() }
        return spans
    }

    /// Total microseconds per lane and bytes sent.
    public static func totals(_ spans: [Span]) -> (compute: Double, wait: Double, comm: Double, bytes: Int) {
        var compute = 0.0, wait = 0.0, comm = 0.0, bytes = 0
        for span in spans {
            switch Lane(rawValue: span.lane) {
            case .compute: compute += span.duration
            case .wait: wait += span.duration
            case .comm: comm += span.duration
            case nil: break
            }
            bytes += span.bytes ?? 0
        }
        return (compute, wait, comm, bytes)
    }
}
