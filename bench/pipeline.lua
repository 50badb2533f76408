-- wrk script: every connection sends DEPTH requests at once and waits for their DEPTH responses
-- (HTTP/1.1 pipelining). Usage: wrk -s bench/pipeline.lua URL -- 16
local depth = 16
local batch

function init(args)
  depth = tonumber(args[1]) or depth
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format(nil, "/")
  end
  batch = table.concat(requests)
end

function request()
  return batch
end
