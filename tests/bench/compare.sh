#!/usr/bin/env bash
# Side-by-side SIP proxy benchmark, extended from ../../../shared/bench/compare.sh:
# the same sipp load through Kamailio (reference flavours) and through kamd.
#
#   compare.sh -k "<command that starts kamd>" [-s register|call|stateful] [-n CALLS] [-r RATE]
#              [-R ROUNDS] [-f "FLAVOURS"] [-o RESULTS_FILE]
#
# Every proxy listens on udp:127.0.0.1:5060; the UAS (call, stateful) on 5070.
#   register  REGISTER answered 200 statelessly (flavours: native kemi_lua kemi_py)
#   call      5-message call forwarded statelessly with an X-KEMI header (same flavours)
#   stateful  a call relayed with record_route + t_relay (flavours: stateful stateful_lua)
#   dlgacc    stateful + dlg_manage + acc to SQLite (db_flag, INVITE and BYE) (flavour: dlgacc)
#   dlgacc_ds dlgacc with the next hop from ds_select_dst(1, 4) (flavour: dlgacc_ds)
# Reported per run: calls ok/failed, the proxy's CPU time (user+sys of its process tree,
# from /proc) per call, its peak RSS, and how long sipp took (elapsed_s; a proxy that
# keeps up finishes in about CALLS/RATE seconds). Runs alternate A B A B.
# Needs: kamailio, kamailio-lua-modules, kamailio-python3-modules, sip-tester (Debian).
set -u
here=$(cd "$(dirname "$0")" && pwd)
scen=call; n=10000; rate=1000; rounds=2; kamd_cmd=""; flavours=""; out=""
while getopts "k:s:n:r:R:f:o:" o; do
  case $o in
    k) kamd_cmd=$OPTARG ;; s) scen=$OPTARG ;; n) n=$OPTARG ;; r) rate=$OPTARG ;;
    R) rounds=$OPTARG ;; f) flavours=$OPTARG ;; o) out=$OPTARG ;; *) sed -n 2,16p "$0"; exit 2 ;;
  esac
done
if [ -z "$flavours" ]; then
  case $scen in stateful) flavours="stateful stateful_lua" ;; dlgacc) flavours="dlgacc" ;; dlgacc_ds) flavours="dlgacc_ds" ;; *) flavours="native kemi_lua kemi_py" ;; esac
fi
for b in kamailio sipp; do command -v $b >/dev/null || { echo "missing $b: apt-get install kamailio kamailio-lua-modules kamailio-python3-modules sip-tester" >&2; exit 2; }; done
work=$(mktemp -d)
[ -n "$out" ] || out=$work/results
# dlgacc flavours: Kamailio's acc writes to an SQLite file that must hold the acc
# table, in WAL mode as kamd's; on tmpfs (run.sh puts kamd's there too), since
# Kamailio's db_sqlite syncs every insert and kamd's database does not (synchronous=NORMAL).
accdb=$work/acc.db; [ -d /dev/shm ] && accdb=/dev/shm/kamgo-bench-acc.$$.db
for c in native kemi_lua kemi_py stateful stateful_lua dlgacc dlgacc_ds; do sed -e "s#ROUTEDIR#$here/kamailio#" -e "s#ACCDB#$accdb#" "$here/kamailio/$c.cfg" > "$work/$c.cfg"; done
sqlite3 "$accdb" < /usr/share/kamailio/db_sqlite/standard-create.sql 2>/dev/null
sqlite3 "$accdb" < /usr/share/kamailio/db_sqlite/acc-create.sql 2>/dev/null
sqlite3 "$accdb" "PRAGMA journal_mode=WAL;" >/dev/null 2>&1
trap 'rm -f "$accdb" "$accdb-wal" "$accdb-shm"' EXIT

tree() { local p=$1; echo $p; for c in $(cat /proc/$p/task/*/children 2>/dev/null); do tree $c; done; }
ticks() { local s=0 p; for p in $(tree $1); do set -- $(awk '{print $14, $15}' /proc/$p/stat 2>/dev/null); s=$((s + ${1:-0} + ${2:-0})); done; echo $s; }
rss_kb() { local s=0 p v; for p in $(tree $1); do v=$(awk '/VmHWM/{print $2}' /proc/$p/status 2>/dev/null); s=$((s + ${v:-0})); done; echo $s; }
# context switches of every thread of the tree: the wakeups a proxy pays per message
csw() { local s=0 p v; for p in $(tree $1); do v=$(cat /proc/$p/task/*/status 2>/dev/null | awk '/ctxt_switches/{s+=$2} END{print s+0}'); s=$((s + v)); done; echo $s; }
port_busy() { ss -Huan "sport = :$1" 2>/dev/null | grep -q .; }

run_one() { # name command
  local name=$1 cmd=$2 d=$work/$1.$RANDOM
  mkdir -p $d
  for p in 5060 5070 5080 5090; do
    for _ in $(seq 30); do port_busy $p || break; sleep 0.2; done
    port_busy $p && { echo "port $p busy" >&2; return 1; }
  done
  bash -c "exec $cmd" >$d/proxy.log 2>&1 &
  local pp=$! up=""
  for _ in $(seq 50); do port_busy 5060 && break; sleep 0.1; done
  sleep 0.5
  local t0 s0 s1 c0 c1; t0=$(ticks $pp); c0=$(csw $pp); s0=$(date +%s.%N)
  if [ "$scen" = register ]; then
    sipp -sf "$here/sipp/register.xml" 127.0.0.1:5060 -i 127.0.0.1 -p 5090 -r $rate -rp 1000 -m $n -l 3000 \
      -nostdin -timeout $((n / rate + 60))s -trace_screen -screen_file $d/screen.txt >/dev/null 2>&1
  else
    sipp -sf "$here/sipp/uas.xml" -i 127.0.0.1 -p 5070 -nostdin >/dev/null 2>&1 &
    up=$!
    sleep 0.3
    s0=$(date +%s.%N)
    # sipp -timeout does not end a run whose last calls lost a datagram (UDP drops on a
    # loaded box): SIGINT makes it stop and write its screen.
    timeout -s INT $((n / rate + 75)) sipp -sn uac 127.0.0.1:5060 -i 127.0.0.1 -p 5080 -r $rate -rp 1000 -m $n -l 3000 \
      -nostdin -timeout $((n / rate + 60))s -trace_screen -screen_file $d/screen.txt >/dev/null 2>&1
  fi
  s1=$(date +%s.%N)
  local t1 rss; t1=$(ticks $pp); c1=$(csw $pp); rss=$(rss_kb $pp)
  [ -n "$up" ] && kill $up 2>/dev/null
  kill $pp 2>/dev/null; wait $pp 2>/dev/null; [ -n "$up" ] && wait $up 2>/dev/null
  local ok fail
  ok=$(grep -E "Successful call" $d/screen.txt | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
  fail=$(grep -E "Failed call" $d/screen.txt | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
  awk -v nm=$name -v a=$t0 -v b=$t1 -v hz=$(getconf CLK_TCK) -v n=$n -v ok=${ok:-0} -v f=${fail:-?} -v rss=$rss \
      -v el=$(echo "$s1 - $s0" | bc) -v sc=$scen -v r=$rate -v cs=$((c1 - c0)) \
    'BEGIN{us=(b-a)*1e6/hz/n; printf "%-20s ok=%-7s failed=%-5s cpu_us_per_call=%-8.1f peak_rss_mb=%-6.1f elapsed_s=%-6.1f csw_per_call=%-5.1f scen=%s rate=%s\n", nm, ok, f, us, rss/1024, el, cs/n, sc, r}' | tee -a $out
}

echo "scenario=$scen calls=$n rate=$rate rounds=$rounds  ($(nproc) cpus, $(uname -r))"
for i in $(seq $rounds); do
  # Stateful flavours get 512 MB of shared memory: the default 64 MB runs out
  # at ~1000 calls/s (each transaction lives on for wait_timer).
  for f in $flavours; do [ "$f" = none ] && continue; mem=""; [ "$scen" != register ] && [ "$scen" != call ] && mem="-m 512"
    run_one "kamailio-$f" "kamailio -f $work/$f.cfg -DD -E -w $work $mem"; done
  [ -n "$kamd_cmd" ] && run_one kamd "$kamd_cmd"
done
echo "--- medians (cpu us per call; ratio to the best Kamailio flavour; lower is better)"
names=$(grep "scen=$scen rate=$rate\$" $out | awk '{print $1}' | sort -u)
for k in $names; do
  m=$(grep "scen=$scen rate=$rate\$" $out | awk -v k=$k '$1==k{split($4,a,"="); print a[2]}' | sort -g | awk '{v[NR]=$1} END{print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}')
  echo "$k $m"
done > $work/medians
best=$(grep '^kamailio' $work/medians | sort -k2 -g | head -1)
[ -n "$best" ] || best=$(sort -k2 -g $work/medians | head -1)
awk -v bn="${best%% *}" -v bv="${best##* }" '{printf "%-20s %8.1f us/call  ratio_to_%s=%.2f\n", $1, $2, bn, $2/bv}' $work/medians
echo "runs and logs: $work"
