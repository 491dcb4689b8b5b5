#!/usr/bin/env bash
# Soak test: sortd under steady load for a long time, recording the daemon's resident
# memory (VmRSS from /proc/PID/status) and the latency percentiles every interval.
# Memory must plateau and the tail must not drift. Not run in CI.
#
#   benches/soak.sh                      # 10 minutes at half the measured maximum
#   SOAK_MINUTES=2 SOAK_RATE=200000 benches/soak.sh
#
# Environment: SOAK_MINUTES (10), SOAK_INTERVAL_S (10), SOAK_RATE (parcels/s; default:
# half of a 10 s flat-out run), SOAK_CONNECTIONS (4), SOAK_FRAMES_PER_WRITE (16),
# SOAK_OUT (folder for logs and JSON; default a temp folder).
#
# Each interval is one `sortd loadgen` run of SOAK_INTERVAL_S seconds against the one
# long-running daemon; the load generator plays the PLC, so the PLC link is set up again
# at the start of every interval (a few milliseconds), which the daemon rides through.
# Output: a Markdown table, one row per interval.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${SOAK_MINUTES:-10}
interval=${SOAK_INTERVAL_S:-10}
connections=${SOAK_CONNECTIONS:-4}
per_write=${SOAK_FRAMES_PER_WRITE:-16}
out=${SOAK_OUT:-$(mktemp -d -t sortd-soak.XXXXXX)}
scanner_port=${SOAK_SCANNER_PORT:-7310}
plc_port=${SOAK_PLC_PORT:-7311}
plan="$PWD/config/example-plan.csv"

cargo build --release --quiet
sortd="$PWD/target/release/sortd"
mkdir -p "$out"
cat > "$out/sortd.toml" <<TOML
[plan]
path = "$plan"
[[scanners.listeners]]
address = "127.0.0.1:$scanner_port"
protocol = "binary"
[plc]
address = "127.0.0.1:$plc_port"
reconnect_backoff_min_ms = 5
reconnect_backoff_max_ms = 50
TOML

"$sortd" run --config "$out/sortd.toml" 2> "$out/sortd.log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null || true; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "listening for scanners" "$out/sortd.log" && break
  sleep 0.1
done

load() { # duration rate-args... ; writes JSON to $out/$name.json
  local name=$1 duration=$2; shift 2
  "$sortd" loadgen --target "127.0.0.1:$scanner_port" --plan "$plan" \
    --plc-listen "127.0.0.1:$plc_port" --connections "$connections" \
    --frames-per-write "$per_write" --duration-s "$duration" --settle-s 10 \
    --json "$out/$name.json" "$@" > "$out/$name.txt" 2>&1 || true
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$daemon/status"; }

if [[ -z "${SOAK_RATE:-}" ]]; then
  load max 10
  max=$(jq -r '.throughput_per_s | floor' "$out/max.json")
  rate=$((max / 2))
  echo "maximum throughput: $max parcels/s (10 s flat out); soaking at $rate parcels/s"
else
  rate=$SOAK_RATE
  echo "soaking at $rate parcels/s (SOAK_RATE)"
fi
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
echo
echo "| t (s) | VmRSS (MiB) | sent | missing | achieved (parcels/s) | p50 (us) | p99 (us) | p99.9 (us) | max (us) |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
intervals=$((minutes * 60 / interval))
for i in $(seq 1 "$intervals"); do
  load "soak-$i" "$interval" --rate "$rate" --seed "$i"
  json="$out/soak-$i.json"
  if [[ -s "$json" ]]; then
    jq -r --arg t "$((i * interval))" --arg rss "$(rss_kib)" \
      '"| \($t) | \(($rss | tonumber) / 1024 * 10 | floor / 10) | \(.sent) | \(.missing) | \(.throughput_per_s | floor) | \(.latency_us.p50) | \(.latency_us.p99) | \(.latency_us.p999) | \(.latency_us.max) |"' "$json"
  else
    echo "| $((i * interval)) | $(( $(rss_kib) / 1024 )) | (loadgen failed: see $out/soak-$i.txt) |"
  fi
done
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); logs and JSON in $out"
