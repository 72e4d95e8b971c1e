package starlark

import (
	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// onsendSender runs ksr_onsend_route (when the script defines it) before
// anything leaves; set_drop() there stops the message, as in Kamailio.
type onsendSender struct {
	e    *Engine
	next core.Sender
}

// WrapSender returns a Sender that honours ksr_onsend_route and then calls next.
func (e *Engine) WrapSender(next core.Sender) core.Sender { return &onsendSender{e: e, next: next} }

func (s *onsendSender) Send(o *core.Outgoing) error {
	p := s.e.current.Load()
	if p == nil || p.callbacks[OnsendRoute] == nil {
		return s.next.Send(o)
	}
	m := &core.Msg{Env: s.e.Env, DstURI: o.Dst.URI(), Proto: o.Dst.Proto}
	switch x := o.Msg.(type) {
	case *sip.Request:
		m.Req = x
	case *sip.Response:
		m.Res = x
	}
	if err := s.e.Run(p, OnsendRoute, core.RouteOnsend, m); err != nil {
		s.e.logScriptErr(OnsendRoute, m, err)
	}
	if m.Dropped {
		s.e.Env.Stats.Counter("core", "drop_onsend").Inc()
		return nil
	}
	return s.next.Send(o)
}
