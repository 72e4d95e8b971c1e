package core

import (
	"fmt"
	"strings"
)

// MaxBranches is Kamailio's MAX_BRANCHES: the destination set holds at
// most this many entries (the R-URI included).
const MaxBranches = 12

// Branch is one appended entry of the destination set (Kamailio's
// append_branch): t_relay forks to the R-URI and to every Branch in
// parallel. The R-URI ($ru, $du) stays branch 0.
type Branch struct {
	URI    string // the branch's Request-URI
	DstURI string // its next hop ($du), "" for the URI
	Path   string // Route set to prepend (registrar's Path), "" none
	Q      int    // q × 1000; -1 unspecified (Kamailio's Q_UNSPECIFIED)
	// SendSocket is the forced local socket of the branch (nil: the message's).
	SendSocket *Socket
	// BFlags are the branch's flags ($bf): the contact's cflags for
	// registrar's lookup, the message's for append_branch, as in Kamailio.
	// They replace the message's bflags for this branch.
	BFlags uint64
}

// ExtRURIPath is the Msg.Ext key under which registrar's lookup records the
// Path it prepended as Route for the R-URI's contact: the other branches of
// the destination set must not carry it (they have their own Path).
const ExtRURIPath = "core:ruri_path"

// AppendBranch adds b to the message's destination set, checking its
// URIs. A full set (MaxBranches with the R-URI) is an error, as in Kamailio.
func (m *Msg) AppendBranch(b Branch) error {
	if m.Req == nil {
		return ErrNoRequest
	}
	if len(m.Branches)+1 >= MaxBranches {
		return fmt.Errorf("append_branch: the destination set is full (%d branches)", MaxBranches)
	}
	if _, err := ParseURI(b.URI); err != nil {
		return fmt.Errorf("append_branch: %w", err)
	}
	if b.DstURI != "" {
		if _, err := ParseURI(b.DstURI); err != nil {
			return fmt.Errorf("append_branch: $du: %w", err)
		}
	}
	if err := CheckText("path", b.Path); err != nil {
		return err
	}
	m.Branches = append(m.Branches, b)
	return nil
}

// ClearBranches empties the destination set (t_relay consumes it, like
// Kamailio's clear_branches after forking).
func (m *Msg) ClearBranches() { m.Branches = nil }

// ParseQ reads a q value ("0.5", "1", "0.25") as q × 1000 (Kamailio's
// qvalue_t); "" is -1, unspecified.
func ParseQ(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return -1, nil
	}
	var whole, frac, digits int
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		whole = whole*10 + int(s[i]-'0')
	}
	if i == 0 || whole > 1 {
		return 0, fmt.Errorf("invalid q value %q (0 to 1)", s)
	}
	if i < len(s) {
		if s[i] != '.' {
			return 0, fmt.Errorf("invalid q value %q", s)
		}
		for i++; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' || digits == 3 {
				return 0, fmt.Errorf("invalid q value %q (at most 3 decimals)", s)
			}
			frac = frac*10 + int(s[i]-'0')
			digits++
		}
	}
	for ; digits < 3; digits++ {
		frac *= 10
	}
	q := whole*1000 + frac
	if q > 1000 {
		return 0, fmt.Errorf("invalid q value %q (0 to 1)", s)
	}
	return q, nil
}
