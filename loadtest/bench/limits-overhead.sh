#!/usr/bin/env bash
# The cost of client keys and limits: the same Zipf-distributed load over 10,000 client keys
# through keygate three ways, interleaved round by round in one run:
#
#   plain   no client keys at all (keygate as a plain proxy)
#   keys    10,000 client keys, no limits (authentication and ownership only)
#   limits  the same keys, each with a rate limit, burst and two calendar quotas, set high
#           enough that nothing is refused, so every request pays for the full admission
#
# Each connection draws a key by Zipf (s = 1) and reconnects every 100 requests with a new
# draw, so about half the connections land on the shard that does not own their key and are
# handed over (keygate runs 2 shards). The plain run reconnects just as often. Prints the median req/s and p99 of each and the ratios.
#
# Usage: loadtest/bench/limits-overhead.sh [ROUNDS] [SECONDS]   (defaults 3 and 5)
# Needs a release build: cargo build --release --workspace
set -euo pipefail
rounds=${1:-3}
seconds=${2:-5}
keys=10000
cd "$(dirname "$0")/../.."
bin=target/release
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait; rm -rf "$dir"' EXIT

# shellcheck source=lib.sh
. loadtest/bench/lib.sh

"$bin/loadtest" mock --listen 127.0.0.1:0 --workers 1 2>"$dir/mock.log" &
pids+=($!)
mock=$(wait_listening "$dir/mock.log")

write_config() { # NAME KEYS LIMITS
    python3 - "$dir/$1.toml" "$mock" "$2" "$3" <<'PY'
import os, sys
path, mock, keys, limits = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
name = os.path.basename(path)[:-5]
with open(path, "w") as out:
    out.write(f'[gateway]\nlisten = "127.0.0.1:0"\nworkers = 2\nstate_dir = "state-{name}"\n'
              'tuning = "TUNING"\n\n'
              f'[[upstream]]\nname = "mock"\nprovider = "openai"\nendpoints = ["http://{mock}"]\n\n'
              '[[route]]\npath_prefix = "/"\nupstream = "mock"\n')
    for i in range(keys):
        out.write(f'\n[[client_key]]\nid = "k{i}"\nsecret = "kg-bench-{i}"\n')
        if limits:
            out.write('rate = "1000000/s"\nburst = 100000\n'
                      'quota = { per_hour = 1000000000, per_day = 1000000000 }\n')
PY
    sed -i "s|TUNING|$PWD/tuning/local.toml|" "$dir/$1.toml"
}
write_config plain 0 0
write_config keys "$keys" 0
write_config limits "$keys" 1

declare -A addr
for name in plain keys limits; do
    (cd "$dir" && exec "$OLDPWD/$bin/keygate" run --config "$name.toml") 2>"$dir/$name.log" &
    pids+=($!)
    addr[$name]=$(wait_listening "$dir/$name.log")
done

for round in $(seq "$rounds"); do
    for name in plain keys limits; do
        args=(--target "${addr[$name]}" --duration "${seconds}s" --warmup 1s --json
            --reconnect-every 100)
        if [ "$name" != plain ]; then
            args+=(--keys "$keys" --key-dist zipf)
        fi
        "$bin/loadtest" run "${args[@]}" 2>/dev/null >"$dir/$name.$round.json"
    done
done

python3 - "$dir" "$rounds" <<'PY'
import json, statistics, sys
directory, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for name in ("plain", "keys", "limits"):
    runs = [json.load(open(f"{directory}/{name}.{r}.json")) for r in range(1, rounds + 1)]
    bad = sum(sum(v for k, v in run["status"].items() if k != "200") + run["errors"]["total"]
              for run in runs)
    rows[name] = (statistics.median(r["requests_per_second"] for r in runs),
                  statistics.median(r["latency_us"]["p99"] for r in runs), bad)
print(f"{'run':8} {'req/s':>10} {'p99 us':>8} {'non-200':>8}")
for name, (rps, p99, bad) in rows.items():
    print(f"{name:8} {rps:10.0f} {p99:8.0f} {bad:8}")
print(f"limits / keys  req/s {rows['limits'][0] / rows['keys'][0]:.3f}")
print(f"limits / plain req/s {rows['limits'][0] / rows['plain'][0]:.3f}")
PY
