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
