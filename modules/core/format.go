package core

import "strings"

// A format string ("from $si:$sp to $hdr(To)") parsed into literal text and
// pseudo-variables, as xlog and pvx.evalx print it.
type formatSeg struct {
	lit string
	pv  *PV
}

const fmtCacheLimit = 2048

// ExpandPV prints s with every pseudo-variable replaced by its value on m,
// as Kamailio's xlog does:
//   - "$name" and "$name(arg)" (nested parentheses allowed: "$sht(t=>$hdr(X))")
//     are replaced when name is a registered PV; a $null value prints "<null>";
//   - "$$" prints one "$";
//   - anything else after a "$" (an unknown name, "$5", a lone "$", a missing
//     ")") is printed as written, so text such as prices or regexes survives.
//
// Parsed formats are cached (bounded), like PV names.
func ExpandPV(m *Msg, s string) string {
	if strings.IndexByte(s, '$') < 0 {
		return s
	}
	segs := parseFormat(m.Env, s)
	if len(segs) == 1 && segs[0].pv == nil {
		return segs[0].lit
	}
	var b strings.Builder
	for _, sg := range segs {
		if sg.pv == nil {
			b.WriteString(sg.lit)
			continue
		}
		b.WriteString(sg.pv.Get(m).String())
	}
	return b.String()
}

// parseFormat resolves PV names against env's modules; the cache is env's.
func parseFormat(env *Env, s string) []formatSeg {
	if env == nil {
		return scanFormat(env, s)
	}
	if segs, ok := env.pvs.fmts.load(s); ok {
		return segs
	}
	segs := scanFormat(env, s)
	env.pvs.fmts.store(s, segs, fmtCacheLimit)
	return segs
}

func isPVNameByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func scanFormat(env *Env, s string) []formatSeg {
	var segs []formatSeg
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			segs = append(segs, formatSeg{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' {
			j := strings.IndexByte(s[i:], '$')
			if j < 0 {
				lit.WriteString(s[i:])
				break
			}
			lit.WriteString(s[i : i+j])
			i += j
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			lit.WriteByte('$')
			i += 2
			continue
		}
		j := i + 1
		for j < len(s) && isPVNameByte(s[j]) {
			j++
		}
		end := j
		if j < len(s) && s[j] == '(' {
			depth := 0
			k := j
			for ; k < len(s); k++ {
				if s[k] == '(' {
					depth++
				} else if s[k] == ')' {
					depth--
					if depth == 0 {
						break
					}
				}
			}
			if k < len(s) {
				end = k + 1
			}
		}
		if end == i+1 {
			lit.WriteByte('$')
			i++
			continue
		}
		pv, err := env.ParsePV(s[i:end])
		if err != nil && end > j {
			// "$ru(" ... is not a PV with an argument: try the bare name.
			if pv2, err2 := env.ParsePV(s[i:j]); err2 == nil {
				pv, err, end = pv2, nil, j
			}
		}
		if err != nil {
			lit.WriteString(s[i:end])
			i = end
			continue
		}
		flush()
		segs = append(segs, formatSeg{pv: pv})
		i = end
	}
	flush()
	return segs
}
