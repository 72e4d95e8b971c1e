package siputils_test

import (
	"github.com/kamgo/kamgo/modules/core"
	mt "github.com/kamgo/kamgo/modules/moduletest"
)

// The shared helpers, under the short names these tests use.
var (
	newEnv    = mt.NewEnv
	parse     = mt.Parse
	newMsg    = mt.NewMsg
	fn        = mt.Fn
	call      = mt.Call
	mustInt   = mt.MustInt
	setParam  = mt.SetParam
	runScript = mt.RunScript
)

func S(s string) core.Val { return core.Str(s) }
func I(i int) core.Val    { return core.Int(i) }

const invite = `INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-1;rport
From: "Alice" <sip:alice@example.com>;tag=ftag1
To: <sip:bob@example.com>
Call-ID: call-1@192.0.2.10
CSeq: 1 INVITE
Contact: <sip:alice@192.0.2.10:5070>
Max-Forwards: 70`
