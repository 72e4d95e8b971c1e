package tm

import (
	"net"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/core/dnsres"
)

// DNS for relayed requests (RFC 3263): a next hop named by host is
// resolved by the Env's resolver (kamd wires one; route tests do not, so
// their next hops stay as written) into ordered targets. The branch goes to
// the first; when it fails with 503 or times out, tm sends a new branch to
// the next target before the failure route runs (Kamailio's
// use_dns_failover). TLS next hops keep their name (the certificate is
// checked against it) and are resolved by the transport.

// dnsHop resolves m's next hop (its $du, else its R-URI); on no resolver,
// an IP literal, a maddr, TLS or a failed lookup it returns dst unchanged.
func (t *TM) dnsHop(m *core.Msg, dst core.Target) (core.Target, []core.Target) {
	r := dnsres.For(t.env)
	if r == nil || net.ParseIP(core.BareHost(dst.Host)) != nil || dst.Proto == "tls" || dst.Proto == "wss" {
		return dst, nil
	}
	var u sip.Uri
	if m.DstURI != "" {
		var err error
		if u, err = core.ParseURI(m.DstURI); err != nil {
			return dst, nil
		}
	} else {
		u = m.Req.Recipient
	}
	if mad, ok := u.UriParams.Get("maddr"); ok && mad != "" {
		return dst, nil
	}
	proto := ""
	if tp, ok := u.UriParams.Get("transport"); ok && tp != "" {
		proto = strings.ToLower(tp)
	}
	if strings.EqualFold(u.Scheme, "sips") {
		return dst, nil
	}
	ts, err := r.Resolve(dst.Host, u.Port, proto)
	if err != nil || len(ts) == 0 {
		t.env.Log.Warn("tm: DNS lookup failed", "host", dst.Host, "err", err, "at", m.Pos())
		return dst, nil
	}
	return ts[0], ts[1:]
}

// dnsFailover sends a new branch to the next DNS target of a branch that
// failed with 503, timed out or could not be sent; true when one went out
// (the transaction goes on). maybeComplete asks before it concludes.
func (tx *Tx) dnsFailover() bool {
	for {
		tx.mu.Lock()
		if tx.pending() || tx.finalSent || tx.inFailure || tx.deleted || tx.canceled || tx.local != nil {
			tx.mu.Unlock()
			return false
		}
		var from *branch
		for _, b := range tx.branches {
			if b.final && len(b.dnsRest) > 0 && (b.code == 503 || b.timedOut || b.code == 0) {
				from = b
			}
		}
		if from == nil {
			tx.mu.Unlock()
			return false
		}
		next := from.dnsRest[0]
		tx.dnsNext, from.dnsRest = from.dnsRest[1:], nil
		req := from.req.Clone()
		o := tx.origin
		m := &core.Msg{Env: o.Env, Req: req, Proto: o.Proto, SrcIP: o.SrcIP, SrcPort: o.SrcPort, Local: o.Local,
			SendSocket: from.sock, Flags: tx.flags, BFlags: from.bflags, Tx: tx}
		tx.mu.Unlock()
		core.PopTopVia(req) // our Via of the failed branch; addBranch writes a new one
		tx.tm.env.Log.Info("tm: DNS failover to the next target", "from", from.dst.String(), "code", from.code, "to", next.String())
		if err := tx.addBranch(m, req, next); err == nil {
			return true
		}
	}
}
