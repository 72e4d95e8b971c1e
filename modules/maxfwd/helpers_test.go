package maxfwd_test

import (
	"github.com/emiago/sipgo/sip"
)

func genericMF(v string) sip.Header { return sip.NewHeader("Max-Forwards", v) }
