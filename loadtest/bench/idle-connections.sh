#!/usr/bin/env bash
# idle-connections.sh: what idle keep-alive client connections cost keygate in memory.
#
# What it does
#   1. Builds the workspace in release mode (BUILD=0 skips the build). Makes KEYS client keys
#      with `keygate key new`, as compare.sh does.
#   2. Starts on 127.0.0.1 and free ports the mock (`loadtest mock --workers 1`) and keygate:
#      WORKERS shards, tuning/local.toml, every key with a rate limit, a burst and two quotas
#      set so high that nothing is refused, `max_connections` CONNECTIONS + 1000 per shard,
#      `idle_timeout` HOLD + 60 s, the access log on (ACCESS_LOG=0: off). keygate raises its
#      soft open-files limit itself (tuning `nofile_limit`, capped at the hard limit); the
#      script raises the hard limit when it is too low for CONNECTIONS (as root), and checks
#      keygate's limit in /proc/PID/limits.
#   3. Reads keygate's VmRSS and VmHWM (/proc/PID/status) and its open descriptors:
#        before  after start-up and one request
#        held    SETTLE s after `loadtest idle` has opened CONNECTIONS connections, sent one
#                chat completion on each (with key i modulo KEYS) and read its response, and
#                again at the end of the HOLD s hold (the row shows the larger RSS)
#        after   once `loadtest idle` has closed them all and keygate's descriptors are
#                down by CONNECTIONS (at most 10 s later), and a second more
#      and the kernel's TCP buffer memory (/proc/net/sockstat, all sockets on the machine, the
#      load generator's included), which is not in anyone's RSS.
#   4. Prints a table and whether VmHWM (the peak over the whole run, read at the end) stays
#      within LIMIT_MB.
#   Everything it started is stopped by PID on exit, and its temp dir removed (KEEP=DIR keeps
#   the configs and logs).
#
# Usage:
#   loadtest/bench/idle-connections.sh
#   WORKERS=1 CONNECTIONS=20000 HOLD=60 loadtest/bench/idle-connections.sh
#
# Settings (environment):
#   CONNECTIONS=10000   idle connections to hold
#   HOLD=30             seconds to hold them once all are open
#   SETTLE=3            seconds after the hold starts before the first reading
#   WORKERS=2           keygate shards (2: one per core on this machine, as "auto")
#   KEYS=1000           client keys
#   ACCESS_LOG=1        keygate's access log on
#   LIMIT_MB=256        the target for VmHWM while the connections are held, in MB of
#                       10^6 bytes (the stricter reading)
#   KEYGATE=PATH        another keygate binary to measure (default target/release/keygate)
#   BUILD=1, KEEP=DIR
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-10000}
HOLD=${HOLD:-30}
SETTLE=${SETTLE:-3}
WORKERS=${WORKERS:-2}
KEYS=${KEYS:-1000}
ACCESS_LOG=${ACCESS_LOG:-1}
LIMIT_MB=${LIMIT_MB:-256}
BUILD=${BUILD:-1}
KEEP=${KEEP:-}

repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$repo/target/release
keygate=${KEYGATE:-$bin/keygate}

if [ "$BUILD" = 1 ]; then
    (cd "$repo" && cargo build --release --workspace --quiet)
fi

# Each of keygate and the load generator holds one descriptor per connection, plus a few.
need=$((CONNECTIONS + 1024))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$need" ]; then
    ulimit -Hn "$need" 2>/dev/null || {
        echo "the hard open-files limit is $(ulimit -Hn); $CONNECTIONS connections need" \
            "$need (run as root, or lower CONNECTIONS)" >&2
        exit 1
    }
fi

tmp=$(mktemp -d /tmp/idle-connections.XXXXXX)
pids=()
# shellcheck source=lib.sh
. "$repo/loadtest/bench/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM

# --- client keys and servers -------------------------------------------------------------

make_client_keys "$KEYS"

mock_port=$(free_port)
"$bin/loadtest" mock --listen "127.0.0.1:$mock_port" --workers 1 2>"$tmp/mock.log" &
pids+=($!)
wait_ready mock $! "http://127.0.0.1:$mock_port/v1/models" "$first_key"

start_bench_keygate "$keygate" \
    "max_connections = $((CONNECTIONS + 1000))
idle_timeout = \"$((HOLD + 60))s\"" ""
kg=$keygate_pid
port=$keygate_port

limit=$(awk '/^Max open files/ { print $4 }' "/proc/$kg/limits")
if [ "$limit" != unlimited ] && [ "$limit" -lt "$need" ]; then
    echo "keygate's open-files limit is $limit, below the $need needed" >&2
    exit 1
fi

# --- readings ----------------------------------------------------------------------------

# "VmRSS VmHWM" of PID in kB.
memory() { awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { print r, h }' "/proc/$1/status"; }
descriptors() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
# Pages of memory the kernel's TCP sockets hold, in kB.
tcp_kb() {
    awk -v page="$(getconf PAGESIZE)" '/^TCP:/ {
        for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) * page / 1024 }' \
        /proc/net/sockstat
}
rows=()
reading() { # PHASE
    local rss hwm
    read -r rss hwm < <(memory "$kg")
    rows+=("$1 $rss $hwm $(descriptors "$kg") $(tcp_kb)")
    echo "  $1: VmRSS $rss kB, VmHWM $hwm kB, $(descriptors "$kg") descriptors" >&2
}

reading before

echo "opening $CONNECTIONS connections and holding them for ${HOLD}s" >&2
"$bin/loadtest" idle --target "127.0.0.1:$port" --connections "$CONNECTIONS" \
    --hold "${HOLD}s" --keys-file "$tmp/keys.txt" --json >"$tmp/idle.json" 2>"$tmp/idle.log" &
idle=$!
pids+=("$idle")
for _ in $(seq 600); do
    grep -q 'holding' "$tmp/idle.log" && break
    kill -0 "$idle" 2>/dev/null || break
    sleep 0.1
done
grep -q 'holding' "$tmp/idle.log" || {
    echo "loadtest idle did not start holding; its log:" >&2
    cat "$tmp/idle.log" >&2
    exit 1
}
sleep "$SETTLE"
reading held
sleep "$((HOLD > SETTLE + 2 ? HOLD - SETTLE - 2 : 0))"
reading held-late
wait "$idle" || { echo "loadtest idle failed:" >&2; cat "$tmp/idle.log" >&2; exit 1; }
# The held connections are gone once keygate's descriptors are down by CONNECTIONS (pooled
# upstream connections may stay).
held_fds=$(echo "${rows[1]}" | awk '{ print $4 }')
for _ in $(seq 100); do
    [ "$(descriptors "$kg")" -le "$((held_fds - CONNECTIONS + 10))" ] && break
    sleep 0.1
done
sleep 1
reading after

# --- summary -----------------------------------------------------------------------------

python3 - "$tmp/idle.json" "$CONNECTIONS" "$LIMIT_MB" "${rows[@]}" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
connections, limit_mb = int(sys.argv[2]), int(sys.argv[3])
rows = {}
for row in sys.argv[4:]:
    phase, rss, hwm, fds, tcp = row.split()
    rows[phase] = (int(rss), int(hwm), int(fds), float(tcp))
# The held row: the later reading's peak, the larger RSS of the two.
held, late = rows["held"], rows.pop("held-late")
rows["held"] = (max(held[0], late[0]), late[1], max(held[2], late[2]), max(held[3], late[3]))
rows = {phase: rows[phase] for phase in ("before", "held", "after")}

print()
print(f"loadtest idle: {summary['connections']} connections, status {summary['status']}, "
      f"errors {summary['errors']['total']}, closed by keygate {summary['closed']}, "
      f"held {summary['held']} for {summary['hold_s']:.1f} s, opened in {summary['open_s']:.2f} s")
print()
print("| phase | keygate VmRSS | keygate VmHWM | keygate descriptors | kernel TCP memory (all sockets) |")
print("| --- | --- | --- | --- | --- |")
for phase, (rss, hwm, fds, tcp) in rows.items():
    print(f"| {phase} | {rss / 1024:.1f} MiB | {hwm / 1024:.1f} MiB | {fds:,} | {tcp / 1024:.1f} MiB |")
grown = rows["held"][0] - rows["before"][0]
print()
print(f"per idle connection: {grown / summary['held'] * 1024:,.0f} bytes of keygate's RSS "
      f"({grown / 1024:.1f} MiB over {summary['held']:,} held connections)"
      if summary["held"] else "no connection was held")
# VmHWM after the close: the peak over the whole run. MB as 10^6 bytes: the stricter reading
# of the target.
peak = rows["after"][1] * 1024
verdict = "holds" if peak <= limit_mb * 1e6 and summary["held"] == connections else "does not hold"
print(f"target: {connections:,} idle connections in at most {limit_mb} MB: VmHWM "
      f"{peak / 2**20:.1f} MiB ({peak / 1e6:.1f} MB) with {summary['held']:,} held: {verdict}")
PY
