package rpc

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestHandleProtectObserve: extra handlers share the listener; Protect
// applies the RPC auth rule; Observe sees wire requests with their code.
func TestHandleProtectObserve(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	s := NewServer(Config{Tokens: map[string]Role{"adm": RoleAdmin, "ro": RoleReadOnly},
		Observe: func(method string, code int) {
			mu.Lock()
			seen[method+" "+strconv.Itoa(code)]++
			mu.Unlock()
		}})
	for _, m := range testMethods() {
		s.MustRegister(m)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secret") })
	s.Handle("/metrics", s.Protect(ok))
	s.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") }))
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for _, tc := range []struct {
		path, token string
		code        int
		body        string
	}{
		{"/metrics", "", 401, ""},
		{"/metrics", "bad", 401, ""},
		{"/metrics", "ro", 200, "secret"},
		{"/metrics", "adm", 200, "secret"},
		{"/", "", 200, "page"},
	} {
		code, body := get(tc.path, tc.token)
		if code != tc.code || tc.body != "" && body != tc.body {
			t.Errorf("GET %s token %q: %d %q, want %d %q", tc.path, tc.token, code, body, tc.code, tc.body)
		}
	}
	// /RPC still goes to the RPC handler, not to "/".
	post := func(token, body string) {
		req, _ := http.NewRequest("POST", ts.URL+"/RPC", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	post("ro", `{"jsonrpc":"2.0","method":"test.echo","params":["x"],"id":1}`)
	post("ro", `{"jsonrpc":"2.0","method":"test.admin","id":2}`)
	post("adm", `[{"jsonrpc":"2.0","method":"nope","id":3},{"jsonrpc":"2.0","method":"test.echo","id":4}]`)
	if _, err := s.Call(t.Context(), RoleAdmin, "test.echo", "in-process"); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"test.echo 0": 1, "test.admin 403": 1, "nope -32601": 1, "test.echo -32602": 1}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(want) {
		t.Errorf("observed %v, want %v", seen, want)
	}
	for k, n := range want {
		if seen[k] != n {
			t.Errorf("observed %q %d times, want %d (all: %v)", k, seen[k], n, seen)
		}
	}
}
