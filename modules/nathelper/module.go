package nathelper

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

func (n *NH) module() *core.Module {
	s, i := core.ArgStr, core.ArgInt
	fn := func(name string, args []core.ArgType, doc string, f func(m *core.Msg, a []core.Val) (core.Val, error)) core.Func {
		return core.Func{Name: name, Args: args, Ret: core.RetInt, Doc: doc, Fn: f}
	}
	intParam := func(name string, def int, doc string, check func(core.Val) error, p *atomic.Int64) core.Param {
		return core.Param{Name: name, Type: i, Default: core.Int(def), Doc: doc, Check: check,
			Set: func(v core.Val) error { p.Store(v.Int); return nil },
			Get: func() core.Val { return core.Int(int(p.Load())) }}
	}
	strParam := func(name, def, doc string, check func(core.Val) error, p *atomic.Pointer[string]) core.Param {
		return core.Param{Name: name, Type: s, Default: core.Str(def), Doc: doc, Check: check,
			Set: func(v core.Val) error { x := v.Str; p.Store(&x); return nil },
			Get: func() core.Val { return core.Str(*p.Load()) }}
	}
	flagCheck := func(name string) func(core.Val) error {
		return func(v core.Val) error {
			if v.Int < -1 || v.Int > 63 {
				return fmt.Errorf("%s %d: want a branch flag 0-63 (or -1: none)", name, v.Int)
			}
			return nil
		}
	}
	return core.ApplyDefaults(&core.Module{
		Name:  "nathelper",
		Doc:   "NAT traversal helpers: detect UAs behind NAT, fix Contact/SDP/received, ;alias, SIP keepalives to registered contacts",
		Needs: []string{"usrloc"},
		Params: []core.Param{
			intParam("natping_interval", 0, "seconds between two keepalives to one registered contact (0: no keepalives); the pings of an interval are spread over it, one slice per second", core.CheckNonNegative("natping_interval"), &n.natpingInterval),
			intParam("ping_nated_only", 0, "1: ping only contacts whose cflags carry usrloc's nat_bflag", core.Check01("ping_nated_only"), &n.pingNatedOnly),
			intParam("sipping_bflag", -1, "branch flag that marks, at save(), the contacts to ping with SIP requests (stored in cflags); -1: every contact is pinged with SIP (kamd sends no raw UDP pings)", flagCheck("sipping_bflag"), &n.sippingBflag),
			strParam("sipping_from", defaultSippingFr, "From URI of the keepalive requests", func(v core.Val) error {
				_, err := core.ParseURI(v.Str)
				return err
			}, &n.sippingFrom),
			strParam("sipping_method", "OPTIONS", "method of the keepalive requests", func(v core.Val) error {
				if v.Str == "" || strings.ToUpper(v.Str) != v.Str || strings.ContainsAny(v.Str, " \t\r\n;:") {
					return fmt.Errorf("sipping_method %q: want a method name in capitals", v.Str)
				}
				return nil
			}, &n.sippingMethod),
			intParam("keepalive_timeout", 0, "seconds after which a pinged contact that has answered no keepalive (nor registered again) is removed from usrloc (0: never); counted in nathelper:natping_expired", core.CheckNonNegative("keepalive_timeout"), &n.keepaliveTimeout),
			strParam("received_avp", "", "accepted for Kamailio configs and ignored: kamd hands fix_nated_register's address to registrar.save directly, no AVP is needed", nil, &n.receivedAVP),
		},
		Funcs: []core.Func{
			fn("nat_uac_test", []core.ArgType{i}, "(flags) 1 if any selected test says the UA is behind NAT, else -1. 1 Contact host private (RFC 1918/6598), 2 top Via host differs from the source address, 4 top Via host private, 8 an SDP c= address private, 16 top Via port differs from the source port, 32 source address private, 64 received over WebSocket, 128 Contact port differs from the source port, 256 an SDP c= address differs from the source address",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return n.natUACTest(m, a[0].Int) }),
			fn("fix_nated_contact", nil, "rewrite the Contact URI's host and port to the source address and port; 1, -1 no Contact",
				func(m *core.Msg, _ []core.Val) (core.Val, error) { return n.fixNatedContact(m) }),
			fn("fix_nated_register", nil, "REGISTER: keep the source (sip:ip:port[;transport=x]) for registrar.save, which stores it as the contacts' received; lookup then sends to it ($du). 1, -1 not a REGISTER",
				func(m *core.Msg, _ []core.Val) (core.Val, error) { return n.fixNatedRegister(m) }),
			fn("add_rcv_param", []core.ArgType{i}, "(flag) add ;received=\"sip:ip:port\" to the Contact (flag 1: as a URI parameter); on a REGISTER save() stores it as received. 1, -1 no Contact",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return n.addRcvParam(m, a[0].Int) }),
			fn("set_contact_alias", nil, "add ;alias=ip~port~proto (the source) to the Contact URI unless it is the source already; 1, -1 no Contact",
				func(m *core.Msg, _ []core.Val) (core.Val, error) { return n.setContactAlias(m) }),
			fn("add_contact_alias", nil, "add ;alias=ip~port~proto (the source) to the Contact URI; 1 added, 2 not needed (the Contact has the source address, port and ;transport — without ;transport it never has, as in Kamailio — or an alias already, or there is no Contact), -1 error",
				func(m *core.Msg, _ []core.Val) (core.Val, error) { return n.addContactAlias(m, "", 0, "") }),
			fn("add_contact_alias_addr", []core.ArgType{s, s, s}, "(ip, port, proto) add ;alias with the given address; 1, 2, -1 as add_contact_alias",
				func(m *core.Msg, a []core.Val) (core.Val, error) {
					var port int
					if _, err := fmt.Sscanf(a[1].Str, "%d", &port); err != nil {
						return core.Null, fmt.Errorf("add_contact_alias_addr: port %q: %v", a[1].Str, err)
					}
					return n.addContactAlias(m, a[0].Str, port, a[2].Str)
				}),
			fn("handle_ruri_alias", nil, "R-URI with ;alias=ip~port~proto: set $du to that address and remove the param; 1 done, 2 no alias, -1 bad alias",
				func(m *core.Msg, _ []core.Val) (core.Val, error) { return n.handleRURIAlias(m) }),
			fn("fix_nated_sdp", []core.ArgType{i}, "(flags) 0x01 add a=direction:active, 0x02 rewrite c= (and a=rtcp's address) to the source address, 0x04 add a=nortpproxy:yes, 0x08 rewrite o=; Content-Length follows. 1 an address replaced, 2 none (lines may have been added), -1 no SDP",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return n.fixNatedSDP(m, a[0].Int, "") }),
			fn("fix_nated_sdp_ip", []core.ArgType{i, s}, "(flags, ip) fix_nated_sdp with the given address instead of the source",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return n.fixNatedSDP(m, a[0].Int, a[1].Str) }),
			fn("is_rfc1918", []core.ArgType{s}, "(ip) 1 if the address is private (RFC 1918, RFC 6598, 192.0.0.0/29, fc00::/7), else -1",
				func(m *core.Msg, a []core.Val) (core.Val, error) { return n.isRFC1918(a[0].Str), nil }),
		},
		Start: func(ctx context.Context) error { n.pinger.start(); return nil },
		Stop:  func() { n.pinger.stop(); instances.Drop(n.env, n) },
		OnReply: func(m *core.Msg) bool {
			if m.Res != nil && m.Res.CSeq() != nil && m.Res.CSeq().MethodName != sip.RequestMethod(*n.sippingMethod.Load()) {
				return false
			}
			return n.pinger.onReply(m)
		},
	})
}
