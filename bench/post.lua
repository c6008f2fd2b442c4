-- wrk script: POST a small chat completion to the path given as the first argument.
-- Usage: wrk -s bench/post.lua <url> -- <model> <api-key> [stream]
local model, key, stream
function init(args)
  model = args[1] or "bench"
  key = args[2] or ""
  stream = args[3] == "stream"
end
function request()
  local body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Summarise this support reply in one line."}]'
  if stream then body = body .. ',"stream":true' end
  body = body .. '}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
end

-- One machine-readable line for bench/run.py (latencies in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
