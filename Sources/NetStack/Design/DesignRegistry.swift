import DMAPools
import Synchronization

/// Resolves design and provider names: what `txsim --designs`, `--design` and
/// `--provider` go through, and what a user's package registers its own kinds
/// in. `shared` starts with the built-in kinds, each registered by the same
/// `register` call a user makes, in the order reports list them: designs
/// `bounce`, `frag-refill`, `page-pool`, `decrypted-pool`, `inline-decrypt`;
/// providers `swiotlb`, `decrypted`, `system`.
///
/// Names are resolved once, when an experiment is set up; nothing per frame
/// goes through the registry. Thread-safe.
public final class DesignRegistry: Sendable {
    /// The registry `txsim` resolves names in, with the built-in kinds.
    public static let shared = DesignRegistry()

    private struct Entries {
        var designs: [any TransmitDesignKind] = []
        var providers: [any PagePoolProviderKind] = []
    }

    private let entries = Mutex(Entries())

    /// A registry with the built-in kinds (`builtIns`), or an empty one.
    public init(builtIns: Bool = true) {
        guard builtIns else { return }
        do {
            for kind in BuiltInKinds.designs { try register(kind) }
            for kind in BuiltInKinds.providers { try register(kind) }
        } catch {
            preconditionFailure("built-in kinds: \(error)")
        }
    }

    // MARK: Registering

    /// Adds a design kind; its name must be new to this registry.
    public func register(_ kind: any TransmitDesignKind) throws(RegistryError) {
        try add(kind, named: kind.name, of: "design", to: \.designs) { $0.name }
    }

    /// Adds a page_pool provider kind; its name must be new to this registry.
    public func register(_ kind: any PagePoolProviderKind) throws(RegistryError) {
        try add(kind, named: kind.name, of: "provider", to: \.providers) { $0.name }
    }

    private func add<Kind>(_ kind: Kind, named name: String, of what: String, to list: WritableKeyPath<Entries, [Kind]>,
                           name nameOf: (Kind) -> String) throws(RegistryError) {
        try Self.checkName(name, of: what)
        try entries.withLock { (e: inout Entries) throws(RegistryError) in
            guard !e[keyPath: list].contains(where: { nameOf($0) == name }) else { throw .duplicateName(name, of: what) }
            e[keyPath: list].append(kind)
        }
    }

    private static func checkName(_ name: String, of what: String) throws(RegistryError) {
        guard !name.isEmpty, name.unicodeScalars.allSatisfy({ $0.properties.isLowercase || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" || $0 == "." }) else {
            throw .invalidName(name, of: what)
        }
    }

    // MARK: Resolving

    /// Every registered design kind, in registration order.
    public var designs: [any TransmitDesignKind] { entries.withLock { $0.designs } }

    /// Every registered provider kind, in registration order.
    public var providers: [any PagePoolProviderKind] { entries.withLock { $0.providers } }

    /// The registered design names, comma-separated (what errors list).
    public var designNames: String { designs.map(\.name).joined(separator: ", ") }

    /// The registered provider names, comma-separated (what errors list).
    public var providerNames: String { providers.map(\.name).joined(separator: ", ") }

    /// The design registered as `name`; the error is `parameter`'s
    /// (`txsim --design`) and lists the registered names.
    public func design(named name: String, parameter: String = "design") throws(ParameterError) -> any TransmitDesignKind {
        guard let kind = designs.first(where: { $0.name == name }) else {
            throw .invalid(parameter: parameter, reason: "unknown design '\(name)' (registered: \(designNames))")
        }
        return kind
    }

    /// The designs of a comma-separated list (`txsim --designs`): at least
    /// one, each registered and named once.
    public func designs(named list: String, parameter: String = "designs") throws(ExperimentError) -> [any TransmitDesignKind] {
        var kinds: [any TransmitDesignKind] = []
        for name in list.split(separator: ",", omittingEmptySubsequences: false) {
            guard !name.isEmpty else {
                throw .invalid(.invalid(parameter: parameter,
                                        reason: "'\(list)' names no design: give one or more of \(designNames), separated by commas"))
            }
            do { kinds.append(try design(named: String(name), parameter: parameter)) } catch { throw .invalid(error) }
        }
        try Experiment.checkDesigns(kinds, registry: self)
        return kinds
    }

    /// The provider registered as `name`; the error is `parameter`'s
    /// (`txsim --provider`) and lists the registered names.
    public func provider(named name: String, parameter: String = "provider") throws(ParameterError) -> any PagePoolProviderKind {
        guard let kind = providers.first(where: { $0.name == name }) else {
            throw .invalid(parameter: parameter, reason: "unknown page_pool provider '\(name)' (registered: \(providerNames))")
        }
        return kind
    }
}

/// Why a kind could not be registered.
public enum RegistryError: Error, Hashable, CustomStringConvertible {
    /// Another kind of the same sort already has the name.
    case duplicateName(String, of: String)
    /// The name is empty or has characters other than lower-case letters,
    /// digits, `-`, `_` and `.`.
    case invalidName(String, of: String)

    public var description: String {
        switch self {
        case .duplicateName(let name, let what): "a \(what) named '\(name)' is already registered"
        case .invalidName(let name, let what):
            "'\(name)' cannot name a \(what): use lower-case letters, digits, '-', '_' and '.' (no spaces or commas)"
        }
    }
}

/// The built-in kinds, in the order `DesignRegistry` registers them.
enum BuiltInKinds {
    static let designs: [any TransmitDesignKind] = [
        BounceDesignKind(), FragRefillDesignKind(), PagePoolDesignKind(), DecryptedPoolDesignKind(), InlineDecryptDesignKind(),
    ]
    static let providers: [any PagePoolProviderKind] = [SWIOTLBProviderKind(), DecryptedProviderKind(), SystemProviderKind()]
}
