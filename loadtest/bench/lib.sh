# Shell functions the benchmark scripts share; sourced, not run.

# Prints the address a server logged as "listening on ADDR" in the file LOG, waiting up to
# 10 s for the line; on failure prints the log and returns 1.
wait_listening() { # LOG
    local addr
    for _ in $(seq 200); do
        addr=$(grep -o 'listening on [0-9.:]*' "$1" | head -1 | cut -d' ' -f3)
        [ -n "$addr" ] && { echo "$addr"; return; }
        sleep 0.05
    done
    cat "$1" >&2
    return 1
}

# Prints a port no socket uses, below the kernel's ephemeral range so that no outgoing
# connection takes it meanwhile (the start of each server fails loudly if it was taken
# anyway). Never the same port twice in one script.
used_ports=" "
free_port() {
    local port low
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    while :; do
        port=$((10000 + RANDOM % (low > 12000 ? low - 10000 : 2000)))
        case "$used_ports" in *" $port "*) continue ;; esac
        if [ -z "$(ss -Htan "sport = :$port")" ]; then
            used_ports+="$port "
            echo "$port"
            return
        fi
    done
}

# Waits until URL answers 200 to a request with "Authorization: Bearer KEY"; the process PID
# must stay alive meanwhile. On failure prints $tmp/NAME.log and exits.
wait_ready() { # NAME PID URL KEY
    local name=$1 pid=$2 url=$3 key=$4
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited at start; its log:" >&2
            cat "$tmp/$name.log" >&2 || true
            exit 1
        fi
        if [ "$(curl -s -o /dev/null -w '%{http_code}' \
            -H "Authorization: Bearer $key" "$url" || true)" = 200 ]; then
            return
        fi
        sleep 0.1
    done
    echo "$name did not answer 200 on $url within 10 s; its log:" >&2
    cat "$tmp/$name.log" >&2 || true
    exit 1
}

# The busy share of all cores over one second, in percent.
cpu_busy() {
    local a b total=0 idle i
    read -ra a < <(grep '^cpu ' /proc/stat)
    sleep 1
    read -ra b < <(grep '^cpu ' /proc/stat)
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $(((total - idle) * 100 / (total > 0 ? total : 1)))
}

# Whether a compiler or linker runs (someone's build).
building() {
    local name
    for name in rustc cargo cc cc1 cc1plus collect2 ld ld.lld ld.gold lld rust-lld; do
        pgrep -x "$name" >/dev/null && return 0
    done
    return 1
}

# Waits until no build runs and the machine is idle, at most QUIET_WAIT seconds.
wait_quiet() {
    local waited=0 busy
    while :; do
        busy=$(cpu_busy)
        if ! building && [ "$busy" -lt 15 ]; then
            return
        fi
        if [ "$waited" -ge "$QUIET_WAIT" ]; then
            echo "  machine still busy (${busy}% CPU) after ${QUIET_WAIT}s; measuring anyway" >&2
            return
        fi
        [ "$waited" = 0 ] && echo "  waiting for a quiet machine (${busy}% CPU busy)..." >&2
        sleep 5
        waited=$((waited + 6))
    done
}

# Stops every PID in the array `pids` (TERM, then KILL after 5 s), copies the temporary
# directory `tmp` to KEEP when set, and removes it. For `trap stop_all EXIT`.
stop_all() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp -r "$tmp"/. "$KEEP"/
        echo "configs, logs and outputs kept in $KEEP" >&2
    fi
    rm -rf "$tmp"
}

# make_client_keys COUNT: COUNT keys from `keygate key new` ($bin), their secrets one a line
# in $tmp/keys.txt and their `[[client_key]]` tables (limits that never refuse, so the
# checks run but the traffic passes) in $tmp/keys.toml; sets `first_key`.
make_client_keys() {
    local count=$1 i
    echo "making $count client keys with keygate key new" >&2
    : >"$tmp/keys.txt"
    : >"$tmp/keys.toml"
    for i in $(seq 0 $((count - 1))); do
        mapfile -t made < <("$bin/keygate" key new)
        echo "${made[0]}" >>"$tmp/keys.txt"
        cat >>"$tmp/keys.toml" <<KEY

[[client_key]]
id = "bench-$i"
${made[1]}
rate = "1000000/s"
burst = 100000
quota = { per_hour = 1000000000, per_day = 1000000000 }
KEY
    done
    first_key=$(head -1 "$tmp/keys.txt")
}

# start_bench_keygate BINARY GATEWAY_LINES UPSTREAM_LINES [plain]: keygate as the comparisons
# run it, in $tmp/keygate: WORKERS shards on a free port, tuning/local.toml, the access log
# when ACCESS_LOG=1, one upstream at the mock ($mock_port) on route `/`, and the client keys
# of make_client_keys; extra lines go into [gateway] and [[upstream]]. With `plain`, in
# $tmp/keygate-plain, without client keys and without the access log: the proxy alone.
# Waits until it answers; sets keygate_pid and keygate_port.
start_bench_keygate() {
    local binary=$1 gateway_lines=$2 upstream_lines=$3 plain=${4:-} dir=$tmp/keygate
    [ -n "$plain" ] && dir=$tmp/keygate-plain
    keygate_port=$(free_port)
    mkdir -p "$dir/state"
    {
        printf '[gateway]\nlisten = "127.0.0.1:%s"\nworkers = %s\n' "$keygate_port" "$WORKERS"
        printf 'tuning = "%s"\nstate_dir = "state"\ndrain_timeout = "1s"\n' \
            "$repo/tuning/local.toml"
        [ -n "$gateway_lines" ] && printf '%s\n' "$gateway_lines"
        if [ -z "$plain" ] && [ "${ACCESS_LOG:-1}" = 1 ]; then
            printf 'access_log = "%s"\n' "$dir/access.log"
        fi
        printf '\n[[upstream]]\nname = "mock"\nprovider = "openai"\n'
        printf 'endpoints = ["http://127.0.0.1:%s"]\n' "$mock_port"
        [ -n "$upstream_lines" ] && printf '%s\n' "$upstream_lines"
        printf '\n[[route]]\npath_prefix = "/"\nupstream = "mock"\n'
        if [ -z "$plain" ]; then cat "$tmp/keys.toml"; fi
    } >"$dir/keygate.toml"
    (cd "$dir" && KEYGATE_LOG=warn exec "$binary" run --config keygate.toml) \
        2>"$dir.log" &
    keygate_pid=$!
    pids+=("$keygate_pid")
    wait_ready keygate "$keygate_pid" "http://127.0.0.1:$keygate_port/v1/models" "$first_key"
}
