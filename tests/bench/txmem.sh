#!/usr/bin/env bash
# Memory per active stateful transaction: kamd (route_stateful.star) and Kamailio
# (kamailio/stateful_lua.cfg, -m 512), one after the other.
#
#   tests/bench/txmem.sh [-b KAMD_BINARY] [-n INVITES=10000] [-r RATE=1000] [-p "kamd kamailio"]
#
# The sipp UAS (sipp/uas_slow.xml) rings at once and answers 200 only after 30 s, so
# the N INVITEs sent at RATE (N/RATE must stay under ~25 s) are all in flight at the
# proxy at once. Memory is read idle (after start, before any traffic) and with the N
# in flight (checked by tm.stats "current"), over the whole process tree:
#   rss  sum of VmRSS; for Kamailio it counts the shared memory once per child that
#        touched it, so it over-counts;
#   pss  sum of Pss (smaps_rollup: shared pages divided among the processes that map
#        them): the fair total for both;
#   shm  Kamailio only: shared memory in use (kamcmd core.shmmem real_used).
# Printed per proxy: idle and in-flight figures and MB per 10,000 transactions
# ((in flight - idle) * 10000 / N). The calls are not completed (everything is
# stopped after the reading). Ports: KAMGO_BENCH_PORT (see compare.sh); kamd's RPC
# (for tm.stats) listens on KAMGO_BENCH_PORT+40.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
kamd=""; n=10000; rate=1000; proxies="kamd kamailio"
while getopts "b:n:r:p:" o; do
  case $o in b) kamd=$OPTARG ;; n) n=$OPTARG ;; r) rate=$OPTARG ;; p) proxies=$OPTARG ;; *) sed -n 2,19p "$0"; exit 2 ;; esac
done
for b in kamailio kamcmd sipp curl; do command -v $b >/dev/null || { echo "missing $b" >&2; exit 2; }; done
work=$(mktemp -d /tmp/kamgo-txmem.XXXXXX)
if [ -z "$kamd" ]; then (cd "$root" && go build -o "$work/kamd" ./kamd) || exit 1; kamd=$work/kamd; fi
prep_cfgs "$work"
prep_star "$here/route_stateful.star" "$work/route_stateful.star"
RPCP=$((BP + 40))
# Kamailio's ctl module, for kamcmd (core.shmmem, tm.stats)
sed -i "s#^mpath=.*#&\nloadmodule \"ctl.so\"\nmodparam(\"ctl\", \"binrpc\", \"unix:$work/ctl.sock\")#" "$work/stateful_lua.cfg"

# inflight NAME: the proxy's current transactions
inflight() {
  if [ "$1" = kamd ]; then
    curl -s -d '{"jsonrpc":"2.0","method":"tm.stats","id":1}' http://127.0.0.1:$RPCP/RPC | grep -o '"current": *[0-9]*' | grep -o '[0-9]*$'
  else
    kamcmd -s "unix:$work/ctl.sock" tm.stats 2>/dev/null | awk '$1=="current:"{print $2}'
  fi
}
shm_kb() { kamcmd -s "unix:$work/ctl.sock" core.shmmem 2>/dev/null | awk '$1=="real_used:"{printf "%d", $2/1024}'; }

measure() { # name command
  local name=$1 cmd=$2 d=$work/$1
  mkdir -p $d
  wait_ports_free || return 1
  bash -c "exec $cmd" >$d/proxy.log 2>&1 &
  local pp=$!
  wait_port_up $BP || { echo "$name did not start (see $d/proxy.log)" >&2; kill $pp 2>/dev/null; return 1; }
  sleep 1
  local rss0 pss0 shm0="" rss1 pss1 shm1="" cur=0
  rss0=$(cur_rss_kb $pp); pss0=$(pss_kb $pp); [ "$name" != kamd ] && shm0=$(shm_kb)
  sipp -sf "$here/sipp/uas_slow.xml" -i 127.0.0.1 -p $UASP -l 100000 $SIPP_BUF -nostdin >/dev/null 2>&1 &
  local up=$!
  sleep 0.3
  sipp -sn uac 127.0.0.1:$BP -i 127.0.0.1 -p $UACP -r $rate -rp 1000 -m $n -l 100000 $SIPP_BUF -nostdin \
    -trace_screen -screen_file $d/screen.txt >/dev/null 2>&1 &
  local uac=$!
  sleep $((n / rate + 1))
  for _ in $(seq 40); do cur=$(inflight $name); [ "${cur:-0}" -ge $n ] && break; sleep 0.25; done
  rss1=$(cur_rss_kb $pp); pss1=$(pss_kb $pp); [ "$name" != kamd ] && shm1=$(shm_kb)
  kill $uac $up 2>/dev/null; wait $uac $up 2>/dev/null
  kill $pp 2>/dev/null; wait $pp 2>/dev/null
  [ "${cur:-0}" -lt $n ] && echo "$name: only ${cur:-?} of $n transactions in flight at the reading" >&2
  awk -v nm=$name -v n=$n -v cur=${cur:-0} -v r0=$rss0 -v r1=$rss1 -v p0=$pss0 -v p1=$pss1 -v s0="$shm0" -v s1="$shm1" 'BEGIN{
    k=10000/n/1024
    printf "%-22s in_flight=%-6d idle_rss_mb=%-7.1f rss_mb=%-7.1f rss_mb_per_10k_tx=%-7.1f idle_pss_mb=%-7.1f pss_mb=%-7.1f pss_mb_per_10k_tx=%-7.1f", nm, cur, r0/1024, r1/1024, (r1-r0)*k, p0/1024, p1/1024, (p1-p0)*k
    if (s0 != "") printf " idle_shm_mb=%.1f shm_mb=%.1f shm_mb_per_10k_tx=%.1f", s0/1024, s1/1024, (s1-s0)*k
    printf "\n" }'
}

echo "txmem: $n INVITEs at $rate/s held ringing 30 s; port=$BP ($(nproc) cpus)"
for p in $proxies; do
  case $p in
    kamd) measure kamd "$kamd -f $work/route_stateful.star -l udp:127.0.0.1:$BP --rpc 127.0.0.1:$RPCP --db $work/kamd.db" ;;
    kamailio) measure kamailio-stateful_lua "kamailio -f $work/stateful_lua.cfg -DD -E -w $work -m 512" ;;
    *) echo "unknown proxy $p (kamd, kamailio)" >&2; exit 2 ;;
  esac
done
echo "logs: $work"
