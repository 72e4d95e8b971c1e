package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzDecode feeds arbitrary bytes to the request decoder. It must never
// panic and must answer with a valid JSON-RPC response (or a non-empty batch
// of them), or with nothing only for notifications.
func FuzzDecode(f *testing.F) {
	for _, tc := range protocolCases {
		f.Add([]byte(tc.in))
	}
	for _, seed := range []string{
		`{"jsonrpc":"2.0","method":"test.echo","params":{"a":"x","b":"12"},"id":[]}`,
		`{"jsonrpc":"2.0","method":"test.sum","params":{"n":null},"id":1}`,
		`{"jsonrpc":"2.0","method":"test.sum","params":[1e400],"id":1}`,
		`{"jsonrpc":"2.0","method":"system.methodHelp","params":{"name":"test.sum"},"id":1}`,
		`[[]]`, `[{}]`, `{}`, `null`, `"x"`, `{"jsonrpc":"2.0","id":1}`,
		"\xef\xbb\xbf{}", `{"jsonrpc":"2.0","method":"test.admin","id":1,"id":2}`,
	} {
		f.Add([]byte(seed))
	}
	s := NewServer(Config{})
	for _, m := range testMethods() {
		s.MustRegister(m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		reply, _ := s.handle(context.Background(), RoleAdmin, data)
		if reply == nil {
			if !allNotifications(data) {
				t.Fatalf("no response for %q", data)
			}
			return
		}
		out := reply.Bytes()
		reply.release()
		if !utf8.Valid(out) {
			t.Fatalf("invalid UTF-8 in response %q for %q", out, data)
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON response %q for %q", out, data)
		}
		out = bytes.TrimSpace(out)
		if out[0] == '[' {
			var items []json.RawMessage
			if err := json.Unmarshal(out, &items); err != nil || len(items) == 0 {
				t.Fatalf("bad batch response %q", out)
			}
			for _, it := range items {
				validResponse(t, it)
			}
			return
		}
		validResponse(t, out)
	})
}

func validResponse(t *testing.T, raw json.RawMessage) {
	t.Helper()
	m := checkResponse(t, raw)
	if e, ok := m["error"]; ok {
		var er struct {
			Code    *int    `json:"code"`
			Message *string `json:"message"`
		}
		if json.Unmarshal(e, &er) != nil || er.Code == nil || er.Message == nil {
			t.Fatalf("bad error member in %s", raw)
		}
		return
	}
	if k := jsonKind(m["result"]); k != "object" && k != "array" {
		t.Fatalf("result is a %s: %s", k, raw)
	}
}

// allNotifications: data is a request object without id, or a non-empty
// array of such objects.
func allNotifications(data []byte) bool {
	isNote := func(raw json.RawMessage) bool {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return false
		}
		_, hasID := m["id"]
		return !hasID
	}
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var items []json.RawMessage
		if json.Unmarshal(data, &items) != nil || len(items) == 0 {
			return false
		}
		for _, it := range items {
			if !isNote(it) {
				return false
			}
		}
		return true
	}
	return isNote(data)
}
