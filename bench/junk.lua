-- wrk script: a flood of junk callbacks, bodies of FIELDS empty fields ("a=&a=&...") with a
-- random X-Plivo-Signature-V3 and nonce, as an attacker without the auth token would send.
--
-- Usage: wrk -t T -c C -d D -s bench/junk.lua URL -- FIELDS
-- Each thread builds VARIANTS requests (each with its own random signature and nonce) once
-- and cycles through them. At the end one line "BENCH_JSON {...}" reports the answers by
-- status code, wrk's socket errors and latency percentiles.

local VARIANTS = 64
local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
  table.insert(threads, thread)
end

local function random_text(length, alphabet)
  local chars = {}
  for i = 1, length do
    local k = math.random(1, #alphabet)
    chars[i] = alphabet:sub(k, k)
  end
  return table.concat(chars)
end

function init(args)
  local fields = tonumber(args[1])
  math.randomseed(os.time() * 1000 + id)
  local body = string.rep("a=&", fields - 1) .. "a="
  requests = {}
  for i = 1, VARIANTS do
    requests[i] = wrk.format("POST", "/plivo/status", {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      -- 32 bytes in base64, as a real signature is: only its value is wrong.
      ["X-Plivo-Signature-V3"] = random_text(43, ALPHABET) .. "=",
      ["X-Plivo-Signature-V3-Nonce"] = random_text(20, "0123456789"),
    }, body)
  end
  next_request = 0
  statuses = {}
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(totals) do
    parts[#parts + 1] = string.format('"%d": %d', status, count)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "statuses": {%s}, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"max_us": %d}\n',
    summary.requests, summary.duration, table.concat(parts, ", "), errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
