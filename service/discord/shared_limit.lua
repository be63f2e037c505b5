-- One call of a process to the token's shared global limit (service/discord/shared_limit.py):
-- atomic, with Redis's own TIME as the clock.
-- KEYS: counted, in_flight, alive, calls, careful, born.
-- ARGV: process, call number, places in flight, places wanted, rate, STALE ms, careful ms,
-- leaving (1/0), KEEP ms, alone (1/0: it kept to its own share since its last answer), then
-- (member, ms left) for each request that holds a place.
-- Returns: places granted (-1: a late call, ignored), processes alive, ms until the first
-- counted place frees (-1: none), ms of careful counting left, ms since this state began.
local counted, in_flight, alive, calls, careful, born =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local process, call = ARGV[1], tonumber(ARGV[2])
local mine, want, rate = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local stale, careful_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local leaving, keep, alone = ARGV[8] == '1', tonumber(ARGV[9]), ARGV[10] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

if call <= tonumber(redis.call('HGET', calls, process) or '0') then
  return {-1, 0, -1, 0, 0}
end
-- A process back from its own share took places Redis never granted, and so may the others
-- that have not called yet: the state begins anew, as when Redis came back empty.
local began = redis.call('GET', born)
if began and not alone then
  began = tonumber(began)
else
  began = now
  redis.call('SET', born, now)
end

local horizon = '(' .. (now - stale)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', horizon)) do
  redis.call('HDEL', in_flight, gone)
  redis.call('HDEL', calls, gone)
end
redis.call('ZREMRANGEBYSCORE', alive, '-inf', horizon)

for i = 11, #ARGV, 2 do
  redis.call('ZADD', counted, 'GT', now + tonumber(ARGV[i + 1]), ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', counted, '-inf', now)

local granted = 0
if leaving then
  redis.call('ZREM', alive, process)
  redis.call('HDEL', in_flight, process)
  redis.call('HDEL', calls, process)
else
  redis.call('ZADD', alive, now, process)
  redis.call('HSET', calls, process, call)
  redis.call('HSET', in_flight, process, mine)
  local used = redis.call('ZCARD', counted)
  for _, places in ipairs(redis.call('HVALS', in_flight)) do
    used = used + tonumber(places)
  end
  granted = math.max(0, math.min(want, rate - used))
  redis.call('HSET', in_flight, process, mine + granted)
end

if careful_ms > 0 and careful_ms > redis.call('PTTL', careful) then
  redis.call('SET', careful, '1', 'PX', careful_ms)
end
local first = redis.call('ZRANGE', counted, 0, 0, 'WITHSCORES')
local wait = -1
if first[2] then
  wait = tonumber(first[2]) - now
end
for _, key in ipairs({counted, in_flight, alive, calls, born}) do
  redis.call('PEXPIRE', key, keep)
end
return {granted, redis.call('ZCARD', alive), wait,
  math.max(0, redis.call('PTTL', careful)), now - began}
