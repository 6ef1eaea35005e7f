#!/usr/bin/env bash
# proxy-compare.sh: keygate against nginx as a reverse proxy in front of the same mock
# provider, on one machine, measured with wrk.
#
# What it does
#   1. Installs wrk and nginx with apt-get when they are missing (one `apt-get update` first;
#      on a host with systemd, Debian's package may start its own nginx on port 80, which this
#      script neither uses nor stops), and builds the workspace in release mode (BUILD=0
#      skips the build).
#   2. Starts, all on 127.0.0.1 and on free ports it picks:
#        - the mock provider: target/release/loadtest mock --workers 1
#        - keygate as a plain proxy (no client keys), for each worker count in WORKERS
#        - keygate with one client key whose rate ("1000000/s") never refuses anything, so
#          authentication (SHA-256 of the presented key) and admission (GCRA) are on the path
#        - nginx with the same worker count, `reuseport`, an upstream block with `keepalive 64`,
#          `proxy_http_version 1.1`, an empty upstream `Connection` header, very high
#          `keepalive_requests` on both sides, `access_log off`, nginx's default buffering
#      keygate runs with tuning/local.toml (pin_cores = false: pinning costs 30-50% when the
#      load generator shares the cores); its config and nginx's are generated in a temp dir.
#      One worker each is the default: on 2 cores shared with wrk and the mock, a second
#      worker adds little throughput and multiplies p99 by scheduling delays, for both
#      servers (figures in docs/benchmarks.md).
#   3. Runs `wrk -t1 -c64 -d10s --latency` against every target, interleaved (mock, keygate,
#      keygate+key, nginx, mock, keygate, ...), for ROUNDS rounds, on two requests:
#        chat:   POST /v1/chat/completions with a small JSON body
#        models: GET /v1/models
#        chat8k: (only when named in REQUESTS) the chat request with an 8 KB message, larger
#                than what an idle keygate connection reads at once
#      Every target receives the same bytes, including `Authorization: Bearer <the client
#      key>`: keygate+key checks and strips it, keygate without keys and nginx pass it on.
#      nginx also sets X-Forwarded-For and X-Forwarded-Host, which keygate always adds.
#   4. Prints, per request and target, the medians over rounds of req/s, p50, p99 and the
#      target's own CPU time per request (from /proc/PID/stat: the steadiest figure when the
#      cores are shared) and its user-space part (the proxy's own code: the figure to compare
#      builds by, as the kernel's share moves with whatever else runs), the requests answered with a status >= 400 and socket errors (both
#      must be 0), and the ratios keygate/nginx: req/s (higher is better), p99 (lower is
#      better) and nginx's CPU per request over keygate's (higher is better).
#   Everything it started is stopped by PID on exit (trap), and the temp dir removed.
#
# Other people's builds share the cores. Before each wrk run the script waits (up to
# QUIET_WAIT seconds) until no compiler or linker runs and the machine is idle; during the run
# it measures the CPU time spent outside wrk and the servers ("other"), and repeats a run
# disturbed by more than FOREIGN_MAX percent of a core.
#
# Usage (from anywhere; run as root so apt-get can install):
#   loadtest/bench/proxy-compare.sh
#   ROUNDS=5 WORKERS="1 2" VARIANTS=plain loadtest/bench/proxy-compare.sh
#
# Settings (environment):
#   ROUNDS=3          rounds of the whole interleaved sequence
#   DURATION=10       seconds per wrk run
#   CONNECTIONS=64    wrk -c
#   THREADS=1         wrk -t
#   WORKERS=1         keygate shards and nginx worker_processes; a list ("1 2") compares them
#   VARIANTS="plain key"   keygate without client keys, and with one
#   REQUESTS="chat models" which requests to run (also: chat8k)
#   BUILD=1           cargo build --release --workspace first
#   KEEP=DIR          keep the configs, logs and raw wrk outputs in DIR
#   COMPARE="NAME=PATH ..."  other keygate binaries (an earlier build, say) run as further
#                     targets, `keygate@NAME` and `keygate@NAME+key`, interleaved with the
#                     rest; the summary adds their ratios to this build's keygate (A/B runs)
#   QUIET_WAIT=900    longest wait for a quiet machine before a run, in seconds
#   FOREIGN_MAX=10    CPU other processes may take during a run (% of one core) before the
#                     run is repeated (twice at most; the figure is printed either way)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-1}
VARIANTS=${VARIANTS:-"plain key"}
REQUESTS=${REQUESTS:-"chat models"}
BUILD=${BUILD:-1}
KEEP=${KEEP:-}
QUIET_WAIT=${QUIET_WAIT:-900}
FOREIGN_MAX=${FOREIGN_MAX:-10}
COMPARE=${COMPARE:-}

repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$repo/target/release
client_key=kg-bench-0001

# --- tools -------------------------------------------------------------------------------

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

if [ "$BUILD" = 1 ]; then
    (cd "$repo" && cargo build --release --workspace --quiet)
fi

# --- processes and clean-up --------------------------------------------------------------

tmp=$(mktemp -d /tmp/proxy-compare.XXXXXX)
pids=()

# shellcheck source=lib.sh
. "$repo/loadtest/bench/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM


# --- the servers -------------------------------------------------------------------------

targets=()       # names, in run order
declare -A url   # name -> base URL
declare -A pid_of  # name -> PID (nginx: the master; its workers are found at run time)

mock_port=$(free_port)
"$bin/loadtest" mock --listen "127.0.0.1:$mock_port" --workers 1 2>"$tmp/mock.log" &
pids+=($!)
pid_of[mock]=$!
wait_ready mock $! "http://127.0.0.1:$mock_port/v1/models" "$client_key"
targets+=(mock)
url[mock]=http://127.0.0.1:$mock_port

suffix() { [ "$(wc -w <<<"$WORKERS")" -gt 1 ] && echo " w$1" || true; }

start_keygate() {
    local name=$1 workers=$2 with_key=$3 binary=${4:-$bin/keygate} port dir
    port=$(free_port)
    dir=$tmp/${name// /_}
    mkdir -p "$dir/state"
    cat >"$dir/keygate.toml" <<EOF
[gateway]
listen = "127.0.0.1:$port"
workers = $workers
tuning = "$repo/tuning/local.toml"
state_dir = "state"
drain_timeout = "1s"

[[upstream]]
name = "mock"
provider = "openai"
endpoints = ["http://127.0.0.1:$mock_port"]
pool_max_idle = 64

[[route]]
path_prefix = "/"
upstream = "mock"
EOF
    if [ "$with_key" = 1 ]; then
        cat >>"$dir/keygate.toml" <<EOF

[[client_key]]
id = "bench"
secret = "$client_key"
rate = "1000000/s"
EOF
    fi
    KEYGATE_LOG=warn "$binary" run --config "$dir/keygate.toml" 2>"$tmp/$name.log" &
    pids+=($!)
    pid_of[$name]=$!
    wait_ready "$name" $! "http://127.0.0.1:$port/v1/models" "$client_key"
    targets+=("$name")
    url[$name]=http://127.0.0.1:$port
}

start_nginx() {
    local name=$1 workers=$2 port dir
    port=$(free_port)
    dir=$tmp/${name// /_}
    mkdir -p "$dir/logs" "$dir/temp"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $dir/temp/body;
    proxy_temp_path $dir/temp/proxy;
    fastcgi_temp_path $dir/temp/fastcgi;
    uwsgi_temp_path $dir/temp/uwsgi;
    scgi_temp_path $dir/temp/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 60s;

    upstream mock {
        server 127.0.0.1:$mock_port;
        keepalive 64;
        keepalive_requests 1000000000;
    }
    server {
        listen 127.0.0.1:$port reuseport;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
    }
}
EOF
    "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        -g 'daemon off;' 2>"$tmp/$name.log" &
    pids+=($!)
    pid_of[$name]=$!
    wait_ready "$name" $! "http://127.0.0.1:$port/v1/models" "$client_key"
    targets+=("$name")
    url[$name]=http://127.0.0.1:$port
}

for w in $WORKERS; do
    for variant in $VARIANTS; do
        case $variant in
            plain) start_keygate "keygate$(suffix "$w")" "$w" 0 ;;
            key) start_keygate "keygate+key$(suffix "$w")" "$w" 1 ;;
            *) echo "unknown variant $variant (plain, key)" >&2; exit 2 ;;
        esac
        for other in $COMPARE; do
            other_name=${other%%=*}
            other_bin=${other#*=}
            [ -x "$other_bin" ] || { echo "COMPARE: $other_bin is not executable" >&2; exit 2; }
            case $variant in
                plain) start_keygate "keygate@$other_name$(suffix "$w")" "$w" 0 "$other_bin" ;;
                key) start_keygate "keygate@$other_name+key$(suffix "$w")" "$w" 1 "$other_bin" ;;
            esac
        done
    done
    start_nginx "nginx$(suffix "$w")" "$w"
done

# --- requests ----------------------------------------------------------------------------

# wrk's done() prints one machine-readable line; latencies are in microseconds.
report_lua='
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d status_errors=%d socket_errors=%d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(50),
        latency:percentile(99), summary.requests, e.status,
        e.connect + e.read + e.write + e.timeout))
end'

cat >"$tmp/chat.lua" <<EOF
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $client_key"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
$report_lua
EOF
cat >"$tmp/chat8k.lua" <<EOF
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $client_key"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' ..
    string.rep("word ", 1600) .. '"}],"max_tokens":16}'
$report_lua
EOF
cat >"$tmp/models.lua" <<EOF
wrk.method = "GET"
wrk.path = "/v1/models"
wrk.headers["Authorization"] = "Bearer $client_key"
$report_lua
EOF
for request in $REQUESTS; do
    [ -f "$tmp/$request.lua" ] || { echo "unknown request $request (chat, chat8k, models)" >&2; exit 2; }
done




# CPU time (clock ticks) of the given server processes and their children (nginx workers).
# USER_ONLY=1 counts user time alone.
server_ticks() {
    local total=0 pid stat
    for pid in "$@" $(for p in "$@"; do pgrep -P "$p" || true; done); do
        [ -r "/proc/$pid/stat" ] || continue
        read -ra stat < <(sed 's/.*) //' "/proc/$pid/stat")
        total=$((total + stat[11] + (${USER_ONLY:-0} ? 0 : stat[12])))
    done
    echo "$total"
}

# User and system ticks of the whole machine.
machine_ticks() {
    local cpu
    read -ra cpu < /proc/stat
    echo $((cpu[1] + cpu[2] + cpu[3]))
}

# Ticks of this shell's finished children, from the `times` output written to file $1.
child_ticks() {
    awk -v hz="$(getconf CLK_TCK)" 'NR == 2 {
        s = 0
        for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] }
        printf "%d\n", s * hz }' "$1"
}

results=$tmp/results.tsv
: >"$results"

# One wrk run. Whatever CPU the machine spent beyond wrk and the servers (someone else's
# work) is measured; a run where it exceeds FOREIGN_MAX percent of one core is done again,
# at most twice, after waiting for quiet.
run_wrk() {
    local round=$1 request=$2 target=$3 duration=$4 out line foreign attempt
    out=$tmp/wrk-r$round-$request-${target// /_}.txt
    for attempt in 1 2 3; do
        local m0 s0 t0 c0 m1 s1 t1 c1 u0 u1
        m0=$(machine_ticks); s0=$(server_ticks "${pids[@]}"); t0=$(server_ticks "${pid_of[$target]}")
        u0=$(USER_ONLY=1 server_ticks "${pid_of[$target]}")
        times >"$tmp/times"; c0=$(child_ticks "$tmp/times")
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${duration}s" --latency -s "$tmp/$request.lua" \
            "${url[$target]}" >"$out" 2>&1
        m1=$(machine_ticks); s1=$(server_ticks "${pids[@]}"); t1=$(server_ticks "${pid_of[$target]}")
        u1=$(USER_ONLY=1 server_ticks "${pid_of[$target]}")
        times >"$tmp/times"; c1=$(child_ticks "$tmp/times")
        foreign=$(((m1 - m0 - (s1 - s0) - (c1 - c0)) * 100 / (duration * $(getconf CLK_TCK))))
        [ "$foreign" -lt 0 ] && foreign=0
        line=$(grep '^RESULT' "$out" || true)
        if [ -z "$line" ]; then
            echo "wrk gave no result for $target ($request):" >&2
            cat "$out" >&2
            exit 1
        fi
        [ "$round" = 0 ] && return
        [ "$foreign" -le "$FOREIGN_MAX" ] && break
        if [ "$attempt" -lt 3 ]; then
            echo "  $request $target: other processes took ${foreign}% of a core; again" >&2
            wait_quiet
        fi
    done
    # shellcheck disable=SC2086
    local $(sed 's/^RESULT //' <<<"$line")
    # The target's own CPU time per request, in microseconds, and its user-space part alone:
    # the proxy's own code, without the kernel's socket work (which, on loopback, also
    # carries the peers' receive path and moves most when other processes run).
    local cpu_us usr_us
    cpu_us=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN { printf "%.2f", (n > 0 ? t / hz / n * 1e6 : 0) }')
    usr_us=$(awk -v t=$((u1 - u0)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN { printf "%.3f", (n > 0 ? t / hz / n * 1e6 : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$request" "$target" \
        "$rps" "$p50_us" "$p99_us" "$status_errors" "$socket_errors" "$foreign" "$cpu_us" \
        "$usr_us" >>"$results"
    printf '  %-7s %-16s %10s req/s  p50 %6s us  p99 %6s us  cpu %6s us/req  usr %6s  other %3s%%\n' \
        "$request" "$target" "$rps" "$p50_us" "$p99_us" "$cpu_us" "$usr_us" "$foreign" >&2
}

echo "targets: ${targets[*]}; requests: $REQUESTS; $ROUNDS rounds of ${DURATION}s runs" >&2
echo "warm-up (2 s per target, not counted)" >&2
for request in $REQUESTS; do
    for target in "${targets[@]}"; do run_wrk 0 "$request" "$target" 2; done
done
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    for request in $REQUESTS; do
        for target in "${targets[@]}"; do
            wait_quiet
            run_wrk "$round" "$request" "$target" "$DURATION"
        done
    done
done

# --- summary -----------------------------------------------------------------------------

# Median of the numbers on stdin.
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
column_of() { # request target column -> values over rounds
    awk -F'\t' -v q="$1" -v t="$2" -v c="$3" '$2 == q && $3 == t { print $c }' "$results"
}
declare -A med
sum_of() { awk '{ s += $1 } END { print s + 0 }'; }

echo
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, medians of $ROUNDS rounds" \
    "(requests >= 400 and socket errors summed over rounds;" \
    "cpu us/req: the target's own CPU time per request; usr: its user-space part;" \
    "other%: the most CPU other processes took during one run, in % of a core)"
for request in $REQUESTS; do
    echo
    printf '%-7s %-16s %12s %10s %10s %12s %8s %8s %8s %7s\n' request target req/s "p50 ms" \
        "p99 ms" "cpu us/req" "usr" ">=400" sockerr "other%"
    for target in "${targets[@]}"; do
        rps=$(column_of "$request" "$target" 4 | median)
        p50=$(column_of "$request" "$target" 5 | median)
        p99=$(column_of "$request" "$target" 6 | median)
        st=$(column_of "$request" "$target" 7 | sum_of)
        so=$(column_of "$request" "$target" 8 | sum_of)
        other=$(column_of "$request" "$target" 9 | sort -n | tail -1)
        cpu=$(column_of "$request" "$target" 10 | median)
        usr=$(column_of "$request" "$target" 11 | median)
        med[$request/$target/cpu]=$cpu
        med[$request/$target/usr]=$usr
        med[$request/$target/rps]=$rps
        med[$request/$target/p99]=$p99
        printf '%-7s %-16s %12.0f %10.3f %10.3f %12.2f %8.3f %8s %8s %7s\n' "$request" \
            "$target" "$rps" "$(awk -v v="$p50" 'BEGIN { print v / 1000 }')" \
            "$(awk -v v="$p99" 'BEGIN { print v / 1000 }')" "$cpu" "$usr" "$st" "$so" "$other"
    done
done

echo
echo "ratios against nginx with the same worker count (target: req/s >= 1.20, p99 <= 1.00)"
printf '%-7s %-16s %12s %10s %16s %s\n' request target "req/s x" "p99 x" "nginx cpu/req x" \
    verdict
for request in $REQUESTS; do
    for target in "${targets[@]}"; do
        case $target in keygate*) ;; *) continue ;; esac
        case $target in *" w"*) nginx="nginx ${target##* }" ;; *) nginx=nginx ;; esac
        awk -v r="${med[$request/$target/rps]}" -v n="${med[$request/$nginx/rps]}" \
            -v p="${med[$request/$target/p99]}" -v np="${med[$request/$nginx/p99]}" \
            -v c="${med[$request/$target/cpu]}" -v nc="${med[$request/$nginx/cpu]}" \
            -v q="$request" -v t="$target" 'BEGIN {
                rr = r / n; pr = p / np; cr = (c > 0 ? nc / c : 0)
                verdict = (rr >= 1.2 && pr <= 1.0) ? "meets target" : "below target"
                printf "%-7s %-16s %12.3f %10.3f %16.3f %s\n", q, t, rr, pr, cr, verdict }'
    done
done
if [ -n "$COMPARE" ]; then
    echo
    echo "this build against the COMPARE builds (keygate over keygate@NAME, same variant)"
    printf '%-7s %-20s %12s %10s %16s %16s\n' request against "req/s x" "p99 x" \
        "their cpu/req x" "their usr/req x"
    for request in $REQUESTS; do
        for target in "${targets[@]}"; do
            case $target in keygate@*) ;; *) continue ;; esac
            ours=$(sed -E 's/@[^+ ]+//' <<<"$target")
            awk -v r="${med[$request/$ours/rps]}" -v o="${med[$request/$target/rps]}" \
                -v p="${med[$request/$ours/p99]}" -v op="${med[$request/$target/p99]}" \
                -v c="${med[$request/$ours/cpu]}" -v oc="${med[$request/$target/cpu]}" \
                -v u="${med[$request/$ours/usr]}" -v ou="${med[$request/$target/usr]}" \
                -v q="$request" -v t="$target" 'BEGIN {
                    printf "%-7s %-20s %12.3f %10.3f %16.3f %16.3f\n", q, t, r / o, p / op,
                        (c > 0 ? oc / c : 0), (u > 0 ? ou / u : 0) }'
        done
    done
fi
echo
echo "per-round figures (round request target req/s p50_us p99_us >=400 sockerr other% cpu_us" \
    "usr_us):"
sort -t$'\t' -k2,2 -k3,3 -k1,1n "$results" | sed 's/^/  /'
