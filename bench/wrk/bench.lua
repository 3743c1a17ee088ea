-- One request shape for wrk, from the environment (set by bench/run.py):
--   BENCH_METHOD, BENCH_PATH, BENCH_BODY (JSON, optional), BENCH_AUTHORIZATION (the header),
--   BENCH_MAX_PER_THREAD: each thread stops after this many responses (wrk's -d bounds the time).
-- done() prints one line "BENCH_JSON {...}" with the counts and latency percentiles (ms).

local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY")
local authorization = os.getenv("BENCH_AUTHORIZATION")
local max_per_thread = tonumber(os.getenv("BENCH_MAX_PER_THREAD") or "100000")

wrk.method = method
wrk.path = path
if authorization and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

responses = 0
bad = 0

function response(status, headers, response_body)
  responses = responses + 1
  if status >= 300 then
    bad = bad + 1
  end
  if responses >= max_per_thread then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local bad_total = 0
  for _, thread in ipairs(threads) do
    bad_total = bad_total + thread:get("bad")
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_s": %.6f, "non_2xx": %d, ' ..
    '"socket_errors": %d, "timeouts": %d, ' ..
    '"latency_ms": {"p50": %.3f, "p90": %.3f, "p99": %.3f, "max": %.3f, "mean": %.3f}}\n',
    summary.requests, summary.duration / 1e6, bad_total,
    errors.connect + errors.read + errors.write, errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, latency.mean / 1e3))
end
