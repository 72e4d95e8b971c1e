package core

import (
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// corexModule holds Kamailio's corex functions kamgo has: the forced send
// socket (force_send_socket in the native language, set_send_socket in
// KEMI, $fs as a pseudo-variable).
func corexModule(env *Env) *Module {
	return &Module{Name: "corex", Doc: "core extensions: the forced send socket, branches, header tests, raw sends", Funcs: []Func{
		{Name: "append_branch", Ret: RetInt, Routes: RouteRequest | RouteFailure,
			Doc: "add the current R-URI (with $du) as a new branch of the destination set: t_relay forks to all; 1 ok, -1 error (set full)",
			Fn: func(m *Msg, _ []Val) (Val, error) {
				if m.Req == nil {
					return Null, ErrNoRequest
				}
				return branchRet(m, m.AppendBranch(Branch{URI: m.Req.Recipient.String(), DstURI: m.DstURI, Q: -1, BFlags: m.BFlags}))
			}},
		{Name: "append_branch_uri", Args: []ArgType{ArgStr}, Ret: RetInt, Routes: RouteRequest | RouteFailure,
			Doc: "(uri) add a branch to uri; 1 ok, -1 error",
			Fn: func(m *Msg, a []Val) (Val, error) {
				return branchRet(m, m.AppendBranch(Branch{URI: a[0].Str, Q: -1, BFlags: m.BFlags}))
			}},
		{Name: "append_branch_uri_q", Args: []ArgType{ArgStr, ArgStr}, Ret: RetInt, Routes: RouteRequest | RouteFailure,
			Doc: "(uri, q) add a branch to uri with q (\"0.5\"); 1 ok, -1 error",
			Fn: func(m *Msg, a []Val) (Val, error) {
				q, err := ParseQ(a[1].Str)
				if err != nil {
					return branchRet(m, err)
				}
				return branchRet(m, m.AppendBranch(Branch{URI: a[0].Str, Q: q, BFlags: m.BFlags}))
			}},
		{Name: "has_ruri_user", Ret: RetInt, Doc: "1 if the R-URI has a user part, -1 if not (or not a request)",
			Fn: func(m *Msg, _ []Val) (Val, error) { return IntRet(m.Req != nil && m.Req.Recipient.User != ""), nil }},
		{Name: "has_user_agent", Ret: RetInt, Doc: "1 if the message has a User-Agent header, -1 if not",
			Fn: func(m *Msg, _ []Val) (Val, error) {
				msg := m.Message()
				return IntRet(msg != nil && FirstHeader(msg, "User-Agent") != nil), nil
			}},
		{Name: "send_data", Args: []ArgType{ArgStr, ArgStr}, Ret: RetInt,
			Doc: "(uri, data) send data (a whole SIP message) to uri's address statelessly; 1 ok, -1 error (kamgo sends only parseable SIP messages)",
			Fn:  func(m *Msg, a []Val) (Val, error) { return IntRet(sendData(m, a[0].Str, a[1].Str) == nil), nil }},

		{Name: "set_send_socket", Args: []ArgType{ArgStr}, Ret: RetInt,
			Doc: "(\"proto:ip:port\") replies (sl, tm) and relayed requests of this message leave from that local socket, which must be listening (Env sockets, also runtime ones); \"\" clears it. 1 ok, -1 no such socket",
			Fn: func(m *Msg, a []Val) (Val, error) {
				return IntRet(m.SetSendSocket(a[0].Str) == nil), nil
			}},
	}, PVs: []PVDef{
		{Name: "fs", Doc: "forced send socket proto:ip:port (set_send_socket); $null when none",
			Get: func(m *Msg, _ string) Val {
				if m.SendSocket == nil {
					return Null
				}
				return Str(m.SendSocket.String())
			},
			Set: func(m *Msg, _ string, v Val) error {
				if v.IsNull() {
					return m.SetSendSocket("")
				}
				return m.SetSendSocket(valStr(v))
			}},
	}}
}

// SetSendSocket sets the forced send socket from "proto:ip:port" ("" clears
// it). The socket must be one kamd listens on.
func (m *Msg) SetSendSocket(spec string) error {
	if strings.TrimSpace(spec) == "" {
		m.SendSocket = nil
		return nil
	}
	s, err := ParseSocket(spec)
	if err != nil {
		return err
	}
	for _, x := range m.Env.Sockets() {
		if x.Proto == s.Proto && x.Port == s.Port && normHost(x.IP) == normHost(s.IP) {
			x := x
			m.SendSocket = &x
			return nil
		}
	}
	return fmt.Errorf("send socket %s: kamd does not listen there", s)
}

// SendSocketFor is the socket a request to proto leaves from: the forced
// one when its protocol matches, else the first socket of proto.
func (m *Msg) SendSocketFor(proto string) (Socket, bool) {
	if m.SendSocket != nil && m.SendSocket.Proto == proto {
		return *m.SendSocket, true
	}
	return m.Env.SocketFor(proto)
}

// ForcedSocket is the forced send socket if it serves proto, else nil (a
// forced UDP socket does not apply to a TCP next hop).
func (m *Msg) ForcedSocket(proto string) *Socket {
	if m.SendSocket != nil && m.SendSocket.Proto == proto {
		return m.SendSocket
	}
	return nil
}

func branchRet(m *Msg, err error) (Val, error) {
	if err != nil {
		m.Env.Log.Warn(err.Error(), "at", m.Pos())
		return Int(-1), nil
	}
	return Int(1), nil
}

// sendData is corex send_data: the data goes through the one door as a
// message, so it must parse as SIP (kamgo has no raw-bytes send).
func sendData(m *Msg, uri, data string) error {
	u, err := ParseURI(uri)
	if err != nil {
		m.Env.Log.Warn("send_data: "+err.Error(), "at", m.Pos())
		return err
	}
	msg, err := sip.NewParser().ParseSIP([]byte(data))
	if err != nil {
		m.Env.Log.Warn("send_data: the data is not a SIP message", "err", err, "at", m.Pos())
		return err
	}
	dst := TargetOf(&u)
	if m.Env.IsLoop(dst) {
		return ErrLoop
	}
	kind := OutLocalRequest
	if _, ok := msg.(*sip.Response); ok {
		kind = OutReply
	}
	if err := m.Env.Sender.Send(&Outgoing{Kind: kind, Msg: msg, Dst: dst, LocalSocket: m.ForcedSocket(dst.Proto)}); err != nil {
		m.Env.Log.Warn("send_data failed", "dst", dst.String(), "err", err, "at", m.Pos())
		return err
	}
	return nil
}
