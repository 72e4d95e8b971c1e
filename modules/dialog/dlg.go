package dialog

import (
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// Kamailio's dialog states (dlg_state in $dlg(state), dlg.list).
const (
	StateUnconfirmed = 1 // INVITE seen, no reply with a To tag
	StateEarly       = 2 // a provisional with a To tag
	StateConfirmedNA = 3 // 2xx, not ACKed yet
	StateConfirmed   = 4 // 2xx ACKed
	StateDeleted     = 5 // ended (BYE, failure, timeout)
)

// Dialog is one dialog tracked by dlg_manage.
type Dialog struct {
	HEntry, HID uint32
	CallID      string
	FromURI     string
	FromTag     string
	ToURI       string
	ToTag       string
	ReqURI      string

	CallerContact, CalleeContact string
	CallerCSeq, CalleeCSeq       string
	CallerRoute, CalleeRoute     string
	CallerSock, CalleeSock       string
	// caller is where requests to the caller go (the INVITE's source).
	caller core.Target

	State   int
	InitTS  int64 // dlg_manage
	StartTS int64 // answered (2xx)
	EndTS   int64
	// Lifetime is the timeout in seconds once confirmed (default_timeout, dlg_set_timeout).
	Lifetime int
	deadline time.Time
	timer    core.Timer

	vars     map[string]string
	varOrder []string
	profiles []profileLink
	cseqBye  uint32 // CSeq of our next BYE towards each side
}

type profileLink struct{ name, value string }

// Info is a copy of a dialog's data handed to other modules (acc's CDRs).
type Info struct {
	CallID, FromTag, ToTag, FromURI, ToURI string
	StartTS, EndTS                         int64 // unix seconds; StartTS 0 if never answered
	Start, End                             time.Time
	State                                  int
	Vars                                   map[string]string
}

// store holds the dialogs: by Call-ID + From tag (the caller's side) and by
// h_entry/h_id (the RPC's handle).
type store struct {
	mu     sync.Mutex
	byKey  map[string]*Dialog
	byID   map[uint64]*Dialog
	nextID uint32
	size   uint32
}

func newStore(size uint32) *store {
	return &store{byKey: map[string]*Dialog{}, byID: map[uint64]*Dialog{}, size: size}
}

func dlgKey(callID, fromTag string) string { return callID + "\x00" + fromTag }

func hid(he, hi uint32) uint64 { return uint64(he)<<32 | uint64(hi) }

func hashEntry(callID string, size uint32) uint32 {
	h := fnv.New32a()
	h.Write([]byte(callID))
	return h.Sum32() % size
}

// find matches an in-dialog request or reply to a dialog: Call-ID and the
// tags in either direction (a BYE from the callee has them swapped).
func (s *store) find(callID, ftag, ttag string) (*Dialog, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.byKey[dlgKey(callID, ftag)]; d != nil && (ttag == "" || d.ToTag == "" || d.ToTag == ttag) {
		return d, false
	}
	if d := s.byKey[dlgKey(callID, ttag)]; d != nil && ttag != "" && (d.ToTag == "" || d.ToTag == ftag) {
		return d, true // downstream: from the callee
	}
	return nil, false
}

func (s *store) list() []*Dialog {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Dialog, 0, len(s.byID))
	for _, d := range s.byID {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].HEntry != out[j].HEntry {
			return out[i].HEntry < out[j].HEntry
		}
		return out[i].HID < out[j].HID
	})
	return out
}

func tagOf(p sip.HeaderParams) string {
	if p == nil {
		return ""
	}
	t, _ := p.Get("tag")
	return t
}

// msgTags returns Call-ID, From tag and To tag of a message.
func msgTags(msg sip.Message) (string, string, string, bool) {
	cid, f, t := msg.CallID(), msg.From(), msg.To()
	if cid == nil || f == nil || t == nil {
		return "", "", "", false
	}
	return string(*cid), tagOf(f.Params), tagOf(t.Params), true
}

func contactOf(msg sip.Message) string {
	var c *sip.ContactHeader
	switch x := msg.(type) {
	case *sip.Request:
		c = x.Contact()
	case *sip.Response:
		c = x.Contact()
	}
	if c == nil {
		return ""
	}
	return c.Address.String()
}

func routeSet(msg sip.Message) string {
	var parts []string
	for _, h := range msg.GetHeaders("Record-Route") {
		parts = append(parts, h.Value())
	}
	return strings.Join(parts, ",")
}

func cseqOf(msg sip.Message) string {
	if cs := msg.CSeq(); cs != nil {
		return strconv.FormatUint(uint64(cs.SeqNo), 10)
	}
	return "0"
}
