#!/usr/bin/env bash
# Side-by-side SIP proxy benchmark, extended from ../../../shared/bench/compare.sh:
# the same sipp load through Kamailio (reference flavours) and through kamd.
#
#   compare.sh -k "<command that starts kamd>" [-s register|call|stateful|default] [-n CALLS]
#              [-r RATE] [-R ROUNDS] [-f "FLAVOURS"] [-o RESULTS_FILE] [-L 0]
#
# Every proxy listens on udp:127.0.0.1:P, P = $KAMGO_BENCH_PORT (default 5060); the UAS
# (call scenarios) on P+10, the sipp UACs on P+20 (calls) and P+30 (REGISTERs). The kamd
# command must listen on P itself (-l udp:127.0.0.1:P; run.sh builds it); the Kamailio cfgs,
# their KEMI scripts and the kamd command's -f script are copied with 5060/5070 replaced
# by P/P+10.
#   register  REGISTER answered 200 statelessly (flavours: native kemi_lua kemi_py)
#   call      5-message call forwarded statelessly with an X-KEMI header (same flavours)
#   stateful  a call relayed with record_route + t_relay (flavours: stateful stateful_lua)
#   default   a call through kamd's embedded default script (run kamd without -f) vs
#             kamailio/default_lua.cfg: the callee "service" is registered first
#             (sipp/register_callee.xml), then lookup + record_route + t_relay; the UAC
#             sends ACK and BYE by the route set (sipp/uac_dialog.xml) (flavour: default_lua)
#   dlgacc    stateful + dlg_manage + acc to SQLite (db_flag, INVITE and BYE) (flavour: dlgacc)
#   dlgacc_ds dlgacc with the next hop from ds_select_dst(1, 4) (flavour: dlgacc_ds)
# Reported per run: calls ok/failed, the proxy's CPU time (user+sys of its process tree,
# from /proc) per call, its peak RSS, and how long sipp took (elapsed_s; a proxy that
# keeps up finishes in about CALLS/RATE seconds), context switches per call, and the
# response times of every call from a tcpdump capture of the proxy's port (sipdelay.py):
# p50_ms/p99_ms/max_ms from the UAC's INVITE to the 200 the proxy sends it (REGISTER -> 200),
# px_p50_ms/px_p99_ms the proxy's own share (INVITE in->out + 200 in->out). -L 0: no
# capture (the rate search). lat_calls: calls with both ends captured. Runs alternate A B A B.
# Needs: kamailio, kamailio-lua-modules, kamailio-python3-modules, sip-tester (Debian).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
TIMEFORMAT='%U %S' # "time" around the sipp UAC: its user and system CPU seconds
scen=call; n=10000; rate=1000; rounds=2; kamd_cmd=""; flavours=""; out=""; lat=1
while getopts "k:s:n:r:R:f:o:L:" o; do
  case $o in
    k) kamd_cmd=$OPTARG ;; s) scen=$OPTARG ;; n) n=$OPTARG ;; r) rate=$OPTARG ;;
    R) rounds=$OPTARG ;; f) flavours=$OPTARG ;; o) out=$OPTARG ;; L) lat=$OPTARG ;; *) sed -n 2,29p "$0"; exit 2 ;;
  esac
done
if [ -z "$flavours" ]; then
  case $scen in stateful) flavours="stateful stateful_lua" ;; default) flavours="default_lua" ;; dlgacc) flavours="dlgacc" ;; dlgacc_ds) flavours="dlgacc_ds" ;; *) flavours="native kemi_lua kemi_py" ;; esac
fi
for b in kamailio sipp; do command -v $b >/dev/null || { echo "missing $b: apt-get install kamailio kamailio-lua-modules kamailio-python3-modules sip-tester" >&2; exit 2; }; done
work=$(mktemp -d)
[ -n "$out" ] || out=$work/results
# dlgacc flavours: Kamailio's acc writes to an SQLite file that must hold the acc
# table, in WAL mode as kamd's; on tmpfs (run.sh puts kamd's there too), since
# Kamailio's db_sqlite syncs every insert and kamd's database does not (synchronous=NORMAL).
accdb=$work/acc.db; [ -d /dev/shm ] && accdb=/dev/shm/kamgo-bench-acc.$$.db
prep_cfgs "$work" "$accdb"
sqlite3 "$accdb" < /usr/share/kamailio/db_sqlite/standard-create.sql 2>/dev/null
sqlite3 "$accdb" < /usr/share/kamailio/db_sqlite/acc-create.sql 2>/dev/null
sqlite3 "$accdb" "PRAGMA journal_mode=WAL;" >/dev/null 2>&1
trap 'rm -f "$accdb" "$accdb-wal" "$accdb-shm"' EXIT
# A kamd script reads no environment: with another base port, its -f script gets the
# same port substitution as the Kamailio cfgs (a copy in the work dir), so that it never
# relays to the UAS of a bench running on the default ports.
if [ "$BP" != 5060 ] && [[ "$kamd_cmd" =~ (-f[[:space:]]+)([^[:space:]]+) ]] && grep -qwE '5060|5070' "${BASH_REMATCH[2]}" 2>/dev/null; then
  src=${BASH_REMATCH[2]}; prep_star "$src" "$work/$(basename "$src")"
  kamd_cmd=${kamd_cmd/"${BASH_REMATCH[0]}"/"${BASH_REMATCH[1]}$work/$(basename "$src")"}
  echo "kamd script $src: ports moved to $BP/$UASP in $work/$(basename "$src")"
fi

run_one() { # name command
  local name=$1 cmd=$2 d=$work/$1.$RANDOM
  mkdir -p $d
  wait_ports_free || return 1
  bash -c "exec $cmd" >$d/proxy.log 2>&1 &
  local pp=$! up=""
  wait_port_up $BP
  sleep 0.5
  if [ "$scen" = default ] && ! register_callee $d; then
    echo "$name: registering the callee failed (see $d)" >&2
  fi
  [ "$lat" != 0 ] && lat_start $d
  local t0 s0 s1 c0 c1; t0=$(ticks $pp); c0=$(csw $pp); s0=$(date +%s.%N)
  if [ "$scen" = register ]; then
    { time sipp -sf "$here/sipp/register.xml" 127.0.0.1:$BP -i 127.0.0.1 -p $REGP -r $rate -rp 1000 -m $n -l 3000 \
      -recv_timeout 10s $SIPP_BUF -nostdin -timeout $((n / rate + 60))s -trace_screen -screen_file $d/screen.txt >/dev/null 2>$d/sipp.err ; } 2>$d/uac.time
  else
    sipp -sf "$here/sipp/uas.xml" -i 127.0.0.1 -p $UASP $SIPP_BUF -nostdin >/dev/null 2>$d/uas.err &
    up=$!
    sleep 0.3
    local uac="-sn uac"; [ "$scen" = default ] && uac="-sf $here/sipp/uac_dialog.xml"
    s0=$(date +%s.%N)
    # sipp -timeout does not end a run whose last calls lost a datagram (UDP drops on a
    # loaded box): SIGINT makes it stop and write its screen. And -recv_timeout fails such a
    # call after 10 s, so that sipp ends by itself with the counts (after -timeout, sipp
    # exits without writing its screen).
    { time timeout -s INT $((n / rate + 75)) sipp $uac 127.0.0.1:$BP -i 127.0.0.1 -p $UACP -r $rate -rp 1000 -m $n -l 3000 \
      -recv_timeout 10s $SIPP_BUF -nostdin -timeout $((n / rate + 60))s -trace_screen -screen_file $d/screen.txt >/dev/null 2>$d/sipp.err ; } 2>$d/uac.time
  fi
  s1=$(date +%s.%N)
  local t1 rss uas_t=0; t1=$(ticks $pp); c1=$(csw $pp); rss=$(rss_kb $pp); [ -n "$up" ] && uas_t=$(ticks $up)
  [ -n "$up" ] && kill $up 2>/dev/null
  lat_stop
  kill $pp 2>/dev/null; wait $pp 2>/dev/null; [ -n "$up" ] && wait $up 2>/dev/null
  local ok fail p50 p99 pmax px50 px99 cnt
  [ -s $d/screen.txt ] || echo "$name: sipp wrote no screen (killed from outside?); see $d/sipp.err" >&2
  ok=$(sipp_count $d/screen.txt "Successful call")
  fail=$(sipp_count $d/screen.txt "Failed call")
  read -r p50 p99 pmax px50 px99 cnt <<<"$(lat_stats $d)"
  awk -v nm=$name -v a=$t0 -v b=$t1 -v hz=$(getconf CLK_TCK) -v n=$n -v ok=${ok:-0} -v f=${fail:-?} -v rss=$rss \
      -v el=$(echo "$s1 - $s0" | bc) -v sc=$scen -v r=$rate -v cs=$((c1 - c0)) -v p50=$p50 -v p99=$p99 -v pmax=$pmax -v px50=$px50 -v px99=$px99 -v lc=$cnt -v uac="$(tail -1 $d/uac.time 2>/dev/null)" -v uast=$uas_t \
    'BEGIN{us=(b-a)*1e6/hz/n; split(uac, u, " "); ua=(el>0)?(u[1]+u[2])*100/el:0; uu=(el>0)?uast*100/hz/el:0; printf "%-20s ok=%-7s failed=%-5s cpu_us_per_call=%-8.1f peak_rss_mb=%-6.1f elapsed_s=%-6.1f csw_per_call=%-5.1f p50_ms=%-6s p99_ms=%-6s max_ms=%-7s px_p50_ms=%-6s px_p99_ms=%-6s lat_calls=%-6s uac_cpu_pct=%-5.0f uas_cpu_pct=%-5.0f scen=%s rate=%s\n", nm, ok, f, us, rss/1024, el, cs/n, p50, p99, pmax, px50, px99, lc, ua, uu, sc, r}' | tee -a $out
}

echo "scenario=$scen calls=$n rate=$rate rounds=$rounds port=$BP  ($(nproc) cpus, $(uname -r))"
for i in $(seq $rounds); do
  # Stateful flavours get 512 MB of shared memory: the default 64 MB runs out
  # at ~1000 calls/s (each transaction lives on for wait_timer).
  for f in $flavours; do [ "$f" = none ] && continue; mem=""; [ "$scen" != register ] && [ "$scen" != call ] && mem="-m 512"
    run_one "kamailio-$f" "kamailio -f $work/$f.cfg -DD -E -w $work $mem"; done
  [ -n "$kamd_cmd" ] && run_one kamd "$kamd_cmd"
done
echo "--- medians (cpu us per call; ratio to the best Kamailio flavour; lower is better; response time p50/p99 ms, the proxy's share p99)"
# med FIELD NAME: the median of FIELD= over NAME's runs of this scenario and rate
med() { grep "scen=$scen rate=$rate\$" $out | awk -v k=$2 -v f=$1 '$1==k{for(i=2;i<=NF;i++) if (index($i, f"=")==1) {v=substr($i, length(f)+2); if (v ~ /^[0-9.]+$/) print v}}' |
  sort -g | awk '{v[NR]=$1} END{if (NR==0) print "-"; else print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
names=$(grep "scen=$scen rate=$rate\$" $out | awk '{print $1}' | sort -u)
for k in $names; do
  echo "$k $(med cpu_us_per_call $k) $(med p50_ms $k) $(med p99_ms $k) $(med px_p99_ms $k)"
done > $work/medians
best=$(grep '^kamailio' $work/medians | sort -k2 -g | head -1 | cut -d' ' -f1-2)
[ -n "$best" ] || best=$(sort -k2 -g $work/medians | head -1 | cut -d' ' -f1-2)
awk -v bn="${best%% *}" -v bv="${best##* }" '{printf "%-20s %8.1f us/call  ratio_to_%s=%.2f  p50_ms=%s p99_ms=%s px_p99_ms=%s\n", $1, $2, bn, $2/bv, $3, $4, $5}' $work/medians
echo "runs and logs: $work"
