// Read one cached listing, or the hot list, as a shop's Node code would (ioredis).
//
//   node reader.js redis://127.0.0.1:6379/0 cachewarm 1 42      # one Redis
//   node reader.js 10.0.0.1:7000,10.0.0.2:7000 cachewarm 1 hot  # a cluster's nodes
//
// Arguments: the Redis URL (or a cluster's host:port list), the key prefix and version,
// and a product id or `hot`. Prints the value exactly as stored; on a miss prints nothing
// and exits 1: read MySQL instead, and never write the listing yourself (so too when
// Redis fails, which exits 2). A missed product is reported to cachewarm, which warms it
// (fire-and-forget: a failed report changes nothing). A password is taken from
// REDIS_PASSWORD, never from the arguments, and never printed.
"use strict";

const Redis = require("ioredis");

function connect(address) {
  // Give up at the first failure instead of retrying forever: this is a one-shot command.
  const options = { password: process.env.REDIS_PASSWORD || undefined, retryStrategy: () => null };
  if (/^rediss?:\/\//.test(address)) {
    return new Redis(address, { ...options, maxRetriesPerRequest: 0 });
  }
  const nodes = address.split(",").map((node) => {
    const colon = node.lastIndexOf(":");
    return { host: node.slice(0, colon), port: Number(node.slice(colon + 1)) };
  });
  return new Redis.Cluster(nodes, { redisOptions: options, clusterRetryStrategy: () => null });
}

async function main() {
  const [address, prefix, version, what] = process.argv.slice(2);
  const key = `${prefix}:v${version}:` + (what === "hot" ? "hot" : `product:${what}`);
  const client = connect(address);
  client.on("error", () => {}); // the failed command below reports it; the event only repeats it
  try {
    const value = await client.getBuffer(key); // bytes, not a string: nothing re-encoded
    if (value === null) {
      if (what !== "hot") {
        // MAXLEN as cachewarm's [warm] miss_queue_max. Awaited only because this process
        // exits next; a server would not wait. A lost report only delays the warm.
        const misses = `${prefix}:v${version}:misses`;
        await client.xadd(misses, "MAXLEN", "~", "10000", "*", "id", what).catch(() => {});
      }
      console.error(`${key} is not cached: read it from MySQL`);
      process.exitCode = 1;
    } else {
      process.stdout.write(value);
    }
  } finally {
    client.disconnect();
  }
}

main().catch((error) => {
  console.error(`Redis failed: ${error.message}`);
  process.exitCode = 2;
});
