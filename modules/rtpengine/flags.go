package rtpengine

import (
	"fmt"
	"strconv"
	"strings"
)

// ngFlags is a flags string parsed as Kamailio's parse_flags does: known
// words go to their ng keys, "replace-x" to replace, "rtcp-mux-x" to
// rtcp-mux, other words to flags and other key=value pairs to the
// dictionary as they are.
type ngFlags struct {
	dict                             map[string]any
	flags, direction, replace, rtcpM []string
	transport                        int
	callID, fromTag, toTag           string
	fromTagSet, callIDSet            bool
	to                               bool // send the to-tag
	via                              int  // via-branch=1|2 (0: none)
}

var transports = map[int]string{0: "RTP/AVP", 1: "RTP/SAVP", 2: "RTP/AVPF", 3: "RTP/SAVPF", 4: "UDP/TLS/RTP/SAVP", 6: "UDP/TLS/RTP/SAVPF"}

// ParseFlags parses a flags string for operation op ("offer", "answer",
// "delete", "query"); op may change (force-answer).
func parseFlags(s string, op *string) (*ngFlags, error) {
	f := &ngFlags{dict: map[string]any{}, to: *op != "delete"}
	for _, tok := range strings.Fields(s) {
		key, val, hasVal := strings.Cut(tok, "=")
		if key == "" {
			return nil, fmt.Errorf("rtpengine flags: empty key in %q", tok)
		}
		if r, ok := strings.CutPrefix(key, "replace-"); ok {
			f.replace = append(f.replace, r)
			continue
		}
		if r, ok := strings.CutPrefix(key, "rtcp-mux-"); ok {
			f.rtcpM = append(f.rtcpM, r)
			continue
		}
		switch {
		case key == "RTP" && !hasVal:
			f.transport = (f.transport | 0x100) &^ 0x001
		case key == "AVP" && !hasVal:
			f.transport = (f.transport | 0x100) &^ 0x002
		case key == "SRTP" && !hasVal:
			f.transport |= 0x101
		case key == "AVPF" && !hasVal:
			f.transport |= 0x102
		case key == "DTLS" && !hasVal:
			f.transport |= 0x104
		case key == "TOS" && hasVal:
			n, _ := strconv.Atoi(val)
			f.dict["TOS"] = int64(n)
		case key == "to-tag":
			if hasVal {
				f.toTag = val
			}
			f.to = true
		case key == "RTP/AVP" && !hasVal:
			f.transport = 0x100
		case key == "RTP/AVPF" && !hasVal:
			f.transport = 0x102
		case key == "RTP/SAVP" && !hasVal:
			f.transport = 0x101
		case key == "RTP/SAVPF" && !hasVal:
			f.transport = 0x103
		case key == "UDP/TLS/RTP/SAVP" && !hasVal:
			f.transport = 0x104
		case key == "UDP/TLS/RTP/SAVPF" && !hasVal:
			f.transport = 0x106
		case key == "call-id":
			if !hasVal {
				return nil, fmt.Errorf("rtpengine flags: call-id: missing value")
			}
			f.callID, f.callIDSet = val, true
		case key == "from-tag":
			if !hasVal {
				return nil, fmt.Errorf("rtpengine flags: from-tag: missing value")
			}
			f.fromTag, f.fromTagSet = val, true
		case (key == "internal" || key == "external") && !hasVal:
			f.direction = append(f.direction, key)
		case key == "direction" && hasVal:
			f.direction = append(f.direction, val)
		case key == "via-branch":
			switch val {
			case "1":
				f.via = 1
			case "2":
				f.via = 2
			default:
				return nil, fmt.Errorf("rtpengine flags: via-branch=%q: want 1 or 2", val)
			}
		case key == "repacketize":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("rtpengine flags: repacketize=%q: invalid value", val)
			}
			f.dict["repacketize"] = int64(n)
		case key == "force-answer" && !hasVal:
			if *op != "offer" {
				return nil, fmt.Errorf("rtpengine flags: cannot force answer in non-offer command")
			}
			*op = "answer"
		case key == "delete-delay" && hasVal:
			// Kamailio sends both: the integer and, falling through to
			// its generic case, the pair as given.
			n, _ := strconv.Atoi(val)
			f.dict["delete delay"] = int64(n)
			f.dict[key] = val
		case hasVal:
			f.dict[key] = val
		default:
			f.flags = append(f.flags, key)
		}
	}
	if len(f.direction) > 0 {
		f.dict["direction"] = f.direction
	}
	if len(f.flags) > 0 {
		f.dict["flags"] = f.flags
	}
	if len(f.replace) > 0 {
		f.dict["replace"] = f.replace
	}
	if f.transport&0x100 != 0 {
		if t, ok := transports[f.transport&0x7]; ok {
			f.dict["transport-protocol"] = t
		}
	}
	if len(f.rtcpM) > 0 {
		f.dict["rtcp-mux"] = f.rtcpM
	}
	return f, nil
}
