package dashboard

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	ts := httptest.NewServer(Handler())
	defer ts.Close()
	for _, tc := range []struct {
		method, path string
		code         int
		ctype, body  string
	}{
		{"GET", "/", 200, "text/html", "<script src=\"app.js\""},
		{"HEAD", "/", 200, "text/html", ""},
		{"GET", "/app.js", 200, "javascript", "new WebSocket("},
		{"GET", "/app.css", 200, "text/css", "body"},
		{"GET", "/index.html", 301, "", ""},
		{"GET", "/nothing", 404, "", ""},
		{"GET", "/a/b.js", 404, "", ""},
		{"GET", "/../go.mod", 404, "", ""},
		{"POST", "/", 405, "", ""},
	} {
		req, _ := http.NewRequest(tc.method, ts.URL+tc.path, nil)
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, res.StatusCode, tc.code)
			continue
		}
		if tc.ctype != "" && !strings.Contains(res.Header.Get("Content-Type"), tc.ctype) {
			t.Errorf("%s %s: Content-Type %q, want %s", tc.method, tc.path, res.Header.Get("Content-Type"), tc.ctype)
		}
		if tc.body != "" && !strings.Contains(string(b), tc.body) {
			t.Errorf("%s %s: body lacks %q", tc.method, tc.path, tc.body)
		}
		if tc.code == 200 && !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("%s %s: no CSP", tc.method, tc.path)
		}
	}
}

// TestNoNetworkResources: the page loads nothing but its own files and
// kamd's websocket (it must work with no network access at all).
func TestNoNetworkResources(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s"'<>)]*`)
	total := 0
	err := fs.WalkDir(Files(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Files(), path)
		if err != nil {
			return err
		}
		total += len(b)
		for _, u := range url.FindAllString(string(b), -1) {
			if u == "http://www.w3.org/2000/svg" { // the SVG namespace, not fetched
				continue
			}
			t.Errorf("%s refers to %s", path, u)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("page size: %d bytes (uncompressed)", total)
}
