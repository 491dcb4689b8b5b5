#!/usr/bin/env bash
# A hub on one box: one nats-server, N sortd daemons on distinct loopback ports, each
# with its own `sortd plc-sim` and `sortd loadgen` (binary scanners, open loop at a fixed
# rate), every daemon journaling and exporting its events to NATS and taking the group's
# pre-advice; a pre-advice feed publishes a batch every second; at the end every daemon
# drains its export, stops, and `sortd events reconcile` checks the event stream.
# Not run in CI (tests/daemon/hub_cluster.rs is its 3-node version there).
#
#   benches/hub.sh                         # N=50, 60 s, 6 parcels/s per node (21,600/h)
#   benches/hub.sh --stress                # 10x the rate
#   benches/hub.sh --nodes 10 --duration 30 --rate 20 --out /tmp/hub
#
# Options: --nodes N (50), --duration S (60), --rate R parcels/s per node (6: a realistic
# hub peak of 20,000 parcels/h per sorter, rounded up), --stress (rate x10),
# --feed-entries E entries per pre-advice batch (100), --base-port P (21000), --out DIR;
# SORTD=path runs another binary (default target/release/sortd, built when missing).
# Ports: nats P, node i: scanners P+10+4i, PLC P+11+4i, metrics P+12+4i.
#
# Reports (stdout, and summary.md in the output folder): per-node parcels/s (min,
# median, max) and the total; CPU (% of one core, from /proc/PID/stat) and peak memory
# (VmHWM, /proc/PID/status) per daemon (min, median, max; per-node rows in nodes.tsv);
# pre-advice publication-to-applied latency (each node's own measurement from the
# broker's receive time, sortd_hub_preadvice_delay_seconds_*); the time from `sortd plan
# publish` starting to the last node's swap (sortd_plan_loaded_timestamp_seconds); and
# the reconciliation.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=50
duration=60
rate=6
feed_entries=100
base_port=21000
out=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --nodes) nodes=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --stress) stress=1; shift ;;
    --feed-entries) feed_entries=$2; shift 2 ;;
    --base-port) base_port=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
if [[ -n "${stress:-}" ]]; then rate=$((rate * 10)); fi
out=${out:-$(mktemp -d -t sortd-hub.XXXXXX)}
mkdir -p "$out"
command -v nats-server >/dev/null || { echo "needs nats-server (apt-get install nats-server)" >&2; exit 1; }

if [[ -z "${SORTD:-}" ]]; then
  [[ -x target/release/sortd ]] || cargo build --release --quiet --bin sortd
fi
sortd=${SORTD:-$PWD/target/release/sortd}
nats_port=$base_port
nats_url="nats://127.0.0.1:$nats_port"
clk_tck=$(getconf CLK_TCK)

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$sortd" plan compile config/example-plan.csv -o "$out/plan.sortplan" > /dev/null
sed 's/^meta,version,1$/meta,version,2/' config/example-plan.csv > "$out/plan-v2.csv"
"$sortd" plan compile "$out/plan-v2.csv" -o "$out/plan-v2.sortplan" > /dev/null
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$out/nats" 2> "$out/nats.log" &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
  sleep 0.1
done

port() { echo $((base_port + 10 + 4 * $1 + $2)); } # node, 0 scanners / 1 PLC / 2 metrics

daemon_pids=()
for i in $(seq 1 "$nodes"); do
  dir="$out/node-$i"
  mkdir -p "$dir"
  "$sortd" plc-sim --listen "127.0.0.1:$(port "$i" 1)" --confirm-delay-ms 200 \
    > "$dir/plc-sim.log" 2>&1 &
  pids+=($!)
  cat > "$dir/sortd.toml" <<TOML
[plan]
path = "$out/plan.sortplan"
[[scanners.listeners]]
address = "127.0.0.1:$(port "$i" 0)"
protocol = "binary"
[plc]
address = "127.0.0.1:$(port "$i" 1)"
[pipeline]
idle = "park"
[metrics]
address = "127.0.0.1:$(port "$i" 2)"
[events]
enabled = true
dir = "$dir/events"
hub_id = "bench"
sorter_id = "s$i"
[export]
enabled = true
urls = ["$nats_url"]
hub = "bench"
sorter = "s$i"
[preadvice]
enabled = true
dir = "$dir/preadvice"
[hub]
enabled = true
urls = ["$nats_url"]
node = "s$i"
group = "bench"
plans = true
dir = "$dir/hub"
TOML
  "$sortd" run --config "$dir/sortd.toml" 2> "$dir/sortd.log" &
  daemon_pids+=($!)
  pids+=($!)
done

metrics() { curl -s "http://127.0.0.1:$(port "$1" 2)/metrics"; }
# Sum of every series of a metric in a scrape on stdin.
sum_of() { awk -v name="$1" '$1 == name || index($1, name "{") == 1 {s += $NF} END {printf "%.6f\n", s + 0}'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for i in $(seq 1 "$nodes"); do
  for _ in $(seq 300); do
    metrics "$i" | grep -q '^sortd_hub_preadvice_state{state="live"} 1' && break
    sleep 0.1
  done
done
echo "$nodes nodes up; load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"

# The pre-advice feed: one batch per second for the whole run.
feed() {
  local batch=0
  while true; do
    batch=$((batch + 1))
    for e in $(seq 1 "$feed_entries"); do
      printf '{"op":"add","barcode":"PA%06d%05d","chutes":[%d]}\n' "$batch" "$e" $((e % 90 + 1))
    done > "$out/feed.jsonl"
    "$sortd" plan preadvice publish --nats "$nats_url" --group bench "$out/feed.jsonl" \
      >> "$out/feed.log" 2>&1 || true
    sleep 1
  done
}
feed &
feed_pid=$!
pids+=($feed_pid)

declare -A ticks_before decided_before
for i in $(seq 1 "$nodes"); do
  ticks_before[$i]=$(ticks "${daemon_pids[$((i - 1))]}")
  decided_before[$i]=$(metrics "$i" | sum_of sortd_parcels_decided_total)
done
started=$(date +%s.%N)
loadgens=()
for i in $(seq 1 "$nodes"); do
  "$sortd" loadgen --no-plc --target "127.0.0.1:$(port "$i" 0)" --plan "$out/plan.sortplan" \
    --connections 1 --rate "$rate" --duration-s "$duration" --settle-s 2 --seed "$i" \
    --json "$out/node-$i/loadgen.json" > "$out/node-$i/loadgen.txt" 2>&1 &
  loadgens+=($!)
done
# Halfway: a new plan for the group, published once.
sleep $((duration / 2))
date +%s.%N > "$out/plan-published-at"
"$sortd" plan publish "$out/plan-v2.sortplan" --nats "$nats_url" --group bench \
  > "$out/plan-publish.log" 2>&1 || echo "plan publish failed: see $out/plan-publish.log"
for pid in "${loadgens[@]}"; do wait "$pid" || true; done
ended=$(date +%s.%N)
kill "$feed_pid" 2>/dev/null || true
elapsed=$(echo "$ended - $started" | bc -l)

# Every node's events into the stream before the daemons stop.
for i in $(seq 1 "$nodes"); do
  for _ in $(seq 600); do
    metrics "$i" | grep -q '^sortd_export_lag_events 0$' && break
    sleep 0.1
  done
done
last_feed=$(grep -o ' seq [0-9]*' "$out/feed.log" | tail -1 | awk '{print $2}')
printf "node\tparcels_per_s\tcpu_pct\tvmhwm_mib\tpadv_last_seq\tpadv_batches\tpadv_mean_ms\tpadv_max_ms\tplan_version\tplan_loaded_s\n" > "$out/nodes.tsv"
for i in $(seq 1 "$nodes"); do
  pid=${daemon_pids[$((i - 1))]}
  scrape=$(metrics "$i")
  echo "$scrape" > "$out/node-$i/metrics.txt"
  decided=$(sum_of sortd_parcels_decided_total <<< "$scrape")
  batches=$(sum_of sortd_hub_preadvice_batches_total <<< "$scrape")
  delay_sum=$(sum_of sortd_hub_preadvice_delay_seconds_sum <<< "$scrape")
  delay_max=$(sum_of sortd_hub_preadvice_delay_seconds_max <<< "$scrape")
  last_seq=$(sum_of sortd_hub_preadvice_last_seq <<< "$scrape")
  plan_version=$(sum_of sortd_plan_version <<< "$scrape")
  plan_loaded=$(sum_of sortd_plan_loaded_timestamp_seconds <<< "$scrape")
  cpu=$(echo "($(ticks "$pid") - ${ticks_before[$i]}) / $clk_tck / $elapsed * 100" | bc -l)
  hwm=$(awk '/^VmHWM/ {print $2 / 1024}' "/proc/$pid/status")
  printf "s%d\t%.2f\t%.2f\t%.1f\t%.0f\t%.0f\t%.2f\t%.2f\t%.0f\t%.3f\n" "$i" \
    "$(echo "($decided - ${decided_before[$i]}) / $duration" | bc -l)" "$cpu" "$hwm" \
    "$last_seq" "$batches" \
    "$(echo "if ($batches > 0) $delay_sum / $batches * 1000 else 0" | bc -l)" \
    "$(echo "$delay_max * 1000" | bc -l)" "$plan_version" "$plan_loaded" >> "$out/nodes.tsv"
done
for pid in "${daemon_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${daemon_pids[@]}"; do wait "$pid" 2>/dev/null || true; done

sorters=$(seq -s, -f 's%g' 1 "$nodes")
reconciled=0
"$sortd" events reconcile --nats "$nats_url" --expect-sorters "$sorters" > "$out/reconcile.txt" \
  || reconciled=$?

# min / median / max of a column of nodes.tsv
stats() {
  tail -n +2 "$out/nodes.tsv" | cut -f"$1" | sort -g |
    awk '{v[NR] = $1} END {printf "%s / %s / %s", v[1], v[int((NR + 1) / 2)], v[NR]}'
}
total_rate=$(tail -n +2 "$out/nodes.tsv" | awk -F'\t' '{s += $2} END {printf "%.1f", s}')
worst_padv=$(tail -n +2 "$out/nodes.tsv" | awk -F'\t' '$8 > m {m = $8} END {printf "%.2f", m}')
behind=$(tail -n +2 "$out/nodes.tsv" | awk -F'\t' -v last="$last_feed" '$5 != last' | wc -l)
published_at=$(cat "$out/plan-published-at")
swapped=$(tail -n +2 "$out/nodes.tsv" | awk -F'\t' '$9 == 2' | wc -l)
last_swap_s=$(tail -n +2 "$out/nodes.tsv" | awk -F'\t' -v t0="$published_at" \
  '$9 == 2 && $10 - t0 > m {m = $10 - t0} END {printf "%.2f", m}')
# Pre-advice latency by stage over every batch of every node: the histograms
# (sortd_hub_preadvice_latency_seconds{stage}) summed over the nodes; a quantile is the
# upper bound of the bucket it falls in.
stage_table() {
  cat "$out"/node-*/metrics.txt | awk '
    /^sortd_hub_preadvice_latency_seconds_bucket\{/ {
      stage = $0; sub(/.*stage="/, "", stage); sub(/".*/, "", stage)
      le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le)
      count[stage, le] += $NF; bounds[le] = 1; stages[stage] = 1
    }
    /^sortd_hub_preadvice_latency_seconds_sum\{/ {
      stage = $0; sub(/.*stage="/, "", stage); sub(/".*/, "", stage); sum[stage] += $NF
    }
    END {
      n = 0
      for (le in bounds) { key[++n] = (le == "+Inf") ? 1e99 : le + 0; name[key[n]] = le }
      for (i = 2; i <= n; i++) for (j = i; j > 1 && key[j - 1] > key[j]; j--) { t = key[j]; key[j] = key[j - 1]; key[j - 1] = t }
      no = split("delivery wait parse log publish total sync durable", order, " ")
      for (o = 1; o <= no; o++) {
        stage = order[o]; if (!(stage in stages)) continue
        total = count[stage, "+Inf"]; if (total == 0) continue
        p50 = p99 = p999 = ""; over = 0
        for (i = 1; i <= n; i++) {
          c = count[stage, name[key[i]]]; le = name[key[i]] == "+Inf" ? "inf" : key[i] * 1000
          if (p50 == "" && c >= 0.5 * total) p50 = le
          if (p99 == "" && c >= 0.99 * total) p99 = le
          if (p999 == "" && c >= total) p999 = le
          if (key[i] == 0.1) over = total - c
        }
        printf "| %s | %d | %.2f | <= %s | <= %s | <= %s | %d |\n", stage, total, sum[stage] / total * 1000, p50, p99, p999, over
      }
    }'
}
{
  echo "## Hub run: $nodes nodes x $rate parcels/s for $duration s"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); output in $out"
  echo
  echo "| figure | min / median / max over nodes |"
  echo "| --- | --- |"
  echo "| parcels decided per second of sending, per node | $(stats 2) |"
  echo "| CPU per daemon, % of one core | $(stats 3) |"
  echo "| peak memory per daemon (VmHWM), MiB | $(stats 4) |"
  echo "| pre-advice batches applied per node | $(stats 6) |"
  echo "| pre-advice publication to applied, mean per node, ms | $(stats 7) |"
  echo "| pre-advice publication to applied, max per node, ms | $(stats 8) |"
  echo
  echo "Total: $total_rate parcels/s over $nodes nodes ($(echo "$total_rate * 3600" | bc) parcels/h)."
  echo "Pre-advice: $(grep -c ' seq ' "$out/feed.log" || true) batches of $feed_entries entries published, last stream seq $last_feed; nodes not at it: $behind; worst publication-to-applied: $worst_padv ms."
  echo
  echo "Pre-advice latency by stage, all batches of all nodes (ms; quantiles are bucket upper bounds):"
  echo
  echo "| stage | batches | mean | p50 | p99 | max | over 100 ms |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  stage_table
  echo
  echo "Plan: version 2 published once at half time; $swapped of $nodes nodes swapped; \`plan publish\` start to the last node's swap: $last_swap_s s."
  echo "Reconciliation (sortd events reconcile, exit $reconciled):"
  echo
  echo '```'
  head -n 1 "$out/reconcile.txt"
  tail -n 3 "$out/reconcile.txt"
  echo '```'
} | tee "$out/summary.md"
