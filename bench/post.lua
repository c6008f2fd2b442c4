-- wrk script: POST a small chat completion to the path given as the first argument.
-- Usage: wrk -s bench/post.lua <url> -- <model> <api-key> [stream] [fixed] [run:<id>]
-- Every request sends a different prompt (one of the PROMPTS below with a running
-- number, unique per wrk thread, and the run's id when given: unique across runs), so
-- the router decides every request afresh instead of answering all but the first from
-- its decision cache, and the response cache misses. `fixed` sends the first prompt
-- every time instead (bench/run.py's decision-cache and response-cache hits).
local model, key, stream, fixed
local run = ""
local counter, tid = 0, 0
local threads = 0

local PROMPTS = {
  "Summarise this support reply in one line.",
  "Draft a short thank-you note to a customer who sent us feedback.",
  "Rewrite this sentence so it sounds friendlier: we cannot help you.",
  "Give me a quick reply confirming we received the ticket.",
  "What are your opening hours on Sunday?",
  "Translate 'good morning, how can I help?' into French.",
  "Hi! Can you tell me a fun fact about octopuses?",
  "Write a subject line for our monthly newsletter.",
  "A customer was double charged and threatens a chargeback; decide whether to refund or escalate, step by step.",
  "Prove that the sum of two odd integers is even.",
  "Our p99 latency doubled after the last deploy; walk through how to find the root cause.",
  "Solve for x: 3x + 7 = 2x - 5, and check the answer.",
  "Why does this Python function return None?\ndef add(a, b):\n    result = a + b",
  "Compare two pricing plans over three years with a 5% yearly discount and say which is cheaper.",
  "Analyse the trade-offs of caching decisions per prompt versus per user.",
  "Which of these policy clauses applies when a refund is requested after 45 days, and why?",
}

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  model = args[1] or "bench"
  key = args[2] or ""
  stream, fixed = false, false
  for i = 3, #args do
    if args[i] == "stream" then stream = true end
    if args[i] == "fixed" then fixed = true end
    if args[i]:sub(1, 4) == "run:" then run = args[i]:sub(5) .. "-" end
  end
  tid = tonumber(wrk.thread:get("tid")) or 0
end

function request()
  counter = counter + 1
  local prompt = PROMPTS[1]
  if not fixed then
    prompt = PROMPTS[(counter % #PROMPTS) + 1] .. " (request " .. run .. tid .. "-" .. counter .. ")"
  end
  local body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"' ..
    prompt:gsub("\n", "\\n") .. '"}]'
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
