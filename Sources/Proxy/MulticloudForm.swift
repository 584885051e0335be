import BlobStore
import Cache
import FormatInspector
import HTTPCore
import HTTPSemantics
import NIOHTTP1

/// Receiving a Multicloud upload's multipart form.
extension MulticloudResponder {
    struct ReceivedForm {
        var fields: [String: String]
        /// The file part's `filename`, if it had one.
        var fileName: String?
        var blob: CommittedBlob
        var reserved: UInt64
        /// Glance's `virtual_size` for the file, from its inspection.
        var virtualSize: Int64?
    }

    struct FormFailure: Error {
        let status: HTTPResponseStatus
        let message: String
    }

    /// Reads the whole form: fields into memory (small), the file part into a new blob, which
    /// is committed only once the form has ended and Glance's format inspection, with the
    /// form's `disk_format` and `container_format`, takes the file (415 otherwise, nothing kept).
    ///
    /// - Parameter formatFromFileName: without a `disk_format` field, the file's name gives it
    ///   (the ONAP shape), as it will for the image Depot creates.
    func receive(_ request: Request, boundary: String, hold: UploadHold, formatFromFileName: Bool) async throws -> ReceivedForm {
        var parser: MultipartParser
        do { parser = try MultipartParser(boundary: boundary) } catch {
            throw FormFailure(status: .badRequest, message: error.description)
        }
        // The whole request bounds the file: reserve that, or grow the reservation as it comes.
        guard cache.uploads.slots.tryAcquire() else {
            throw FormFailure(status: .serviceUnavailable, message: CacheError.tooManyUploads(running: cache.uploads.slots.limit).description)
        }
        defer { cache.uploads.slots.release() }
        var form = FormState(reserved: request.body.declaredLength ?? UploadResponder.reservationStep)
        do { try await cache.uploads.reserve(form.reserved) } catch {
            throw FormFailure(status: .insufficientStorage, message: error.description)
        }
        var virtualSize: Int64?
        var blob: CommittedBlob?
        do {
            while let chunk = try await request.body.next() {
                let events: [MultipartParser.Event]
                do { events = try parser.feed(chunk.readableBytesView) } catch {
                    throw await fail(form, .badRequest, "the multipart body is malformed: \(error); nothing was kept")
                }
                for event in events { try await take(event, into: &form, hold: hold) }
            }
            guard form.ended else { throw await fail(form, .badRequest, "the multipart body ended before its closing boundary; nothing was kept") }
            if let pending = form.ingest {
                let inspection = form.inspector.finish()
                let named = formatFromFileName ? form.fileName.map { Self.nameAndFormat($0).diskFormat } : nil
                let verdict = inspection.verdict(
                    diskFormat: form.fields["disk_format"] ?? named ?? "raw", containerFormat: form.fields["container_format"] ?? "bare",
                    policy: uploads.formats)
                if let refusal = verdict.refusal { throw await fail(form, .unsupportedMediaType, refusal.description) }
                virtualSize = verdict.virtualSize
                do { blob = try await pending.finish() } catch {
                    form.ingest = nil
                    if case .diskFull = error {
                        throw await fail(form, .insufficientStorage, "Depot's disk is full; nothing was kept. Free space in its data directory or retry later")
                    }
                    throw await fail(form, .internalServerError, "Depot could not store the file: \(error)")
                }
                form.ingest = nil
            }
        } catch let failure as FormFailure {
            if let blob { await cache.uploads.keepUnreferenced(blob, reserved: 0) }
            throw failure
        } catch {
            // The client went away mid-body.
            _ = await fail(form, .badRequest, "\(error)")
            if let blob { await cache.uploads.keepUnreferenced(blob, reserved: 0) }
            throw error
        }
        guard let blob else {
            cache.uploads.settle(reserved: form.reserved, committed: nil)
            throw FormFailure(status: .badRequest, message: "the form has no file part; send the image as a part named file")
        }
        return ReceivedForm(fields: form.fields, fileName: form.fileName, blob: blob, reserved: form.reserved, virtualSize: virtualSize)
    }

    /// A form as it arrives: fields in memory (small), the file part into a new blob.
    private struct FormState {
        var fields: [String: String] = [:]
        var ingest: BlobIngest?
        var current: (name: String?, isFile: Bool, value: [UInt8])?
        var fileBytes: UInt64 = 0
        var fileName: String?
        /// Glance's format inspection of the file, in the same pass as the hashing.
        var inspector = FormatInspector()
        var fileEnded = false
        /// The closing boundary came.
        var ended = false
        /// Budget room reserved for the file.
        var reserved: UInt64
    }

    /// Abandons a form: the file's bytes are removed and its reservation returned.
    private func fail(_ form: FormState, _ status: HTTPResponseStatus, _ message: String) async -> FormFailure {
        await form.ingest?.abort(message)
        cache.uploads.settle(reserved: form.reserved, committed: nil)
        return FormFailure(status: status, message: message)
    }

    /// Takes one event of the multipart parser.
    ///
    /// - Throws: `FormFailure` (after `fail`) for a second file part, a file over
    ///   `max_upload_size`, no room in the budget, a failed write, an unknown or oversize field.
    private func take(_ event: MultipartParser.Event, into form: inout FormState, hold: UploadHold) async throws {
        switch event {
        case let .partStart(headers):
            let (name, filename) = MultipartParser.Event.disposition(headers)
            let isFile = name == "file" || filename != nil
            if isFile {
                guard form.ingest == nil, !form.fileEnded else { throw await fail(form, .badRequest, "send one file part") }
                form.fileName = filename
                do {
                    form.ingest = try cache.uploads.ingest(expecting: .init(), hold: hold)
                } catch {
                    throw await fail(form, .insufficientStorage, "\(error)")
                }
            }
            form.current = (name, isFile, [])
        case let .partData(bytes):
            guard var part = form.current else { return }
            if part.isFile {
                try await takeFileBytes(bytes, into: &form)
            } else {
                part.value += bytes
                guard part.value.count <= 64 << 10 else { throw await fail(form, .badRequest, "form field \(part.name ?? "?") is larger than 64 KiB") }
                form.current = part
            }
        case .partEnd:
            guard let part = form.current else { return }
            if part.isFile {
                // Committed once the fields that decide its format are all known.
                form.fileEnded = true
            } else if let name = part.name {
                guard Self.fieldNames.contains(name) else {
                    throw await fail(form, .badRequest, "unknown form field \(name); the fields are file, \(Self.fieldNames.sorted().joined(separator: ", "))")
                }
                form.fields[name] = String(decoding: part.value, as: UTF8.self)
            }
            form.current = nil
        case .end:
            form.ended = true
        }
    }

    /// Writes bytes of the file part, growing the reservation as they exceed it.
    private func takeFileBytes(_ bytes: [UInt8], into form: inout FormState) async throws {
        form.inspector.feed(bytes)
        form.fileBytes += UInt64(bytes.count)
        if form.fileBytes > uploads.maximumSize {
            throw await fail(form, .payloadTooLarge, UploadError.tooLarge(size: form.fileBytes, limit: uploads.maximumSize).description)
        }
        while form.fileBytes > form.reserved {
            do { try await cache.uploads.reserve(UploadResponder.reservationStep) } catch {
                throw await fail(form, .insufficientStorage, "\(error)")
            }
            form.reserved += UploadResponder.reservationStep
        }
        guard await form.ingest!.send(bytes) else {
            let reason = await form.ingest!.failure().map { "\($0)" } ?? "the write failed"
            throw await fail(form, .insufficientStorage, reason)
        }
    }
}
