#!/bin/sh
# scripts/bench-web.sh BASELINE_WEB [WEB]
# Requests/s and CPU per request of the onboarding server: two
# chatmail-web binaries under wrk (Debian's wrk package) at the same time,
# one wrk each, so that whatever else the machine does slows both alike;
# three rounds of 10 s (BENCH_ROUNDS) after a warm-up, 8 connections per
# server (BENCH_CONNECTIONS), GET /info.html (BENCH_PATH). Prints per round
# both servers' requests/s and CPU time per request (user + system, from
# /proc) and the ratios WEB / BASELINE_WEB. WEB defaults to
# target/release/chatmail-web. Every request is a new TLS connection (the
# server answers one request per connection), so this measures handshake
# plus request. Ends only the servers it started.
set -eu
baseline=${1:?usage: scripts/bench-web.sh BASELINE_WEB [WEB]}
candidate=${2:-target/release/chatmail-web}
connections=${BENCH_CONNECTIONS:-8}
path=${BENCH_PATH:-/info.html}
dir=$(mktemp -d)
pids=
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -days 2 -nodes \
    -subj /CN=chat.example -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
printf '[params]\nmail_domain = chat.example\nnew_accounts_per_ip_per_hour = 1000000\n' >"$dir/chatmail.ini"

# Starts $1 (logging to $2); prints its pid and port.
start() {
    "$1" --config "$dir/chatmail.ini" --cert "$dir/cert.pem" --key "$dir/key.pem" \
        --listen 127.0.0.1:0 >/dev/null 2>"$2" &
    pid=$!
    for _ in $(seq 100); do
        port=$(sed -n 's/^chatmail-web: listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$2")
        if [ -n "$port" ]; then
            echo "$pid $port"
            return
        fi
        sleep 0.1
    done
    echo "$1 did not start:" >&2
    cat "$2" >&2
    exit 1
}

cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# Requests/s and CPU µs per request from a wrk output and the tick counts.
rate() {
    requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$1")
    per_s=$(sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' "$1")
    [ -n "$requests" ] && [ -n "$per_s" ] || { echo "wrk failed:" >&2; cat "$1" >&2; exit 1; }
    echo "$per_s $(echo "($3 - $2) * 1000000 / $(getconf CLK_TCK) / $requests" | bc)"
}

set -- $(start "$baseline" "$dir/baseline.log")
old_pid=$1 old_port=$2
pids="$old_pid"
set -- $(start "$candidate" "$dir/candidate.log")
new_pid=$1 new_port=$2
pids="$pids $new_pid"

# One round of $1 seconds: both servers loaded at once.
round() {
    old_before=$(cpu_ticks "$old_pid")
    new_before=$(cpu_ticks "$new_pid")
    wrk -t 1 -c "$connections" -d "$1s" "https://127.0.0.1:$old_port$path" >"$dir/old.wrk" &
    wrk_pid=$!
    wrk -t 1 -c "$connections" -d "$1s" "https://127.0.0.1:$new_port$path" >"$dir/new.wrk"
    wait "$wrk_pid"
    old=$(rate "$dir/old.wrk" "$old_before" "$(cpu_ticks "$old_pid")")
    new=$(rate "$dir/new.wrk" "$new_before" "$(cpu_ticks "$new_pid")")
    echo "$old $new"
}

round 3 >/dev/null
echo "round | baseline req/s | candidate req/s | ratio | baseline CPU µs/req | candidate CPU µs/req | CPU ratio"
for n in $(seq "${BENCH_ROUNDS:-3}"); do
    set -- $(round 10)
    echo "$n | $1 | $3 | $(echo "scale=3; $3 / $1" | bc) | $2 | $4 | $(echo "scale=3; $4 / $2" | bc)"
done
for log in "$dir/baseline.log" "$dir/candidate.log"; do
    if grep -q 'status=[45]' "$log"; then
        echo "error answers in $log:" >&2
        grep 'status=[45]' "$log" | head -3 >&2
        exit 1
    fi
done
