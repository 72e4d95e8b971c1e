#!/usr/bin/env bash
# kamd vs Kamailio, side by side, on this machine (127.0.0.1 only).
#
#   tests/bench/run.sh [--quick] [--scen "register call stateful default"] [--skip-rate]
#                      [--txmem] [--soak-min N] [--all]
#   (also: --scen dlgacc, and dlgacc_ds once kamd has the dispatcher module)
#
# Builds kamd once, then for each scenario (see compare.sh):
#   1. CPU per call, peak RSS and response times (p50/p99, see compare.sh): ROUNDS
#      interleaved runs of CALLS calls at RATE per proxy (kamd and every Kamailio flavour), medians;
#   2. the highest rate sustained for DUR seconds with zero failed calls: rates tried in
#      ascending order per proxy until one fails or sipp falls behind (>10% late).
# --txmem: RSS per 10,000 INVITE transactions in flight, kamd and Kamailio (txmem.sh).
# --soak-min N: kamd stateful at 1000 calls/s for N minutes, RSS series and slope (soak.sh).
# --all: every scenario (register call stateful default), the rate search, --txmem and a
#   soak (--soak-min, default 10; 2 with --quick), one summary at the end.
# Prints one table: kamd / best Kamailio flavour. --quick: fewer calls, 10 s rate windows.
# To try the harness: --calls N --rounds K --rates "R1 R2" --dur SECONDS override the sizes.
# Ports: KAMGO_BENCH_PORT (default 5060) and +10, +20, +30 (see compare.sh).
# Not part of `go test ./...`: it needs kamailio, its lua/python modules, sipp and tcpdump.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
quick=0; scens="register call stateful"; rate_search=1; txmem=0; soak_min=0; all=0
scen_given=""; o_calls=""; o_rounds=""; o_rates=""; o_dur=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;; --scen) scens=$2; scen_given=1; shift ;; --skip-rate) rate_search=0 ;;
    --txmem) txmem=1 ;; --soak-min) soak_min=$2; shift ;; --all) all=1 ;;
    --calls) o_calls=$2; shift ;; --rounds) o_rounds=$2; shift ;; --rates) o_rates=$2; shift ;; --dur) o_dur=$2; shift ;;
    *) sed -n 2,20p "$0"; exit 2 ;;
  esac
  shift
done
if [ $all = 1 ]; then
  [ -n "$scen_given" ] || scens="register call stateful default"; txmem=1
  if [ $soak_min = 0 ]; then soak_min=10; [ $quick = 1 ] && soak_min=2; fi
fi
if [ $quick = 1 ]; then CALLS=5000; RATE=1000; ROUNDS=2; DUR=10; RATES="1000 2000 3000 4000 6000"
else CALLS=20000; RATE=1000; ROUNDS=3; DUR=30; RATES="1000 2000 3000 4000 5000 6000 8000 10000 12000"; fi
CALLS=${o_calls:-$CALLS}; ROUNDS=${o_rounds:-$ROUNDS}; RATES=${o_rates:-$RATES}; DUR=${o_dur:-$DUR}
out=$(mktemp -d /tmp/kamgo-bench.XXXXXX); touch "$out/maxrate.txt" "$out/lat.txt"
prep_cfgs "$out" # the dispatcher list for route_dlgacc_ds.star
echo "building kamd..."
(cd "$root" && go build -o "$out/kamd" ./kamd) || exit 1
kamd_cmd() { # scenario
  local s=$here/route.star
  [ "$1" = stateful ] && s=$here/route_stateful.star
  [ "$1" = dlgacc ] && s=$here/route_dlgacc.star
  [ "$1" = dlgacc_ds ] && s=$here/route_dlgacc_ds.star.in
  prep_star "$s" "$out/$(basename "${s%.in}")"; s=$out/$(basename "${s%.in}")
  local db=$out/kamd.db
  case $1 in dlgacc*) [ -d /dev/shm ] && db=/dev/shm/kamgo-bench-kamd.$$.db ;; esac # as Kamailio's acc.db (compare.sh)
  # default: kamd's embedded script (no -f), its registrar in its own database
  if [ "$1" = default ]; then echo "$out/kamd -l udp:127.0.0.1:$BP --rpc off --db $out/kamd-default.db"
  else echo "$out/kamd -f $s -l udp:127.0.0.1:$BP --rpc off --db $db"; fi
}
flav() { case $1 in stateful) echo "stateful stateful_lua" ;; default) echo "default_lua" ;; dlgacc|dlgacc_ds) echo "$1" ;; *) echo "native kemi_lua kemi_py" ;; esac; }
echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), kernel $(uname -r)"
echo "ports: $BP (proxy), $UASP (UAS), $UACP/$REGP (UACs)"
echo "versions: $(go version | cut -d' ' -f3), $(kamailio -v 2>/dev/null | head -1 | cut -d' ' -f2-3), $(sipp -v 2>/dev/null | grep -o 'v[0-9.]*' | head -1)"
for sc in $scens; do
  echo "=== $sc: CPU per call ($ROUNDS x $CALLS calls at $RATE/s)"
  # CPU rounds without the latency capture: tcpdump's copy of every packet
  # is made in the sender's system call and would be charged to the proxy.
  "$here/compare.sh" -k "$(kamd_cmd $sc)" -s $sc -n $CALLS -r $RATE -R $ROUNDS -f "$(flav $sc)" -L 0 -o "$out/cpu.txt" | tail -n +2
  echo "=== $sc: response times (1 x $CALLS calls at $RATE/s, captured)"
  "$here/compare.sh" -k "$(kamd_cmd $sc)" -s $sc -n $CALLS -r $RATE -R 1 -f "$(flav $sc)" -L 1 -o "$out/lat.txt" | tail -n +2
  if [ $rate_search = 1 ]; then
    for p in kamd $(flav $sc); do
      best=0
      for r in $RATES; do
        n=$((r * DUR))
        for try in 1 2; do # an empty line: a port was still busy (a proxy slow to exit); retry once
          if [ $p = kamd ]; then line=$("$here/compare.sh" -k "$(kamd_cmd $sc)" -s $sc -n $n -r $r -R 1 -f none -L 0 -o "$out/rate.txt" | grep "scen=$sc rate=$r" | tail -1)
          else line=$("$here/compare.sh" -s $sc -n $n -r $r -R 1 -f $p -L 0 -o "$out/rate.txt" | grep "scen=$sc rate=$r" | tail -1); fi
          [ -n "$line" ] && break; sleep 5
        done
        echo "  rate $p: $line"
        ok=$(echo "$line" | grep -o 'ok=[0-9]*' | cut -d= -f2); f=$(echo "$line" | grep -o 'failed=[0-9?]*' | cut -d= -f2)
        el=$(echo "$line" | grep -o 'elapsed_s=[0-9.]*' | cut -d= -f2)
        if [ "${ok:-0}" = "$n" ] && [ "$f" = 0 ] && [ "$(echo "${el:-999} <= $DUR * 1.1 + 2" | bc)" = 1 ]; then best=$r; else break; fi
      done
      name=$p; [ $p != kamd ] && name=kamailio-$p
      echo "$sc $name $best" >> "$out/maxrate.txt"
    done
  fi
done
if [ $txmem = 1 ]; then
  echo "=== memory per 10,000 INVITE transactions in flight (txmem.sh)"
  "$here/txmem.sh" -b "$out/kamd" | tee "$out/txmem.txt"
fi
if [ "$soak_min" != 0 ]; then
  echo "=== soak: kamd stateful at 1000 calls/s for $soak_min min (soak.sh)"
  "$here/soak.sh" -b "$out/kamd" "$soak_min" | tee "$out/soak.txt"
fi
echo
echo "=== summary (medians; ratio = CPU / best Kamailio flavour's CPU, lower is better; p50/p99: INVITE -> 200 at the UAC, px_p99: the proxy's share (compare.sh); max_rate: calls/s sustained ${DUR}s with 0 failures)"
awk '
  function f(name,  i) { for (i=2;i<=NF;i++) if (index($i, name"=")==1) return substr($i, length(name)+2); return "" }
  FILENAME ~ /cpu.txt$/ { if ($0 ~ /scen=/) { sc=f("scen"); k=sc" "$1; n[k]++; cpu[k,n[k]]=f("cpu_us_per_call"); rss[k,n[k]]=f("peak_rss_mb")
              keys[k]=1; sc_of[k]=sc; nm[k]=$1 } next }
  FILENAME ~ /lat.txt$/ { if ($0 ~ /scen=/) { k=f("scen")" "$1; nl[k]++; p50[k,nl[k]]=f("p50_ms"); p99[k,nl[k]]=f("p99_ms"); px99[k,nl[k]]=f("px_p99_ms") } next }
  { rate[$1" "$2]=$3; hr[$1" "$2]=1 }
  function med(arr,k,cnt,  i,j,t,v,m) { m=0; for(i=1;i<=cnt;i++) if (arr[k,i] ~ /^[0-9.]+$/) v[++m]=arr[k,i]+0
                                     if (m==0) return "-"
                                     for(i=1;i<=m;i++) for(j=i+1;j<=m;j++) if(v[j]<v[i]){t=v[i];v[i]=v[j];v[j]=t}
                                     return (m%2)?v[(m+1)/2]:(v[m/2]+v[m/2+1])/2 }
  END {
    printf "%-9s %-22s %10s %8s %10s %8s %8s %9s %10s\n", "scenario", "proxy", "us/call", "ratio", "peakRSS_MB", "p50_ms", "p99_ms", "px_p99_ms", "max_rate"
    for (k in keys) { mc[k]=med(cpu,k,n[k]); s=sc_of[k]; if (nm[k] ~ /^kamailio/ && (!(s in best) || mc[k]<best[s])) best[s]=mc[k] }
    for (k in keys) { s=sc_of[k]; r=(k in hr)?rate[k]:"-"
      printf "%-9s %-22s %10.1f %8.2f %10.1f %8s %8s %9s %10s\n", s, nm[k], mc[k], (best[s]>0)?mc[k]/best[s]:0, med(rss,k,n[k]),
        med(p50,k,nl[k]), med(p99,k,nl[k]), med(px99,k,nl[k]), r }
  }' "$out/cpu.txt" "$out/lat.txt" "$out/maxrate.txt" 2>/dev/null | (read h; echo "$h"; sort)
[ -s "$out/txmem.txt" ] && grep -E '^(kamd|kamailio)' "$out/txmem.txt"
[ -s "$out/soak.txt" ] && grep -E '^soak ' "$out/soak.txt"
echo "raw results: $out ($(cd "$out" && ls *.txt | tr "\n" " "))"
