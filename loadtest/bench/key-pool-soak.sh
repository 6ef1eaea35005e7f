#!/usr/bin/env bash
# A soak of a provider key pool: three provider keys at the mock, each allowed RPM requests a
# minute (default 120, so 2/s each and 6/s together), in front of keygate (2 shards) that is
# told nothing about their limits and learns them from the mock's x-ratelimit-* fields.
#
#   phase 1  open-loop load at 2/3 of the keys' sum (above any one key's share) for PHASE1
#            seconds: every client request should succeed, and the mock should refuse none
#            (at most in the first seconds, before keygate has heard the limits)
#   phase 2  open-loop load at twice the keys' sum for PHASE2 seconds: once the keys' stored
#            minute is spent, keygate answers 429 keys_temporarily_exhausted itself; the mock
#            still refuses nothing
#   honour   requests until one gets that 429, a wait of exactly its retry-after-ms, one more
#            request: it should succeed
#
# Prints the loadtest summary of each phase, the mock's counters, when (seconds into the
# run) the mock refused anything, and the honour check.
#
# Usage: RPM=120 PHASE1=90 PHASE2=120 loadtest/bench/key-pool-soak.sh
# Needs a release build: cargo build --release --workspace
set -euo pipefail
rpm=${RPM:-120}
phase1=${PHASE1:-90}
phase2=${PHASE2:-120}
cd "$(dirname "$0")/../.."
bin=target/release
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$dir"' EXIT

# shellcheck source=lib.sh
. loadtest/bench/lib.sh

"$bin/loadtest" mock --listen 127.0.0.1:0 \
    --key "sk-soak-a:rpm=$rpm" --key "sk-soak-b:rpm=$rpm" --key "sk-soak-c:rpm=$rpm" \
    2>"$dir/mock.log" &
pids+=($!)
mock=$(wait_listening "$dir/mock.log")

cat >"$dir/keygate.toml" <<EOF
[gateway]
listen = "127.0.0.1:0"
workers = 2
state_dir = "state"
tuning = "$PWD/tuning/local.toml"

[[upstream]]
name = "pool"
provider = "openai"
endpoints = ["http://$mock"]

[[upstream.key]]
id = "a"
secret = "sk-soak-a"

[[upstream.key]]
id = "b"
secret = "sk-soak-b"

[[upstream.key]]
id = "c"
secret = "sk-soak-c"

[[route]]
path_prefix = "/"
upstream = "pool"
EOF
"$bin/keygate" run --config "$dir/keygate.toml" 2>"$dir/keygate.log" &
pids+=($!)
gateway=$(wait_listening "$dir/keygate.log")
started_ms=$(date +%s%3N)

sum_per_s=$(python3 -c "print(3 * $rpm / 60)")
below=$(python3 -c "print(round($sum_per_s * 2 / 3, 3))")
above=$(python3 -c "print(round($sum_per_s * 2, 3))")
echo "keys: 3 x $rpm requests/minute = $sum_per_s/s together; phase 1 at $below/s, phase 2 at $above/s"

run() { # RATE SECONDS NAME
    "$bin/loadtest" run --target "$gateway" --rate "$1" --duration "$2s" --warmup 0s \
        --connections 16 --quiet --json >"$dir/$3.json"
    python3 - "$dir/$3.json" "$3" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}: sent {s.get('requests')} statuses {s.get('status')} errors {s.get('errors')}")
PY
}

mock_stats() {
    curl -sS "http://$mock/mock/stats" >"$dir/stats.json"
    python3 - "$dir/stats.json" "$started_ms" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
start = int(sys.argv[2])
for key, c in s["keys"].items():
    print(f"  mock {key}: ok {c['ok']} limited {c['limited']} denied {c['denied']}")
refused = [round((t - start) / 1000, 1) for t, _, status in s["log"] if status == 429]
print(f"  mock refusals at seconds into the run: {refused if refused else 'none'}")
PY
}

run "$below" "$phase1" phase1
mock_stats
run "$above" "$phase2" phase2
mock_stats

echo "honour:"
body='{"model":"m","messages":[{"role":"user","content":"hi"}]}'
for _ in $(seq 200); do
    head=$(curl -sS -o /dev/null -D - "http://$gateway/v1/chat/completions" \
        -H 'Content-Type: application/json' -d "$body")
    if printf '%s' "$head" | grep -q '^HTTP/1.1 429'; then
        wait_ms=$(printf '%s' "$head" | tr -d '\r' | grep -i '^retry-after-ms:' | cut -d' ' -f2)
        echo "  429 keys_temporarily_exhausted, retry-after-ms $wait_ms; waiting that long"
        sleep "$(python3 -c "print($wait_ms / 1000)")"
        status=$(curl -sS -o /dev/null -w '%{http_code}' "http://$gateway/v1/chat/completions" \
            -H 'Content-Type: application/json' -d "$body")
        echo "  then: $status"
        break
    fi
done
mock_stats
