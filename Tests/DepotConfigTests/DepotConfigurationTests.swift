import DepotConfig
import Foundation
import Testing

@Suite struct DepotConfigurationTests {
    @Test func theExampleFileParsesWithEveryKey() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let config = try DepotConfiguration.load(path: root.appendingPathComponent("config/depot.example.yaml").path)
        #expect(config.listenHost == "127.0.0.1")
        #expect(config.listenPort == 9494)
        #expect(config.dataDirectory == "/var/lib/depot")
        #expect(config.logLevel == "info")
        #expect(config.cacheSize == 20 << 30)
        #expect(config.highWatermark == 0.95)
        #expect(config.lowWatermark == 0.85)
        #expect(config.minimumFreeDisk == 2 << 30)
        #expect(config.decisionTTL == .seconds(60))
        #expect(config.offlineGrace == .seconds(86400))
        #expect(config.uploadMode == "write-back")
        #expect(config.maxUploadSize == 1 << 40)
        #expect(config.requireImageFormatMatch == true)
        #expect(config.gptSafetyChecksNonfatal == [])
        #expect(config.pushConcurrency == 2)
        #expect(config.pushInitialBackoff == .seconds(2))
        #expect(config.pushMaximumBackoff == .seconds(300))
        #expect(config.maxConnections == 4096)
        #expect(config.headerTimeout == .seconds(60))
        #expect(config.idleTimeout == .seconds(120))
        #expect(config.maxFills == 32)
        #expect(config.maxUploads == 16)
        #expect(config.tlsCertificate == nil)
        #expect(config.clouds.count == 1)
        let cloud = try #require(config.clouds.first)
        #expect(cloud.name == "default_RegionOne")
        #expect(cloud.glanceURL == "http://127.0.0.1:9292")
        #expect(cloud.keystone?.username == "depot")
        #expect(cloud.keystone?.interface == "public")
        try config.validate()
    }

    @Test func watermarksAreFractionsOrPercentages() throws {
        let config = try DepotConfiguration.parse("cache:\n  size: 1GiB\n  high_watermark: 90%\n  low_watermark: 0.5", path: "depot.yaml")
        #expect(config.highWatermark == 0.9)
        #expect(config.lowWatermark == 0.5)
        #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("cache:\n  high_watermark: 1.5", path: "depot.yaml") }
        #expect(throws: ConfigurationError.self) {
            try DepotConfiguration.parse("cache:\n  high_watermark: 0.6\n  low_watermark: 0.8", path: "depot.yaml")
        }
    }

    @Test func uploadKeysAreChecked() throws {
        let config = try DepotConfiguration.parse("""
            upload_mode: write-through
            max_upload_size: 40GiB
            push:
              concurrency: 8
            """, path: "depot.yaml")
        #expect(config.uploadMode == "write-through")
        #expect(config.maxUploadSize == 40 << 30)
        #expect(config.pushConcurrency == 8)
        let badMode = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("upload_mode: write-around", path: "depot.yaml") }
        #expect(badMode?.description.contains("write-back or write-through") == true)
        #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("push:\n  concurrency: 0", path: "depot.yaml") }
        #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("push:\n  speed: 3", path: "depot.yaml") }
    }

    /// Glance's `[image_format]` options, with Glance's defaults when absent.
    @Test func imageFormatKeysMirrorGlances() throws {
        #expect(try DepotConfiguration.parse("", path: "depot.yaml").requireImageFormatMatch == true)
        let lax = try DepotConfiguration.parse("image_format:\n  require_image_format_match: false\n  gpt_safety_checks_nonfatal: mbr", path: "depot.yaml")
        #expect(lax.requireImageFormatMatch == false)
        #expect(lax.gptSafetyChecksNonfatal == ["mbr"])
        let listed = try DepotConfiguration.parse("image_format:\n  gpt_safety_checks_nonfatal:\n    - mbr\n    - gptmbr", path: "depot.yaml")
        #expect(listed.gptSafetyChecksNonfatal == ["mbr", "gptmbr"])
        #expect(try DepotConfiguration.parse("image_format:\n  gpt_safety_checks_nonfatal: mbr, gptmbr", path: "depot.yaml").gptSafetyChecksNonfatal == ["mbr", "gptmbr"])
        #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("image_format:\n  require_image_format_match: maybe", path: "depot.yaml") }
        let unknown = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("image_format:\n  vmdk_allowed_types: x", path: "depot.yaml") }
        #expect(unknown?.description.contains("require_image_format_match") == true)
    }

    @Test func limitsAndTLSKeysAreChecked() throws {
        let config = try DepotConfiguration.parse("""
            limits:
              max_connections: 100
              header_timeout: 10s
              idle_timeout: 2m
              response_wait_timeout: 90s
              max_fills: 4
              max_uploads: 2
            tls:
              certificate: /etc/depot/depot.pem
              key: /etc/depot/depot.key
            clouds:
            - owner: a
              glance_url: https://glance:9292
              ca_bundle: /ca.pem
              client_certificate: /client.pem
              client_key: /client.key
            """, path: "depot.yaml")
        #expect(config.maxConnections == 100)
        #expect(config.headerTimeout == .seconds(10))
        #expect(config.idleTimeout == .seconds(120))
        #expect(config.responseWaitTimeout == .seconds(90))
        #expect(config.maxFills == 4)
        #expect(config.maxUploads == 2)
        #expect(config.tlsCertificate == "/etc/depot/depot.pem" && config.tlsKey == "/etc/depot/depot.key")
        #expect(config.clouds.first?.clientCertificate == "/client.pem" && config.clouds.first?.clientKey == "/client.key")
        let halfTLS = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("tls:\n  certificate: /a.pem", path: "depot.yaml") }
        #expect(halfTLS?.description.contains("both certificate: and key:") == true)
        #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("limits:\n  max_fills: 0", path: "depot.yaml") }
        #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("limits:\n  header_timeout: 0s", path: "depot.yaml") }
        let unknown = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("limits:\n  max_requests: 5", path: "depot.yaml") }
        #expect(unknown?.description.contains("max_connections") == true)
    }

    @Test func severalCloudsAndQuoting() throws {
        let config = try DepotConfiguration.parse("""
            listen: "[::1]:8080"
            clouds:
            - owner: att
              region: 'Region-East'
              glance_url: http://10.0.0.1:9292/   # trailing slash dropped
              service_token: "a:b:c # not a comment"
            - owner: vz
              region: R2
              glance_url: https://glance.example:9292
              insecure: yes
            """)
        #expect(config.listenHost == "::1")
        #expect(config.listenPort == 8080)
        #expect(config.clouds.map(\.name) == ["att_Region-East", "vz_R2"])
        #expect(config.clouds[0].glanceURL == "http://10.0.0.1:9292")
        #expect(config.clouds[0].serviceToken == "a:b:c # not a comment")
        #expect(config.clouds[1].insecure)
    }

    @Test func mistakesNameTheLineAndWhatToDo() {
        let unknown = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("listen: 1.2.3.4:80\ncache:\n  sise: 1GiB\n") }
        #expect(unknown?.line == 3)
        #expect(unknown?.message.contains("known keys here: size") == true)
        let badSize = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("cache:\n  size: lots\n") }
        #expect(badSize?.message.contains("20GiB") == true)
        let badIndent = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("listen: a:1\n   data_dir: x\n") }
        #expect(badIndent?.line == 2)
        let tabs = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("cache:\n\tsize: 1GiB\n") }
        #expect(tabs?.message.contains("tabs") == true)
        #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("clouds:\n- owner: a\n  region: b\n- owner: a\n  region: b\n") }
        #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("listen: [a, b]\n") }
        #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("log_level: loud\n") }
        let noBackend = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("").validate() }
        #expect(noBackend?.message.contains("--glance-url") == true)
    }

    /// What a real YAML parser brings that the old subset refused: flow maps, block scalars,
    /// anchors with aliases and `<<` merge keys (expected values from YAML 1.1's rules).
    @Test func realYAMLFeaturesWork() throws {
        let config = try DepotConfiguration.parse("""
            cache: {size: 2GiB, high_watermark: 90%}
            admin_token: >-
              folded
              token
            tls:
              certificate: |-
                /etc/depot/cert.pem
              key: "/etc/depot/key.pem"
            clouds:
            - &east
              owner: acme
              region: east
              glance_url: http://10.0.0.1:9292
              keystone: &ks
                auth_url: http://keystone:5000/v3
                application_credential_id: id
                application_credential_secret: secret
            - <<: *east
              region: west
            - {owner: other, glance_url: 'http://10.0.0.2:9292', keystone: *ks}
            """, path: "depot.yaml")
        #expect(config.cacheSize == 2 << 30)
        #expect(config.highWatermark == 0.9)
        #expect(config.adminToken == "folded token")
        #expect(config.tlsCertificate == "/etc/depot/cert.pem")
        #expect(config.clouds.map(\.name) == ["acme_east", "acme_west", "other_RegionOne"])
        #expect(config.clouds.map(\.glanceURL) == ["http://10.0.0.1:9292", "http://10.0.0.1:9292", "http://10.0.0.2:9292"])
        #expect(config.clouds.allSatisfy { $0.keystone?.applicationCredentialID == "id" })
    }

    /// A mistake inside an anchored map is reported on the line where it is written, wherever
    /// the map is merged; a key given twice is refused on its first line.
    @Test func realYAMLMistakesNameTheirLine() {
        // Keystone's keys are right where the anchor is, wrong where they are merged.
        let inMerge = #expect(throws: ConfigurationError.self) {
            try DepotConfiguration.parse("""
                clouds:
                - owner: a
                  glance_url: http://g:9292
                  keystone: &ks
                    auth_url: http://k:5000/v3
                    application_credential_id: i
                    application_credential_secret: s
                - <<: *ks
                  owner: b
                """, path: "depot.yaml")
        }
        #expect(inMerge?.line == 5)
        #expect(inMerge?.message.contains("unknown key clouds[].auth_url") == true)
        let twice = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("data_dir: /a\nlog_level: info\ndata_dir: /b\n") }
        #expect(twice?.line == 1)
        #expect(twice?.message.contains("data_dir appears twice") == true)
        let unclosed = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse("listen: a:1\ncache: {size: 1GiB\nlog_level: info\n") }
        #expect(unclosed?.message.contains("flow mapping on line 2") == true)
    }

    /// Nine lines of nested aliases stand for 10^9 values ("billion laughs"): refused at once,
    /// not expanded until memory runs out.
    @Test func nestedAliasesAreCapped() {
        var lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        for level in 1...8 { lines.append("a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ") + "]") }
        lines.append("admin_token: *a8")
        let started = ContinuousClock.now
        let laughs = #expect(throws: ConfigurationError.self) { try DepotConfiguration.parse(lines.joined(separator: "\n"), path: "depot.yaml") }
        #expect(laughs?.message.contains("write the file out plainly") == true)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test func sizesAndDurations() {
        #expect(parseSize("20GiB") == 20 << 30)
        #expect(parseSize("1.5 KiB") == 1536)
        #expect(parseSize("500MB") == 500_000_000)
        #expect(parseSize("123") == 123)
        #expect(parseSize("-1GiB") == nil)
        #expect(parseSize("GiB") == nil)
        // Glance's BIGINT is the cap: 2^63 - 1 bytes is a size, 2^63 and beyond are not.
        #expect(parseSize("9223372036854775807") == UInt64(Int64.max))
        #expect(parseSize("9223372036854775808") == nil)
        #expect(parseSize("18446744073709551615") == nil)
        #expect(parseSize("8388607TiB") == 8_388_607 << 40)
        #expect(parseSize("8388608TiB") == nil)
        #expect(parseSize("1.8e19B") == nil)
        #expect(parseDuration("250ms") == .milliseconds(250))
        #expect(parseDuration("5m") == .seconds(300))
        #expect(parseDuration("7d") == .seconds(7 * 86400))
        #expect(parseDuration("90") == .seconds(90))
        #expect(parseDuration("soon") == nil)
        #expect(parseHostPort("127.0.0.1:0")! == ("127.0.0.1", 0))
        #expect(parseHostPort("[::1]:9494")! == ("::1", 9494))
        #expect(parseHostPort("localhost") == nil)
        #expect(parseHostPort("h:70000") == nil)
    }
}
