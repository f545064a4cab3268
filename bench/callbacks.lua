-- wrk script: POST pre-signed Plivo callbacks, each thread cycling through its own share.
--
-- Usage: wrk -t T -c C -d D -s bench/callbacks.lua URL -- REQUESTS_FILE T
-- REQUESTS_FILE has one callback per line: signature TAB nonce TAB form body (made by
-- bench/traffic.py). Thread k of T takes lines k, k+T, k+2T... so no body is sent twice
-- while the file lasts; if a thread runs out it starts over, and the repeats it sends come
-- back as "duplicate" (counted below, so a too-small file is visible in the results).
-- At the end one line "BENCH_JSON {...}" reports answers by kind and latency percentiles.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
  table.insert(threads, thread)
end

function init(args)
  local path, share = args[1], tonumber(args[2])
  requests = {}
  local line_number = 0
  for line in io.lines(path) do
    if line_number % share == id - 1 then
      local signature, nonce, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      -- Formatted once here, so request() only hands over a ready string.
      requests[#requests + 1] = wrk.format("POST", "/plivo/status", {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-Plivo-Signature-V3"] = signature,
        ["X-Plivo-Signature-V3-Nonce"] = nonce,
      }, body)
    end
    line_number = line_number + 1
  end
  next_request, wrapped = 0, 0
  appended, duplicate, other_ok, failed = 0, 0, 0, 0
end

function request()
  next_request = next_request + 1
  if next_request > #requests then
    next_request, wrapped = 1, wrapped + 1
  end
  return requests[next_request]
end

function response(status, headers, body)
  if status == 200 then
    if body:find('"appended"', 1, true) then
      appended = appended + 1
    elseif body:find('"duplicate"', 1, true) then
      duplicate = duplicate + 1
    else
      other_ok = other_ok + 1
    end
  else
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local totals = { appended = 0, duplicate = 0, other_ok = 0, failed = 0, wrapped = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + thread:get(name)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "appended": %d, "duplicate": %d, ' ..
    '"other_ok": %d, "failed": %d, "wrapped": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, totals.appended, totals.duplicate, totals.other_ok,
    totals.failed, totals.wrapped, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
