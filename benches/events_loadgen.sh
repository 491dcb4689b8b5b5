#!/usr/bin/env bash
# Journaling cost, flat out: `sortd loadgen` against `sortd run` (the example plan) with
# [events] off and on, alternating, and the daemon's CPU per parcel by thread (from
# /proc/PID/task/*/schedstat over the whole run). Not run in CI.
#
#   benches/events_loadgen.sh                  # 3 pairs, 64 frames per write, 6 s each
#   EVENTS_PAIRS=5 EVENTS_FRAMES_PER_WRITE=16 benches/events_loadgen.sh
#
# Environment: EVENTS_PAIRS (3), EVENTS_SECONDS (6), EVENTS_CONNECTIONS (4),
# EVENTS_FRAMES_PER_WRITE (64), EVENTS_OUT (folder for configs, journals and logs;
# default a temp folder), EVENTS_SCANNER_PORT (7320), EVENTS_PLC_PORT (7321), SORTD (the
# binary; default: build and use target/release/sortd).
#
# Output: one line per run (parcels/s, CPU ns per parcel in total and per thread, journal
# bytes per parcel), then the on/off ratio of each pair. Run it on a quiet machine: the
# ratio is the throughput goal (journaling costs at most 10%: on/off >= 0.90).
set -euo pipefail
cd "$(dirname "$0")/.."

pairs=${EVENTS_PAIRS:-3}
seconds=${EVENTS_SECONDS:-6}
connections=${EVENTS_CONNECTIONS:-4}
per_write=${EVENTS_FRAMES_PER_WRITE:-64}
out=${EVENTS_OUT:-$(mktemp -d -t sortd-events.XXXXXX)}
scanner_port=${EVENTS_SCANNER_PORT:-7320}
plc_port=${EVENTS_PLC_PORT:-7321}
if [ -z "${SORTD:-}" ]; then
    cargo build --release --quiet
    SORTD="$PWD/target/release/sortd"
fi

config() { # mode dir
    mkdir -p "$2"
    cp config/example-plan.csv "$2/"
    cat > "$2/sortd.toml" <<EOT
[plan]
path = "example-plan.csv"
[[scanners.listeners]]
address = "127.0.0.1:$scanner_port"
protocol = "binary"
[plc]
mode = "connect"
address = "127.0.0.1:$plc_port"
[metrics]
enabled = false
[log]
filter = "warn"
EOT
    if [ "$1" = on ]; then
        rm -rf "$2/events"
        printf '[events]\nenabled = true\ndir = "events"\nhub_id = "hub"\nsorter_id = "s1"\n' >> "$2/sortd.toml"
    fi
}

run() { # mode -> prints one line, sets $rate
    local dir="$out/$1"
    config "$1" "$dir"
    "$SORTD" run --config "$dir/sortd.toml" > "$dir/daemon.log" 2>&1 &
    local pid=$!
    sleep 0.3
    "$SORTD" loadgen --target "127.0.0.1:$scanner_port" --plc-listen "127.0.0.1:$plc_port" \
        --plan "$dir/example-plan.csv" --connections "$connections" \
        --frames-per-write "$per_write" --duration-s "$seconds" > "$dir/loadgen.out" 2>&1 || true
    for task in /proc/$pid/task/*; do
        echo "$(tr ' ' _ < "$task/comm") $(cut -d' ' -f1 "$task/schedstat")"
    done > "$dir/cpu"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    local parcels bytes=0
    parcels=$(grep -o 'sent [0-9]* parcels' "$dir/loadgen.out" | grep -o '[0-9]*')
    rate=$(grep -o '[0-9]* parcels/s' "$dir/loadgen.out" | head -1 | grep -o '[0-9]*')
    if [ "$1" = on ]; then bytes=$(du -sb "$dir/events" | cut -f1); fi
    awk -v n="$parcels" -v mode="$1" -v rate="$rate" -v bytes="$bytes" '
        { ns[$1] += $2; total += $2 }
        END {
            printf "events %-3s %9d parcels/s  CPU ns/parcel %4.0f:", mode, rate, total / n
            for (thread in ns) if (ns[thread] / n >= 5) printf " %s %.0f", thread, ns[thread] / n
            if (bytes > 0) printf "  journal %.0f B/parcel", bytes / n
            printf "\n"
        }' "$dir/cpu"
    grep -E "missing [1-9]|errors [1-9]" "$dir/loadgen.out" || true
}

ratios=()
for _ in $(seq 1 "$pairs"); do
    run off
    off=$rate
    run on
    ratios+=("$(awk -v on="$rate" -v off="$off" 'BEGIN { printf "%.2f", on / off }')")
done
echo "on/off per pair: ${ratios[*]}  (logs in $out)"
