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
