// Which frozen linears a config selects, matched as PEFT matches module names.

/// The (site, layer) product a PEFT target spec selects, matched as PEFT matches module names: a list
/// entry matches a module whose name equals it or ends with "." + entry (then filtered by
/// `layers_to_transform`); a string is a regular expression over the whole name, or "all-linear".
func resolveModuleSpec(_ spec: ModuleSpec, layers: [Int]?, model config: ModelConfig, source: String) throws -> ([LinearSite], [Int]) {
    let arch = config.architecture
    for l in layers ?? [] where l < 0 || l >= config.numLayers {
        throw PEFTKitError.format("\(source): layers_to_transform has layer \(l), out of range 0..<\(config.numLayers)")
    }
    let allowed = layers.map { Set($0) }
    var pairs = Set<Int>()  // layer * LinearSite.count + site
    switch spec {
    case .names(let names):
        guard !names.isEmpty else { throw PEFTKitError.format("\(source): target_modules is empty") }
        for n in names {
            var found = false
            for l in 0..<config.numLayers {
                for s in LinearSite.sites(arch) {
                    let full = s.module(arch, layer: l)
                    if full == n { found = true; pairs.insert(l * LinearSite.count + s.rawValue); continue }
                    guard full.hasSuffix("." + n) else { continue }
                    found = true
                    if allowed?.contains(l) ?? true { pairs.insert(l * LinearSite.count + s.rawValue) }
                }
            }
            guard found else {
                throw PEFTKitError.unsupported("\(source): target module '\(n)' matches no linear PEFTKit adapts in a \(arch) model "
                    + "(choose from \(LinearSite.sites(arch).map { $0.shortName(arch) }))")
            }
        }
    case .pattern(let pattern):
        if pattern == "all-linear" {
            for l in 0..<config.numLayers { for s in LinearSite.sites(arch) { pairs.insert(l * LinearSite.count + s.rawValue) } }
        } else {
            let re = try moduleRegex(pattern, key: "target_modules", source: source)
            for l in 0..<config.numLayers {
                for s in LinearSite.sites(arch) where (try? re.wholeMatch(in: s.module(arch, layer: l))) != nil {
                    pairs.insert(l * LinearSite.count + s.rawValue)
                }
            }
        }
    }
    guard !pairs.isEmpty else { throw PEFTKitError.format("\(source): the targets select no module of this model") }
    let sites = Set(pairs.map { $0 % LinearSite.count }).sorted().map { LinearSite(rawValue: $0)! }
    let ls = Set(pairs.map { $0 / LinearSite.count }).sorted()
    guard pairs.count == sites.count * ls.count else {
        throw PEFTKitError.unsupported("\(source): the targets adapt different modules in different layers; "
            + "PEFTKit adapts the same modules in every chosen layer")
    }
    return (sites, ls)
}

/// IA3's feed-forward modules among `sites`: a list entry matches a module whose name ends with it (PEFT's
/// plain suffix test), a string is a whole-name regular expression. Each must be a target.
func resolveFeedForward(_ spec: ModuleSpec, among sites: [LinearSite], model config: ModelConfig, source: String) throws -> [LinearSite] {
    let arch = config.architecture
    var out: [LinearSite] = []
    for s in LinearSite.sites(arch) {
        let full = s.module(arch, layer: 0)
        let hit: Bool
        switch spec {
        case .names(let names): hit = names.contains { full.hasSuffix($0) }
        case .pattern(let p):
            let re = try moduleRegex(p, key: "feedforward_modules", source: source)
            hit = (try? re.wholeMatch(in: full)) != nil
        }
        guard hit else { continue }
        guard sites.contains(s) else {
            throw PEFTKitError.format("\(source): feed-forward module '\(s.shortName(arch))' is not a target module")
        }
        out.append(s)
    }
    return out
}

/// A module-name pattern of an adapter file as a regular expression. The pattern comes from a file: its length and
/// its nesting of groups and classes are bounded first (the regular-expression parser recurses once per level, so a
/// few hundred `[` or `(` would exhaust the stack instead of failing).
func moduleRegex(_ pattern: String, key: String, source: String) throws -> Regex<AnyRegexOutput> {
    guard pattern.utf8.count <= 4096 else { throw PEFTKitError.format("\(source): \(key) pattern is too long") }
    var depth = 0, deepest = 0, escaped = false
    for b in pattern.utf8 {
        if escaped { escaped = false; continue }
        switch b {
        case UInt8(ascii: "\\"): escaped = true
        case UInt8(ascii: "("), UInt8(ascii: "["), UInt8(ascii: "{"): depth += 1; deepest = max(deepest, depth)
        case UInt8(ascii: ")"), UInt8(ascii: "]"), UInt8(ascii: "}"): depth = max(0, depth - 1)
        default: break
        }
    }
    guard deepest <= 32 else {
        throw PEFTKitError.format("\(source): \(key) pattern nests groups or classes \(deepest) deep (at most 32)")
    }
    do { return try Regex(pattern) } catch {
        throw PEFTKitError.unsupported("\(source): \(key) pattern '\(pattern)' is not a regular expression PEFTKit reads (\(error))")
    }
}
