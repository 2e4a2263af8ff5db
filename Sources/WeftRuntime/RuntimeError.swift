/// Errors of the runtime layer, each one line naming the option or input.
public enum RuntimeError: Error, CustomStringConvertible {
    case invalidOption(String, String)
    case invalidInput(String)

    public var description: String {
        switch self {
        case .invalidOption(let option, let problem): return "\(option): \(problem)"
        case .invalidInput(let message): return message
        }
    }
}
