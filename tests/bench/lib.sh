# Shared by compare.sh, run.sh, txmem.sh and soak.sh (sourced, not run).
#
# Ports: KAMGO_BENCH_PORT (default 5060) is the proxy's udp port on 127.0.0.1;
# the sipp UAS listens on +10, the UACs on +20 (calls) and +30 (REGISTERs).
# A second bench on the same box (another session) sets another base port.
BP=${KAMGO_BENCH_PORT:-5060}
case $BP in '' | *[!0-9]*) echo "KAMGO_BENCH_PORT must be a port number" >&2; exit 2 ;; esac
UASP=$((BP + 10)); UACP=$((BP + 20)); REGP=$((BP + 30))
# sipp's own sockets get 4 MB buffers (its default is 128 KB): a proxy that
# pauses for a few ms (a garbage collection, a busy CPU) then delivers what
# queued meanwhile in one burst, and 128 KB hold only ~55 datagrams, so sipp
# itself dropped replies and counted calls as failed. Kamailio and kamd get
# the same sipp.
SIPP_BUF="-buff_size 4194304"
here=${here:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}

# prep_cfgs DIR [ACCDB]: copies of the Kamailio cfgs, their KEMI scripts and the
# dispatcher list into DIR, with the ports moved to BP/UASP (the files in
# kamailio/ say 5060/5070) and ROUTEDIR pointing at DIR.
prep_cfgs() {
  local dir=$1 acc=${2:-$1/acc.db} f
  for f in "$here"/kamailio/*; do
    sed -e "s#ROUTEDIR#$dir#g" -e "s#ACCDB#$acc#g" -e "s/\b5060\b/$BP/g" -e "s/\b5070\b/$UASP/g" "$f" > "$dir/$(basename "$f")"
  done
}

# prep_star SRC DST: a kamd script with the ports moved (and ROUTEDIR -> DIR of DST,
# where prep_cfgs put the dispatcher list).
prep_star() {
  sed -e "s#ROUTEDIR#$(dirname "$2")#g" -e "s/\b5060\b/$BP/g" -e "s/\b5070\b/$UASP/g" "$1" > "$2"
}

tree() { local p=$1; echo $p; for c in $(cat /proc/$p/task/*/children 2>/dev/null); do tree $c; done; }
ticks() { local s=0 p; for p in $(tree $1); do set -- $(awk '{print $14, $15}' /proc/$p/stat 2>/dev/null); s=$((s + ${1:-0} + ${2:-0})); done; echo $s; }
# status_kb PID FIELD: FIELD (VmHWM, VmRSS) summed over the process tree
status_kb() { local s=0 p v; for p in $(tree $1); do v=$(awk -v f="$2:" '$1==f{print $2}' /proc/$p/status 2>/dev/null); s=$((s + ${v:-0})); done; echo $s; }
rss_kb() { status_kb $1 VmHWM; } # peak (compare.sh's peak_rss_mb)
cur_rss_kb() { status_kb $1 VmRSS; }
# Pss: each shared page divided among the processes that map it, so the sum over
# Kamailio's children counts its shared memory once (VmRSS counts it per child).
pss_kb() { local s=0 p v; for p in $(tree $1); do v=$(awk '$1=="Pss:"{print $2}' /proc/$p/smaps_rollup 2>/dev/null); s=$((s + ${v:-0})); done; echo $s; }
# context switches of every thread of the tree: the wakeups a proxy pays per message
csw() { local s=0 p v; for p in $(tree $1); do v=$(cat /proc/$p/task/*/status 2>/dev/null | awk '/ctxt_switches/{s+=$2} END{print s+0}'); s=$((s + v)); done; echo $s; }
port_busy() { ss -Huan "sport = :$1" 2>/dev/null | grep -q .; }
# wait_ports_free: the previous proxy or sipp may take a moment to exit
wait_ports_free() {
  local p
  for p in $BP $UASP $UACP $REGP; do
    for _ in $(seq 30); do port_busy $p || break; sleep 0.2; done
    port_busy $p && { echo "port $p busy" >&2; return 1; }
  done
  return 0
}
wait_port_up() { for _ in $(seq 50); do port_busy $1 && return 0; sleep 0.1; done; return 1; }

# register_callee DIR: binds user "service" (sipp -sn uac's R-URI user) to the UAS,
# Contact sip:service@127.0.0.1:UASP, on the proxy (the default scenario's lookup).
register_callee() {
  sipp -sf "$here/sipp/register_callee.xml" 127.0.0.1:$BP -i 127.0.0.1 -p $REGP -key uasport $UASP -m 1 -l 1 \
    $SIPP_BUF -nostdin -timeout 10s -trace_screen -screen_file "$1/register_screen.txt" >/dev/null 2>&1
  grep -E "Successful call" "$1/register_screen.txt" 2>/dev/null | tail -1 | awk -F'|' '{gsub(/ /,"",$3); exit !($3==1)}'
}

# sipp_count SCREENFILE "Successful call"|"Failed call": the cumulative count
sipp_count() { grep -E "$2" "$1" 2>/dev/null | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}'; }

# Response times from a loopback capture of the proxy's port (see sipdelay.py: sipp's
# own rtd clock ticks in 4 ms steps here). lat_start DIR; ...; lat_stop; lat_stats DIR
LAT_PID=""
lat_start() {
  command -v tcpdump >/dev/null || { echo "missing tcpdump (apt-get install tcpdump): no latency figures" >&2; return 1; }
  tcpdump -i lo -n -s 700 -B 16384 -w "$1/lat.pcap" "udp port $BP" 2>"$1/tcpdump.log" &
  LAT_PID=$!
  for _ in $(seq 50); do grep -q "listening on" "$1/tcpdump.log" 2>/dev/null && return 0; sleep 0.1; done
  return 0
}
# tcpdump gets the kernel's capture blocks when full or after 1 s: the last second of
# packets would be lost if it stopped at once.
lat_stop() { [ -n "$LAT_PID" ] && { sleep 1.5; kill -INT $LAT_PID 2>/dev/null; wait $LAT_PID 2>/dev/null; }; LAT_PID=""; }
# lat_stats DIR: "p50_ms p99_ms max_ms px_p50_ms px_p99_ms calls" (dashes without a capture)
lat_stats() {
  if [ -s "$1/lat.pcap" ]; then python3 "$here/sipdelay.py" "$1/lat.pcap" $BP $UASP; rm -f "$1/lat.pcap"
  else echo "- - - - - 0"; fi
}
