-- wrk script: POST one fixed body (file named by BENCH_BODY) with the case header
-- BENCH_CASE, and print a JSON summary on the last line of stdout.
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  wrk.method = "POST"
  wrk.body = slurp(os.getenv("BENCH_BODY"))
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Bench-Case"] = os.getenv("BENCH_CASE") or ""
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
