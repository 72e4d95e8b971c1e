#!/usr/bin/env bash
# kamd vs Kamailio, side by side, on this machine (127.0.0.1 only).
#
#   tests/bench/run.sh [--quick] [--scen "register call stateful"] [--skip-rate]
#   (also: --scen dlgacc, and dlgacc_ds once kamd has the dispatcher module)
#
# Builds kamd once, then for each scenario (see compare.sh):
#   1. CPU per call and peak RSS: ROUNDS interleaved runs of CALLS calls at RATE per
#      proxy (kamd and every Kamailio flavour), medians;
#   2. the highest rate sustained for DUR seconds with zero failed calls: rates tried in
#      ascending order per proxy until one fails or sipp falls behind (>10% late).
# Prints one table: kamd / best Kamailio flavour. --quick: fewer calls, 10 s rate windows.
# Not part of `go test ./...`: it needs kamailio, its lua/python modules and sipp.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
quick=0; scens="register call stateful"; rate_search=1
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;; --scen) scens=$2; shift ;; --skip-rate) rate_search=0 ;;
    *) sed -n 2,13p "$0"; exit 2 ;;
  esac
  shift
done
if [ $quick = 1 ]; then CALLS=5000; RATE=1000; ROUNDS=2; DUR=10; RATES="1000 2000 3000 4000 6000"
else CALLS=20000; RATE=1000; ROUNDS=3; DUR=30; RATES="1000 2000 3000 4000 5000 6000 8000"; fi
out=$(mktemp -d /tmp/kamgo-bench.XXXXXX); touch "$out/maxrate.txt"
echo "building kamd..."
(cd "$root" && go build -o "$out/kamd" ./kamd) || exit 1
kamd_cmd() { # scenario
  local s=$here/route.star
  [ "$1" = stateful ] && s=$here/route_stateful.star
  [ "$1" = dlgacc ] && s=$here/route_dlgacc.star
  if [ "$1" = dlgacc_ds ]; then
    s=$out/route_dlgacc_ds.star
    sed "s#ROUTEDIR#$here/kamailio#" "$here/route_dlgacc_ds.star.in" > "$s"
  fi
  local db=$out/kamd.db
  case $1 in dlgacc*) [ -d /dev/shm ] && db=/dev/shm/kamgo-bench-kamd.$$.db ;; esac # as Kamailio's acc.db (compare.sh)
  echo "$out/kamd -f $s -l udp:127.0.0.1:5060 --rpc off --db $db"
}
flav() { case $1 in stateful) echo "stateful stateful_lua" ;; dlgacc|dlgacc_ds) echo "$1" ;; *) echo "native kemi_lua kemi_py" ;; esac; }
echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), kernel $(uname -r)"
echo "versions: $(go version | cut -d' ' -f3), $(kamailio -v 2>/dev/null | head -1 | cut -d' ' -f2-3), $(sipp -v 2>/dev/null | grep -o 'v[0-9.]*' | head -1)"
for sc in $scens; do
  echo "=== $sc: CPU per call ($ROUNDS x $CALLS calls at $RATE/s)"
  "$here/compare.sh" -k "$(kamd_cmd $sc)" -s $sc -n $CALLS -r $RATE -R $ROUNDS -f "$(flav $sc)" -o "$out/cpu.txt" | tail -n +2
  if [ $rate_search = 1 ]; then
    for p in kamd $(flav $sc); do
      best=0
      for r in $RATES; do
        n=$((r * DUR))
        for try in 1 2; do # an empty line: a port was still busy (a proxy slow to exit); retry once
          if [ $p = kamd ]; then line=$("$here/compare.sh" -k "$(kamd_cmd $sc)" -s $sc -n $n -r $r -R 1 -f none -o "$out/rate.txt" | grep "scen=$sc rate=$r" | tail -1)
          else line=$("$here/compare.sh" -s $sc -n $n -r $r -R 1 -f $p -o "$out/rate.txt" | grep "scen=$sc rate=$r" | tail -1); fi
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
echo
echo "=== summary (medians; ratio = CPU / best Kamailio flavour's CPU, lower is better; max_rate: calls/s sustained ${DUR}s with 0 failures)"
awk -v out="$out" '
  FNR==NR { if ($0 ~ /scen=/) { split($4,c,"="); split($5,m,"="); match($0,/scen=[a-z]*/); sc=substr($0,RSTART+5,RLENGTH-5);
              k=sc" "$1; n[k]++; cpu[k,n[k]]=c[2]; rss[k,n[k]]=m[2]; keys[k]=1; sc_of[k]=sc; nm[k]=$1 } next }
  { rate[$1" "$2]=$3; hr[$1" "$2]=1 }
  function med(arr,k,cnt,  i,j,t,v) { for(i=1;i<=cnt;i++) v[i]=arr[k,i]+0; for(i=1;i<=cnt;i++) for(j=i+1;j<=cnt;j++) if(v[j]<v[i]){t=v[i];v[i]=v[j];v[j]=t}
                                     return (cnt%2)?v[(cnt+1)/2]:(v[cnt/2]+v[cnt/2+1])/2 }
  END {
    printf "%-9s %-22s %10s %8s %10s %14s\n", "scenario", "proxy", "us/call", "ratio", "peakRSS_MB", "max_rate"
    for (k in keys) { mc[k]=med(cpu,k,n[k]); mr[k]=med(rss,k,n[k]); s=sc_of[k]; if (nm[k] ~ /^kamailio/ && (!(s in best) || mc[k]<best[s])) best[s]=mc[k] }
    for (k in keys) { s=sc_of[k]; r=(k in hr)?rate[k]:"-"
      printf "%-9s %-22s %10.1f %8.2f %10.1f %14s\n", s, nm[k], mc[k], (best[s]>0)?mc[k]/best[s]:0, mr[k], r }
  }' "$out/cpu.txt" "$out/maxrate.txt" 2>/dev/null | (read h; echo "$h"; sort)
[ -f "$out/maxrate.txt" ] || true
echo "raw results: $out (cpu.txt, rate.txt, maxrate.txt)"
