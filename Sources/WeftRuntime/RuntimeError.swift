import WeftTensor

/// Errors of the runtime layer, each one line naming the parameter or input.
public enum RuntimeError: Error, CustomStringConvertible {
    /// A parameter of this library (named as the library names it, e.g.
    /// `EngineConfiguration.kvBlocks`) and what is wrong with it.
    case invalidParameter(String, String)
    /// A command-line option of a front end (e.g. `--tokens`) and what is
    /// wrong with it. For front ends only: the libraries throw `invalidParameter`.
    case invalidOption(String, String)
    case invalidInput(String)

    public var description: String {
        switch self {
        case .invalidParameter(let name, let problem): return InvalidParameter(name, problem).description
        case .invalidOption(let option, let problem): return "\(option): \(problem)"
        case .invalidInput(let message): return message
        }
    }
}

extension RuntimeError: ParameterError {
    public var parameter: InvalidParameter? {
        if case .invalidParameter(let name, let problem) = self { return InvalidParameter(name, problem) }
        return nil
    }
}
