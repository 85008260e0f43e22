-- Store a running job's progress: a compare-and-set of the job hash's RQ 'meta' field.
-- KEYS: the job. ARGV: worker name, meta as read ('' none), whether it existed (1/0), new meta.
-- Returns 1 written; 0 the job is not 'started' by this worker (nothing written); -1 meta changed since
-- it was read (read it again).
local jk, w = KEYS[1], ARGV[1]
local h = redis.call('HMGET', jk, 'status', 'worker_name', 'meta')
if h[1] ~= 'started' or h[2] ~= w then return 0 end
if (ARGV[3] == '1' and h[3] ~= ARGV[2]) or (ARGV[3] == '0' and h[3]) then return -1 end
redis.call('HSET', jk, 'meta', ARGV[4])
return 1
