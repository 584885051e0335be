import Testing

@testable import Proxy
import HTTPSemantics

/// The strong entity tag an image's hash gives, against its definition: the hex lowercased and
/// quoted, and no tag for anything that is not non-empty hex.
@Suite struct EntityTagTests {
    static func reference(_ hex: String?) -> String? {
        guard let hex, !hex.isEmpty, hex.unicodeScalars.allSatisfy({ $0.isASCII && $0.properties.isASCIIHexDigit }) else { return nil }
        return "\"" + hex.lowercased() + "\""
    }

    @Test func theTagIsTheLowercaseHexQuoted() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("0123456789abcdefABCDEF") + ["g", "G", "z", " ", "\"", "-", "é", "\u{0}", "\u{7f}", "０"]
        var inputs: [String?] = [nil, "", "0", "f", "F", "g", String(repeating: "aB3", count: 43), "ff\u{0}", "é"]
        for _ in 0..<2_000 {
            let length = Int.random(in: 1...130, using: &generator)
            // Mostly hex, so most inputs are tags; one byte in twenty from outside it.
            inputs.append(String((0..<length).map { _ in
                Int.random(in: 0..<20, using: &generator) == 0 ? alphabet.randomElement(using: &generator)! : alphabet[Int.random(in: 0..<22, using: &generator)]
            }))
        }
        var tags = 0
        for hex in inputs {
            let tag = Representation.entityTag(hex: hex)
            #expect(tag == Self.reference(hex), "\(String(reflecting: hex))")
            if tag != nil { tags += 1 }
        }
        #expect(tags > inputs.count / 10 && tags < inputs.count)
    }
}
