#!/usr/bin/env bash
# The cost of the access log: the same chat-completion load through two keygates that
# differ only in `access_log` (off, or a file in a temp dir), interleaved round by round in
# one run, with wrk. Both have the same client key (a rate that never refuses), so the
# logged line carries a tenant, a key id and the usage the mock reports.
#
# Prints the median req/s, p99 and CPU per request of each, and the ratios log-on/log-off,
# then the records the log's writer wrote and dropped against the requests wrk counted.
#
# Usage: ROUNDS=3 DURATION=10 loadtest/bench/access-log-overhead.sh
# Needs a release build (cargo build --release --workspace), wrk and python3.
set -euo pipefail
rounds=${ROUNDS:-3}
duration=${DURATION:-10}
cd "$(dirname "$0")/../.."
bin=$PWD/target/release
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$dir"' EXIT

# shellcheck source=lib.sh
. loadtest/bench/lib.sh

"$bin/loadtest" mock --listen 127.0.0.1:0 --workers 1 2>"$dir/mock.log" &
pids+=($!)
mock=$(wait_listening "$dir/mock.log")

start_keygate() { # NAME EXTRA -> prints "PID ADDR"
    mkdir -p "$dir/$1"
    cat >"$dir/$1/keygate.toml" <<EOF
[gateway]
listen = "127.0.0.1:0"
workers = 1
tuning = "$PWD/tuning/local.toml"
$2

[[upstream]]
name = "mock"
provider = "openai"
endpoints = ["http://$mock"]

[[route]]
path_prefix = "/"
upstream = "mock"

[[tenant]]
name = "bench"

[[client_key]]
id = "bench-key"
tenant = "bench"
secret = "kg-bench-0001"
rate = "1000000/s"
burst = 1000000
EOF
    "$bin/keygate" run --config "$dir/$1/keygate.toml" 2>"$dir/$1/stderr.log" &
    local pid=$!
    echo "$pid $(wait_listening "$dir/$1/stderr.log")"
}
read -r off_pid off_addr < <(start_keygate off "")
pids+=("$off_pid")
read -r on_pid on_addr < <(start_keygate on "access_log = \"access.log\"")
pids+=("$on_pid")

cat >"$dir/chat.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer kg-bench-0001"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
: >"$dir/results"
for round in $(seq "$rounds"); do
    for name in off on; do
        pid_var=${name}_pid addr_var=${name}_addr
        pid=${!pid_var} addr=${!addr_var}
        before=$(cpu_ticks "$pid")
        wrk -t1 -c64 -d"${duration}s" --latency -s "$dir/chat.lua" "http://$addr/v1/chat/completions" >"$dir/wrk.out"
        after=$(cpu_ticks "$pid")
        python3 - "$dir/wrk.out" "$name" "$round" "$before" "$after" >>"$dir/results" <<'PY'
import re, sys, os
text = open(sys.argv[1]).read()
name, rnd, before, after = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
def ms(label):
    m = re.search(label + r"\s+([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
tick = os.sysconf("SC_CLK_TCK")
cpu_us = (after - before) / tick * 1e6 / max(total, 1)
print(f"{name}\t{rnd}\t{rps:.0f}\t{ms('99%'):.3f}\t{cpu_us:.2f}\t{total}")
PY
        tail -1 "$dir/results"
    done
done

python3 - "$dir/results" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().split("\n") if line]
med = {}
for name in ("off", "on"):
    mine = [r for r in rows if r[0] == name]
    med[name] = [statistics.median(float(r[i]) for r in mine) for i in (2, 3, 4)]
    print(f"access log {name:3}: {med[name][0]:9.0f} req/s  p99 {med[name][1]:.3f} ms  cpu {med[name][2]:.2f} us/req")
print(f"on/off: req/s x {med['on'][0] / med['off'][0]:.3f}  p99 x {med['on'][1] / med['off'][1]:.3f}  cpu/req x {med['on'][2] / med['off'][2]:.3f}")
print("sent through the logging keygate:", sum(int(r[5]) for r in rows if r[0] == "on"), "requests (wrk's count)")
PY
# A clean stop writes what is queued and reports the writer's counts (rotated files
# included; only the newest access_log_keep files are kept).
kill "$on_pid"
for _ in $(seq 300); do kill -0 "$on_pid" 2>/dev/null || break; sleep 0.1; done
grep -o 'access log closed.*' "$dir/on/stderr.log" || echo "no close line in the log"
