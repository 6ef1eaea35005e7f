#!/usr/bin/env bash
# Builds keygate, starts the mock provider and the gateway on examples/quickstart.toml, sends
# one request that succeeds and then a burst that the client key's rate ("2/s", burst 2)
# refuses with 429 and the wait it names, and one without a key (401); then uses up the two
# provider keys (3 requests a minute each at the mock) with a key of no limit of its own,
# until keygate answers 429 keys_temporarily_exhausted with the wait until a provider key is
# back; and stops both. It starts from an empty state/ (the example's state_dir).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --quiet
bin=target/release
gateway=http://127.0.0.1:8080
key="Authorization: Bearer kg-acme-dev-0001"
batch_key="Authorization: Bearer kg-acme-batch-0001"

for port in 8080 9001; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use: stop whatever listens there first" >&2
        exit 1
    fi
done

# The story below starts from unused keys: an earlier run's counters (kept in state/, as
# keygate keeps them across restarts) would refuse its first request.
if [ -d state ]; then
    echo "(clearing state/, the counters an earlier run of this example left)"
    rm -rf state
fi

logs=$(mktemp -d)
"$bin/loadtest" mock --listen 127.0.0.1:9001 --key sk-mock-1:rpm=3 --key sk-mock-2:rpm=3 \
    2>"$logs/mock.log" &
mock=$!
"$bin/keygate" run --config examples/quickstart.toml 2>"$logs/keygate.log" &
keygate=$!
trap 'kill "$keygate" "$mock" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$logs"' EXIT

for _ in $(seq 100); do
    curl -s -o /dev/null "$gateway/" 2>/dev/null && break
    sleep 0.1
done

body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'
echo "== a chat completion through keygate (succeeds; x-mock-saw-authorization is the mock"
echo "   echoing the provider key keygate sent in place of the client key):"
curl -sS -i "$gateway/v1/chat/completions" -H "$key" -H 'Content-Type: application/json' -d "$body"
echo
echo
echo "== three more right away: the burst of 2 has room for one more; the two after it are"
echo "   refused with 429 and the time until the rate (2/s) lets the next one through:"
for i in 1 2 3; do
    curl -sS -o /dev/null -D - "$gateway/v1/chat/completions" -H "$key" \
        -H 'Content-Type: application/json' -d "$body" |
        grep -iE '^(HTTP/|retry-after|x-ratelimit-remaining-requests)' || true
    echo
done
echo "== and without a key: 401"
curl -sS "$gateway/v1/models"
echo
echo
echo "== a batch key with no limit of its own: the mock allows each provider key 3 requests a"
echo "   minute, and keygate paces them by what the mock announces, so the requests left"
echo "   succeed and the next is refused by keygate itself, before the mock has to:"
for i in $(seq 8); do
    out=$(curl -sS -D - "$gateway/v1/chat/completions" -H "$batch_key" \
        -H 'Content-Type: application/json' -d "$body")
    status=$(printf '%s' "$out" | head -n1)
    echo "$status"
    if printf '%s' "$status" | grep -q ' 429'; then
        printf '%s\n' "$out" | grep -iE '^(retry-after|\{)' || true
        break
    fi
done
echo
