#!/usr/bin/env python3
"""Response times of a SIP proxy from a loopback packet capture (compare.sh -L).

    sipdelay.py CAPTURE.pcap PROXY_PORT UAS_PORT

sipp's own response times (rtd, -trace_rtt) come from a coarse clock: on this
kernel they are multiples of 4 ms, too coarse for a proxy that adds a few
hundred microseconds. tcpdump's kernel timestamps (µs) are exact, so per call
(Call-ID, first copy of each message, retransmissions ignored):

    e2e   = 200 for the INVITE sent by the proxy to the UAC - INVITE sent by the UAC
            (what the caller sees: the proxy twice, the UAS, loopback)
    proxy = (INVITE sent on to the UAS - INVITE received)
          + (200 sent to the UAC - 200 received from the UAS)
            (the proxy's own share, its socket queues included)

REGISTER answered by the proxy itself: e2e = proxy = 200 sent - REGISTER received.
Prints: "p50_ms p99_ms max_ms px_p50_ms px_p99_ms calls" (nearest-rank percentiles).
"""
import struct
import sys


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        end = "<"
    else:
        end = ">"
        magic = struct.unpack(">I", data[:4])[0]
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    link = struct.unpack(end + "I", data[20:24])[0]
    l2 = {1: 14, 113: 16, 276: 20, 0: 4}.get(link)
    if l2 is None:
        sys.exit("sipdelay: unsupported link type %d" % link)
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(end + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        ip = pkt[l2:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
        yield sec + frac * scale, sport, dport, ip[ihl + 8:]


def header(lines, long, short):
    for ln in lines[1:]:
        if not ln:
            break
        name, _, val = ln.partition(b":")
        n = name.strip().lower()
        if n == long or n == short:
            return val.strip()
    return None


def pct(v, p):
    if not v:
        return float("nan")
    i = max(1, -(-len(v) * p // 100))  # nearest rank
    return v[int(i) - 1]


def main():
    path, pp, up = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    first = {}  # (call-id, event) -> time
    for t, sp, dp, body in packets(path):
        lines = body.split(b"\r\n")
        start = lines[0]
        cid = header(lines, b"call-id", b"i")
        if cid is None:
            continue
        cseq = header(lines, b"cseq", b"cseq") or b""
        ev = None
        if start.startswith(b"INVITE ") or start.startswith(b"REGISTER "):
            if dp == pp and sp != up:
                ev = "req_in"
            elif sp == pp and dp == up:
                ev = "req_out"
        elif start.startswith(b"SIP/2.0 200") and (cseq.endswith(b"INVITE") or cseq.endswith(b"REGISTER")):
            if sp == up and dp == pp:
                ev = "rep_in"
            elif sp == pp and dp != up:
                ev = "rep_out"
        if ev and (cid, ev) not in first:
            first[(cid, ev)] = t
    e2e, px = [], []
    for (cid, ev), t0 in first.items():
        if ev != "req_in" or (cid, "rep_out") not in first:
            continue
        t3 = first[(cid, "rep_out")]
        e2e.append(t3 - t0)
        if (cid, "req_out") in first and (cid, "rep_in") in first:
            px.append(first[(cid, "req_out")] - t0 + t3 - first[(cid, "rep_in")])
        elif (cid, "req_out") not in first and (cid, "rep_in") not in first:
            px.append(t3 - t0)  # answered by the proxy itself
    e2e.sort()
    px.sort()
    ms = lambda x: "%.3f" % (x * 1e3) if x == x else "-"
    print(ms(pct(e2e, 50)), ms(pct(e2e, 99)), ms(e2e[-1] if e2e else float("nan")),
          ms(pct(px, 50)), ms(pct(px, 99)), len(e2e))


if __name__ == "__main__":
    main()
