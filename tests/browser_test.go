package tests

// One headless chromium per test binary (started on first use, stopped by
// TestMain), a new tab per test: what a person sees in the dashboard,
// asserted through the DevTools protocol (chromedp) with real waits for
// text, never with fixed sleeps or timing assertions.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel func()
	err    error
}

// needBrowser returns a new tab's context (closed at cleanup). chromium
// missing fails the test in CI and skips it elsewhere.
func needBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		msg := "chromium not found in PATH (apt-get install -y chromium)"
		if inCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	browser.once.Do(func() {
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
			chromedp.WindowSize(1400, 900))
		actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
		bctx, bcancel := chromedp.NewContext(actx)
		if err := chromedp.Do(bctx); err != nil { // starts the browser
			browser.err = err
		}
		browser.ctx = bctx
		browser.cancel = func() { bcancel(); acancel() }
	})
	if browser.err != nil {
		t.Fatalf("chromium did not start: %v", browser.err)
	}
	tab, cancel := chromedp.NewContext(browser.ctx)
	// Generous: a wait ends as soon as the text is there.
	tctx, tcancel := context.WithTimeout(tab, 60*time.Second)
	t.Cleanup(func() { tcancel(); cancel() })
	return tctx
}

// stopSharedBrowser ends the test binary's chromium (TestMain).
func stopSharedBrowser() {
	if browser.cancel != nil {
		browser.cancel()
	}
}

var artifacts struct {
	once sync.Once
	dir  string
}

// artifactDir is $KAMGO_ARTIFACTS or a temporary directory that is kept
// (its path is logged): screenshots never go into the repository.
func artifactDir(t *testing.T) string {
	artifacts.once.Do(func() {
		if d := os.Getenv("KAMGO_ARTIFACTS"); d != "" {
			artifacts.dir = d
			os.MkdirAll(d, 0o755)
			return
		}
		d, err := os.MkdirTemp("", "kamgo-artifacts-")
		if err == nil {
			artifacts.dir = d
		}
	})
	return artifacts.dir
}

// screenshot saves the tab as NAME.png in the artifact directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := artifactDir(t)
	if dir == "" {
		return
	}
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", p)
}

// waitText waits until the element matching sel contains want.
func waitText(t *testing.T, ctx context.Context, sel, want string) {
	t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.includes(%q); })()`, sel, want)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		got, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.Evaluate[string](fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.textContent : "(no element)"; })()`, sel)))
		t.Fatalf("waiting for %q in %s: %v; it shows %q", want, sel, err, truncateStr(strings.TrimSpace(got), 400))
	}
}

// waitJS waits until the expression is true.
func waitJS(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// evalString evaluates js (awaiting a promise) to a string.
func evalString(t *testing.T, ctx context.Context, js string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return s
}
