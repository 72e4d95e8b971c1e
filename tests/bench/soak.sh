#!/usr/bin/env bash
# Soak: a proxy relays calls statefully at RATE calls/s for MINUTES; its memory is
# sampled every 10 s.
#
#   tests/bench/soak.sh [-b KAMD_BINARY] [-p kamd|kamailio] [-c "PROXY COMMAND" [-N NAME]]
#                       [-r RATE=1000] [MINUTES=10]
#
#   -p kamd      (default) kamd with route_stateful.star
#   -p kamailio  Kamailio with kamailio/stateful_lua.cfg, -m 512
#   -c CMD       any other proxy command; it must listen on udp:127.0.0.1:$KAMGO_BENCH_PORT
#                and relay to the UAS on +10 (see compare.sh)
# sipp's built-in uac -> proxy -> sipp/uas.xml, RATE*60*MINUTES calls. Prints the series
# (t_s, rss_mb = sum of VmRSS over the process tree, pss_mb = sum of Pss, which counts
# Kamailio's shared memory once), then one "soak" line: calls ok/failed, CPU per call, the
# average RSS of the first minute (0 < t <= 60 s) and of the last minute of load, and the
# slopes of RSS and Pss in MB per minute (least squares over the samples of the load after the
# warm-up: the first minute, or 20 s for soaks under 3 minutes). Exit status 1 when a call
# failed or did not complete.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
kamd=""; preset=kamd; cmd=""; name=""; rate=1000
while getopts "b:p:c:N:r:" o; do
  case $o in b) kamd=$OPTARG ;; p) preset=$OPTARG ;; c) cmd=$OPTARG ;; N) name=$OPTARG ;; r) rate=$OPTARG ;; *) sed -n 2,18p "$0"; exit 2 ;; esac
done
shift $((OPTIND - 1))
min=${1:-10}
case $min in '' | *[!0-9]*) echo "MINUTES must be a whole number" >&2; exit 2 ;; esac
command -v sipp >/dev/null || { echo "missing sipp" >&2; exit 2; }
work=$(mktemp -d /tmp/kamgo-soak.XXXXXX)
if [ -z "$cmd" ]; then
  case $preset in
    kamd)
      if [ -z "$kamd" ]; then (cd "$root" && go build -o "$work/kamd" ./kamd) || exit 1; kamd=$work/kamd; fi
      prep_star "$here/route_stateful.star" "$work/route_stateful.star"
      cmd="$kamd -f $work/route_stateful.star -l udp:127.0.0.1:$BP --rpc off --db $work/kamd.db"; name=${name:-kamd} ;;
    kamailio)
      prep_cfgs "$work"
      cmd="kamailio -f $work/stateful_lua.cfg -DD -E -w $work -m 512"; name=${name:-kamailio-stateful_lua} ;;
    *) echo "-p kamd or -p kamailio" >&2; exit 2 ;;
  esac
fi
name=${name:-proxy}
n=$((rate * 60 * min))
wait_ports_free || exit 1
bash -c "exec $cmd" >$work/proxy.log 2>&1 &
pp=$!
wait_port_up $BP || { echo "$name did not start (see $work/proxy.log)" >&2; kill $pp 2>/dev/null; exit 1; }
sleep 0.5
sipp -sf "$here/sipp/uas.xml" -i 127.0.0.1 -p $UASP $SIPP_BUF -nostdin >/dev/null 2>&1 &
up=$!
sleep 0.3
echo "soak: $name, $n calls at $rate/s ($min min), port=$BP ($(nproc) cpus)"
t0=$(ticks $pp); start=$(date +%s)
# -recv_timeout: a call whose reply was lost (UDP drops on a loaded box) fails after 10 s
# instead of holding sipp open; SIGINT (before sipp's own -timeout, which exits without
# writing the screen) stops a run that still hangs and makes sipp write its counts.
timeout -s INT -k 20 $((n / rate + 40)) sipp -sn uac 127.0.0.1:$BP -i 127.0.0.1 -p $UACP -r $rate -rp 1000 -m $n -l 3000 \
  -recv_timeout 10s $SIPP_BUF -nostdin -timeout $((n / rate + 120))s -trace_screen -screen_file $work/screen.txt >/dev/null 2>$work/sipp.err &
uac=$!
: > $work/series
next=$start
while kill -0 $uac 2>/dev/null; do
  now=$(date +%s)
  if [ $now -ge $next ]; then
    printf "t_s=%-5d rss_mb=%-7.1f pss_mb=%-7.1f\n" $((now - start)) $(echo "$(cur_rss_kb $pp) / 1024" | bc -l) $(echo "$(pss_kb $pp) / 1024" | bc -l) | tee -a $work/series
    next=$((next + 10))
  fi
  sleep 0.5
done
wait $uac; src=$?
[ -s $work/screen.txt ] || echo "sipp ended with status $src and wrote no screen: $(tail -3 $work/sipp.err)" >&2
el=$(($(date +%s) - start)); t1=$(ticks $pp)
kill $up 2>/dev/null; kill $pp 2>/dev/null; wait $up $pp 2>/dev/null
ok=$(sipp_count $work/screen.txt "Successful call"); fail=$(sipp_count $work/screen.txt "Failed call")
load=$((n / rate)) # the load's length; the last minute is the 60 s before it ended
awk -v nm=$name -v n=$n -v ok=${ok:-0} -v f=${fail:-?} -v min=$min -v r=$rate -v load=$load -v el=$el \
    -v us=$(echo "($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / $n" | bc -l) '
  { split($1,a,"="); split($2,b,"="); split($3,c,"="); t[NR]=a[2]+0; v[NR]=b[2]+0; p[NR]=c[2]+0 }
  END {
    warm = (load >= 180) ? 60 : 20 # the heap grows to its working size first
    for (i=1;i<=NR;i++) {
      if (t[i] > 0 && t[i] <= 60) { fr+=v[i]; fp+=p[i]; fn++ }
      if (t[i] > load-60 && t[i] <= load) { lr+=v[i]; lp+=p[i]; ln++ }
      if (t[i] >= warm && t[i] <= load) { m++; sx+=t[i]/60; sy+=v[i]; sxx+=(t[i]/60)^2; sxy+=t[i]/60*v[i]; spy+=p[i]; sxpy+=t[i]/60*p[i] }
    }
    d = m*sxx-sx*sx; slope = (m>1 && d != 0) ? (m*sxy-sx*sy)/d : 0; pslope = (m>1 && d != 0) ? (m*sxpy-sx*spy)/d : 0
    printf "soak %s minutes=%d rate=%d ok=%d failed=%s cpu_us_per_call=%.1f elapsed_s=%d samples=%d first_min_rss_mb=%.1f last_min_rss_mb=%.1f slope_rss_mb_per_min=%.2f first_min_pss_mb=%.1f last_min_pss_mb=%.1f slope_pss_mb_per_min=%.2f\n",
      nm, min, r, ok, f, us, el, NR, fn?fr/fn:0, ln?lr/ln:0, slope, fn?fp/fn:0, ln?lp/ln:0, pslope
  }' $work/series
echo "logs: $work"
[ "${fail:-1}" = 0 ] && [ "${ok:-0}" = $n ]
