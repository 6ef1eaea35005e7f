#!/usr/bin/env bash
# Memory of a gateway configured with many client keys: generates a config with COUNT keys
# (default 1,000,000; each with a rate limit and a daily quota, stored as secret_sha256),
# starts keygate on it, and prints its resident memory once it listens, plus the peak
# during loading and the start-up time. Needs a release build (cargo build --release).
set -euo pipefail
count=${1:-1000000}
cd "$(dirname "$0")/../.."
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT

python3 - "$count" "$dir" <<'PY'
import hashlib, sys
count, directory = int(sys.argv[1]), sys.argv[2]
with open(f"{directory}/keys.toml", "w") as out:
    out.write('[gateway]\nlisten = "127.0.0.1:0"\nworkers = 2\nstate_dir = "state"\n\n'
              '[[upstream]]\nname = "u"\nprovider = "openai"\nendpoints = ["http://127.0.0.1:9"]\n\n'
              '[[route]]\npath_prefix = "/"\nupstream = "u"\n')
    for i in range(count):
        digest = hashlib.sha256(f"kg-{i}".encode()).hexdigest()
        out.write(f'\n[[client_key]]\nid = "key-{i}"\nsecret_sha256 = "{digest}"\n'
                  f'rate = "10/s"\nquota = {{ per_day = 10000 }}\n')
PY
echo "config: $(du -h "$dir/keys.toml" | cut -f1) for $count keys"

start=$(date +%s.%N)
target/release/keygate run --config "$dir/keys.toml" 2>"$dir/log" &
pid=$!
until grep -q "listening on" "$dir/log"; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log"; exit 1; }
    sleep 0.2
done
ready=$(date +%s.%N)
sleep 2
grep -E "VmRSS|VmHWM" "/proc/$pid/status"
echo "start-up: $(echo "$ready - $start" | bc) s"
