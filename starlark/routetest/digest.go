package routetest

import (
	"fmt"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	sk "go.starlark.net/starlark"
)

// sipDigest answers the digest challenge in a 401/407 as a client would,
// with core's digest client (the one kamd's uac uses):
// sip.digest(reply, username, password, method=<the reply's CSeq method>,
// uri="sip:" + realm, nc=1, cnonce="0a4f113b", ha1="", body="") returns the
// Authorization/Proxy-Authorization header value. With several challenges
// the strongest algorithm wins; ha1 (an MD5 HA1) replaces the password.
func sipDigest(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	var rv sk.Value
	var user, pass, method, uri, cnonce, ha1, body string
	nc := 1
	if err := sk.UnpackArgs(b.Name(), args, kw, "reply", &rv, "username", &user, "password", &pass,
		"method?", &method, "uri?", &uri, "nc?", &nc, "cnonce?", &cnonce, "ha1?", &ha1, "body?", &body); err != nil {
		return nil, err
	}
	mo, err := toMsgObj(rv)
	if err != nil {
		return nil, err
	}
	res, ok := mo.msg.(*sip.Response)
	if !ok {
		return nil, fmt.Errorf("%s: %q is not a reply", b.Name(), mo.firstLine())
	}
	var values []string
	for _, n := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
		for _, h := range res.GetHeaders(n) {
			values = append(values, h.Value())
		}
		if len(values) > 0 {
			break
		}
	}
	if len(values) == 0 {
		return nil, fmt.Errorf("%s: the reply %q has no WWW-Authenticate or Proxy-Authenticate", b.Name(), mo.firstLine())
	}
	ch, err := core.PickDigestChallenge(values)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	if method == "" {
		method = "REGISTER"
		if cs := res.CSeq(); cs != nil {
			method = string(cs.MethodName)
		}
	}
	if uri == "" {
		uri = "sip:" + ch.Realm
	}
	if cnonce == "" {
		cnonce = "0a4f113b"
	}
	if nc < 1 {
		return nil, fmt.Errorf("%s: nc must be at least 1, got %d", b.Name(), nc)
	}
	v, err := ch.Authorize(core.DigestCredentials{Username: user, Password: pass, HA1: ha1}, method, uri, uint32(nc), cnonce, []byte(body))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	return sk.String(v), nil
}
