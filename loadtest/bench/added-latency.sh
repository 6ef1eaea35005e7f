#!/usr/bin/env bash
# added-latency.sh: the latency keygate adds over going to the provider directly, at a set
# fraction (half, by default) of keygate's maximum rate, measured in an open loop.
#
# What it does
#   1. Builds the workspace in release mode (BUILD=0 skips the build). Makes KEYS client keys
#      with `keygate key new` and starts on 127.0.0.1 and free ports the mock (`loadtest mock
#      --workers 1`) and keygate (WORKERS shards, tuning/local.toml, every key with a rate
#      limit, a burst and two quotas set so high that nothing is refused, the access log on;
#      ACCESS_LOG=0 turns it off), as compare.sh does.
#   2. Finds keygate's maximum rate: MAX_ROUNDS closed-loop runs of `loadtest run`
#      (CONNECTIONS connections, MAX_DURATION s after a 1 s warm-up), the median req/s.
#   3. Runs the open loop (`loadtest run --rate R`, R = FRACTION x that maximum, latency timed
#      from when each request was due) against the mock directly and through keygate,
#      interleaved, for ROUNDS rounds of DURATION s. Every request is the same small chat
#      completion with `Authorization: Bearer <key>`, the key drawn per request; keygate
#      checks it and strips it, the mock ignores it.
#   4. With UNLOADED=1, runs both targets again with one connection in a closed loop, ROUNDS
#      rounds: what the extra hop costs when nothing queues.
#   5. Prints, per target, the medians over rounds of p50, p99 and p99.9, each round's added
#      p99 (keygate's p99 less the direct p99 of the same round) and their median, and whether
#      that median stays within TARGET_US.
#   Before each run it waits (up to QUIET_WAIT s) until no compiler runs and the machine is
#   idle (lib.sh's wait_quiet), and it reports how busy the machine was: the busy share of
#   both cores just before the run (lib.sh's cpu_busy) and what processes other than the mock,
#   keygate and the load generator took during it ("other", % of one core).
#   Everything it started is stopped by PID on exit, and its temp dir removed (KEEP=DIR keeps
#   the configs, logs and raw outputs).
#
# Usage:
#   loadtest/bench/added-latency.sh
#   ROUNDS=7 DURATION=20 loadtest/bench/added-latency.sh
#   RATE=40000 loadtest/bench/added-latency.sh       # skip step 2, use this rate
#
# Settings (environment):
#   ROUNDS=5            interleaved open-loop rounds
#   DURATION=10         seconds recorded per open-loop run (after a 1 s warm-up)
#   MAX_ROUNDS=3        closed-loop runs to find keygate's maximum rate
#   MAX_DURATION=10     seconds recorded per closed-loop run
#   FRACTION=0.5        the open loop's rate as a share of the maximum
#   RATE=               the open loop's rate, requests a second (skips step 2)
#   TICK=250us          the open loop's timer resolution (`loadtest run --tick`; 1ms: monoio's
#                       millisecond timers, which send each millisecond's requests in one burst)
#   CONNECTIONS=64      connections of the load generator, both loops
#   WORKERS=1           keygate shards (1, as compare.sh: on 2 shared cores a second shard
#                       mostly measures the scheduler)
#   KEYS=1000           client keys
#   ACCESS_LOG=1        keygate's access log on
#   TARGET_US=100       the target for the added p99, in microseconds
#   UNLOADED=1          also run both targets with one connection in a closed loop (no
#                       queueing anywhere): the hop's own cost, for reference
#   QUIET_WAIT=300      longest wait for a quiet machine before a run, in seconds
#   BUILD=1, KEEP=DIR
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
MAX_ROUNDS=${MAX_ROUNDS:-3}
MAX_DURATION=${MAX_DURATION:-10}
FRACTION=${FRACTION:-0.5}
RATE=${RATE:-}
CONNECTIONS=${CONNECTIONS:-64}
WORKERS=${WORKERS:-1}
KEYS=${KEYS:-1000}
ACCESS_LOG=${ACCESS_LOG:-1}
TARGET_US=${TARGET_US:-100}
UNLOADED=${UNLOADED:-1}
TICK=${TICK:-250us}
QUIET_WAIT=${QUIET_WAIT:-300}
BUILD=${BUILD:-1}
KEEP=${KEEP:-}

repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$repo/target/release

if [ "$BUILD" = 1 ]; then
    (cd "$repo" && cargo build --release --workspace --quiet)
fi

tmp=$(mktemp -d /tmp/added-latency.XXXXXX)
pids=()
# shellcheck source=lib.sh
. "$repo/loadtest/bench/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM

# --- client keys and servers -------------------------------------------------------------

make_client_keys "$KEYS"

declare -A url pid_of
mock_port=$(free_port)
"$bin/loadtest" mock --listen "127.0.0.1:$mock_port" --workers 1 2>"$tmp/mock.log" &
pids+=($!)
pid_of[mock]=$!
url[mock]=127.0.0.1:$mock_port
wait_ready mock $! "http://127.0.0.1:$mock_port/v1/models" "$first_key"

start_bench_keygate "$bin/keygate" "" "pool_max_idle = $CONNECTIONS"
pid_of[keygate]=$keygate_pid
url[keygate]=127.0.0.1:$keygate_port

# --- runs --------------------------------------------------------------------------------

# CPU ticks of the given processes; of the whole machine; of this shell's finished children
# (the load generator runs), from the output of `times` in file $1.
ticks_of() {
    local total=0 pid stat
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        read -ra stat < <(sed 's/.*) //' "/proc/$pid/stat")
        total=$((total + stat[11] + stat[12]))
    done
    echo "$total"
}
machine_ticks() { local cpu; read -ra cpu </proc/stat; echo $((cpu[1] + cpu[2] + cpu[3])); }
hz=$(getconf CLK_TCK)
child_ticks() {
    awk -v hz="$hz" 'NR == 2 {
        s = 0
        for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] }
        printf "%d\n", s * hz }' "$1"
}

results=$tmp/results.tsv
: >"$results"
load_args=(--warmup 1s --quiet --json --keys-file "$tmp/keys.txt" --key-scope request)

# One run of `loadtest run` against TARGET over CONNECTIONS, closed loop or at RATE; appends
# a row to results: phase round target req/s p50 p99 p99.9 errors busy_before% other%.
measure() { # PHASE ROUND TARGET SECONDS CONNECTIONS [RATE]
    local phase=$1 round=$2 target=$3 seconds=$4 connections=$5 rate=${6:-} out
    out=$tmp/$phase-$target-r$round.json
    local args=("${load_args[@]}" --connections "$connections") busy m0 s0 c0 m1 s1 c1 other
    [ -n "$rate" ] && args+=(--rate "$rate" --tick "$TICK")
    wait_quiet
    busy=$(cpu_busy)
    m0=$(machine_ticks); s0=$(ticks_of "${pids[@]}")
    times >"$tmp/times"; c0=$(child_ticks "$tmp/times")
    "$bin/loadtest" run --target "${url[$target]}" --duration "${seconds}s" "${args[@]}" \
        >"$out" 2>"$out.err" || { echo "loadtest failed:" >&2; cat "$out.err" >&2; exit 1; }
    m1=$(machine_ticks); s1=$(ticks_of "${pids[@]}")
    times >"$tmp/times"; c1=$(child_ticks "$tmp/times")
    other=$(( (m1 - m0 - (s1 - s0) - (c1 - c0)) * 100 / ((seconds + 1) * hz) ))
    [ "$other" -lt 0 ] && other=0
    python3 - "$out" "$phase" "$round" "$target" "$busy" "$other" >>"$results" <<'PY'
import json, sys
out, phase, rnd, target, busy, other = sys.argv[1:]
s = json.load(open(out))
bad = s["errors"]["total"] + sum(v for k, v in s["status"].items() if k != "200")
lat = s["latency_us"]
print("\t".join(str(v) for v in (phase, rnd, target, s["requests_per_second"], lat["p50"],
      lat["p99"], lat["p99.9"], bad, busy, other)))
PY
    tail -1 "$results" | awk -F'\t' '{
        printf "  %-6s %-8s %9.0f req/s  p50 %5d us  p99 %6d us  p99.9 %6d us", $1, $3, $4, $5, $6, $7
        printf "  errors %s  busy before %s%%  other %s%%\n", $8, $9, $10
    }' >&2
}

if [ -z "$RATE" ]; then
    echo "keygate's maximum rate: $MAX_ROUNDS closed-loop runs of ${MAX_DURATION}s" >&2
    for round in $(seq "$MAX_ROUNDS"); do
        measure max "$round" keygate "$MAX_DURATION" "$CONNECTIONS"
    done
    RATE=$(awk -F'\t' -v f="$FRACTION" '$1 == "max" { print $4 }' "$results" | sort -n |
        awk -v f="$FRACTION" '{ v[NR] = $1 } END {
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%d\n", m * f }')
fi
echo "open loop at $RATE req/s, tick $TICK: $ROUNDS rounds of ${DURATION}s," \
    "mock directly and through keygate" >&2
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    for target in mock keygate; do
        measure open "$round" "$target" "$DURATION" "$CONNECTIONS" "$RATE"
    done
done
if [ "$UNLOADED" = 1 ]; then
    echo "one connection, closed loop: the hop without queueing; $ROUNDS rounds" >&2
    for round in $(seq "$ROUNDS"); do
        for target in mock keygate; do
            measure one "$round" "$target" "$DURATION" 1
        done
    done
fi

# --- summary -----------------------------------------------------------------------------

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] &&
    commit+=" (with uncommitted changes)"
python3 - "$results" "$RATE" "$FRACTION" "$TARGET_US" "$commit" <<'PY'
import statistics, sys
results, rate, fraction, target_us, commit = sys.argv[1:]
rows = [line.rstrip("\n").split("\t") for line in open(results) if line.strip()]
median = statistics.median
maxima = [float(r[3]) for r in rows if r[0] == "max"]
runs = {"open": {}, "one": {}}
for phase, rnd, target, rps, p50, p99, p999, bad, busy, other in rows:
    if phase in runs:
        runs[phase].setdefault(target, {})[int(rnd)] = (float(rps), int(p50), int(p99),
                                                        int(p999), int(bad), int(busy), int(other))
opened = runs["open"]
print()
print(f"built from {commit}")
if maxima:
    print(f"keygate's maximum rate (closed loop): median {median(maxima):,.0f} req/s of "
          f"{', '.join(f'{m:,.0f}' for m in maxima)}; open loop at {int(rate):,} req/s "
          f"({fraction} of it)")
else:
    print(f"open loop at {int(rate):,} req/s (given)")
names = {"mock": "mock directly", "keygate": "through keygate"}
loads = {"open": f"open loop, {int(rate):,} req/s", "one": "one connection, closed loop"}
print()
print("| load | target | req/s | p50 | p99 | p99.9 | errors |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for phase in ("open", "one"):
    for target in ("mock", "keygate"):
        if target not in runs[phase]:
            continue
        done = runs[phase][target].values()
        print(f"| {loads[phase]} | {names[target]} | {median(r[0] for r in done):,.0f} | "
              f"{median(r[1] for r in done):.0f} µs | {median(r[2] for r in done):.0f} µs | "
              f"{median(r[3] for r in done):.0f} µs | {sum(r[4] for r in done)} |")
added = {rnd: opened["keygate"][rnd][2] - opened["mock"][rnd][2] for rnd in opened["keygate"]}
added_p50 = [opened["keygate"][r][1] - opened["mock"][r][1] for r in opened["keygate"]]
print()
print("added p99 by round (µs): " + ", ".join(f"{added[r]}" for r in sorted(added)))
print(f"added p50, median of rounds: {median(added_p50):.0f} µs")
if "keygate" in runs["one"]:
    one = runs["one"]
    hop = {r: (one["keygate"][r][1] - one["mock"][r][1], one["keygate"][r][2] - one["mock"][r][2])
           for r in one["keygate"]}
    print(f"one connection, closed loop: added p50 {median(h[0] for h in hop.values()):.0f} µs, "
          f"added p99 {median(h[1] for h in hop.values()):.0f} µs (medians of rounds)")
busy = [int(r[8]) for r in rows]
other = [int(r[9]) for r in rows]
print(f"machine: busy before a run {min(busy)}-{max(busy)}% of both cores; other processes "
      f"took {min(other)}-{max(other)}% of a core during a run (median {median(other):.0f}%)")
verdict = "holds" if median(added.values()) <= int(target_us) else "does not hold"
print(f"target: added p99 at most {target_us} µs: median {median(added.values()):.0f} µs: "
      f"{verdict}")
PY
