-- wrk script: random, 4 KiB-aligned byte ranges of RANGE_SIZE bytes within a TOTAL-byte body,
-- with an X-Auth-Token; reports p50/p99/p99.9 (microseconds) and requests per second.
local size = tonumber(os.getenv("RANGE_SIZE") or "4096")
local total = tonumber(os.getenv("TOTAL") or "1073741824")
local token = os.getenv("TOKEN") or ""
local slots = math.floor((total - size) / 4096)

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function request()
  local start = math.random(0, slots) * 4096
  return wrk.format("GET", nil, {["Range"] = "bytes=" .. start .. "-" .. (start + size - 1), ["X-Auth-Token"] = token})
end

function done(summary, latency, requests)
  io.write(string.format("RESULT p50=%d p99=%d p999=%d rps=%.0f errors=%d non2xx=%d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.requests / (summary.duration / 1e6),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
