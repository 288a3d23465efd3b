#!/bin/sh
# scripts/bench-web.sh BASELINE_WEB [WEB]
# Requests/s of the onboarding server: wrk (Debian's wrk package) against
# two chatmail-web binaries in the same run, alternately, three rounds of
# 10 s after a warm-up (BENCH_ROUNDS), 16 connections (BENCH_CONNECTIONS),
# GET /info.html (BENCH_PATH); prints per round requests/s and the
# server's CPU time per request of both, and the ratios WEB / BASELINE_WEB.
# WEB defaults to target/release/chatmail-web. Every request is a new TLS
# connection (the server answers one request per connection), so this
# measures handshake plus request. Ends only the servers it started.
set -eu
baseline=${1:?usage: scripts/bench-web.sh BASELINE_WEB [WEB]}
candidate=${2:-target/release/chatmail-web}
connections=${BENCH_CONNECTIONS:-16}
path=${BENCH_PATH:-/info.html}
dir=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -days 2 -nodes \
    -subj /CN=chat.example -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
printf '[params]\nmail_domain = chat.example\nnew_accounts_per_ip_per_hour = 1000000\n' >"$dir/chatmail.ini"

# Requests/s of one binary for $1 seconds.
measure() {
    binary=$1 seconds=$2
    # A fresh log file: the port is read from it.
    log="$dir/log.$(date +%s%N)"
    "$binary" --config "$dir/chatmail.ini" --cert "$dir/cert.pem" --key "$dir/key.pem" \
        --listen 127.0.0.1:0 >/dev/null 2>"$log" &
    pid=$!
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's/^chatmail-web: listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log" 2>/dev/null)
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "$binary did not start:" >&2; cat "$log" >&2; exit 1; }
    wrk -t 1 -c "$connections" -d "${seconds}s" "https://127.0.0.1:$port$path" >"$dir/wrk"
    rate=$(sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' "$dir/wrk")
    requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$dir/wrk")
    [ -n "$rate" ] && [ -n "$requests" ] || { echo "wrk against $binary failed:" >&2; cat "$dir/wrk" >&2; exit 1; }
    kill -0 "$pid" 2>/dev/null || { echo "$binary exited:" >&2; tail -5 "$log" >&2; exit 1; }
    # The server's CPU time (user + system, in clock ticks) per request:
    # steadier than requests/s on a machine that others use too.
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    cpu_us=$(echo "$ticks * 1000000 / $(getconf CLK_TCK) / $requests" | bc)
    errors=$(grep -c 'status=[45]' "$log" || true)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    [ "$errors" = 0 ] || { echo "$binary answered $errors errors" >&2; exit 1; }
    echo "$rate $cpu_us"
}

measure "$baseline" 3 >/dev/null
measure "$candidate" 3 >/dev/null
echo "round | baseline req/s | candidate req/s | ratio | baseline CPU µs/req | candidate CPU µs/req | CPU ratio"
for round in $(seq "${BENCH_ROUNDS:-3}"); do
    set -- $(measure "$baseline" 10)
    old=$1 old_cpu=$2
    set -- $(measure "$candidate" 10)
    new=$1 new_cpu=$2
    echo "$round | $old | $new | $(echo "scale=3; $new / $old" | bc) | $old_cpu | $new_cpu | $(echo "scale=3; $new_cpu / $old_cpu" | bc)"
done
