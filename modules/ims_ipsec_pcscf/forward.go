package ims_ipsec_pcscf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// ipsec_forward flag bits, as Kamailio numbers them (cmd.c). kamgo reads
// all of them (Kamailio sees only the low byte).
const (
	fwdForceSocket  = 0x01 // force the protected socket (kamgo always does)
	fwdReverse      = 0x02 // Kamailio: reverse contact search (kamgo: no-op)
	fwdUseDstURI    = 0x04 // look the UE up by $du instead of the R-URI
	fwdUseNewRURI   = 0x08 // Kamailio: use the new R-URI (kamgo reads the current one)
	fwdIgnoreAlias  = 0x10 // Kamailio: ignore ;alias (kamgo: no-op)
	fwdKeepDstURI   = 0x20 // do not rewrite $du of a request
	fwdTCPToClient  = 0x40 // TCP requests go port_ps -> port_uc (the UE's connection)
	fwdAddTransport = 0x80 // ;transport=tcp in $du (kamgo adds it for TCP anyway)
	fwdUseVia       = 0x100
	fwdTryTCP       = 0x200 // Kamailio: TCP if the UDP socket is missing (kamgo opens both)
)

// protoSockets are the transports of the protected ports (TS 33.203 §7:
// both, the SA selectors have proto 0).
var protoSockets = []string{"udp", "tcp"}

func (m *mod) protSocket(proto string, port uint16) core.Socket {
	return core.Socket{Proto: proto, IP: m.str(&m.listenAddr), Port: int(port)}
}

// openSockets opens the pair's protected client and server sockets (UDP
// and TCP on ipsec_listen_addr) unless other sets already hold them.
func (m *mod) openSockets(pr Pair) error {
	var opened []core.Socket
	for _, proto := range protoSockets {
		for _, port := range []uint16{pr.PortPC, pr.PortPS} {
			s := m.protSocket(proto, port)
			m.mu.Lock()
			n := m.socks[s]
			m.socks[s] = n + 1
			m.mu.Unlock()
			if n > 0 {
				opened = append(opened, s)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := m.env.OpenSocket(ctx, s)
			cancel()
			if err != nil {
				m.mu.Lock()
				m.decSockLocked(s)
				m.mu.Unlock()
				for _, o := range opened {
					m.closeSocket(o)
				}
				return err
			}
			opened = append(opened, s)
		}
	}
	return nil
}

func (m *mod) decSockLocked(s core.Socket) int {
	n := m.socks[s] - 1
	if n <= 0 {
		delete(m.socks, s)
		return 0
	}
	m.socks[s] = n
	return n
}

// closeSocket drops one user of s and closes it with the last.
func (m *mod) closeSocket(s core.Socket) {
	m.mu.Lock()
	_, had := m.socks[s]
	n := m.decSockLocked(s)
	m.mu.Unlock()
	if had && n == 0 {
		if err := m.env.CloseSocket(s); err != nil {
			m.log().Warn("ims_ipsec_pcscf: closing a protected socket", "socket", s.String(), "err", err)
		}
	}
}

func (m *mod) closeSockets(pr Pair) {
	for _, proto := range protoSockets {
		for _, port := range []uint16{pr.PortPC, pr.PortPS} {
			m.closeSocket(m.protSocket(proto, port))
		}
	}
}

// plaintext is the protected-port check (TS 33.203 §7.1): the kernel
// lets plaintext to a protected port from any other source port through,
// so a request that arrived on a protected socket from anything but a
// known UE's protected port (port_uc or port_us, towards its own pair) is
// dropped before the SIP stack and counted.
func (m *mod) plaintext(msg *core.Msg) bool {
	if !m.enabled() || msg.Local.Port == 0 {
		return false
	}
	listen := m.str(&m.listenAddr)
	if !sameIP(msg.Local.IP, listen) {
		return false
	}
	local := uint16(msg.Local.Port)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.socks[m.protSocket(msg.Local.Proto, local)] == 0 {
		return false // not a protected socket (e.g. 5060 on the same address)
	}
	for _, s := range m.sets {
		if sameIP(s.ue.IP.String(), msg.SrcIP) && (local == s.p.PortC || local == s.p.PortS) &&
			(msg.SrcPort == int(s.ue.PortC) || msg.SrcPort == int(s.ue.PortS)) {
			if msg.Proto == "udp" && local == s.p.PortS {
				// Over UDP the P-CSCF answers from port_pc to the Via's
				// port_us (SA C): replies from port_ps (the arrival socket)
				// match no SA and would leave in plaintext (tm's 100 Trying,
				// sl replies).
				pc := m.protSocket("udp", s.p.PortC)
				msg.ReplyFrom = &pc
			}
			return false
		}
	}
	if n := m.plainDropped.Add(1); n == 1 || n%1000 == 0 {
		m.log().Warn("ims_ipsec_pcscf: request to a protected port not from a UE's protected port dropped",
			"src", net.JoinHostPort(msg.SrcIP, strconv.Itoa(msg.SrcPort)), "local", msg.Local.String(), "dropped", n)
	}
	return true
}

func sameIP(a, b string) bool {
	x, y := net.ParseIP(strings.Trim(a, "[]")), net.ParseIP(strings.Trim(b, "[]"))
	return x != nil && y != nil && x.Equal(y)
}

// bottomVia is the first hop's Via of a reply: the UE's, for a P-CSCF.
func bottomVia(res *sip.Response) *sip.ViaHeader {
	hs := res.GetHeaders("Via")
	for i := len(hs) - 1; i >= 0; i-- {
		if v, ok := hs[i].(*sip.ViaHeader); ok {
			return v
		}
	}
	return nil
}

// findForForward finds the set a message goes through: a reply by the
// REGISTER's Call-ID, else by the UE's Via; a request by its next hop
// (the R-URI, or $du with flag 0x04), preferring the set whose UE port
// it names, then the newest established one.
func (m *mod) findForForward(msg *core.Msg, flags int64) *ueSet {
	var host string
	var port int
	if msg.Res != nil {
		if s := m.findForMsg(msg); s != nil {
			return s
		}
		v := bottomVia(msg.Res)
		if v == nil {
			return nil
		}
		host, port = v.Host, v.Port
		if rcv, ok := v.Params.Get("received"); ok && rcv != "" {
			host = rcv
		}
	} else if msg.Req != nil {
		u := msg.Req.Recipient
		if flags&fwdUseDstURI != 0 && msg.DstURI != "" {
			du, err := core.ParseURI(msg.DstURI)
			if err != nil {
				return nil
			}
			u = du
		}
		host, port = u.Host, u.Port
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var best *ueSet
	score := func(s *ueSet) int {
		n := 0
		if port != 0 && (port == int(s.ue.PortS) || port == int(s.ue.PortC)) {
			n += 4
		}
		if s.state == StateEstablished {
			n += 2
		}
		return n
	}
	for _, s := range m.sets {
		if !sameIP(s.ue.IP.String(), host) {
			continue
		}
		if best == nil || score(s) > score(best) || score(s) == score(best) && s.seq > best.seq {
			best = s
		}
	}
	return best
}

// route points msg at the UE's protected port and forces the protected
// local socket (TS 33.203 §7, "client ports send, server ports receive"
// over UDP):
//   - requests: port_pc -> port_us (UDP and TCP); TCP with 0x40:
//     port_ps -> port_uc, the UE's own connection;
//   - replies over UDP: port_pc -> port_us (the UE's Via port with 0x100
//     when it is port_uc or port_us); over TCP: port_ps -> port_uc, on the
//     connection the UE opened.
func (m *mod) route(msg *core.Msg, s *ueSet, flags int64) error {
	host := core.HostRef(s.ue.IP.String())
	switch {
	case msg.Req != nil:
		proto := "udp"
		if d, err := msg.NextHop(); err == nil {
			proto = d.Proto
		}
		if proto != "udp" && proto != "tcp" {
			return fmt.Errorf("next hop over %s: protected ports are UDP and TCP", proto)
		}
		local, dport := s.p.PortC, s.ue.PortS
		if proto == "tcp" && flags&fwdTCPToClient != 0 {
			local, dport = s.p.PortS, s.ue.PortC
		}
		if flags&fwdKeepDstURI == 0 || msg.DstURI == "" {
			du := "sip:" + host + ":" + strconv.Itoa(int(dport))
			if proto == "tcp" {
				du += ";transport=tcp"
			}
			if err := msg.SetDstURI(du); err != nil {
				return err
			}
		}
		sock := m.protSocket(proto, local)
		msg.SendSocket = &sock
		// Our Via names port_ps, as the UE's names port_us: over UDP the
		// UE answers from port_uc to port_ps (SA A); no SA covers port_uc
		// -> port_pc, so a UE answering to a Via naming port_pc would send
		// in plaintext (TS 33.203 §7.1; TS 24.229 puts the protected server
		// port in the P-CSCF's Via).
		msg.ViaPort = int(s.p.PortS)
	case msg.Res != nil:
		v := bottomVia(msg.Res)
		proto := "udp"
		if v != nil && v.Transport != "" {
			proto = strings.ToLower(v.Transport)
		}
		switch proto {
		case "udp":
			dport := int(s.ue.PortS)
			if flags&fwdUseVia != 0 && v != nil && (v.Port == int(s.ue.PortC) || v.Port == int(s.ue.PortS)) {
				dport = v.Port
			}
			sock := m.protSocket("udp", s.p.PortC)
			msg.SendSocket = &sock
			msg.DstURI = "sip:" + host + ":" + strconv.Itoa(dport)
		case "tcp":
			sock := m.protSocket("tcp", s.p.PortS)
			msg.SendSocket = &sock
		default:
			return fmt.Errorf("reply over %s: protected ports are UDP and TCP", proto)
		}
	default:
		return errors.New("no message")
	}
	return nil
}
