"""Redis: fenced batch writes, the hot-list publish, invalidation and read-only lookups.

One Redis, a Sentinel-managed master or a Redis Cluster. On one Redis a batch goes as
one script. On a cluster a script that declares keys of several slots is refused
(CROSSSLOT) even by the node that serves them all, so a batch goes as one script per
node that names its keys in ARGV under Redis 7's `allow-cross-slot-keys` flag: the node
refuses any key it does not serve, and such a call (a slot moved or moving) is re-sent
one slot at a time with declared keys, the way every call goes to a node without that
flag. Each script runs atomically on one node, and every key it checks or writes
together (a listing, its slot's state) shares a slot.

Calls are packed straight into RESP and pipelined one batch deep per node: Redis
applies batch n while Python encodes batch n+1, and memory stays bounded by two batches
whatever the size of the hot set. Scripts are loaded on a node's first use and called by
EVALSHA; NOSCRIPT (a flushed or failed-over script cache), MOVED, ASK and TRYAGAIN
re-send that one call, with EVAL, where it belongs now.

Three guards live in the write script:
- the fence: with the Redis lock, a run that lost the lock writes nothing (a paused
  process cannot overwrite the new holder's work). On one Redis the script compares the
  lock token; everywhere it also compares Redis' clock with the lock's lease, which
  ends before the lock itself can expire;
- the deadline, on Redis' own clock: a run past `run.max_seconds` writes nothing;
- the slot state: each of the 16384 cluster slots has a state key holding a value never
  used before in that slot. `invalidate` replaces it, in the same script that deletes the
  listings. A warm learns the states before reading a batch from MySQL and writes a
  listing only if its slot's state is still the one it learned; otherwise it skips
  that product. A state key that is missing (evicted, flushed, lost in a failover) or
  re-created (with a fresh value) can only differ from what the warm learned, so losing
  any bookkeeping key makes a warm skip, never write a value read before an
  invalidation. Nothing depends on a TTL outliving a run, whatever `max_seconds` it had.
"""
