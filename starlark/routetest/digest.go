package routetest

import (
	"fmt"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	sk "go.starlark.net/starlark"
)

// sipDigest answers the digest challenge in a 401/407 as a client would:
// sip.digest(reply, username, password, method="REGISTER", uri=<R-URI of
// the request the reply answers... or "sip:" + realm>, nc=1, cnonce=...)
// returns the Authorization/Proxy-Authorization header value.
func sipDigest(th *sk.Thread, b *sk.Builtin, args sk.Tuple, kw []sk.Tuple) (sk.Value, error) {
	var rv sk.Value
	var user, pass, method, uri, cnonce string
	nc := 1
	if err := sk.UnpackArgs(b.Name(), args, kw, "reply", &rv, "username", &user, "password", &pass,
		"method?", &method, "uri?", &uri, "nc?", &nc, "cnonce?", &cnonce); err != nil {
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
	var h sip.Header
	for _, n := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
		if h = res.GetHeader(n); h != nil {
			break
		}
	}
	if h == nil {
		return nil, fmt.Errorf("%s: the reply %q has no WWW-Authenticate or Proxy-Authenticate", b.Name(), mo.firstLine())
	}
	ch, err := digest.ParseChallenge(h.Value())
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
	cred, err := digest.Digest(ch, digest.Options{Method: method, URI: uri, Username: user, Password: pass, Count: nc, Cnonce: cnonce})
	if err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	return sk.String(cred.String()), nil
}
