-- wrk script: random, 4 KiB-aligned byte ranges of RANGE_SIZE bytes within a TOTAL-byte body
-- (or, with OFFSET, always the range starting there), with an X-Auth-Token; reports p50/p99/p99.9 (microseconds), requests per second, socket
-- errors, answers with a status of 400 or more (wrk's errors.status, "non2xx"), the requests
-- answered and the bytes received (each answer a 206 of RANGE_SIZE bytes plus its head:
-- benchmarks/lib.sh's wrk_result checks it, so a server answering 200 with the whole body, or
-- an empty 3xx, fails).
local size = tonumber(os.getenv("RANGE_SIZE") or "4096")
local total = tonumber(os.getenv("TOTAL") or "1073741824")
local token = os.getenv("TOKEN") or ""
local slots = math.floor((total - size) / 4096)
local offset = tonumber(os.getenv("OFFSET") or "")

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function request()
  local start = offset or math.random(0, slots) * 4096
  return wrk.format("GET", nil, {["Range"] = "bytes=" .. start .. "-" .. (start + size - 1), ["X-Auth-Token"] = token})
end

function done(summary, latency, requests)
  io.write(string.format("RESULT p50=%d p99=%d p999=%d rps=%.0f errors=%d non2xx=%d requests=%d bytes=%d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.requests / (summary.duration / 1e6),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.requests, summary.bytes))
end
