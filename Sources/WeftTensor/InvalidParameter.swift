/// A value a caller passed that a library cannot use, named as the library
/// names it (a configuration property such as `EngineConfiguration.kvBlocks`,
/// or an argument such as `ComputePool(threads:)`), and what is wrong with it.
/// Libraries never speak of command-line flags; a front end maps these names
/// to its own options (the `weft` CLI prints `--kv-blocks`).
public struct InvalidParameter: Equatable, Sendable, CustomStringConvertible {
    /// The library's name of the parameter, as Swift spells it.
    public let name: String
    /// What is wrong, without the parameter's name (e.g. "must be at least 1, got 0").
    public let problem: String

    public init(_ name: String, _ problem: String) {
        self.name = name
        self.problem = problem
    }

    public var description: String { "\(name): \(problem)" }
}

/// An error of any Weft module that can say which parameter was invalid.
/// Each module keeps its own error type (so callers still tell them apart);
/// this lets a front end find the parameter in any of them.
public protocol ParameterError: Error {
    /// The invalid parameter, or nil when the error is about something else.
    var parameter: InvalidParameter? { get }
}
