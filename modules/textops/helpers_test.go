package textops_test

import (
	"strconv"

	"github.com/emiago/sipgo/sip"
)

func parse2(s string) (sip.Message, error) { return sip.NewParser().ParseSIP([]byte(s)) }

func itoa(i int) string { return strconv.Itoa(i) }
