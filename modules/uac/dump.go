package uac

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"strconv"
	"strings"

	"github.com/kamgo/kamgo/modules/core"
)

// regCursor is where a paged uac.reg_dump resumes: the first record not yet
// shown, by its position and l_uuid (the position alone would shift when
// records are removed between pages).
type regCursor struct {
	pos  int
	uuid string
}

func (c regCursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(c.pos) + "\x00" + c.uuid))
}

func parseRegCursor(s string) (regCursor, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return regCursor{}, false
	}
	p, uuid, ok := strings.Cut(string(b), "\x00")
	n, err := strconv.Atoi(p)
	if !ok || err != nil || n < 0 {
		return regCursor{}, false
	}
	return regCursor{pos: n, uuid: uuid}, true
}

// DumpPage returns up to limit records (0: all) from cursor on, and the
// cursor of the next page (nil when none remain).
func (u *UAC) DumpPage(secrets bool, limit int, from *regCursor) ([]Rec, *regCursor) {
	u.mu.Lock()
	defer u.unlock()
	now := u.now()
	start := 0
	if from != nil {
		start = min(from.pos, len(u.order))
		if start >= len(u.order) || u.order[start].LUUID != from.uuid {
			for i, r := range u.order {
				if r.LUUID == from.uuid {
					start = i
					break
				}
			}
		}
	}
	end := len(u.order)
	if limit > 0 && start+limit < end {
		end = start + limit
	}
	out := make([]Rec, 0, end-start)
	for _, r := range u.order[start:end] {
		out = append(out, u.dump(r, now, secrets))
	}
	if end < len(u.order) {
		return out, &regCursor{pos: end, uuid: u.order[end].LUUID}
	}
	return out, nil
}

// regDump is reg_dump's result, encoded record by record into the RPC
// reply (which stops at its byte bound). Without a limit it is Kamailio's
// array of records; with one, {"records": [...], "next": cursor}.
type regDump struct {
	recs  []Rec
	paged bool
	next  *regCursor
}

func (x *regDump) WriteJSON(w io.Writer) error {
	put := func(s string) error { _, err := io.WriteString(w, s); return err }
	if x.paged {
		if err := put(`{"records":`); err != nil {
			return err
		}
	}
	if err := put("["); err != nil {
		return err
	}
	for i := range x.recs {
		if i > 0 {
			if err := put(","); err != nil {
				return err
			}
		}
		b, err := json.Marshal(&x.recs[i])
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	if err := put("]"); err != nil {
		return err
	}
	if !x.paged {
		return nil
	}
	if x.next != nil {
		if err := put(`,"next":"` + x.next.String() + `"`); err != nil {
			return err
		}
	}
	return put("}")
}

// MarshalJSON makes the dump a plain JSON value for callers outside RPC.
func (x *regDump) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	err := x.WriteJSON(&b)
	return b.Bytes(), err
}

// hasArg reports whether optional param i was supplied (and not null).
func hasArg(a core.RPCArgs, i int) bool {
	if h, ok := a.(interface{ Has(int) bool }); ok {
		return h.Has(i)
	}
	return i < a.Len()
}

// rpcDump is uac.reg_dump [secrets] [limit] [cursor].
func (u *UAC) rpcDump(ctx context.Context, args core.RPCArgs) (any, error) {
	sec := false
	if hasArg(args, 0) {
		var err error
		if sec, err = wantSecrets(ctx, args, 0); err != nil {
			return nil, err
		}
	}
	limit := 0
	if hasArg(args, 1) {
		n, err := args.Int(1)
		if err != nil || n <= 0 {
			return nil, rpcErr(400, "Invalid Parameter Values: limit must be a number of records above 0")
		}
		limit = n
	}
	var from *regCursor
	if hasArg(args, 2) {
		s, err := args.String(2)
		c, ok := parseRegCursor(s)
		if err != nil || !ok {
			return nil, rpcErr(400, "Invalid Parameter Values: cursor must be the next value of the previous page")
		}
		from = &c
	}
	recs, next := u.DumpPage(sec, limit, from)
	return &regDump{recs: recs, paged: limit > 0 || from != nil, next: next}, nil
}
