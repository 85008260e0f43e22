-- Publish one event: live fan-out, durable copy, optional audit copy, in one atomic step.
-- KEYS[1]  durable stream of the target (agent's stream, or the broadcast stream); written only when it
--          exists, i.e. once some agent subscribed durably (its consumer group created the stream)
-- KEYS[2]  (optional) event log stream, read by the store's Recorder
-- ARGV[1]  pub/sub channel   ARGV[2] JSON envelope   ARGV[3] approximate MAXLEN of both streams
-- ARGV[4..] event log fields (name, value, ...) when KEYS[2] is given
-- Returns the number of live pub/sub receivers.
local receivers = redis.call('PUBLISH', ARGV[1], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
end
if #KEYS > 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
end
return receivers
