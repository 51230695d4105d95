// Shared machinery of the C shim: status codes, the per-thread error message, argument readers and
// the model handle. Every exported function funnels through `entry`, so no Swift error and no invalid
// C argument can escape as a trap.

import CPEFTKit
import PEFTKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Errors and status codes

/// A failure detected by the shim itself, with the status code it maps to.
struct ShimError: Error {
    let code: peftkit_status
    let message: String

    static func invalid(_ message: String) -> ShimError {
        ShimError(code: PEFTKIT_ERR_INVALID_ARGUMENT, message: message)
    }

    static func tooSmall(_ message: String) -> ShimError {
        ShimError(code: PEFTKIT_ERR_BUFFER_TOO_SMALL, message: message)
    }

    static func overflow(_ message: String) -> ShimError {
        ShimError(code: PEFTKIT_ERR_OUT_OF_MEMORY, message: message)
    }

    static func `internal`(_ message: String) -> ShimError {
        ShimError(code: PEFTKIT_ERR_INTERNAL, message: message)
    }
}

/// The stable status code of each `PEFTKitError` case.
func statusCode(of error: PEFTKitError) -> peftkit_status {
    switch error {
    case .invalidArgument: return PEFTKIT_ERR_INVALID_ARGUMENT
    case .io: return PEFTKIT_ERR_IO
    case .format: return PEFTKIT_ERR_FORMAT
    case .unsupported: return PEFTKIT_ERR_UNSUPPORTED
    case .notFound: return PEFTKIT_ERR_NOT_FOUND
    case .numerical: return PEFTKIT_ERR_NUMERICAL
    case .state: return PEFTKIT_ERR_STATE
    case .outOfMemory: return PEFTKIT_ERR_OUT_OF_MEMORY
    case .busy: return PEFTKIT_ERR_BUSY
    case .cancelled: return PEFTKIT_ERR_CANCELLED
    }
}

/// Runs the body of an exported function: returns `PEFTKIT_OK`, or records the error's message for
/// `peftkit_last_error()` and returns its status code.
func entry(_ function: StaticString, _ body: () throws -> Void) -> peftkit_status {
    do {
        try body()
        return PEFTKIT_OK
    } catch let e as ShimError {
        setLastError("\(function): \(e.message)")
        return e.code
    } catch let e as PEFTKitError {
        let m = e.message
        setLastError(m.isEmpty ? "\(function): \(kindName(e))" : "\(function): \(m)")
        return statusCode(of: e)
    } catch {
        setLastError("\(function): unexpected error: \(error)")
        return PEFTKIT_ERR_INTERNAL
    }
}

private func kindName(_ e: PEFTKitError) -> String {
    switch e {
    case .invalidArgument: return "invalid argument"
    case .io: return "I/O error"
    case .format: return "malformed file"
    case .unsupported: return "not supported"
    case .notFound: return "not found"
    case .numerical: return "NaN or infinity in the computation"
    case .state: return "not allowed in the current state"
    case .outOfMemory: return "out of memory"
    case .busy: return "model in use by another call"
    case .cancelled: return "cancelled"
    }
}

// MARK: - Per-thread last error

/// The key of the per-thread message. Created once (Swift initialises globals exactly once, thread
/// safely); the destructor frees a thread's message when the thread exits.
private let lastErrorKey: pthread_key_t? = {
    var key = pthread_key_t()
    let rc = pthread_key_create(&key) { p in free(p) }
    return rc == 0 ? key : nil
}()

/// A NUL-terminated copy of `s` that lives as long as the process. Read-only once made, so the globals
/// holding these are safe to share (hence `nonisolated(unsafe)`).
func permanentCString(_ s: String) -> UnsafePointer<CChar> {
    let bytes = Array(s.utf8)
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
    for (i, b) in bytes.enumerated() { p[i] = CChar(bitPattern: b) }
    p[bytes.count] = 0
    return UnsafePointer(p)
}

nonisolated(unsafe) let emptyCString = permanentCString("")
nonisolated(unsafe) private let noKeyMessage = permanentCString("peftkit: the per-thread error message is unavailable")

func setLastError(_ message: String) {
    guard let key = lastErrorKey else { return }
    let copy = message.withCString { strdup($0) }
    guard let copy else { return }  // out of memory: keep the previous message rather than fail
    let old = pthread_getspecific(key)
    if pthread_setspecific(key, copy) == 0 {
        free(old)
    } else {
        free(copy)
    }
}

func lastErrorPointer() -> UnsafePointer<CChar> {
    guard let key = lastErrorKey else { return noKeyMessage }
    guard let p = pthread_getspecific(key) else { return emptyCString }
    return UnsafePointer(p.assumingMemoryBound(to: CChar.self))
}

// MARK: - Model handle

/// What a `peftkit_model *` points at. Calls on one model are serialised by the core (`Model` refuses an
/// overlapping call with PEFTKitError.state): the handle adds no lock of its own.
final class ModelHandle: @unchecked Sendable {  // shared across threads by design: the core serialises use
    let model: Model

    init(_ model: Model) {
        self.model = model
    }

    /// A new C handle for this model, registered as live (see `liveHandles`).
    var opaque: OpaquePointer {
        let p = Unmanaged.passRetained(self).toOpaque()
        liveHandles.withLock { _ = $0.insert(UInt(bitPattern: p)) }
        return OpaquePointer(p)
    }

    /// The handle behind a C pointer, or INVALID_ARGUMENT if it is NULL or not a live handle. Looked up and
    /// retained under the registry lock, so a concurrent peftkit_model_free cannot destroy it during the call.
    static func from(_ p: OpaquePointer?) throws -> ModelHandle {
        guard let p else { throw ShimError.invalid("model is NULL") }
        let raw = UnsafeRawPointer(p)
        let retained: Unmanaged<ModelHandle>? = liveHandles.withLock { live in
            guard live.contains(UInt(bitPattern: raw)) else { return nil }
            return Unmanaged<ModelHandle>.fromOpaque(raw).retain()
        }
        guard let retained else {
            throw ShimError.invalid("model \(raw) is not a live model (already freed, or not returned by "
                                    + "peftkit_model_create / peftkit_model_load)")
        }
        return retained.takeRetainedValue()
    }

    /// Unregisters and releases a handle; false (and nothing done) if `p` is not a live handle.
    static func release(_ p: OpaquePointer) -> Bool {
        let raw = UnsafeRawPointer(p)
        let wasLive = liveHandles.withLock { $0.remove(UInt(bitPattern: raw)) != nil }
        if wasLive { Unmanaged<ModelHandle>.fromOpaque(raw).release() }
        return wasLive
    }
}

/// Addresses of the model handles given out and not yet freed. Every call checks its model pointer here, so a
/// freed or made-up pointer is an INVALID_ARGUMENT instead of a use-after-free. A reused address cannot be told
/// apart from the model now living there.
private let liveHandles = Mutex<Set<UInt>>([])

// MARK: - Argument readers

/// A required input string: not NULL, valid UTF-8.
func readString(_ p: UnsafePointer<CChar>?, _ what: String) throws -> String {
    guard let p else { throw ShimError.invalid("\(what) is NULL") }
    guard let s = String(validatingCString: p) else { throw ShimError.invalid("\(what) is not valid UTF-8") }
    return s
}

/// A required input string of at most `maxBytes` bytes before its NUL: not NULL, valid UTF-8. Reads no further
/// than `maxBytes + 1` bytes, so a longer string fails without being copied.
func readString(_ p: UnsafePointer<CChar>?, _ what: String, maxBytes: Int) throws -> String {
    guard let p else { throw ShimError.invalid("\(what) is NULL") }
    let n = strnlen(p, maxBytes + 1)
    guard n <= maxBytes else { throw ShimError.invalid("\(what) is longer than \(maxBytes) bytes") }
    let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: n)
    guard let s = String(validating: bytes, as: UTF8.self) else { throw ShimError.invalid("\(what) is not valid UTF-8") }
    return s
}

/// A required adapter name: not NULL, valid UTF-8, not empty.
func readName(_ p: UnsafePointer<CChar>?, _ what: String = "name") throws -> String {
    let s = try readString(p, what)
    guard !s.isEmpty else { throw ShimError.invalid("\(what) is empty") }
    return s
}

// MARK: - Versioned structs
//
// The caller's struct_size is the authority (peftkit.h, "Config structs"): a struct compiled from an older header
// is a prefix of this library's layout, ending at a field boundary; the library reads that prefix and takes the
// defaults for the rest, and writes outputs only up to it. A larger struct from a newer header is accepted when
// the bytes this library does not know are all zero (its newer fields at "behave as before"), refused with
// PEFTKIT_ERR_UNSUPPORTED otherwise.

/// A struct of peftkit.h that starts with `uint32_t struct_size`.
protocol VersionedStruct {
    /// The C name, for messages.
    static var cName: String { get }
    /// The offset of every field after struct_size, in order: the sizes an older header's struct can have.
    static var fieldOffsets: [Int] { get }
}

/// Sizes above this are not a struct (a garbage struct_size), whatever the header version.
let maxStructSize = 65536

extension VersionedStruct {
    /// The sizes this library accepts below its own: the end of every field after struct_size (the end of a field
    /// is where the next one starts: fields are only ever appended, and no struct has padding).
    static var prefixSizes: [Int] { Array(fieldOffsets.dropFirst(2)) + [MemoryLayout<Self>.size] }
}

/// The struct_size the caller wrote at `raw`, checked against the layouts above (not the tail: see readStruct).
func callerStructSize<T: VersionedStruct>(_ raw: UnsafeRawPointer, _ type: T.Type, _ what: String) throws -> Int {
    let size = Int(raw.load(as: UInt32.self))
    try checkStructSize(size, T.self, what)
    return size
}

func checkStructSize<T: VersionedStruct>(_ size: Int, _ type: T.Type, _ what: String) throws {
    let own = MemoryLayout<T>.size
    if size >= own {
        guard size <= maxStructSize else {
            throw ShimError.invalid("\(what)->struct_size is \(size): no \(T.cName) is that large (initialise the "
                                    + "struct with its *_init function, or set sizeof(\(T.cName)))")
        }
        return
    }
    guard T.prefixSizes.contains(size) else {
        throw ShimError.invalid("\(what)->struct_size is \(size), not the size of any version of \(T.cName) "
                                + "(this library's is \(own); initialise the struct with its *_init function, or set sizeof(\(T.cName)))")
    }
}

/// The value an input struct describes: the caller's bytes up to its struct_size over `defaults`. A larger struct
/// from a newer header must have a zero tail.
func readStruct<T: VersionedStruct>(_ p: UnsafePointer<T>?, _ what: String, defaults: T) throws -> T {
    guard let p else { throw ShimError.invalid("\(what) is NULL") }
    let raw = UnsafeRawPointer(p)
    let size = try callerStructSize(raw, T.self, what)
    let own = MemoryLayout<T>.size
    if size > own {
        let tail = UnsafeRawBufferPointer(start: raw + own, count: size - own)
        if let i = tail.firstIndex(where: { $0 != 0 }) {
            throw ShimError(code: PEFTKIT_ERR_UNSUPPORTED,
                            message: "\(what) is a \(size)-byte \(T.cName) from a newer header, and its byte \(own + i) "
                                + "(a field this library, which knows \(own) bytes, does not implement) is not zero")
        }
    }
    var value = defaults
    withUnsafeMutableBytes(of: &value) { dst in
        dst.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: min(size, own)))
    }
    return value
}

/// Checks an output struct's struct_size before the call does its work; returns the size to write (nil: no struct).
func outputStructSize<T: VersionedStruct>(_ p: UnsafeMutablePointer<T>?, _ what: String) throws -> Int? {
    guard let p else { return nil }
    return try callerStructSize(UnsafeRawPointer(p), T.self, what)
}

/// Writes `value` into a caller's struct of `size` bytes (from outputStructSize): the fields its size covers,
/// struct_size left as the caller set it, and zeros in the tail of a newer header's larger struct.
func writeStruct<T: VersionedStruct>(_ value: T, to p: UnsafeMutablePointer<T>, size: Int) {
    let own = MemoryLayout<T>.size
    let header = MemoryLayout<UInt32>.size
    let raw = UnsafeMutableRawPointer(p)
    let n = min(size, own)
    if n > header {
        withUnsafeBytes(of: value) { src in
            UnsafeMutableRawBufferPointer(start: raw + header, count: n - header)
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: src[header..<n]))
        }
    }
    if size > own { (raw + own).initializeMemory(as: UInt8.self, repeating: 0, count: size - own) }
}

/// The body of a `*_init(config, size)` function: the defaults for the fields `size` covers, zeros beyond this
/// library's layout, struct_size = size.
func initStruct<T: VersionedStruct>(_ p: UnsafeMutablePointer<T>?, size: Int, defaults: T) throws {
    guard let p else { throw ShimError.invalid("config is NULL") }
    try checkStructSize(size, T.self, "config")
    let raw = UnsafeMutableRawPointer(p)
    var value = defaults
    withUnsafeMutableBytes(of: &value) { $0.storeBytes(of: UInt32(size), as: UInt32.self) }
    let own = MemoryLayout<T>.size
    withUnsafeBytes(of: value) { src in
        UnsafeMutableRawBufferPointer(start: raw, count: min(size, own))
            .copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<min(size, own)]))
    }
    if size > own { (raw + own).initializeMemory(as: UInt8.self, repeating: 0, count: size - own) }
}

/// Field offsets of a C struct, from its key paths (clang's layout, so they cannot drift from the header).
func offsets<T>(_ paths: [PartialKeyPath<T>]) -> [Int] {
    paths.compactMap { MemoryLayout<T>.offset(of: $0) }
}

extension peftkit_model_config: VersionedStruct {
    static var cName: String { "peftkit_model_config" }
    static var fieldOffsets: [Int] {
        offsets([\Self.struct_size, \Self.architecture, \Self.vocab_size, \Self.hidden_size, \Self.num_layers,
                 \Self.num_heads, \Self.num_kv_heads, \Self.head_dim, \Self.intermediate_size, \Self.max_positions,
                 \Self.norm_eps, \Self.rope_theta, \Self.tie_word_embeddings, \Self.qkv_bias, \Self.output_bias,
                 \Self.mlp_bias])
    }
}

extension peftkit_train_config: VersionedStruct {
    static var cName: String { "peftkit_train_config" }
    static var fieldOffsets: [Int] {
        offsets([\Self.struct_size, \Self.learning_rate, \Self.beta1, \Self.beta2, \Self.eps, \Self.weight_decay,
                 \Self.schedule, \Self.warmup_steps, \Self.total_steps, \Self.max_grad_norm, \Self.micro_batch_size,
                 \Self.lora_plus_ratio, \Self.gradient_checkpointing, \Self.activation_memory])
    }
}

extension peftkit_train_result: VersionedStruct {
    static var cName: String { "peftkit_train_result" }
    static var fieldOffsets: [Int] {
        offsets([\Self.struct_size, \Self.loss, \Self.grad_norm, \Self.learning_rate, \Self.step, \Self.tokens])
    }
}

extension peftkit_generate_config: VersionedStruct {
    static var cName: String { "peftkit_generate_config" }
    static var fieldOffsets: [Int] {
        offsets([\Self.struct_size, \Self.max_new_tokens, \Self.temperature, \Self.top_k, \Self.top_p,
                 \Self.n_stop_tokens, \Self.seed, \Self.stop_tokens, \Self.repetition_penalty, \Self.min_p,
                 \Self.n_stop_strings, \Self.reserved0, \Self.stop_strings])
    }
}

extension peftkit_generate_result: VersionedStruct {
    static var cName: String { "peftkit_generate_result" }
    static var fieldOffsets: [Int] {
        offsets([\Self.struct_size, \Self.finish_reason, \Self.n_tokens, \Self.n_generated, \Self.stop_index,
                 \Self.stop_byte_offset])
    }
}

extension peftkit_tokenizer_info: VersionedStruct {
    static var cName: String { "peftkit_tokenizer_info" }
    static var fieldOffsets: [Int] {
        offsets([\Self.struct_size, \Self.has_tokenizer, \Self.has_chat_template, \Self.vocab_size, \Self.bos_id,
                 \Self.eos_id, \Self.eot_id, \Self.adds_bos])
    }
}

/// A 0/1 flag.
func readBool(_ v: Int32, _ what: String) throws -> Bool {
    switch v {
    case 0: return false
    case 1: return true
    default: throw ShimError.invalid("\(what) must be 0 or 1, got \(v)")
    }
}

/// A 0/1 flag where -1 means "the default" (nil).
func readTriState(_ v: Int32, _ what: String) throws -> Bool? {
    switch v {
    case -1: return nil
    case 0: return false
    case 1: return true
    default: throw ShimError.invalid("\(what) must be -1, 0 or 1, got \(v)")
    }
}

/// A caller buffer capacity given as size_t. Values above Int.max (which Swift sees as negative) are
/// not real buffer sizes.
func readCapacity(_ cap: Int, _ what: String) throws -> Int {
    guard cap >= 0 else { throw ShimError.invalid("\(what) is not a valid size") }
    return cap
}

/// Writes `s` and a NUL into `buf` of `cap` bytes, following the header's buffer rules.
func writeString(_ s: String, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                 _ lenOut: UnsafeMutablePointer<Int>?, _ what: String) throws {
    let bytes = Array(s.utf8)
    guard let buf else {
        guard cap == 0 else { throw ShimError.invalid("\(what) is NULL but its capacity is \(cap)") }
        lenOut?.pointee = bytes.count
        return
    }
    let capacity = try readCapacity(cap, "capacity of \(what)")
    lenOut?.pointee = bytes.count
    guard capacity > bytes.count else {
        throw ShimError.tooSmall("\(what) needs \(bytes.count + 1) bytes, capacity is \(capacity)")
    }
    for (i, b) in bytes.enumerated() { buf[i] = CChar(bitPattern: b) }
    buf[bytes.count] = 0
}

/// The element count of a [batch, seqLen] token array, 0 unless both are positive: the core refuses such a
/// shape (with its own message) before it reads an id, so the shim only has to build a buffer it cannot misread.
func tokenCount(batch: Int32, seqLen: Int32) -> Int {
    batch > 0 && seqLen > 0 ? Int(batch) * Int(seqLen) : 0  // at most 2^62: cannot overflow Int
}

/// Refuses a prompt longer than the model can take before the shim copies it out of the caller's array, so an
/// absurd length fails with INVALID_ARGUMENT instead of reading far past the array. (The core checks the length
/// again with the adapter's virtual positions added, but only after the copy.)
func checkPromptLength(_ n: Int32, _ what: String, model: Model) throws {
    guard n >= 0 else { throw ShimError.invalid("\(what) must be >= 0, got \(n)") }
    let limit = model.config.maxPositions
    guard Int(n) <= limit else {
        throw ShimError.invalid("\(what) = \(n) exceeds the model's maximum of \(limit) positions")
    }
}

extension Int32 {
    /// Narrows a value the core has already bounded; clamps rather than traps.
    init(bounded v: Int) { self.init(clamping: v) }
}
