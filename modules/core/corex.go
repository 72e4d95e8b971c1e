package core

import (
	"fmt"
	"strings"
)

// corexModule holds Kamailio's corex functions kamgo has: the forced send
// socket (force_send_socket in the native language, set_send_socket in
// KEMI, $fs as a pseudo-variable).
func corexModule(env *Env) *Module {
	return &Module{Name: "corex", Doc: "core extensions: the forced send socket", Funcs: []Func{
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
