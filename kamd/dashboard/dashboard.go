// Package dashboard is kamd's live web dashboard, served at / by the RPC
// listener (same address, same TLS). The page is plain HTML, CSS and
// JavaScript embedded in the binary: no build step, no CDN, nothing
// fetched from the network. It talks to kamd only through JSON-RPC over
// /ws (the methods and events any client uses), so it needs no auth of its
// own: the websocket asks for the token, and the server checks each call's
// role.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Files is the page's files (index.html, app.js, app.css).
func Files() fs.FS {
	sub, _ := fs.Sub(assets, "assets")
	return sub
}

// csp keeps the page to its own files and kamd's websocket.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// Handler serves the page: / is index.html, /app.js and /app.css the rest.
// Anything else is 404 (the mux sends every unknown path here).
func Handler() http.Handler {
	files := Files()
	fsrv := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/")
		if name == "" {
			name = "index.html"
		}
		if name == "index.html" && r.URL.Path != "/" {
			http.Redirect(w, r, "/", http.StatusMovedPermanently)
			return
		}
		if strings.Contains(name, "/") {
			http.NotFound(w, r)
			return
		}
		if _, err := fs.Stat(files, name); err != nil {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// The files change with the binary: revalidate, never serve an old page.
		h.Set("Cache-Control", "no-cache")
		if name == "index.html" {
			serveIndex(w, r, files)
			return
		}
		fsrv.ServeHTTP(w, r)
	})
}

func serveIndex(w http.ResponseWriter, r *http.Request, files fs.FS) {
	b, err := fs.ReadFile(files, "index.html")
	if err != nil {
		http.Error(w, "index missing", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	w.Write(b)
}
