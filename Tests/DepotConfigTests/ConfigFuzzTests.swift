import DepotTestSupport
import PropertyBased
import Testing

@testable import DepotConfig

/// Property-based fuzzing of the configuration parser: random YAML trees (deep nesting,
/// random indentation, quoting, comments, CRLF) round-trip through Yams and
/// `YAMLValue.parse` with their line numbers; random configurations round-trip through
/// `DepotConfiguration.parse` to the expected values; an injected mistake is reported on its
/// own line; and mutated or random text never crashes and never names a line outside the text.
/// On swift-property-based: a failing tree or text is shrunk and reported with its seed; to
/// replay it, add the `.fixedSeed("…")` the issue names to the `@Test` (see
/// `Sources/DepotTestSupport/FuzzGenerators.swift`).
@Suite struct ConfigFuzzTests {
    static let inputs = 15_000

    @Test func yamlTreesRoundTrip() async {
        let input = Generator(run: { YAMLTreeInput.generate(&$0) }, shrink: { YAMLTreeInput.shrink($0) })
        await propertyCheck(count: Self.inputs, input: input) { input in
            let (text, lines) = input.rendered
            do {
                let parsed = try YAMLValue.parse(text)
                if let difference = YAMLCompare.difference(parsed, input.tree, lines: lines, at: "root") { Issue.record("\(difference)") }
            } catch {
                Issue.record("refused \(fuzzQuote(text)): \(error)")
            }
        }
    }

    @Test func configurationsRoundTrip() async {
        await propertyCheck(count: Self.inputs, input: Generator { ConfigInput.generate(&$0) }) { input in
            if let failure = input.failure() { Issue.record("\(failure)") }
        }
    }

    @Test func mutatedTextNeverCrashesAndNamesItsLine() async {
        let input = Generator(run: { MutatedConfigInput.generate(&$0) }, shrink: { MutatedConfigInput.shrink($0) })
        await propertyCheck(count: Self.inputs, input: input) { input in
            if let failure = ConfigMutationCheck.failure(input.text, tabLine: input.tabLine) { Issue.record("\(failure)") }
        }
    }

    /// Seeds found by fuzzing, kept as plain regression cases.
    @Test func regressions() throws {
        // CRLF line ends: "\r\n" is one Character, so splitting on "\n" saw one long line and
        // data_dir swallowed the rest of the file.
        let crlf = try DepotConfiguration.parse("data_dir: /srv/depot\r\nlog_level: debug\r\n")
        #expect(crlf.dataDirectory == "/srv/depot")
        #expect(crlf.logLevel == "debug")
        // A list at its key's indentation followed by the next key of the same map.
        let config = try DepotConfiguration.parse("clouds:\n- owner: a\n  region: b\ncache:\n  size: 1GiB\n")
        #expect(config.clouds.map(\.name) == ["a_b"])
        #expect(config.cacheSize == 1 << 30)
        // ... whose first item is a bare "-".
        #expect(try YAMLValue.parse("k:\n-\n- a\n") == .map([("k", .list([.null, .scalar("a")]), 1)]))
        // Escaped quotes inside quotes: a list item is not a key, and a "#" stays in the value.
        #expect(try YAMLValue.parse("k:\n- \"a\\\": b\"\n- 'it''s: x'\n") == .map([("k", .list([.scalar("a\": b"), .scalar("it's: x")]), 1)]))
        #expect(try DepotConfiguration.parse("admin_token: \"x\\\" # y\" # note\n").adminToken == "x\" # y")
        // Durations are rounded to the millisecond, not truncated.
        #expect(try DepotConfiguration.parse("auth:\n  decision_ttl: 4007ms\n").decisionTTL == .milliseconds(4007))
        #expect(parseDuration("1.001") == .milliseconds(1001))
    }
}

enum ConfigMutationCheck {
    static func failure(_ text: String, tabLine: Int?) -> String? {
        if let tabLine {
            // YAML forbids tabs in indentation: a line with content that starts with one is
            // refused there.
            do {
                _ = try YAMLValue.parse(text)
                return "a tab-indented line \(tabLine) was accepted: \(fuzzQuote(text))"
            } catch {
                if error.line != tabLine { return "the tab is on line \(tabLine), the error names line \(error.line): \(fuzzQuote(text))" }
                return error.message.contains("not tabs") ? nil : "the error on the tab's line does not say to indent with spaces: \(error)"
            }
        }
        // Lines as libyaml counts them: LF, CR, CRLF, NEL, LS and PS end a line.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: YAMLError.isLineBreak)
        do {
            let value = try YAMLValue.parse(text)
            if let problem = YAMLCompare.keyLineProblem(value, lines: lines) { return problem }
        } catch {
            if !(1...lines.count).contains(error.line) { return "YAML error on line \(error.line) of a \(lines.count)-line text: \(error)" }
        }
        do {
            _ = try DepotConfiguration.parse(text)
        } catch {
            if let line = error.line {
                if !(1...lines.count).contains(line) { return "config error on line \(line) of a \(lines.count)-line text: \(error)" }
            } else if !(error.message.contains("must not be above cache.high_watermark") || error.message.contains("two clouds are named")) {
                return "an error without a line: \(error)"
            }
        }
        return nil
    }
}