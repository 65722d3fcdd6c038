/// What this build of DMAPools checks, for reports that must say whether
/// their figures came from a build fit to be timed.
public enum BuildConfiguration {
    /// Whether DMAPools was built with its invariant checks
    /// (`DMAPOOLS_INVARIANTS`: debug builds, and any build with
    /// `-Xswiftc -DDMAPOOLS_INVARIANTS`). Timings from such a build include
    /// the checks.
    public static var invariantChecksEnabled: Bool {
        #if DMAPOOLS_INVARIANTS
        return true
        #else
        return false
        #endif
    }

    /// Whether DMAPools itself was compiled without optimization (`-Onone`).
    public static var isDebugBuild: Bool {
        #if DEBUG
        return true
        #else
        return false
        #endif
    }

    /// `release`, or `debug` / `release+invariants` when a timing would not
    /// be of the optimized library alone.
    public static var label: String {
        isDebugBuild ? "debug" : (invariantChecksEnabled ? "release+invariants" : "release")
    }

    /// Whether figures timed in this build measure the optimized library.
    public static var isFitForTiming: Bool { !isDebugBuild && !invariantChecksEnabled }
}
