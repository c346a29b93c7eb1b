-- wrk script: POST one fixed body (file named by BENCH_BODY) with the case header
-- BENCH_CASE, and print a JSON summary on the last line of stdout.
--
-- With BENCH_TOKENS (the auth-on measurement) each request also carries the next client JWT of
-- that file (one per line, each with its own jti: the service refuses a replayed jti). Thread k
-- of BENCH_THREADS sends tokens k, k + BENCH_THREADS, ..., so no two requests share one.
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local tokens = {}
local nexttoken = 1
local stride = 1
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("threadindex", threads)
end

function init(args)
  wrk.method = "POST"
  wrk.body = slurp(os.getenv("BENCH_BODY"))
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Bench-Case"] = os.getenv("BENCH_CASE") or ""
  if os.getenv("BENCH_TOKENS") then
    for line in io.lines(os.getenv("BENCH_TOKENS")) do
      tokens[#tokens + 1] = line
    end
    stride = tonumber(os.getenv("BENCH_THREADS") or "1")
    nexttoken = threadindex or 1
  end
end

if os.getenv("BENCH_TOKENS") then  -- defined only then: without it wrk sends one prepared request
  function request()
    local headers = {}
    for k, v in pairs(wrk.headers) do
      headers[k] = v
    end
    headers["Authorization"] = "Bearer " .. assert(tokens[nexttoken], "bench: out of tokens")
    nexttoken = nexttoken + stride
    return wrk.format(nil, nil, headers, nil)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
