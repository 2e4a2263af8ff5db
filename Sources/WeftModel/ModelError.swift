import Foundation

/// A problem with a model's files or its fit to the job, described in one
/// line that names the file, tensor or field and what was expected.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    /// Something wrong with a whole file (missing, unreadable, truncated, malformed).
    case file(String, String)
    /// A config field missing or invalid: file, field, expected, found.
    case field(String, String, String, String)
    /// A tensor missing, or of the wrong shape or dtype: file, tensor, problem.
    case tensor(String, String, String)
    /// The model cannot be split this way (TP degree and shape).
    case parallelism(String)
    /// Bad input to a forward pass (token ids, positions, cache capacity).
    case input(String)

    public var description: String {
        switch self {
        case .file(let file, let problem): return "\(file): \(problem)"
        case .field(let file, let field, let expected, let found):
            return "\(file): field \"\(field)\": expected \(expected), found \(found)"
        case .tensor(let file, let tensor, let problem): return "\(file): tensor \"\(tensor)\": \(problem)"
        case .parallelism(let message): return message
        case .input(let message): return message
        }
    }

    static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.domain == NSCocoaErrorDomain, ns.code == NSFileReadNoSuchFileError { return "no such file" }
        return ns.localizedDescription
    }
}
