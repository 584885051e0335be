import DepotTestSupport
import PropertyBased
import Testing

@testable import HTTPSemantics

/// Property-based fuzzing of the streaming `multipart/form-data` parser: the same body fed in
/// any split gives the same parts; a body built from known parts gives exactly those parts;
/// and every body (valid, near-miss or mutated) parses like a simple whole-buffer reference
/// (`MultipartReference`, RFC 2046 5.1.1). On swift-property-based: a failing body is shrunk
/// and reported with its seed; to replay it, add the `.fixedSeed("…")` the issue names to the
/// `@Test` (see `Sources/DepotTestSupport/FuzzGenerators.swift`).
@Suite struct MultipartFuzzTests {
    static let inputs = 15_000

    @Test func splitsAndRoundTrips() async {
        let input = Generator(run: { MultipartInput.generate(&$0) }, shrink: { MultipartInput.shrink($0) })
        await propertyCheck(count: Self.inputs, input: input) { input in
            if let failure = MultipartCheck.failure(input.body, cutSets: input.cuts) { Issue.record("\(failure)") }
        }
    }

    @Test func boundaryAndDispositionParameters() async {
        await propertyCheck(count: Self.inputs, input: Generator { MultipartParametersInput.generate(&$0) }) { input in
            // ";" is a bchar in no boundary; the parameter list cannot carry it.
            if !input.boundary.contains(";") {
                #expect(MultipartParser.boundary(contentType: input.contentType) == input.boundary, "\(fuzzQuote(input.contentType))")
            }
            let (name, filename) = MultipartParser.Event.disposition(["content-disposition": input.disposition])
            #expect(name == input.name && filename == input.filename, "\(fuzzQuote(input.disposition))")
        }
    }

    /// Seeds found by fuzzing, kept as plain regression cases.
    @Test func regressions() throws {
        // A part without headers (RFC 2046: the header block may be empty) keeps its content;
        // it was read as headers up to the next blank line.
        let headerless = Array("--b\r\n\r\nX: y\r\n\r\nDATA\r\n--b--".utf8)
        #expect(MultipartCheck.parse(boundary: "b", headerless, cuts: []).0 == MultipartOutcome(
            parts: [.init(headers: [:], data: Array("X: y\r\n\r\nDATA".utf8), complete: true)], ended: true, finished: true))
        // The header limit holds however the bytes arrive (it held only for small pieces).
        let big = Array(("--b\r\nX: " + String(repeating: "a", count: 20_000) + "\r\n\r\ndata\r\n--b--").utf8)
        let whole = MultipartCheck.parse(boundary: "b", big, cuts: []).0
        let pieces = MultipartCheck.parse(boundary: "b", big, cuts: Array(stride(from: 100, to: big.count, by: 100))).0
        #expect(whole == pieces)
        #expect(whole.error?.contains("bytes of headers") == true)
    }
}
