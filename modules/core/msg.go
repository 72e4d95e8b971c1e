package core

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Msg is the context of one callback run: the SIP message plus what the
// script has decided so far. KSR functions receive it instead of a global.
type Msg struct {
	Env *Env
	Req *sip.Request  // set for requests
	Res *sip.Response // set for replies

	Proto   string // udp, tcp, tls, ws, wss
	SrcIP   string
	SrcPort int
	Local   Socket // the socket it arrived on
	ConnID  string // reliable-transport connection it arrived on
	Arrived time.Time
	// Size is the message's length as received (0: not from the network);
	// tm charges it to max_transactions_mem.
	Size int

	DstURI string // $du
	// SendSocket is Kamailio's force_send_socket ($fs,
	// KSR.corex.set_send_socket): the local socket the message's replies
	// (sl, tm) and relayed branches leave from, one of Env.Sockets(). nil:
	// the transport picks as always.
	SendSocket *Socket
	// ReplyFrom, when set, is the UDP socket local and relayed replies
	// leave from instead of the arrival socket (Local), unless SendSocket
	// forces one: a P-CSCF answers a UE's protected port_uc -> port_ps
	// request from port_pc (TS 33.203 §7), where the SA towards the UE is.
	ReplyFrom *Socket
	// ViaPort, when set, is the port tm writes in kamd's Via of the
	// relayed request instead of the send socket's (Kamailio's
	// set_advertised_port): a P-CSCF sends to a UE from port_pc but names
	// its protected server port port_ps, where the UE's answer arrives over
	// SA A (TS 33.203 §7.1).
	ViaPort   int
	Flags     uint64
	Vars      map[string]Val // $var: per message
	RouteType RouteType
	Prog      any // script version handling this message

	// ReplyCode is the last reply code sent for this request ($T_reply_code in request_route).
	ReplyCode int
	Replied   bool
	Forwarded bool
	Dropped   bool // set_drop

	// Branches is the destination set beyond the R-URI (append_branch,
	// registrar lookup of several contacts); t_relay forks to all.
	Branches []Branch

	// Names registered with t_on_failure/t_on_reply/t_on_branch.
	OnFailure, OnReply, OnBranch, OnBranchFailure string

	// Tx is the tm transaction bound to this message, if any.
	Tx any
	// Ext holds per-message data of modules, keyed by module name.
	Ext map[string]any
	// ReplyHeaders are added to the next locally generated reply (hdr.append_to_reply).
	ReplyHeaders []sip.Header
	// Where reports the script position of the current KSR call, for logs.
	Where func() string
	// Event names the event a callback runs for ("uac:reply"): a callback
	// of one parameter then gets the event name, as Kamailio's KEMI event
	// callbacks do, instead of the msg.
	Event string

	// BFlags are the branch flags of branch 0 (KSR.setbflag, $bf): the
	// registrar stores them per contact (cflags) and lookup restores them.
	BFlags uint64
}

// Message returns the SIP message, request or reply.
func (m *Msg) Message() sip.Message {
	if m.Req != nil {
		return m.Req
	}
	if m.Res != nil {
		return m.Res
	}
	return nil
}

// MessageString serialises a message as it would be sent now.
func MessageString(msg sip.Message) string {
	if msg == nil {
		return ""
	}
	var b strings.Builder
	msg.StringWrite(&b)
	return b.String()
}

// IsRequest is true for requests.
func (m *Msg) IsRequest() bool { return m.Req != nil }

// Method is the request method, or the CSeq method of a reply.
func (m *Msg) Method() string {
	if m.Req != nil {
		return string(m.Req.Method)
	}
	if m.Res != nil {
		if cs := m.Res.CSeq(); cs != nil {
			return string(cs.MethodName)
		}
	}
	return ""
}

// Pos is the current script position ("route.star:12") or "".
func (m *Msg) Pos() string {
	if m.Where != nil {
		return m.Where()
	}
	return ""
}

// SetExt stores module data on the message.
func (m *Msg) SetExt(key string, v any) {
	if m.Ext == nil {
		m.Ext = map[string]any{}
	}
	m.Ext[key] = v
}

// ErrNoRequest is returned by request-only functions running on a reply.
var ErrNoRequest = errors.New("not a SIP request")

// CheckText rejects CR, LF and NUL in script-supplied header values, URIs
// and reasons: sipgo serialises them verbatim, which allows injection.
func CheckText(what, s string) error {
	if i := strings.IndexAny(s, "\r\n\x00"); i >= 0 {
		return fmt.Errorf("%s contains a CR, LF or NUL character at offset %d: %q", what, i, s)
	}
	return nil
}

// ParseURI parses a SIP URI given by a script.
func ParseURI(s string) (sip.Uri, error) {
	var u sip.Uri
	if err := CheckText("URI", s); err != nil {
		return u, err
	}
	if !strings.HasPrefix(strings.ToLower(s), "sip:") && !strings.HasPrefix(strings.ToLower(s), "sips:") {
		return u, fmt.Errorf("invalid SIP URI %q: want sip: or sips:", s)
	}
	if err := sip.ParseUri(s, &u); err != nil {
		return u, fmt.Errorf("invalid SIP URI %q: %v", s, err)
	}
	if u.Host == "" {
		return u, fmt.Errorf("invalid SIP URI %q: no host", s)
	}
	// sipgo's parser is lenient: "sip:a@b;lr>;tag=1" or "sip:a@b>" parse,
	// and written into a name-addr (a From by uac, a Route, $du) they end
	// it early. The door's check on a received R-URI applies here too.
	if why := uriProblem(&u); why != "" {
		return u, fmt.Errorf("invalid SIP URI %q: %s", s, why)
	}
	return u, nil
}

// DefaultPort is SIP's port for a transport without one: 5061 over TLS
// (tls, wss), else 5060.
func DefaultPort(proto string) int {
	if proto == "tls" || proto == "wss" {
		return 5061
	}
	return 5060
}

// TargetOf turns a URI into a transport destination (RFC 3263 without DNS
// SRV: transport param, sips → tls, default ports).
func TargetOf(u *sip.Uri) Target {
	t := Target{Proto: "udp", Host: u.Host, Port: u.Port}
	if tp, ok := u.UriParams.Get("transport"); ok && tp != "" {
		t.Proto = strings.ToLower(tp)
	}
	if strings.EqualFold(u.Scheme, "sips") {
		t.Proto = "tls"
	}
	if maddr, ok := u.UriParams.Get("maddr"); ok && maddr != "" {
		t.Host = maddr
	}
	if t.Port == 0 {
		t.Port = DefaultPort(t.Proto)
	}
	return t
}

// NextHop is where a request goes: $du if set, else the R-URI.
func (m *Msg) NextHop() (Target, error) {
	if m.Req == nil {
		return Target{}, ErrNoRequest
	}
	if m.DstURI != "" {
		u, err := ParseURI(m.DstURI)
		if err != nil {
			return Target{}, fmt.Errorf("$du: %w", err)
		}
		return TargetOf(&u), nil
	}
	return TargetOf(&m.Req.Recipient), nil
}

// ViaTarget is where a reply goes according to a Via (RFC 3261 18.2.2, RFC 3581).
func ViaTarget(v *sip.ViaHeader) Target {
	t := Target{Proto: lowerProto(v.Transport), Host: v.Host, Port: v.Port}
	if maddr, ok := v.Params.Get("maddr"); ok && maddr != "" {
		t.Host = maddr
	} else if rcv, ok := v.Params.Get("received"); ok && rcv != "" {
		t.Host = rcv
	}
	if rp, ok := v.Params.Get("rport"); ok && rp != "" {
		if p, err := strconv.Atoi(rp); err == nil {
			t.Port = p
		}
	}
	if t.Port == 0 {
		t.Port = DefaultPort(t.Proto)
	}
	return t
}

// lowerProto is strings.ToLower for a Via transport, without allocating
// for the usual ones.
func lowerProto(s string) string {
	switch s {
	case "UDP", "udp":
		return "udp"
	case "TCP", "tcp":
		return "tcp"
	case "TLS", "tls":
		return "tls"
	case "WS", "ws":
		return "ws"
	case "WSS", "wss":
		return "wss"
	case "SCTP", "sctp":
		return "sctp"
	}
	return strings.ToLower(s)
}

// FixVia adds received/rport to the top Via of a received request (RFC 3261
// 18.2.1, RFC 3581), so replies find their way back through NAT.
func (m *Msg) FixVia() {
	if m.Req == nil {
		return
	}
	v := m.Req.Via()
	if v == nil {
		return
	}
	if rp, ok := v.Params.Get("rport"); ok && rp == "" {
		setRport(v, m.SrcPort)
		setReceived(v, m.SrcIP)
		return
	}
	if v.Host != m.SrcIP && normHost(v.Host) != normHost(m.SrcIP) { // equal strings: no normalising
		setReceived(v, m.SrcIP)
	}
}

// ForceRport makes replies go to the request's real source address and
// port (RFC 3581), as if the client had asked with ;rport. Stream
// transports always do it so replies find their connection.
func (m *Msg) ForceRport() {
	if m.Req == nil || m.Req.Via() == nil {
		return
	}
	v := m.Req.Via()
	setRport(v, m.SrcPort)
	setReceived(v, m.SrcIP)
}

// RequestProblem is why a parsed request cannot be routed at all, or "":
// the reason of RequestRefusal (door.go), which also gives the code.
func RequestProblem(r *sip.Request) string {
	_, why := RequestRefusal(r)
	return why
}

// setReceived records the real source in the Via. A received= the sender
// wrote itself is replaced: trusting it would let a client aim kamd's
// replies at any address.
// The source address comes from the socket, so SetParam cannot refuse
// it; if it ever did, the sender's value is dropped rather than kept.
func setReceived(v *sip.ViaHeader, ip string) {
	if SetParam(&v.Params, "received", ip) != nil {
		v.Params.Remove("received")
	}
}

func setRport(v *sip.ViaHeader, port int) {
	_ = SetParam(&v.Params, "rport", strconv.Itoa(port)) // digits: always a token
}

// ReplyOutgoing addresses a reply to request m.
func (m *Msg) ReplyOutgoing(res *sip.Response, kind OutKind) *Outgoing {
	return m.replyOutgoing(&Outgoing{}, res, kind)
}

// replyOutgoing fills o (zero) as ReplyOutgoing's result.
func (m *Msg) replyOutgoing(o *Outgoing, res *sip.Response, kind OutKind) *Outgoing {
	o.Kind, o.Msg = kind, res
	if v := m.Req.Via(); v != nil {
		o.Dst = ViaTarget(v)
	} else {
		o.Dst = Target{Proto: m.Proto, Host: m.SrcIP, Port: m.SrcPort}
	}
	if m.Proto != "udp" {
		// Reliable transports answer on the connection the request came on.
		o.ConnID = m.ConnID
		o.Dst = Target{Proto: m.Proto, Host: m.SrcIP, Port: m.SrcPort}
	} else if o.Dst.Proto != "udp" {
		o.Dst.Proto = "udp"
	}
	o.LocalSocket = m.ForcedSocket(m.Proto)
	if m.Proto == "udp" && m.ReplyFrom != nil {
		o.Arrival = m.ReplyFrom
	} else if m.Proto == "udp" && m.Local.Port != 0 {
		// As Kamailio: a UDP reply leaves from the socket the request
		// arrived on, not the transport's first one (a client, a NAT or a
		// P-CSCF's protected port expects the address it sent to).
		o.Arrival = &m.Local
	}
	return o
}

// ToTag is a deterministic To-tag for local replies, so retransmitted
// requests get the same tag (as Kamailio's sl does).
func ToTag(req *sip.Request) string {
	// FNV-1a 64 computed inline (same value as hash/fnv, no allocations).
	h := fnvOffset64
	if c := req.CallID(); c != nil {
		h = fnvString(h, string(*c))
	}
	if f := req.From(); f != nil {
		t, _ := f.Params.Get("tag")
		h = fnvString(h, t)
	}
	if v := req.Via(); v != nil {
		b, _ := v.Params.Get("branch")
		h = fnvString(h, b)
	}
	if cs := req.CSeq(); cs != nil {
		var nb [20]byte
		h = fnvBytes(h, strconv.AppendUint(nb[:0], uint64(cs.SeqNo), 10))
	}
	var out [2 + 13]byte
	return string(strconv.AppendUint(append(out[:0], "kg"...), h, 36))
}

const (
	fnvOffset64 uint64 = 14695981039346656037
	fnvPrime64  uint64 = 1099511628211
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return h
}

// DefaultServerHeader is the Server header of local replies unless
// core_param("server_header", ...) says otherwise.
const DefaultServerHeader = "kamd (kamgo)"

// serverHeader holds the value and its header: local replies share the
// header (nothing edits a generic header in place; removing or replacing
// it on one reply does not touch the others).
type serverHdr struct {
	v string
	h sip.Header
}

var serverHeader atomic.Pointer[serverHdr]

func init() { SetServerHeader(DefaultServerHeader) }

// ServerHeader is the value of the Server header added to local replies
// ("" adds none), as Kamailio's server_header.
func ServerHeader() string { return serverHeader.Load().v }

// SetServerHeader sets it for the whole process (kamd sets it from the
// script at every load); "Server: x" is taken as "x", "" disables it.
func SetServerHeader(v string) {
	v = strings.TrimSpace(v)
	if len(v) > 7 && strings.EqualFold(v[:7], "server:") {
		v = strings.TrimSpace(v[7:])
	}
	s := &serverHdr{v: v}
	if v != "" {
		s.h = sip.NewHeader("Server", v)
	}
	serverHeader.Store(s)
}

// BuildReply builds a local reply to req (RFC 3261 8.2.6).
func BuildReply(req *sip.Request, code int, reason string, extra []sip.Header) *sip.Response {
	return &buildReply(req, code, reason, extra).res
}

func buildReply(req *sip.Request, code int, reason string, extra []sip.Header) *replyBox {
	// The reply and the headers it copies live in one allocation (see
	// replyBox); each header is what sip.HeaderClone would make of it.
	box := &replyBox{}
	box.res = *sip.NewResponse(code, reason) // always SIP/2.0, whatever the request said
	res := &box.res
	// Hot path: sipgo's GetHeaders("Via") lower-cases every header name;
	// a type check finds the same headers without allocating.
	firstVia := true
	for _, h := range Headers(req) {
		if !isVia(h) {
			continue
		}
		if v, ok := h.(*sip.ViaHeader); ok && v != nil && firstVia {
			firstVia = false
			box.via = sip.ViaHeader{ProtocolName: v.ProtocolName, ProtocolVersion: v.ProtocolVersion,
				Transport: v.Transport, Host: v.Host, Params: box.clone(v.Params, 0)}
			if v.Port > 0 { // as ViaHeader.Clone
				box.via.Port = v.Port
			}
			res.AppendHeader(&box.via)
			continue
		}
		res.AppendHeader(sip.HeaderClone(h))
	}
	if h := req.From(); h != nil {
		box.from = sip.FromHeader{DisplayName: h.DisplayName, Address: box.uri(&h.Address), Params: box.clone(h.Params, 0)}
		res.AppendHeader(&box.from)
	}
	if h := req.To(); h != nil {
		tag := code > 100 && !h.Params.Has("tag")
		extra := 0
		if tag {
			extra = 1 // room for the tag
		}
		box.to = sip.ToHeader{DisplayName: h.DisplayName, Address: box.uri(&h.Address), Params: box.clone(h.Params, extra)}
		if tag {
			_ = SetParam(&box.to.Params, "tag", ToTag(req)) // "kg" + base 36: always a token
		}
		res.AppendHeader(&box.to)
	}
	if h := req.CallID(); h != nil {
		res.AppendHeader(sip.HeaderClone(h))
	}
	if h := req.CSeq(); h != nil {
		box.cseq = sip.CSeqHeader{SeqNo: h.SeqNo, MethodName: h.MethodName}
		res.AppendHeader(&box.cseq)
	}
	if code == 100 {
		for _, h := range req.GetHeaders("Timestamp") {
			res.AppendHeader(sip.HeaderClone(h))
		}
	}
	for _, h := range extra {
		res.AppendHeader(h)
	}
	if sh := serverHeader.Load(); sh.h != nil {
		res.AppendHeader(sh.h)
	}
	if len(extra) == 0 && code != 100 {
		// No header above can be a Content-Length: append it directly
		// (SetBody would scan all headers for one first).
		res.AppendHeader(&box.cl)
		return box
	}
	res.SetBody(nil)
	if res.ContentLength() == nil {
		res.AppendHeader(&box.cl)
	}
	return box
}

// replyBox holds a reply BuildReply makes, the headers it copies from the
// request, and room for their params, in one allocation instead of one
// per header and per params list. The copies are independent of the request as before; a
// params list that outgrows its room is reallocated by append as usual
// (each has its own capacity, so none can write into another's).
type replyBox struct {
	res    sip.Response
	out    Outgoing // SendReply's
	via    sip.ViaHeader
	from   sip.FromHeader
	to     sip.ToHeader
	cseq   sip.CSeqHeader
	cl     sip.ContentLengthHeader
	params [8]sip.HeaderKV
	used   int
}

// clone copies ps as slices.Clone does (nil stays nil), with room for
// extra more, into the box's params when it fits.
func (b *replyBox) clone(ps sip.HeaderParams, extra int) sip.HeaderParams {
	if ps == nil {
		if extra == 0 {
			return nil
		}
		ps = sip.HeaderParams{}
	}
	n := len(ps) + extra
	if b.used+n > len(b.params) {
		out := make(sip.HeaderParams, len(ps), n)
		copy(out, ps)
		return out
	}
	out := b.params[b.used : b.used+len(ps) : b.used+n]
	b.used += n
	copy(out, ps)
	return out
}

// uri is sip.Uri.Clone, its params in the box.
func (b *replyBox) uri(u *sip.Uri) sip.Uri {
	c := *u
	if u.UriParams != nil {
		c.UriParams = b.clone(u.UriParams, 0)
	}
	if u.Headers != nil {
		c.Headers = b.clone(u.Headers, 0)
	}
	return c
}

// isVia matches what GetHeaders("Via") matches, without lower-casing.
func isVia(h sip.Header) bool {
	if _, ok := h.(*sip.ViaHeader); ok {
		return true
	}
	n := h.Name()
	return len(n) == 3 && strings.EqualFold(n, "via")
}

// Reply answers the request in m statefully when a transaction is bound
// (m.Tx, so retransmissions get the same reply; Kamailio's slb.freply),
// else statelessly with SendReply.
func (m *Msg) Reply(code int, reason string) error {
	if tx, ok := m.Tx.(TxReplier); ok {
		return tx.Reply(m, code, reason)
	}
	return m.SendReply(code, reason)
}

// SendReply sends a stateless local reply to the request in m. ACKs are never answered.
func (m *Msg) SendReply(code int, reason string) error {
	if m.Req == nil {
		return ErrNoRequest
	}
	if m.Req.IsAck() {
		return nil
	}
	if code < 100 || code > 699 {
		return fmt.Errorf("invalid reply code %d (100-699)", code)
	}
	if err := CheckText("reason", reason); err != nil {
		return err
	}
	box := buildReply(m.Req, code, reason, m.ReplyHeaders)
	m.ReplyHeaders = nil
	if err := m.Env.Sender.Send(m.replyOutgoing(&box.out, &box.res, OutReply)); err != nil {
		return err
	}
	m.ReplyCode = code
	if code >= 200 {
		m.Replied = true
	}
	return nil
}

// HostPort splits "host:port" leniently (port 0 when absent).
func HostPort(s string) (string, int) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return s, 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}
