import Foundation

/// A model file mapped read-only, shared by the safetensors and GGUF readers:
/// each rank reads only its slices in place and drops their pages afterwards.
final class MappedFile: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let length: Int

    /// Maps `path`; a file shorter than `minimumLength` gets `tooShort(length)` as its error.
    init(path: String, minimumLength: Int, tooShort: (Int) -> String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ModelError.file(path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ModelError.file(path, "cannot stat: \(String(cString: strerror(errno)))") }
        let length = Int(st.st_size)
        guard length >= minimumLength else { throw ModelError.file(path, tooShort(length)) }
        guard let mapped = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw ModelError.file(path, "cannot map: \(String(cString: strerror(errno)))")
        }
        base = mapped
        self.length = length
    }

    deinit { munmap(base, length) }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: length) }

    /// Drops the pages of `byteCount` bytes at `byteOffset` from this process's memory.
    func release(byteOffset: Int, byteCount: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = byteOffset / page * page
        let end = min(length, byteOffset + byteCount)
        guard end > start else { return }
        madvise(base + start, end - start, Int32(MADV_DONTNEED))
    }
}
