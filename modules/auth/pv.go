package auth

import (
	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// pvCred is the first Digest credentials of the message, as Kamailio's
// $au/$ar read them: Authorization for REGISTER and PUBLISH,
// Proxy-Authorization otherwise. Nothing is verified.
func pvCred(m *core.Msg) *Cred {
	if m.Req == nil {
		return nil
	}
	hf := Proxy
	if m.Req.Method == sip.REGISTER || m.Req.Method == sip.PUBLISH {
		hf = WWW
	}
	for _, h := range core.FindHeaders(m.Req, hf.CredHeader()) {
		if c, err := parseCred(h); err == nil && c != nil {
			return c
		}
	}
	return nil
}

func strOrNull(s string) core.Val {
	if s == "" {
		return core.Null
	}
	return core.Str(s)
}

// credPVs are auth's $au, $ad, $aU and $ar, declared in the module table.
var credPVs = func() []core.PVDef {
	var defs []core.PVDef
	for _, d := range []struct {
		name, doc string
		get       func(c *Cred) string
	}{
		{"au", "auth username from the credentials (user part, before '@')", func(c *Cred) string { return c.User }},
		{"ad", "auth username's domain part (after '@'), else $null", func(c *Cred) string { return c.Domain }},
		{"aU", "auth username as sent (user@domain when it has one)", func(c *Cred) string { return c.Username }},
		{"ar", "auth realm from the credentials", func(c *Cred) string { return c.Realm }},
	} {
		get := d.get
		defs = append(defs, core.PVDef{Name: d.name, Doc: d.doc, Get: func(m *core.Msg, _ string) core.Val {
			c := pvCred(m)
			if c == nil {
				return core.Null
			}
			return strOrNull(get(c))
		}})
	}
	return defs
}()
