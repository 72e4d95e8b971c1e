package core

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// ErrLoop refuses to send a request to kamd's own socket: it would come
// straight back and, routed the same way, loop until Max-Forwards runs out
// (or forever, for a script that does not check it).
var ErrLoop = errors.New("routing loop: the next hop is kamd itself")

// ErrExit ends the running callback without error (KSR.x.exit, KSR.x.drop).
var ErrExit = errors.New("exit")

// The core KSR functions (KSR.*, KSR.pv.*, KSR.hdr.*) are exported like any
// module's, under the names "", "pv" and "hdr".
func init() {
	Register(coreModule)
	Register(pvModule)
	Register(hdrModule)
	Register(corexModule)
}

// BoolRet wraps a Go bool as a KSR function's (Val, error) result.
func BoolRet(b bool) (Val, error) { return Bool(b), nil }

// IntRet maps a Go success flag to KEMI's 1 / -1.
func IntRet(ok bool) Val {
	if ok {
		return Int(1)
	}
	return Int(-1)
}

var methodLetters = map[byte]string{
	'I': "INVITE", 'A': "ACK", 'B': "BYE", 'C': "CANCEL", 'R': "REGISTER", 'M': "MESSAGE",
	'O': "OPTIONS", 'S': "SUBSCRIBE", 'P': "PUBLISH", 'N': "NOTIFY", 'U': "UPDATE", 'E': "PRACK",
	'F': "REFER", 'K': "KDMQ", 'G': "GET", 'T': "POST", 'V': "PUT", 'D': "DELETE",
}

func isMethod(m *Msg, list string) bool {
	meth := m.Method()
	for more := true; more; {
		var x string
		x, list, more = strings.Cut(list, "|")
		if strings.EqualFold(strings.TrimSpace(x), meth) {
			return true
		}
	}
	return false
}

func methodFunc(name string) Func {
	return Func{Name: "is_" + name, Ret: RetBool, Doc: "true if the method is " + name,
		Fn: func(m *Msg, _ []Val) (Val, error) { return Bool(strings.EqualFold(m.Method(), name)), nil }}
}

func protoFunc(name string, protos ...string) Func {
	return Func{Name: "is_" + name, Ret: RetBool, Doc: "true if received over " + strings.Join(protos, " or "),
		Fn: func(m *Msg, _ []Val) (Val, error) {
			for _, p := range protos {
				if m.Proto == p {
					return Bool(true), nil
				}
			}
			return Bool(false), nil
		}}
}

func logFunc(name string, level slog.Level) Func {
	return Func{Name: name, Args: []ArgType{ArgStr}, Ret: RetNone,
		Doc: "log at " + name + " (no PV expansion; a trailing newline is trimmed)",
		Fn: func(m *Msg, a []Val) (Val, error) {
			scriptLog(m, level, a[0].Str)
			return Null, nil
		}}
}

func scriptLog(m *Msg, level slog.Level, text string) {
	m.Env.Log.Log(nil, level, strings.TrimRight(text, "\r\n"), "at", m.Pos())
}

func flagFunc(name, doc string, f func(m *Msg, bit uint64) bool) Func {
	return Func{Name: name, Args: []ArgType{ArgInt}, Ret: RetBool, Doc: doc,
		Fn: func(m *Msg, a []Val) (Val, error) {
			if a[0].Int < 0 || a[0].Int > 63 {
				return Null, fmt.Errorf("flag %d out of range 0..63", a[0].Int)
			}
			return Bool(f(m, 1<<uint(a[0].Int))), nil
		}}
}

func coreModule(env *Env) *Module {
	fns := []Func{
		{Name: "is_method", Args: []ArgType{ArgStr}, Ret: RetBool, Doc: "method equals arg (or one of \"A|B\"), case-insensitive",
			Fn: func(m *Msg, a []Val) (Val, error) { return Bool(isMethod(m, a[0].Str)), nil }},
		{Name: "is_method_in", Args: []ArgType{ArgStr}, Ret: RetBool, Doc: "method is one of the letters (I=INVITE A=ACK B=BYE C=CANCEL R=REGISTER M=MESSAGE O=OPTIONS S=SUBSCRIBE P=PUBLISH N=NOTIFY U=UPDATE E=PRACK F=REFER ...)",
			Fn: func(m *Msg, a []Val) (Val, error) {
				meth := m.Method()
				for i := 0; i < len(a[0].Str); i++ {
					name, ok := methodLetters[a[0].Str[i]]
					if !ok {
						return Null, fmt.Errorf("is_method_in: unknown method letter %q", a[0].Str[i])
					}
					if name == meth {
						return Bool(true), nil
					}
				}
				return Bool(false), nil
			}},
	}
	for _, meth := range []string{"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "SUBSCRIBE", "PUBLISH", "NOTIFY", "REFER", "INFO", "UPDATE", "PRACK", "MESSAGE", "KDMQ", "GET", "POST", "PUT", "DELETE"} {
		fns = append(fns, methodFunc(meth))
	}
	fns = append(fns,
		protoFunc("UDP", "udp"), protoFunc("TCP", "tcp"), protoFunc("TLS", "tls"), protoFunc("WS", "ws"),
		protoFunc("WSS", "wss"), protoFunc("WSX", "ws", "wss"), protoFunc("TCPX", "tcp", "tls", "ws", "wss"),
		Func{Name: "is_IPv4", Ret: RetBool, Doc: "source address is IPv4", Fn: func(m *Msg, _ []Val) (Val, error) { return BoolRet(!strings.Contains(m.SrcIP, ":")) }},
		Func{Name: "is_IPv6", Ret: RetBool, Doc: "source address is IPv6", Fn: func(m *Msg, _ []Val) (Val, error) { return BoolRet(strings.Contains(m.SrcIP, ":")) }},
		Func{Name: "is_src_port", Args: []ArgType{ArgInt}, Ret: RetBool, Doc: "source port equals arg", Fn: func(m *Msg, a []Val) (Val, error) { return BoolRet(int64(m.SrcPort) == a[0].Int) }},
		Func{Name: "is_dst_port", Args: []ArgType{ArgInt}, Ret: RetBool, Doc: "local receiving port equals arg", Fn: func(m *Msg, a []Val) (Val, error) { return BoolRet(int64(m.Local.Port) == a[0].Int) }},
		Func{Name: "seturi", Args: []ArgType{ArgStr}, Ret: RetBool, Doc: "rewrite the whole R-URI", Fn: func(m *Msg, a []Val) (Val, error) { return Bool(true), m.SetRURI(a[0].Str) }},
		Func{Name: "setuser", Args: []ArgType{ArgStr}, Ret: RetBool, Doc: "rewrite the R-URI user", Fn: func(m *Msg, a []Val) (Val, error) { return Bool(true), m.SetRURIUser(a[0].Str) }},
		Func{Name: "sethost", Args: []ArgType{ArgStr}, Ret: RetBool, Doc: "rewrite the R-URI host", Fn: func(m *Msg, a []Val) (Val, error) { return Bool(true), m.SetRURIHost(a[0].Str) }},
		Func{Name: "setdsturi", Args: []ArgType{ArgStr}, Ret: RetBool, Doc: "set $du (next hop); an invalid URI is an error (Kamailio returns True)", Fn: func(m *Msg, a []Val) (Val, error) { return Bool(true), m.SetDstURI(a[0].Str) }},
		Func{Name: "resetdsturi", Ret: RetBool, Doc: "clear $du", Fn: func(m *Msg, _ []Val) (Val, error) { m.DstURI = ""; return Bool(true), nil }},
		Func{Name: "isdsturiset", Ret: RetBool, Doc: "true if $du is set", Fn: func(m *Msg, _ []Val) (Val, error) { return BoolRet(m.DstURI != "") }},
		Func{Name: "forward", Ret: RetInt, Routes: RouteRequest | RouteFailure | RouteBranch, Doc: "forward statelessly to $du, else the R-URI; 1 ok, -1 error",
			Fn: func(m *Msg, _ []Val) (Val, error) { return forward(m, "") }},
		Func{Name: "forward_uri", Args: []ArgType{ArgStr}, Ret: RetInt, Routes: RouteRequest | RouteFailure | RouteBranch, Doc: "forward statelessly to the given URI",
			Fn: func(m *Msg, a []Val) (Val, error) { return forward(m, a[0].Str) }},
		Func{Name: "force_rport", Ret: RetBool, Doc: "reply to the source port (RFC 3581) even without ;rport",
			Fn: func(m *Msg, _ []Val) (Val, error) { m.ForceRport(); return Bool(true), nil }},
		Func{Name: "is_myself", Args: []ArgType{ArgStr}, Ret: RetBool, Doc: "URI or host names one of our sockets or aliases",
			Fn: func(m *Msg, a []Val) (Val, error) {
				s := a[0].Str
				if strings.HasPrefix(strings.ToLower(s), "sip") && strings.Contains(s, ":") {
					u, err := ParseURI(s)
					if err != nil {
						return Bool(false), nil
					}
					return BoolRet(m.Env.IsMyself(u.Host, u.Port))
				}
				h, p := HostPort(s)
				return BoolRet(m.Env.IsMyself(h, p))
			}},
		Func{Name: "is_myself_ruri", Ret: RetBool, Doc: "R-URI host is local",
			Fn: func(m *Msg, _ []Val) (Val, error) {
				if m.Req == nil {
					return Bool(false), nil
				}
				return BoolRet(m.Env.IsMyself(m.Req.Recipient.Host, m.Req.Recipient.Port))
			}},
		Func{Name: "is_myself_furi", Ret: RetBool, Doc: "From URI host is local",
			Fn: func(m *Msg, _ []Val) (Val, error) { return myselfAddr(m, true) }},
		Func{Name: "is_myself_turi", Ret: RetBool, Doc: "To URI host is local",
			Fn: func(m *Msg, _ []Val) (Val, error) { return myselfAddr(m, false) }},
		Func{Name: "is_myself_duri", Ret: RetBool, Doc: "$du host is local (false when $du is unset)",
			Fn: func(m *Msg, _ []Val) (Val, error) {
				if m.DstURI == "" {
					return Bool(false), nil
				}
				u, err := ParseURI(m.DstURI)
				if err != nil {
					return Bool(false), nil
				}
				return BoolRet(m.Env.IsMyself(u.Host, u.Port))
			}},
		Func{Name: "is_myself_nhuri", Ret: RetBool, Doc: "next hop ($du, else the R-URI) is local",
			Fn: func(m *Msg, _ []Val) (Val, error) {
				if m.Req == nil {
					return Bool(false), nil
				}
				if m.DstURI != "" {
					if u, err := ParseURI(m.DstURI); err == nil {
						return BoolRet(m.Env.IsMyself(u.Host, u.Port))
					}
					return Bool(false), nil
				}
				return BoolRet(m.Env.IsMyself(m.Req.Recipient.Host, m.Req.Recipient.Port))
			}},
		Func{Name: "is_myself_srcip", Ret: RetBool, Doc: "source IP is one of ours",
			Fn: func(m *Msg, _ []Val) (Val, error) { return BoolRet(m.Env.IsMyself(m.SrcIP, 0)) }},
		flagFunc("setflag", "set message flag", func(m *Msg, b uint64) bool { m.Flags |= b; return true }),
		flagFunc("resetflag", "reset message flag", func(m *Msg, b uint64) bool { m.Flags &^= b; return true }),
		flagFunc("isflagset", "test message flag", func(m *Msg, b uint64) bool { return m.Flags&b != 0 }),
		flagFunc("setbflag", "set branch flag (of branch 0; stored per contact by registrar.save, restored by lookup)", func(m *Msg, b uint64) bool { m.BFlags |= b; return true }),
		flagFunc("resetbflag", "reset branch flag", func(m *Msg, b uint64) bool { m.BFlags &^= b; return true }),
		flagFunc("isbflagset", "test branch flag", func(m *Msg, b uint64) bool { return m.BFlags&b != 0 }),
		logFunc("dbg", slog.LevelDebug), logFunc("info", slog.LevelInfo), logFunc("notice", slog.LevelInfo),
		logFunc("warn", slog.LevelWarn), logFunc("err", slog.LevelError), logFunc("crit", slog.LevelError+4),
		Func{Name: "log", Args: []ArgType{ArgStr, ArgStr}, Ret: RetNone, Doc: "(level, text): level dbg|info|notice|warn|err|crit; unknown logs at err",
			Fn: func(m *Msg, a []Val) (Val, error) {
				lvl, err := ParseLogLevel(a[0].Str)
				if err != nil {
					lvl = slog.LevelError
				}
				scriptLog(m, lvl, a[1].Str)
				return Null, nil
			}},
		Func{Name: "set_drop", Ret: RetNone, Doc: "drop the reply/branch/onsend message when the callback ends",
			Fn: func(m *Msg, _ []Val) (Val, error) { m.Dropped = true; return Null, nil }},
	)
	return &Module{Name: "", Doc: "core KSR functions", Funcs: fns, PVs: corePVs}
}

// StatelessBranch derives the Via branch of a stateless forward so that a
// retransmission (and the CANCEL of an INVITE) maps to the same branch (RFC 3261 16.11).
func StatelessBranch(req *sip.Request) string {
	// FNV-1a 64 computed inline: the same value as hash/fnv over the same
	// bytes, without the hasher, []byte conversions or Via.SentBy's Sprintf.
	h := fnvOffset64
	if v := req.Via(); v != nil {
		if b, ok := v.Params.Get("branch"); ok && strings.HasPrefix(b, "z9hG4bK") {
			h = fnvString(h, b)
			h = fnvString(h, v.Host) // v.SentBy() is host[:port]
			if v.Port > 0 {
				var nb [24]byte
				h = fnvBytes(h, strconv.AppendInt(append(nb[:0], ':'), int64(v.Port), 10))
			}
		} else {
			// RFC 2543 peers: fall back to the transaction-identifying headers.
			if c := req.CallID(); c != nil {
				h = fnvString(h, string(*c))
			}
			if f := req.From(); f != nil {
				t, _ := f.Params.Get("tag")
				h = fnvString(h, t)
			}
			if cs := req.CSeq(); cs != nil {
				var nb [20]byte
				h = fnvBytes(h, strconv.AppendUint(nb[:0], uint64(cs.SeqNo), 10))
			}
			h = fnvString(h, req.Recipient.String())
		}
	}
	var out [9 + 13]byte
	return string(strconv.AppendUint(append(out[:0], "z9hG4bKsl"...), h, 36))
}

// viaBox is our Via and the backing array of its params: the branch,
// and received/rport tm or a NAT helper may add.
type viaBox struct {
	via    sip.ViaHeader
	params [3]sip.HeaderKV
}

// OurVia builds the Via kamd puts on a request leaving from sock. The
// branch is always kamd's own (a hash in base 36); one that is not a
// token would be a bug, so it is replaced by a fixed one rather than written.
func OurVia(sock Socket, branch string) *sip.ViaHeader {
	// The header and room for its params in one allocation (sip.NewParams
	// would be a second one); a param added later grows it as usual.
	return (&viaBox{}).set(sock, branch)
}

func (b *viaBox) set(sock Socket, branch string) *sip.ViaHeader {
	v := &b.via
	*v = sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0",
		Transport: upperProto(sock.Proto), Host: sock.Host(), Port: sock.Port, Params: b.params[:0:len(b.params)]}
	if SetParam(&v.Params, "branch", branch) != nil {
		v.Params.Add("branch", "z9hG4bKkgbad")
	}
	return v
}

// upperProto is strings.ToUpper for a socket's protocol, without
// allocating for the usual ones.
func upperProto(s string) string {
	switch s {
	case "udp":
		return "UDP"
	case "tcp":
		return "TCP"
	case "tls":
		return "TLS"
	case "ws":
		return "WS"
	case "wss":
		return "WSS"
	case "sctp":
		return "SCTP"
	}
	return strings.ToUpper(s)
}

// SendRequest prepends our Via to req, hands it to the Sender and removes
// the Via again, so the script's message is left as it was.
func (m *Msg) SendRequest(req *sip.Request, dst Target, kind OutKind, branch string, idx int) error {
	if m.Env.IsLoop(dst) {
		return ErrLoop
	}
	sock, ok := m.SendSocketFor(dst.Proto)
	if !ok {
		return fmt.Errorf("no %s socket to send to %s", dst.Proto, dst)
	}
	// Our Via and the Outgoing in one allocation: both are done with once
	// Send returns (it serialises synchronously) and the Via is removed.
	b := &sendBox{}
	req.PrependHeader(b.via.set(sock, branch))
	b.out = Outgoing{Kind: kind, Msg: req, Dst: dst, Branch: idx, LocalSocket: m.ForcedSocket(dst.Proto)}
	err := m.Env.Sender.Send(&b.out)
	popTopVia(req)
	return err
}

type sendBox struct {
	via viaBox
	out Outgoing
}

func popTopVia(msg sip.Message) {
	if r, ok := msg.(headerRemover); ok {
		r.RemoveHeader("Via")
	}
}

// PopTopVia removes the first Via header (ours, on relayed replies).
func PopTopVia(msg sip.Message) { popTopVia(msg) }

func forward(m *Msg, uri string) (Val, error) {
	if m.Req == nil {
		return Null, ErrNoRequest
	}
	var dst Target
	if uri != "" {
		u, err := ParseURI(uri)
		if err != nil {
			return Null, err
		}
		dst = TargetOf(&u)
	} else {
		var err error
		if dst, err = m.NextHop(); err != nil {
			return Null, err
		}
	}
	if err := m.SendRequest(m.Req, dst, OutForward, StatelessBranch(m.Req), 0); err != nil {
		m.Env.Log.Warn("forward failed", "dst", dst.String(), "err", err, "at", m.Pos())
		return Int(-1), nil
	}
	m.Forwarded = true
	m.Env.Stats.Counter("core", "fwd_requests").Inc()
	return Int(1), nil
}

// myselfAddr is is_myself_furi / is_myself_turi.
func myselfAddr(m *Msg, from bool) (Val, error) {
	u, _, _, ok := fromOrTo(m, from)
	if !ok {
		return Bool(false), nil
	}
	return BoolRet(m.Env.IsMyself(u.Host, u.Port))
}
