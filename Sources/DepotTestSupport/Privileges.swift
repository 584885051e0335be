import Foundation

/// Whether tests that need root (they mount a small tmpfs to fill a disk for real) run.
///
/// As root they always run. Under CI (`CI=true`) they run even without root, so that they fail
/// (mount refuses) instead of being skipped: a CI machine that cannot run them must go red, not
/// pass with three fewer tests. Elsewhere, as a user without root, they are skipped, and
/// `scripts/test` counts them in its "N skipped".
public let rootTestsEnabled: Bool = geteuid() == 0 || ProcessInfo.processInfo.environment["CI"] == "true"

