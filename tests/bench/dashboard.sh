#!/usr/bin/env bash
# What open dashboards cost kamd (issue 11): kamd's CPU during a sipp call run
# (the "call" scenario of compare.sh: 5-message calls forwarded statelessly) at
# RATE calls/s for DUR seconds, with 0 and with CLIENTS dashboards open (websocket
# clients doing what the page does: subscribe to every topic and to stats every
# second, load every panel). Rounds alternate 0 / CLIENTS; medians are printed.
# Then the page's first-load size and time to first data in headless chromium.
#
#   tests/bench/dashboard.sh [-r RATE] [-d DUR] [-c CLIENTS] [-R ROUNDS]
#
# Needs sipp and chromium; uses udp 127.0.0.1:25060 (kamd), 25070 (UAS), 25080 (UAC)
# and tcp 127.0.0.1:28060 (RPC), away from compare.sh's 5060.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rate=1000; dur=30; clients=20; rounds=3
while getopts "r:d:c:R:" o; do
  case $o in r) rate=$OPTARG ;; d) dur=$OPTARG ;; c) clients=$OPTARG ;; R) rounds=$OPTARG ;; *) sed -n 2,13p "$0"; exit 2 ;; esac
done
out=$(mktemp -d /tmp/kamgo-dashbench.XXXXXX)
(cd "$root" && go build -o "$out/kamd" ./kamd && go build -o "$out/dashclients" ./tests/bench/dashboard) || exit 1
# kamd refuses a 17th connection from one address (rpc_max_conns_per_ip,
# default 16): raise the caps so every client gets in.
{ echo 'core_param("rpc_max_conns_per_ip", 64)'; echo 'core_param("rpc_max_conns", 256)'; sed 's/5070/25070/' "$here/route.star"; } > "$out/route.star"
clients_ok() { # pid log: fail loudly when the dashboard clients died (a client was refused)
  kill -0 $1 2>/dev/null && return 0
  echo "dashboard clients failed:" >&2; cat $2 >&2; exit 1
}
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
n=$((rate * dur))
run() { # clients [idle]: with idle, no sipp: kamd's CPU over DUR seconds with only the dashboards
  local c=$1 idle=${2:-} d=$out/run.$RANDOM; mkdir -p $d
  "$out/kamd" -f "$out/route.star" -l udp:127.0.0.1:25060 --rpc 127.0.0.1:28060 --db $d/kamd.db >$d/kamd.log 2>&1 &
  local kp=$!
  for _ in $(seq 50); do grep -q "rpc listening" $d/kamd.log 2>/dev/null && break; sleep 0.1; done
  sipp -sf "$here/sipp/uas.xml" -i 127.0.0.1 -p 25070 -nostdin >/dev/null 2>&1 &
  local up=$! cp=""
  if [ "$c" -gt 0 ]; then
    "$out/dashclients" -clients $c -url ws://127.0.0.1:28060/ws -for $((dur * 4 + 60))s >$d/clients.log 2>&1 &
    cp=$!
  fi
  sleep 2 # clients connected and loaded, first stats sent
  [ -n "$cp" ] && clients_ok $cp $d/clients.log
  local t0 s0 t1 s1; t0=$(ticks $kp); s0=$(date +%s.%N)
  if [ -n "$idle" ]; then
    sleep $dur
  else
    sipp -sn uac 127.0.0.1:25060 -i 127.0.0.1 -p 25080 -r $rate -rp 1000 -m $n -l 3000 -nostdin \
      -timeout $((dur + 60))s -trace_screen -screen_file $d/screen.txt >/dev/null 2>&1
  fi
  t1=$(ticks $kp); s1=$(date +%s.%N)
  [ -n "$cp" ] && clients_ok $cp $d/clients.log && kill $cp 2>/dev/null
  kill $up $kp 2>/dev/null; wait $kp $up 2>/dev/null
  local ok; ok=$(grep -E "Successful call" $d/screen.txt 2>/dev/null | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
  awk -v c=$c -v idle=${idle:-load} -v a=$t0 -v b=$t1 -v hz=$(getconf CLK_TCK) -v n=$n -v ok=${ok:-0} -v el=$(echo "$s1 - $s0" | bc) \
    'BEGIN{printf "clients=%-3d %-4s ok=%-7s cpu_s=%-7.2f cpu_pct=%-6.1f us_per_call=%-7.1f elapsed_s=%.1f\n", c, idle, ok, (b-a)/hz, 100*(b-a)/hz/el, (b-a)*1e6/hz/n, el}' | tee -a $out/results
}
echo "rate=$rate calls/s, ${dur}s per run, $rounds rounds, clients 0 vs $clients ($(nproc) cpus)"
for i in $(seq $rounds); do run 0; run $clients; run 0 idle; run $clients idle; done
med() { sort -g | awk '{v[NR]=$1} END{print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
cpu() { grep "^clients=$1 *$2 " $out/results | grep -o 'cpu_s=[0-9.]*' | cut -d= -f2 | med; }
a=$(cpu 0 load); b=$(cpu $clients load); ia=$(cpu 0 idle); ib=$(cpu $clients idle)
echo "median kamd CPU under load: ${a}s without, ${b}s with $clients dashboards: $(echo "scale=2; 100 * ($b - $a) / $a" | bc)% (noisy on a shared box)"
echo "median kamd CPU idle: ${ia}s without, ${ib}s with $clients dashboards over ${dur}s: the dashboards cost $(echo "scale=2; 100 * ($ib - $ia) / $a" | bc)% of the loaded run's CPU"
# Attribution, robust to a busy machine: the share of kamd's CPU samples under
# load spent serving the dashboards (the stats loop and websocket writes, with
# their syscalls), from perf call graphs.
if command -v perf >/dev/null; then
  d=$out/perf; mkdir -p $d
  "$out/kamd" -f "$out/route.star" -l udp:127.0.0.1:25060 --rpc 127.0.0.1:28060 --db $d/kamd.db >$d/kamd.log 2>&1 &
  kp=$!
  for _ in $(seq 50); do grep -q "rpc listening" $d/kamd.log 2>/dev/null && break; sleep 0.1; done
  sipp -sf "$here/sipp/uas.xml" -i 127.0.0.1 -p 25070 -nostdin >/dev/null 2>&1 &
  up=$!
  "$out/dashclients" -clients $clients -url ws://127.0.0.1:28060/ws -for $((dur * 4 + 60))s >$d/clients.log 2>&1 &
  cp=$!
  sleep 2
  clients_ok $cp $d/clients.log
  sipp -sn uac 127.0.0.1:25060 -i 127.0.0.1 -p 25080 -r $rate -rp 1000 -m $n -l 3000 -nostdin -timeout $((dur + 60))s >/dev/null 2>&1 &
  sp=$!
  sleep 3
  perf record -F 1999 -g -p $kp -o $d/perf.data -- sleep $((dur / 2)) >/dev/null 2>&1
  kill $sp $cp $up $kp 2>/dev/null; wait $kp 2>/dev/null
  perf report -i $d/perf.data --children --sort symbol --stdio -g none 2>/dev/null |
    awk '/rpc\.\(\*wsConn\)\.(statsLoop|writeLoop)/ {gsub(/%/,"",$1); s+=$1; print "  " $5 " " $1 "% (with callees)"}
         END {printf "share of kamd CPU samples serving %d dashboards at %d calls/s: %.2f%%\n", '"$clients"', '"$rate"', s}'
fi
# First load and time to first data.
"$out/kamd" -f "$out/route.star" -l udp:127.0.0.1:25060 --rpc 127.0.0.1:28060 --db $out/kamd.db >$out/kamd.log 2>&1 &
kp=$!
for _ in $(seq 50); do grep -q "rpc listening" $out/kamd.log 2>/dev/null && break; sleep 0.1; done
"$out/dashclients" -firstload http://127.0.0.1:28060/
kill $kp; wait $kp 2>/dev/null
echo "raw: $out"
