// Package nathelper is Kamailio's nathelper module: detect UAs behind NAT
// (nat_uac_test), fix what they advertise (Contact, SDP, REGISTER's
// received address, ;alias) and keep their NAT bindings open with SIP
// pings to registered contacts.
package nathelper

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func init() { core.Register(New) }

// nat_uac_test flags (Kamailio's NAT_UAC_TEST_*).
const (
	TestContact1918  = 1   // Contact host is a private address
	TestRcvd         = 2   // top Via host differs from the source address
	TestVia1918      = 4   // top Via host is a private address
	TestSDP1918      = 8   // an SDP c= address is private
	TestRport        = 16  // top Via port differs from the source port
	TestSrc1918      = 32  // the source address is private
	TestWS           = 64  // received over WebSocket
	TestContactPort  = 128 // Contact port differs from the source port
	TestSDPSrc       = 256 // an SDP c= address differs from the source address
	knownTests       = 511
	receivedExtKey   = "registrar:received" // read by registrar.save (kamd's received_avp)
	defaultSippingFr = "sip:pinger@kamailio.org"
)

// NH is the nathelper instance of one Env.
type NH struct {
	env *core.Env

	natpingInterval  atomic.Int64
	pingNatedOnly    atomic.Int64
	sippingBflag     atomic.Int64
	keepaliveTimeout atomic.Int64
	sippingFrom      atomic.Pointer[string]
	sippingMethod    atomic.Pointer[string]
	receivedAVP      atomic.Pointer[string]

	pinger *pinger
}

var instances core.PerEnv[*NH]

// Of returns the nathelper instance built in env (nil if not loaded).
func Of(env *core.Env) *NH { return instances.Of(env) }

// New builds the nathelper module.
func New(env *core.Env) *core.Module {
	n := &NH{env: env}
	n.pinger = newPinger(n)
	instances.Set(env, n)
	return n.module()
}

// protoNum is Kamailio's transport number in ;alias (PROTO_*).
var protoNum = map[string]int{"udp": 1, "tcp": 2, "tls": 3, "sctp": 4, "ws": 5, "wss": 6}

func protoName(n int) string {
	for k, v := range protoNum {
		if v == n {
			return k
		}
	}
	return ""
}

func msgContact(m *core.Msg) *sip.ContactHeader {
	if m.Req != nil {
		return m.Req.Contact()
	}
	if m.Res != nil {
		return m.Res.Contact()
	}
	return nil
}

func viaPort(v *sip.ViaHeader) int {
	if v.Port != 0 {
		return v.Port
	}
	return core.DefaultPort(strings.ToLower(v.Transport))
}

func uriPort(u *sip.Uri) int {
	if u.Port != 0 {
		return u.Port
	}
	return core.TargetOf(u).Port
}

// NatUACTest runs the tests selected by flags; true if any hits.
func NatUACTest(m *core.Msg, flags int) bool {
	msg := m.Message()
	if msg == nil {
		return false
	}
	var via *sip.ViaHeader
	if m.Req != nil {
		via = m.Req.Via()
	} else {
		via = m.Res.Via()
	}
	ct := msgContact(m)
	if flags&TestContact1918 != 0 && ct != nil && IsPrivate(ct.Address.Host) {
		return true
	}
	if flags&TestRcvd != 0 && via != nil && !sameIP(via.Host, m.SrcIP) {
		return true
	}
	if flags&TestVia1918 != 0 && via != nil && IsPrivate(via.Host) {
		return true
	}
	if flags&(TestSDP1918|TestSDPSrc) != 0 && isSDP(msg) {
		for _, a := range SDPConnAddrs(string(msg.Body())) {
			if flags&TestSDP1918 != 0 && IsPrivate(a) {
				return true
			}
			if flags&TestSDPSrc != 0 && !isNullAddr(a) && !sameIP(a, m.SrcIP) {
				return true
			}
		}
	}
	if flags&TestRport != 0 && via != nil && viaPort(via) != m.SrcPort {
		return true
	}
	if flags&TestSrc1918 != 0 && IsPrivate(m.SrcIP) {
		return true
	}
	if flags&TestWS != 0 && (m.Proto == "ws" || m.Proto == "wss") {
		return true
	}
	if flags&TestContactPort != 0 && ct != nil && uriPort(&ct.Address) != m.SrcPort {
		return true
	}
	return false
}

func isSDP(msg sip.Message) bool {
	if len(msg.Body()) == 0 {
		return false
	}
	ct := core.FirstHeader(msg, "Content-Type")
	return ct == nil || strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct.Value())), "application/sdp")
}

// srcHost is the source address as a URI host (IPv6 in brackets).
func srcHost(m *core.Msg) string { return core.HostRef(m.SrcIP) }

func (n *NH) natUACTest(m *core.Msg, flags int64) (core.Val, error) {
	if flags <= 0 || flags&^knownTests != 0 {
		return core.Null, fmt.Errorf("nat_uac_test: flags %d: want a sum of 1, 2, 4, 8, 16, 32, 64, 128, 256", flags)
	}
	return core.IntRet(NatUACTest(m, int(flags))), nil
}

// fixNatedContact rewrites the Contact URI's host and port to the source.
func (n *NH) fixNatedContact(m *core.Msg) (core.Val, error) {
	ct := msgContact(m)
	if ct == nil || ct.Address.Wildcard {
		return core.Int(-1), nil
	}
	ct.Address.Host = srcHost(m)
	ct.Address.Port = m.SrcPort
	return core.Int(1), nil
}

// receivedURI is the source as Kamailio's fix_nated_register stores it.
func receivedURI(m *core.Msg) string {
	return core.Target{Proto: m.Proto, Host: srcHost(m), Port: m.SrcPort}.URI()
}

// fixNatedRegister keeps the source address for registrar.save, which
// stores it as the contacts' received (Kamailio: received_avp).
func (n *NH) fixNatedRegister(m *core.Msg) (core.Val, error) {
	if m.Req == nil || m.Req.Method != sip.REGISTER {
		return core.Int(-1), nil
	}
	m.SetExt(receivedExtKey, receivedURI(m))
	return core.Int(1), nil
}

// addRcvParam adds ;received="sip:ip:port" to the Contact (flag 1: as a
// URI parameter, without quotes) and keeps it for registrar.save.
func (n *NH) addRcvParam(m *core.Msg, flag int64) (core.Val, error) {
	ct := msgContact(m)
	if ct == nil || ct.Address.Wildcard {
		return core.Int(-1), nil
	}
	rcv := receivedURI(m)
	if flag != 0 {
		ct.Address.UriParams = ensureParams(ct.Address.UriParams)
		ct.Address.UriParams.Remove("received")
		ct.Address.UriParams.Add("received", rcv)
	} else {
		q, err := core.QuoteString(rcv)
		if err != nil {
			return core.Null, err
		}
		ct.Params = ensureParams(ct.Params)
		if err := core.SetParam(&ct.Params, "received", q); err != nil {
			return core.Null, err
		}
	}
	if m.Req != nil && m.Req.Method == sip.REGISTER {
		m.SetExt(receivedExtKey, rcv)
	}
	return core.Int(1), nil
}

func ensureParams(p sip.HeaderParams) sip.HeaderParams {
	if p == nil {
		return sip.NewParams()
	}
	return p
}

// aliasValue is ip~port~proto of the source, as Kamailio writes it.
func aliasValue(m *core.Msg) string {
	return srcHost(m) + "~" + strconv.Itoa(m.SrcPort) + "~" + strconv.Itoa(protoNum[m.Proto])
}

// addContactAlias adds ;alias=ip~port~proto to the Contact URI when the
// contact is not already the source: 1 added, 2 not needed, -1 error.
func (n *NH) addContactAlias(m *core.Msg, ip string, port int, proto string) (core.Val, error) {
	ct := msgContact(m)
	if ct == nil {
		return core.Int(2), nil // Kamailio: no Contact, nothing to do
	}
	if ct.Address.Wildcard {
		return core.Int(-1), nil
	}
	u := &ct.Address
	// Kamailio's test: the same IP, the same port (none: 5060) and the
	// same transport, where a Contact without ;transport has none, so it
	// never equals the source's and the alias is added.
	tp, _ := u.UriParams.Get("transport")
	if ip == "" && sameIP(u.Host, m.SrcIP) && (u.Port == m.SrcPort || (u.Port == 0 && m.SrcPort == 5060)) &&
		strings.EqualFold(tp, m.Proto) {
		return core.Int(2), nil
	}
	if u.UriParams.Has("alias") {
		return core.Int(2), nil // Kamailio: an alias already there is kept
	}
	val := aliasValue(m)
	if ip != "" {
		num, ok := protoNum[strings.ToLower(proto)]
		if !ok || port <= 0 || port > 65535 || net.ParseIP(strings.Trim(ip, "[]")) == nil {
			return core.Null, fmt.Errorf("add_contact_alias: bad address %q %d %q", ip, port, proto)
		}
		val = core.HostRef(ip) + "~" + strconv.Itoa(port) + "~" + strconv.Itoa(num)
	}
	u.UriParams = ensureParams(u.UriParams)
	u.UriParams.Add("alias", val)
	return core.Int(1), nil
}

// parseAlias splits ip~port~proto.
func parseAlias(v string) (core.Target, error) {
	f := strings.Split(v, "~")
	if len(f) != 3 {
		return core.Target{}, fmt.Errorf("alias %q: want ip~port~proto", v)
	}
	port, err := strconv.Atoi(f[1])
	if err != nil || port <= 0 || port > 65535 {
		return core.Target{}, fmt.Errorf("alias %q: bad port", v)
	}
	pn, err := strconv.Atoi(f[2])
	proto := protoName(pn)
	if err != nil || proto == "" {
		return core.Target{}, fmt.Errorf("alias %q: bad transport", v)
	}
	if net.ParseIP(strings.Trim(f[0], "[]")) == nil {
		return core.Target{}, fmt.Errorf("alias %q: bad address", v)
	}
	return core.Target{Proto: proto, Host: core.HostRef(f[0]), Port: port}, nil
}

// handleRURIAlias turns an ;alias in the R-URI into $du and removes it:
// 1 done, 2 no alias, -1 error.
func (n *NH) handleRURIAlias(m *core.Msg) (core.Val, error) {
	if m.Req == nil {
		return core.Null, core.ErrNoRequest
	}
	v, ok := m.Req.Recipient.UriParams.Get("alias")
	if !ok {
		return core.Int(2), nil
	}
	t, err := parseAlias(v)
	if err != nil {
		n.env.Log.Warn("nathelper: handle_ruri_alias: "+err.Error(), "at", m.Pos())
		return core.Int(-1), nil
	}
	u := m.Req.Recipient.Clone()
	u.UriParams.Remove("alias")
	if err := m.SetRURI(u.String()); err != nil {
		return core.Int(-1), nil
	}
	if err := m.SetDstURI(t.URI()); err != nil {
		return core.Int(-1), nil
	}
	return core.Int(1), nil
}

// fixNatedSDP applies FixSDP with the source address (or ip): 1 an
// address replaced, 2 none (a=direction or a=nortpproxy may still have
// been added), -1 no SDP.
func (n *NH) fixNatedSDP(m *core.Msg, flags int64, ip string) (core.Val, error) {
	msg := m.Message()
	if msg == nil || !isSDP(msg) {
		return core.Int(-1), nil
	}
	if flags <= 0 || flags > 0x0f {
		return core.Null, fmt.Errorf("fix_nated_sdp: flags %d: want a sum of 1, 2, 4, 8", flags)
	}
	if ip == "" {
		ip = m.SrcIP
	} else if net.ParseIP(ip) == nil {
		return core.Null, fmt.Errorf("fix_nated_sdp: %q is not an IP address", ip)
	}
	body, replaced, changed := FixSDP(string(msg.Body()), int(flags), ip)
	if changed {
		msg.SetBody([]byte(body))
	}
	// As Kamailio: 1 when an address was replaced; lines added alone give 2.
	if !replaced {
		return core.Int(2), nil
	}
	return core.Int(1), nil
}

func (n *NH) isRFC1918(s string) core.Val { return core.IntRet(IsPrivate(s)) }

// setContactAlias is add_contact_alias; Kamailio's variant works on the
// outgoing copy only, kamd has one message, so both change it.
func (n *NH) setContactAlias(m *core.Msg) (core.Val, error) {
	v, err := n.addContactAlias(m, "", 0, "")
	if err == nil && v.Int == 2 {
		v = core.Int(1) // Kamailio's set_contact_alias: 1 also when not needed
	}
	return v, err
}
