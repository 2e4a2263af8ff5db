import Foundation
import WeftFuzzTargets

#if WEFT_LIBFUZZER
// Built by Scripts/fuzz with -sanitize=fuzzer: main() hands over to libFuzzer's
// driver (SwiftPM makes this @main the process entry point, so libFuzzer's own
// main() is not linked). WEFT_FUZZ_TARGET names the target (FuzzTargets.all).

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

nonisolated(unsafe) private var selected: (([UInt8]) -> Void)?

/// libFuzzer's entry point for one input (also linked in by its runtime archive).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    selected?(bytes)
    return 0
}

@main
struct WeftFuzz {
    static func main() {
        let name = ProcessInfo.processInfo.environment["WEFT_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTargets.all[name] else {
            FileHandle.standardError.write(Data("error: WEFT_FUZZ_TARGET=\(name.isEmpty ? "(unset)" : name): expected one of \(FuzzTargets.names.joined(separator: ", "))\n".utf8))
            exit(2)
        }
        selected = target
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzerTestOneInput(data, size) })
    }
}

#else

/// `weft-fuzz replay TARGET PATH...`: runs every file (directories are
/// walked) through a fuzz target without libFuzzer, e.g. to reproduce a crash
/// found by Scripts/fuzz in a debugger or with an ordinary build.
@main
struct WeftFuzz {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard arguments.count >= 3, arguments[0] == "replay" else {
            fail("usage: weft-fuzz replay TARGET PATH... (targets: \(FuzzTargets.names.joined(separator: ", ")))")
        }
        guard let target = FuzzTargets.all[arguments[1]] else {
            fail("unknown fuzz target \"\(arguments[1])\": expected one of \(FuzzTargets.names.joined(separator: ", "))")
        }
        var count = 0
        for path in arguments.dropFirst(2) {
            for file in files(at: path) {
                guard let data = FileManager.default.contents(atPath: file) else { fail("\(file): cannot read") }
                FileHandle.standardError.write(Data("replaying \(file)\n".utf8))
                target(Array(data))
                count += 1
            }
        }
        print("replayed \(count) input(s) through \(arguments[1]) without a crash")
    }

    static func files(at path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { fail("\(path): no such file or directory") }
        guard isDirectory.boolValue else { return [path] }
        let names = (FileManager.default.enumerator(atPath: path)?.allObjects as? [String]) ?? []
        return names.sorted().map { "\(path)/\($0)" }.filter {
            var dir: ObjCBool = false
            return FileManager.default.fileExists(atPath: $0, isDirectory: &dir) && !dir.boolValue
        }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        exit(2)
    }
}

#endif
