#if canImport(Glibc)
import Glibc
#endif

// File helpers shared by every PEFTKit writer and reader: all-or-nothing replacement of a file,
// `mkdir -p`, and size-limited whole-file reads. Errors are `PEFTKitError.io` naming the path.

/// Splits `path` into its directory (`"."` when there is none) and its last component.
func splitPath(_ path: String) throws -> (directory: String, name: String) {
    guard !path.isEmpty else { throw PEFTKitError.invalidArgument("empty file path") }
    guard let slash = path.lastIndex(of: "/") else { return (".", path) }
    let name = String(path[path.index(after: slash)...])
    guard !name.isEmpty, name != ".", name != ".." else {
        throw PEFTKitError.invalidArgument("'\(path)' does not name a file")
    }
    let dir = String(path[..<slash])
    return (dir.isEmpty ? "/" : dir, name)
}

/// Writes all of `bytes` to `fd`, retrying short writes and `EINTR`.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws {
    guard var p = bytes.baseAddress else { return }
    var left = bytes.count
    while left > 0 {
        let n = Glibc.write(fd, p, min(left, 1 << 30))
        if n < 0 {
            if errno == EINTR { continue }
            throw PEFTKitError.io("write failed: \(errnoString())")
        }
        if n == 0 { throw PEFTKitError.io("write made no progress") }
        p += n
        left -= n
    }
}

/// Writes all of `bytes` to `fd`.
func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { try writeAll(fd, $0) }
}

/// Replaces the file at `path` with what `write` puts into the given file descriptor, all or nothing.
///
/// The data goes to a new temporary file in the same directory, which is flushed (`fsync`) and then
/// renamed over `path`; the directory is flushed last so the rename survives a crash. If `write` throws,
/// or any step fails, the temporary file is removed, the error is rethrown and an existing file at `path`
/// is left untouched. An existing file's permission bits are carried over to the new one.
///
/// ```swift
/// try writeFileAtomically(path: "/tmp/out.bin") { fd in try writeAll(fd, header); try writeAll(fd, body) }
/// ```
public func writeFileAtomically(path: String, write: (Int32) throws -> Void) throws {
    let (dir, name) = try splitPath(path)
    var old = stat()
    let hadOld = stat(path, &old) == 0

    // A fresh, unpredictable name: created exclusively, so a stale or foreign file is never reused.
    var tmp = ""
    var fd: Int32 = -1
    for _ in 0..<16 {
        let tag = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        tmp = "\(dir)/.\(name).tmp-\(getpid())-\(tag)"
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd >= 0 || errno != EEXIST { break }
    }
    guard fd >= 0 else {
        throw PEFTKitError.io("cannot create a temporary file next to '\(path)': \(errnoString())")
    }

    var fdOpen = true
    var renamed = false
    defer {
        if fdOpen { close(fd) }
        if !renamed { unlink(tmp) }
    }

    do {
        try write(fd)
    } catch PEFTKitError.io(let message) {
        throw PEFTKitError.io("writing '\(path)': \(message)")
    }
    if hadOld, (old.st_mode & S_IFMT) == S_IFREG {
        _ = fchmod(fd, old.st_mode & 0o7777)
    }
    guard fsync(fd) == 0 else { throw PEFTKitError.io("cannot flush '\(path)' to disk: \(errnoString())") }
    fdOpen = false
    guard close(fd) == 0 else { throw PEFTKitError.io("cannot close '\(tmp)': \(errnoString())") }
    guard rename(tmp, path) == 0 else {
        throw PEFTKitError.io("cannot move the new file into place at '\(path)': \(errnoString())")
    }
    renamed = true

    let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard dfd >= 0 else { throw PEFTKitError.io("cannot open directory '\(dir)' to flush it: \(errnoString())") }
    defer { close(dfd) }
    // Some file systems cannot fsync a directory (EINVAL); the rename has happened either way.
    if fsync(dfd) != 0 && errno != EINVAL {
        throw PEFTKitError.io("cannot flush directory '\(dir)' after replacing '\(path)': \(errnoString())")
    }
}

/// Replaces the file at `path` with `bytes`, all or nothing (see `writeFileAtomically(path:write:)`).
public func writeFileAtomically(path: String, bytes: [UInt8]) throws {
    try writeFileAtomically(path: path) { fd in try writeAll(fd, bytes) }
}

/// Creates the directory `path` and any missing parents (`mkdir -p`). Succeeds if it already exists;
/// throws `io` if some component exists but is not a directory or cannot be created.
public func createDirectory(path: String) throws {
    guard !path.isEmpty else { throw PEFTKitError.invalidArgument("empty directory path") }
    var prefix = path.hasPrefix("/") ? "/" : ""
    for part in path.split(separator: "/", omittingEmptySubsequences: true) {
        prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + part
        if mkdir(prefix, 0o755) == 0 { continue }
        let err = errno
        var st = stat()
        if stat(prefix, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFDIR else {
                throw PEFTKitError.io("cannot create directory '\(path)': '\(prefix)' exists and is not a directory")
            }
            continue
        }
        throw PEFTKitError.io("cannot create directory '\(prefix)': \(String(cString: strerror(err)))")
    }
}

/// Reads a whole regular file. Files larger than `maxBytes` are refused (`format` error) before
/// anything is allocated, so a hostile or mistaken path cannot exhaust memory.
public func readWholeFile(path: String, maxBytes: Int = 64 << 20) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw PEFTKitError.io("cannot open '\(path)': \(errnoString())") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw PEFTKitError.io("cannot stat '\(path)': \(errnoString())") }
    guard (st.st_mode & S_IFMT) == S_IFREG else { throw PEFTKitError.io("'\(path)' is not a regular file") }
    let size = Int(st.st_size)
    guard size >= 0, size <= maxBytes else {
        throw PEFTKitError.format("'\(path)' is \(size) bytes, more than the limit of \(maxBytes) bytes")
    }
    var bytes = [UInt8](repeating: 0, count: size)
    var got = 0
    try bytes.withUnsafeMutableBytes { buf in
        guard let base = buf.baseAddress else { return }
        while got < size {
            let n = read(fd, base + got, size - got)
            if n < 0 {
                if errno == EINTR { continue }
                throw PEFTKitError.io("cannot read '\(path)': \(errnoString())")
            }
            if n == 0 { break }  // the file shrank while being read
            got += n
        }
    }
    if got < size { bytes.removeSubrange(got...) }
    return bytes
}

/// What kind of thing is at `path`, if anything.
enum PathKind { case missing, file, directory, other }

func pathKind(_ path: String) -> PathKind {
    var st = stat()
    guard stat(path, &st) == 0 else { return .missing }
    switch st.st_mode & S_IFMT {
    case S_IFREG: return .file
    case S_IFDIR: return .directory
    default: return .other
    }
}

// MARK: replacing several files of a folder together

/// glibc's renameat2, looked up at run time (Swift's Glibc module does not declare it). nil when absent.
private let renameat2Function: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32)? = {
    guard let sym = dlsym(nil, "renameat2") else { return nil }
    return unsafeBitCast(sym, to: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32).self)
}()
private let renameExchange: UInt32 = 2  // RENAME_EXCHANGE

/// The names in directory `path` with their kinds (lstat: a symlink is `.other`); nil if it cannot be read.
func directoryEntries(_ path: String) -> [(name: String, kind: PathKind)]? {
    guard pathKind(path) == .directory else { return nil }
    return listDirectory(path).map { name in
        var st = stat()
        guard lstat(path + "/" + name, &st) == 0 else { return (name, .missing) }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return (name, .file)
        case S_IFDIR: return (name, .directory)
        default: return (name, .other)
        }
    }
}

/// Removes a staging folder PEFTKit made (regular files only, then the folder); best effort.
private func removeStagingFolder(_ path: String) {
    for (name, kind) in directoryEntries(path) ?? [] where kind == .file { unlink(path + "/" + name) }
    rmdir(path)
}

/// Replaces the files `files` of folder `directory` (created if missing) together: after a crash at any
/// moment the folder holds either all the old files or all the new ones, never a mix.
///
/// The new files are written (each flushed) into a staging folder beside `directory`, together with hard
/// links to the folder's other regular files, and the two folders are swapped in one atomic
/// `renameat2(RENAME_EXCHANGE)`; the old folder is then removed. Where that cannot be done (the folder
/// holds subfolders or symlinks, is itself a symlink, or the file system lacks the exchange) the files are
/// replaced one by one, each atomically, in the order given: write the file that names the others last.
/// One writer per folder at a time.
func replaceFilesTogether(directory: String, files: [(name: String, write: (Int32) throws -> Void)]) throws {
    var dir = directory
    while dir.count > 1 && dir.hasSuffix("/") { dir.removeLast() }
    func oneByOne() throws {
        try createDirectory(path: dir)
        for f in files { try writeFileAtomically(path: dir + "/" + f.name, write: f.write) }
    }
    let (parent, base) = try splitPath(dir)
    var st = stat()
    let exists = lstat(dir, &st) == 0
    if exists && (st.st_mode & S_IFMT) != S_IFDIR {
        if (st.st_mode & S_IFMT) == S_IFLNK { return try oneByOne() }
        throw PEFTKitError.io("cannot write into '\(dir)': it exists and is not a directory")
    }
    let names = Set(files.map { $0.name })
    var others: [String] = []
    if exists {
        guard let entries = directoryEntries(dir) else { return try oneByOne() }
        for e in entries where !names.contains(e.name) {
            guard e.kind == .file else { return try oneByOne() }
            others.append(e.name)
        }
        guard renameat2Function != nil else { return try oneByOne() }
    } else {
        try createDirectory(path: parent)
    }
    // Staging folders of interrupted saves into this folder.
    let stagingPrefix = ".\(base).peftkit-new-"
    for e in directoryEntries(parent) ?? [] where e.kind == .directory && e.name.hasPrefix(stagingPrefix) {
        removeStagingFolder(parent + "/" + e.name)
    }
    var template = Array("\(parent)/\(stagingPrefix)XXXXXX".utf8CString)
    guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
        throw PEFTKitError.io("cannot create a staging folder next to '\(dir)': \(errnoString())")
    }
    let staging = String(cString: template)
    var swapped = false
    defer { if !swapped { removeStagingFolder(staging) } }
    _ = chmod(staging, exists ? st.st_mode & 0o7777 : 0o755)
    for f in files { try writeFileAtomically(path: staging + "/" + f.name, write: f.write) }
    for name in others where link(dir + "/" + name, staging + "/" + name) != 0 {
        return try oneByOne()  // e.g. a file system without hard links
    }
    if exists {
        guard let exchange = renameat2Function, exchange(AT_FDCWD, staging, AT_FDCWD, dir, renameExchange) == 0 else {
            let e = errno
            if e == EINVAL || e == ENOSYS || e == EOPNOTSUPP { return try oneByOne() }
            throw PEFTKitError.io("cannot swap the new files into '\(dir)': \(String(cString: strerror(e)))")
        }
    } else {
        guard rename(staging, dir) == 0 else {
            throw PEFTKitError.io("cannot move the new folder into place at '\(dir)': \(errnoString())")
        }
    }
    swapped = true
    let dfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dfd >= 0 {
        _ = fsync(dfd)
        close(dfd)
    }
    if exists { removeStagingFolder(staging) }  // now the old folder
}

/// The names in a directory (without "." and ".."); empty if it cannot be read.
func listDirectory(_ path: String) -> [String] {
    guard let d = opendir(path) else { return [] }
    defer { closedir(d) }
    var out: [String] = []
    while let e = readdir(d) {
        // Read d_name in place up to its NUL: the bytes after it may be uninitialised.
        let name = withUnsafeMutablePointer(to: &e.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: e.pointee.d_name)) { String(cString: $0) }
        }
        if name != "." && name != ".." { out.append(name) }
    }
    return out
}
