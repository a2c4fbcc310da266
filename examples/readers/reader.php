<?php
// Read one cached listing, or the hot list, as a shop's PHP code would (phpredis).
//
//   php reader.php redis://127.0.0.1:6379/0 cachewarm 1 42      # one Redis
//   php reader.php 10.0.0.1:7000,10.0.0.2:7000 cachewarm 1 hot  # a cluster's nodes
//
// Arguments: the Redis URL (or a cluster's host:port list), the key prefix and version,
// and a product id or `hot`. Prints the value exactly as stored; on a miss prints nothing
// and exits 1: read MySQL instead, and never write the listing yourself (so too when
// Redis fails, which exits 2). A missed product is reported to cachewarm, which warms it
// (fire-and-forget: a failed report changes nothing). A password is taken from
// REDIS_PASSWORD, never from the arguments, and never printed.

function connect(string $address): Redis|RedisCluster
{
    $password = getenv('REDIS_PASSWORD') ?: null;
    if (str_starts_with($address, 'redis://')) {
        $url = parse_url($address);
        $redis = new Redis();
        $redis->connect($url['host'], $url['port'] ?? 6379, 5.0);
        if ($password !== null) {
            $redis->auth($password);
        }
        $redis->select((int) trim($url['path'] ?? '0', '/'));
        return $redis;
    }
    return new RedisCluster(null, explode(',', $address), 5.0, 5.0, false, $password);
}

[, $address, $prefix, $version, $what] = $argv;
$key = "$prefix:v$version:" . ($what === 'hot' ? 'hot' : "product:$what");
try {
    $redis = connect($address);
    $value = $redis->get($key);
} catch (RedisException | RedisClusterException $e) {
    // The message only: a stack trace would show the arguments, the password among them.
    fwrite(STDERR, 'Redis failed: ' . $e->getMessage() . "\n");
    exit(2);
}
if ($value === false) {
    if ($what !== 'hot') {
        try {
            // MAXLEN ~ 10000, as cachewarm's [warm] miss_queue_max.
            $redis->xAdd("$prefix:v$version:misses", '*', ['id' => $what], 10000, true);
        } catch (RedisException | RedisClusterException $e) {
            // a lost report only delays the warm
        }
    }
    fwrite(STDERR, "$key is not cached: read it from MySQL\n");
    exit(1);
}
fwrite(STDOUT, $value);
