package tm_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// hookSender runs hook once, as the 100 Trying goes out: the CANCEL then
// arrives while t_relay is between its 100 Trying and its first branch.
type hookSender struct {
	next *recorder
	once sync.Once
	hook func()
}

func (h *hookSender) Send(o *core.Outgoing) error {
	err := h.next.Send(o)
	if r, ok := o.Msg.(*sip.Response); ok && r.StatusCode == 100 && h.hook != nil {
		h.once.Do(h.hook)
	}
	return err
}

// A CANCEL handled while t_relay sends its 100 answers 487; the INVITE must
// then not go downstream (a 200 from there would follow the caller's 487),
// and nothing may panic (the transaction's copy of the request is gone).
func TestCancelDuringRelayForwardsNothing(t *testing.T) {
	f := newFixture(t, baseScript)
	hs := &hookSender{next: f.rec}
	f.env.Sender = hs
	c := call{}
	hs.hook = func() {
		m := f.msg("udp", "192.0.2.10:5060")
		m.Req = parse(t, c.cancel()).(*sip.Request)
		f.eng.HandleRequest(m)
	}
	got := f.request(c.raw(), "udp")
	if strings.Contains(f.logs.String(), "panic") {
		t.Fatalf("panic while relaying:\n%s", f.logs.String())
	}
	var saw487 bool
	for _, s := range got {
		if s.isReq("INVITE") {
			t.Errorf("INVITE relayed after the CANCEL was answered:\n%s", s)
		}
		if r := s.res(); r != nil && r.StatusCode == 487 {
			saw487 = true
		}
	}
	if !saw487 {
		t.Errorf("no 487 to the caller; sent:\n%v", got)
	}
}
