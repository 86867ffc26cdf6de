#!/usr/bin/env bash
# Load benchmark: what does putting a route behind scopekey cost?
#
#   bash benches/load/run.sh
#
# Builds `examples/bench_server.rs` in release mode, starts it on a free
# loopback port, and drives the same trivial handler served twice with wrk:
# `/plain` (no scopekey code on its path) and `/guarded` (the ApiKeyAuth
# middleware and `#[requires_scope("bench:read")]`, presenting a valid key).
# The cache is warmed first, so this measures the steady state of a server
# whose clients reuse their keys.
#
# Two phases, in the same run, each in ROUNDS rounds that interleave the
# routes (medians are reported, so one noisy spell of a shared machine does
# not decide the result):
#   throughput  CONNECTIONS connections (default 8): requests/s and the
#               guarded/plain ratio (the median of each round's ratio). A
#               third route sends /plain the same Authorization header, to
#               separate the cost of the bigger request from the cost of
#               verifying it.
#   latency     one connection: no queueing, so p50/p99 differences are the
#               time each request spends in authentication.
# Then it stops the server and prints a summary with the targets (ratio
# >= 0.95, p99 added latency < 50 us). It prints figures, it does not fail
# on them (STRICT=1 makes a missed target exit 1).
#
# Settings (environment): DURATION (4s per run, at most 15s), ROUNDS (5),
# WARMUP (2s),
# CONNECTIONS (8), THREADS (wrk threads, 1), BENCH_WORKERS (server worker
# threads, 1), BENCH_DATABASE_URL (the server's store, sqlite::memory:;
# DATABASE_URL is not read, so a demo's store exported in the shell gets no
# benchmark key), STRICT,
# PIN (1: with one server worker and at least two CPUs, the server runs on
# the last CPU this script may use and wrk on the others, with `taskset`;
# 0: the scheduler decides).
# Defaults suit a 2-core machine, where wrk and the server share the cores:
# one core each.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION="${DURATION:-4s}"
ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-2s}"
CONNECTIONS="${CONNECTIONS:-8}"
THREADS="${THREADS:-1}"
export BENCH_WORKERS="${BENCH_WORKERS:-1}"
STRICT="${STRICT:-0}"
PIN="${PIN:-1}"

for setting in ROUNDS CONNECTIONS THREADS BENCH_WORKERS; do
    case "${!setting}" in
        '' | *[!0-9]* | 0*) echo "$setting must be a whole number of at least 1 (got ${!setting})" >&2; exit 2 ;;
    esac
done

case "$PIN" in
    0 | 1) ;;
    *) echo "PIN must be 0 or 1 (got $PIN)" >&2; exit 2 ;;
esac

# Pinning keeps the server and the load generator off each other's CPU
# (and keeps the scheduler from moving them mid-run, which on a virtual
# machine with idle CPUs halting can change the figures by a fifth). It
# needs `taskset`, at least two CPUs this script may use, and one server
# worker; the CPUs are the ones this process is allowed (a container's
# cpuset need not start at 0).
allowed=()
if [ "$PIN" = 1 ] && [ "$BENCH_WORKERS" = 1 ] && command -v taskset >/dev/null 2>&1; then
    list="$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status 2>/dev/null || true)"
    IFS=',' read -r -a ranges <<<"$list"
    for range in ${ranges[@]+"${ranges[@]}"}; do
        case "$range" in
            *-*) for cpu in $(seq "${range%-*}" "${range#*-}"); do allowed+=("$cpu"); done ;;
            [0-9]*) allowed+=("$range") ;;
        esac
    done
fi
server_cpu=() load_cpu=()
if [ ${#allowed[@]} -ge 2 ]; then
    last=$((${#allowed[@]} - 1))
    server_cpu=(taskset -c "${allowed[$last]}")
    load_cpu=(taskset -c "$(IFS=','; echo "${allowed[*]:0:$last}")")
fi

case "$ROUNDS" in
    [1-9] | 1[0-9] | 20) ;;
    *) echo "ROUNDS must be 1 to 20 (got $ROUNDS)" >&2; exit 2 ;;
esac
case "$DURATION" in
    [1-9]s | 1[0-5]s) ;;
    *) echo "DURATION must be 1s to 15s (got $DURATION)" >&2; exit 2 ;;
esac

step() { printf '\n==> %s\n' "$*"; }

step "wrk"
if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk is missing; installing it from the Debian packages"
    if ! apt-get install -y wrk; then
        apt-get update
        apt-get install -y wrk
    fi
fi
wrk --version 2>&1 | head -n 1 || true

step "build (release)"
cargo build --release --example bench_server
bin="${CARGO_TARGET_DIR:-target}/release/examples/bench_server"

work="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "start the server"
# The server stops by itself after BENCH_MAX_SECONDS, should this script be
# killed before its trap runs.
# Its own loopback port and store, whatever BIND or DATABASE_URL the shell
# exports for the demo.
BIND=127.0.0.1:0 DATABASE_URL="${BENCH_DATABASE_URL:-sqlite::memory:}" \
    BENCH_MAX_SECONDS=$((ROUNDS * 5 * ${DURATION%s} + 120)) \
    ${server_cpu[@]+"${server_cpu[@]}"} "$bin" >"$work/server.out" 2>"$work/server.err" &
server=$!
address=""
for _ in $(seq 1 100); do
    address="$(sed -n 's/^address: //p' "$work/server.out")"
    [ -n "$address" ] && grep -q '^key: ' "$work/server.out" && break
    if ! kill -0 "$server" 2>/dev/null; then
        cat "$work/server.err" >&2
        echo "the server exited before printing its address" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$address" ]; then
    echo "the server printed no address within 10 s" >&2
    exit 1
fi
key="$(sed -n 's/^key: //p' "$work/server.out")"
case "$address" in
    127.0.0.1:*) ;;
    *) echo "refusing to load a non-loopback address: $address" >&2; exit 1 ;;
esac
port="${address##*:}"
echo "listening on $address (BENCH_WORKERS=$BENCH_WORKERS${server_cpu[*]:+; server: ${server_cpu[*]}, wrk: ${load_cpu[*]}})"

# The status code of one GET, over bash's /dev/tcp (no curl needed).
status() {
    local path="$1" header="${2:-}" line
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n' \
        "$path" "$address" "${header:+$header$'\r\n'}" >&3
    IFS= read -r line <&3 || line=""
    exec 3<&-
    line="${line%$'\r'}"
    echo "${line#* }" | cut -d' ' -f1
}
auth="Authorization: Bearer $key"
check() {
    local want="$1" got
    got="$(status "$2" "${3:-}")"
    if [ "$got" != "$want" ]; then
        echo "GET $2 ${3:+(with a key) }answered $got, expected $want" >&2
        exit 1
    fi
}
check 200 /plain
check 401 /guarded
check 200 /guarded "$auth"
echo "sanity: /plain 200, /guarded 401 without a key, 200 with it"

step "warm up ($WARMUP each)"
${load_cpu[@]+"${load_cpu[@]}"} wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "http://$address/plain" >/dev/null
${load_cpu[@]+"${load_cpu[@]}"} wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" -H "$auth" "http://$address/guarded" >/dev/null

# Runs wrk and leaves "requests/s p50_us p99_us" in $work/<name>.res; exits
# on errors or non-2xx answers. (Called in this shell, not in a command
# substitution, so that its `exit` ends the script.)
to_us='function us(v) {
    if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
    if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
    if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000000 }
    return v + 0
}'
measure() {
    local name="$1" conns="$2" path="$3" header="${4:-}" out="$work/$1.txt"
    # wrk refuses more threads than connections.
    local threads=$((THREADS < conns ? THREADS : conns))
    local args=(-t"$threads" -c"$conns" -d"$DURATION" --latency)
    [ -n "$header" ] && args+=(-H "$header")
    ${load_cpu[@]+"${load_cpu[@]}"} wrk "${args[@]}" "http://$address$path" >"$out"
    if grep -qE 'Non-2xx|Socket errors' "$out"; then
        cat "$out" >&2
        echo "$name: errors or non-2xx answers; the figures are not valid" >&2
        exit 1
    fi
    awk "$to_us"'
        /^Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = us($2) }
        $1 == "99%" { p99 = us($2) }
        END { printf "%.0f %.1f %.1f\n", rps, p50, p99 }' "$out" >"$work/$name.res"
}

# Rounds interleave the routes (the order rotating each round), so that a
# slow spell of the shared machine hits every route alike; each route's
# figure is its median over the rounds, and the ratio is the median of the
# rounds' own guarded/plain ratios (paired, measured seconds apart).
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { awk -v f="$2" '{ print $f }' "$work/$1.all"; }

step "throughput: $CONNECTIONS connections, $THREADS wrk thread(s), $ROUNDS rounds of $DURATION per route"
routes=(plain guarded control)
for round in $(seq 1 "$ROUNDS"); do
    line="round $round:"
    for i in 0 1 2; do
        name="${routes[$(((i + round) % 3))]}"
        case "$name" in
            plain) measure "$name" "$CONNECTIONS" /plain ;;
            guarded) measure "$name" "$CONNECTIONS" /guarded "$auth" ;;
            control) measure "$name" "$CONNECTIONS" /plain "$auth" ;;
        esac
        cat "$work/$name.res" >>"$work/$name.all"
        line="$line $name $(cut -d' ' -f1 "$work/$name.res")"
    done
    echo "$line req/s"
done
paste -d' ' "$work/guarded.all" "$work/plain.all" | awk '{ printf "%.4f\n", $1 / $4 }' >"$work/ratio.all"
paste -d' ' "$work/guarded.all" "$work/control.all" | awk '{ printf "%.4f\n", $1 / $4 }' >"$work/control-ratio.all"
tp_plain_rps="$(field plain 1 | median)"; tp_plain_p50="$(field plain 2 | median)"; tp_plain_p99="$(field plain 3 | median)"
tp_guard_rps="$(field guarded 1 | median)"; tp_guard_p50="$(field guarded 2 | median)"; tp_guard_p99="$(field guarded 3 | median)"
tp_ctrl_rps="$(field control 1 | median)"; tp_ctrl_p50="$(field control 2 | median)"; tp_ctrl_p99="$(field control 3 | median)"
ratio="$(median <"$work/ratio.all")"
ratio_range="$(sort -n "$work/ratio.all" | sed -n '1p;$p' | paste -sd' ' | awk '{ printf "%.3f-%.3f", $1, $2 }')"
control_ratio="$(median <"$work/control-ratio.all")"

step "latency: 1 connection, $ROUNDS rounds of $DURATION per route"
# One request at a time: with pinning, wrk runs on the server's CPU, so a
# request does not wait for an idle core to wake up (tens of microseconds
# on a virtual machine, and the bulk of its p99), only for its own work.
throughput_load_cpu=${load_cpu[@]+"${load_cpu[2]}"}
if [ ${#server_cpu[@]} -gt 0 ]; then
    load_cpu=("${server_cpu[@]}")
fi
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="plain-1 guarded-1"; else order="guarded-1 plain-1"; fi
    for name in $order; do
        case "$name" in
            plain-1) measure "$name" 1 /plain ;;
            guarded-1) measure "$name" 1 /guarded "$auth" ;;
        esac
        cat "$work/$name.res" >>"$work/$name.all"
    done
    echo "round $round: plain p50 $(field plain-1 2 | tail -n 1) us, guarded p50 $(field guarded-1 2 | tail -n 1) us"
done
lt_plain_rps="$(field plain-1 1 | median)"; lt_plain_p50="$(field plain-1 2 | median)"; lt_plain_p99="$(field plain-1 3 | median)"
lt_guard_rps="$(field guarded-1 1 | median)"; lt_guard_p50="$(field guarded-1 2 | median)"; lt_guard_p99="$(field guarded-1 3 | median)"

kill -TERM "$server"
wait "$server" 2>/dev/null || true
server=""

step "summary"
cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
if [ ${#server_cpu[@]} -gt 0 ]; then
    placement="server pinned to CPU ${server_cpu[2]}, wrk to CPU $throughput_load_cpu (latency runs: wrk on the server's)"
else
    placement="not pinned"
fi
echo "machine: $(nproc) cores ($cpu), $(date -u +%Y-%m-%d); $placement"
# A URL with user information is shown as scheme and host only: its
# password stays out of reports.
store_url="${BENCH_DATABASE_URL:-sqlite::memory:}"
store_shown="$(printf '%s' "$store_url" | sed -E 's#^([a-z]+://)[^@/]*@([^/?]*).*#\1\2#')"
echo "server: BENCH_WORKERS=$BENCH_WORKERS, store $store_shown, cache warm"
echo
echo "medians over $ROUNDS rounds of $DURATION per route"
printf '%-28s %12s %10s %10s\n' "run" "requests/s" "p50 (us)" "p99 (us)"
printf '%-28s %12s %10s %10s\n' "/plain, $CONNECTIONS conns" "$tp_plain_rps" "$tp_plain_p50" "$tp_plain_p99"
printf '%-28s %12s %10s %10s\n' "/guarded, $CONNECTIONS conns" "$tp_guard_rps" "$tp_guard_p50" "$tp_guard_p99"
printf '%-28s %12s %10s %10s\n' "/plain + header, $CONNECTIONS conns" "$tp_ctrl_rps" "$tp_ctrl_p50" "$tp_ctrl_p99"
printf '%-28s %12s %10s %10s\n' "/plain, 1 conn" "$lt_plain_rps" "$lt_plain_p50" "$lt_plain_p99"
printf '%-28s %12s %10s %10s\n' "/guarded, 1 conn" "$lt_guard_rps" "$lt_guard_p50" "$lt_guard_p99"
echo

verdict="$(awk -v gp="$tp_guard_rps" -v pp="$tp_plain_rps" -v ratio="$ratio" -v range="$ratio_range" \
    -v control="$control_ratio" \
    -v g50="$lt_guard_p50" -v p50="$lt_plain_p50" -v g99="$lt_guard_p99" -v p99="$lt_plain_p99" '
    BEGIN {
        add50 = g50 - p50; add99 = g99 - p99
        per_req = (1e6 / gp) - (1e6 / pp)
        printf "ratio guarded/plain:             %.3f, median of the rounds (range %s; target >= 0.95: %s)\n", ratio, range, ratio >= 0.95 ? "met" : "NOT met"
        printf "ratio guarded/plain+same header: %.3f\n", control
        printf "server time added per request:   %.2f us (from the throughputs)\n", per_req
        printf "added latency, 1 conn:           p50 %+.1f us, p99 %+.1f us (target p99 < 50 us: %s)\n", add50, add99, add99 < 50 ? "met" : "NOT met"
        if (ratio < 0.95 || add99 >= 50) print "MISSED"
    }')"
echo "${verdict%MISSED}"
if [ "$STRICT" = 1 ] && [[ "$verdict" == *MISSED ]]; then
    exit 1
fi
