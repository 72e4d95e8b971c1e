package tests

// End-to-end tests of the dashboard (issue 11) in a real headless chromium
// against a real kamd with real SIP traffic, and of /metrics parsed with
// the Prometheus text parser.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// dashScript is a registrar (examples/registrar) that also answers OPTIONS
// with 200, plus extra top-level lines (modparams).
func dashScript(t testing.TB, extra string) string {
	src, err := os.ReadFile(filepath.Join(repoRoot, "examples", "registrar", "route.star"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(src), "def ksr_request_route():\n", extra+"\ndef ksr_request_route():\n    if KSR.is_OPTIONS():\n        KSR.sl.send_reply(200, \"Alive\")\n        return\n", 1)
	if s == string(src) {
		t.Fatal("the registrar example has no ksr_request_route")
	}
	return s
}

// dashKamd is a kamd that can be stopped and started again on the same
// SIP and RPC ports (the dashboard's URL stays the same across a restart).
type dashKamd struct {
	t             testing.TB
	Dir, Script   string
	Port, RPCPort int
	tokens        string
	kd            *Kamd
}

func newDashKamd(t testing.TB, script, tokens string) *dashKamd {
	t.Helper()
	d := &dashKamd{t: t, Dir: t.TempDir(), tokens: tokens}
	d.Script = filepath.Join(d.Dir, "route.star")
	if err := os.WriteFile(d.Script, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		d.Port, d.RPCPort = freePort(t), freePort(t)
		err := d.start()
		if err == nil {
			break
		}
		if attempt == 2 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { d.stop() })
	return d
}

func (d *dashKamd) URL() string { return fmt.Sprintf("http://127.0.0.1:%d/", d.RPCPort) }

func (d *dashKamd) start() error {
	k := &Kamd{t: d.t, Port: d.Port, Dir: d.Dir, Script: d.Script, log: &logBuffer{}, done: make(chan struct{})}
	p, rp := strconv.Itoa(d.Port), strconv.Itoa(d.RPCPort)
	args := []string{"-f", d.Script, "--rpc", "127.0.0.1:" + rp, "--db", filepath.Join(d.Dir, "kamgo.db"),
		"-l", "udp:127.0.0.1:" + p, "-l", "tcp:127.0.0.1:" + p}
	if d.tokens != "" {
		tf := filepath.Join(d.Dir, "rpc.tokens")
		if err := os.WriteFile(tf, []byte(d.tokens), 0o600); err != nil {
			return err
		}
		args = append(args, "--rpc-tokens", tf)
	}
	k.cmd = exec.Command(kamdBin, args...)
	k.cmd.Dir = d.Dir
	k.cmd.Env = cleanEnv()
	k.cmd.Stdout, k.cmd.Stderr = k.log, k.log
	if err := k.cmd.Start(); err != nil {
		return err
	}
	go func() { k.err = k.cmd.Wait(); close(k.done) }()
	want := []string{"rpc listening on 127.0.0.1:" + rp, "listening on udp:127.0.0.1:" + p}
	deadline := time.Now().Add(20 * time.Second)
	for !(strings.Contains(k.Log(), want[0]) && strings.Contains(k.Log(), want[1])) {
		select {
		case <-k.done:
			return fmt.Errorf("kamd exited (%v):\n%s", k.err, k.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = k.cmd.Process.Kill()
			<-k.done
			return fmt.Errorf("kamd did not start:\n%s", k.Log())
		}
	}
	d.kd = k
	return nil
}

// stop ends kamd with SIGTERM and requires a clean exit.
func (d *dashKamd) stop() {
	k := d.kd
	if k == nil {
		return
	}
	d.kd = nil
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
		if k.err != nil {
			d.t.Errorf("kamd did not exit cleanly: %v\n%s", k.err, k.Log())
		}
	case <-time.After(15 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.done
		d.t.Errorf("kamd did not exit within 15s of SIGTERM")
	}
	if d.t.Failed() {
		d.t.Logf("kamd log:\n%s", k.Log())
	}
}

// sipClient is a sipgo UA sending requests to kamd over UDP.
type sipClient struct {
	cl   *sipgo.Client
	ua   *sipgo.UserAgent
	kamd string
}

func newSIPClient(t testing.TB, kamdPort int) *sipClient {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("kamgo-dashboard-test"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(); ua.Close() })
	return &sipClient{cl: cl, ua: ua, kamd: "127.0.0.1:" + strconv.Itoa(kamdPort)}
}

// do sends a request for user with method and returns the final status code.
func (c *sipClient) do(t testing.TB, method sip.RequestMethod, user string, hdrs ...string) int {
	t.Helper()
	host, port, _ := strings.Cut(c.kamd, ":")
	p, _ := strconv.Atoi(port)
	req := sip.NewRequest(method, sip.Uri{Scheme: "sip", User: user, Host: host, Port: p})
	if method == sip.REGISTER {
		req.Recipient = sip.Uri{Scheme: "sip", Host: host, Port: p}
	}
	req.AppendHeader(sip.NewHeader("From", "<sip:"+user+"@127.0.0.1>;tag="+randToken()))
	req.AppendHeader(sip.NewHeader("To", "<sip:"+user+"@127.0.0.1>"))
	for _, h := range hdrs {
		name, v, _ := strings.Cut(h, ": ")
		req.AppendHeader(sip.NewHeader(name, v))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.cl.Do(ctx, req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, user, err)
	}
	return res.StatusCode
}

func (c *sipClient) register(t testing.TB, user string) {
	t.Helper()
	if code := c.do(t, sip.REGISTER, user, "Contact: <sip:"+user+"@127.0.0.1:5999>", "Expires: 600"); code != 200 {
		t.Fatalf("REGISTER %s: %d", user, code)
	}
}

// openDashboard opens the page in a new tab, logs in with token when
// given, and waits until it shows "live".
func openDashboard(t *testing.T, ctx context.Context, url, token string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	if token != "" {
		waitJS(t, ctx, "the login form", `!document.getElementById('login').hidden`)
		if err := chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.ID("token"), token),
			chromedp.Click(chromedp.ID("login-submit"))); err != nil {
			t.Fatal(err)
		}
	}
	waitText(t, ctx, "#conn", "live")
}

func showPanel(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#tabs a[data-panel="`+name+`"]`))); err != nil {
		t.Fatalf("panel %s: %v", name, err)
	}
	waitJS(t, ctx, "panel "+name, `!document.getElementById('panel-`+name+`').hidden`)
}

// TestDashboardRegistrations: a REGISTER sent by a sipgo client appears in
// the registrations panel; the overview shows version, script and sockets.
func TestDashboardRegistrations(t *testing.T) {
	ctx := needBrowser(t)
	// An htable whose items expire within a second or two: a second event
	// topic for the events panel's filter.
	k := newDashKamd(t, dashScript(t, `modparam("htable", "htable", "evt=>autoexpire=1")
modparam("htable", "timer_interval", 1)`), "")
	openDashboard(t, ctx, k.URL(), "")
	waitText(t, ctx, "#ov-version", "kamd ")
	waitText(t, ctx, "#ov-sockets", strconv.Itoa(k.Port))
	waitText(t, ctx, "#ov-script", "v1 ")
	showPanel(t, ctx, "registrations")
	c := newSIPClient(t, k.Port)
	// The issue asks for a REGISTER to show "within a second"; the bound is
	// 3 s so that -race and a loaded CI machine do not make it flaky, while
	// a panel that only catches up on its periodic refresh still fails.
	sent := time.Now()
	c.register(t, "alice")
	waitText(t, ctx, "#reg-table", "alice")
	if d := time.Since(sent); d > 3*time.Second {
		t.Errorf("the REGISTER appeared after %v, want within a second (3 s allowed)", d)
	}
	waitText(t, ctx, "#reg-table", "sip:alice@127.0.0.1:5999")
	c.register(t, "bob")
	waitText(t, ctx, "#reg-table", "bob")
	// Search narrows the list.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("reg-search"), "bo")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "alice filtered out", `!document.getElementById('reg-table').textContent.includes('alice')`)
	waitText(t, ctx, "#reg-count", "1 AoRs, 1 contacts matching")
	screenshot(t, ctx, "registrations")
	// Remove (admin): the contact goes, in kamd too.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#reg-table tr[data-aor="bob"] button`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "bob removed", `!document.getElementById('reg-table').textContent.includes('bob')`)
	_, dump := postRPC(t, fmt.Sprintf("http://127.0.0.1:%d/RPC", k.RPCPort), "", call("ul.dump"))
	if b, _ := json.Marshal(dump["result"]); strings.Contains(string(b), "bob") || !strings.Contains(string(b), "alice") {
		t.Errorf("after Remove, ul.dump: %s", b)
	}
	// Traffic shows on the charts' legend as a rate.
	for i := 0; i < 5; i++ {
		c.do(t, sip.OPTIONS, "ping")
	}
	showPanel(t, ctx, "overview")
	waitJS(t, ctx, "a chart line", `document.querySelectorAll('#chart-traffic polyline').length > 0`)
	screenshot(t, ctx, "overview")
	// The event stream panel lists the subscription's events: a reload.
	showPanel(t, ctx, "events")
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[any](`window.kamd.call('app_starlark.reload').then(() => 1)`, chromedp.EvalAwaitPromise)(ctx, t)
		return err
	})); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#ev-table", "loaded")
	screenshot(t, ctx, "events")
	// The topic filter keeps one topic's rows: htable's (an item expiring),
	// not the reload's (script).
	evalString(t, ctx, `window.kamd.call('htable.sets', ['evt', 'gone', 'soon']).then(() => '')`)
	waitText(t, ctx, "#ev-table", "gone")
	evalString(t, ctx, `(() => { const s = document.getElementById('ev-topic'); s.value = 'htable'; s.dispatchEvent(new Event('change')); return ''; })()`)
	waitJS(t, ctx, "only htable rows", `(() => { const rs = [...document.querySelectorAll('#ev-table tbody tr')]; return rs.length > 0 && rs.every((r) => r.dataset.topic === 'htable'); })()`)
	if got := evalString(t, ctx, `document.getElementById('ev-table').tBodies[0].textContent`); strings.Contains(got, "loaded") || !strings.Contains(got, "gone") {
		t.Errorf("events filtered on htable: %.300s", got)
	}
	evalString(t, ctx, `(() => { const s = document.getElementById('ev-topic'); s.value = 'script'; s.dispatchEvent(new Event('change')); return ''; })()`)
	waitJS(t, ctx, "only script rows", `(() => { const rs = [...document.querySelectorAll('#ev-table tbody tr')]; return rs.length > 0 && rs.every((r) => r.dataset.topic === 'script'); })()`)
}

// TestDashboardLargeRegistrar: with more AoRs than one reply may hold
// (a small rpc_max_response_bytes, so a full ul.dump is 507), /metrics
// still counts every contact (no dump at scrape) and the registrations
// panel shows its first page with "showing N of M". An ro token sees no
// Remove button and no trunk buttons.
func TestDashboardLargeRegistrar(t *testing.T) {
	ctx := needBrowser(t)
	const aors = 1200
	k := newDashKamd(t, dashScript(t, `core_param("rpc_max_response_bytes", 262144)`), "admin adm-secret\nro ro-secret\n")
	rpcURL := fmt.Sprintf("http://127.0.0.1:%d/RPC", k.RPCPort)
	for from := 0; from < aors; from += 400 {
		var calls []string
		for i := from; i < from+400; i++ {
			calls = append(calls, fmt.Sprintf(`{"jsonrpc":"2.0","method":"ul.add","params":["location","big%04d","sip:big%04d@192.0.2.10:5070;transport=udp",3600,0.5,"",0,0,8191],"id":%d}`, i, i, i))
		}
		req, _ := http.NewRequest("POST", rpcURL, strings.NewReader("["+strings.Join(calls, ",")+"]"))
		req.Header.Set("Authorization", "Bearer adm-secret")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || strings.Contains(string(b), `"error"`) {
			t.Fatalf("ul.add: %d %.300s", res.StatusCode, b)
		}
	}
	// The premise: a full dump no longer fits.
	if _, r := postRPC(t, rpcURL, "adm-secret", call("ul.dump")); r["error"] == nil || fmt.Sprint(r["error"].(map[string]any)["code"]) != "507" {
		t.Fatalf("a full ul.dump of %d AoRs: %v, want a 507", aors, r["error"])
	}
	fams := scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", k.RPCPort), "ro-secret")
	for _, name := range []string{"kamd_usrloc_contacts", "kamd_usrloc_aors"} {
		if v, ok := metricValue(fams, name, "table=location"); !ok || v != aors {
			t.Errorf("%s = %v (present %v), want %d", name, v, ok, aors)
		}
	}
	// A trunk (disabled: flag 1, no REGISTER sent) for the ro check below.
	if _, r := postRPC(t, rpcURL, "adm-secret", call("uac.reg_add", "t1", "l1", "local.test", "r1", "remote.test", ".", "r1", "pw", ".", "sip:127.0.0.1:9", 3600, 1, 0, ".", ".")); r["error"] != nil {
		t.Fatalf("uac.reg_add: %v", r["error"])
	}
	openDashboard(t, ctx, k.URL()+"#registrations", "ro-secret")
	waitText(t, ctx, "#role", "read-only")
	waitText(t, ctx, "#reg-count", fmt.Sprintf("showing the first 500 of %d AoRs", aors))
	waitText(t, ctx, "#reg-table", "big")
	if n := evalString(t, ctx, `String(document.querySelectorAll('#reg-table tbody tr').length)`); n != "500" {
		t.Errorf("the panel shows %s rows, want 500", n)
	}
	if n := evalString(t, ctx, `String(document.querySelectorAll('#reg-table button').length)`); n != "0" {
		t.Errorf("the ro page shows %s Remove buttons, want none", n)
	}
	screenshot(t, ctx, "registrations-large")
	showPanel(t, ctx, "trunks")
	waitText(t, ctx, `#trunk-table tr[data-uuid="t1"]`, "disabled")
	if n := evalString(t, ctx, `String(document.querySelectorAll('#trunk-table button').length)`); n != "0" {
		t.Errorf("the ro page shows %s trunk buttons, want none", n)
	}
}

// TestDashboardTrunkFailed: a trunk whose registrar answers 403 turns
// failed, with 403 shown.
func TestDashboardTrunkFailed(t *testing.T) {
	ctx := needBrowser(t)
	reg := newTestRegistrar(t, nil)
	reg.SetUser("forbid", regUser{Reply: 403})
	reg.SetUser("good", regUser{})
	good := toRow("good", reg.Addr())
	good.Expires = 3600
	k := newUACKamd(t, "", toRow("forbid", reg.Addr()), good)
	openDashboard(t, ctx, fmt.Sprintf("http://127.0.0.1:%d/#trunks", k.RPCPort), "")
	waitJS(t, ctx, "the trunks panel", `!document.getElementById('panel-trunks').hidden`)
	waitText(t, ctx, `#trunk-table tr[data-uuid="forbid"] .state-failed`, "failed")
	waitText(t, ctx, `#trunk-table tr[data-uuid="forbid"] .last-code`, "403")
	waitText(t, ctx, `#trunk-table tr[data-uuid="good"] .state-registered`, "registered")
	screenshot(t, ctx, "trunks")
	// The admin buttons work: disable the good trunk.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#trunk-table tr[data-uuid="good"] button[title="unregister and disable"]`))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, `#trunk-table tr[data-uuid="good"] .state-disabled`, "disabled")
}

// TestDashboardReloadAndRoles: with tokens the page asks for one; a broken
// reload shows file:line and the old version keeps serving; an ro token
// gets no reload button and a forged call is refused.
func TestDashboardReloadAndRoles(t *testing.T) {
	ctx := needBrowser(t)
	good := dashScript(t, "")
	k := newDashKamd(t, good, "admin adm-secret\nro ro-secret\n")
	openDashboard(t, ctx, k.URL()+"#script", "adm-secret")
	waitText(t, ctx, "#role", "admin")
	waitText(t, ctx, "#script-version", "version 1")
	// Line 3 col 5 of the new file is the error.
	bad := "# broken\n\nx = undefined_name\n" + good
	if err := os.WriteFile(k.Script, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("btn-reload"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#script-error", "route.star:3:")
	waitText(t, ctx, "#script-version", "version 1")
	screenshot(t, ctx, "script-reload-refused")
	c := newSIPClient(t, k.Port)
	if code := c.do(t, sip.OPTIONS, "ping"); code != 200 {
		t.Fatalf("after the refused reload OPTIONS got %d, want 200 from the old version", code)
	}
	// A good reload, then a rollback, from the buttons.
	if err := os.WriteFile(k.Script, []byte(good+"\n# version two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("btn-reload"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#script-msg", "reloaded: version 1 → 2")
	waitText(t, ctx, "#script-version", "version 2")
	waitJS(t, ctx, "the error cleared", `document.getElementById('script-error').hidden`)
	waitText(t, ctx, "#script-prev", "1")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("btn-rollback"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#script-msg", "rolled back: version 2 → 1")
	waitText(t, ctx, "#script-version", "version 1")

	ro := needBrowser(t) // a new tab: its own sessionStorage, so its own token
	openDashboard(t, ro, k.URL()+"#script", "ro-secret")
	waitText(t, ro, "#role", "read-only")
	waitText(t, ro, "#script-version", "version 1")
	if n := evalString(t, ro, `String(document.querySelectorAll('#btn-reload, #btn-rollback, [data-admin]').length)`); n != "0" {
		t.Errorf("the ro page shows %s state-changing buttons, want none", n)
	}
	if got := evalString(t, ro, `window.kamd.call('app_starlark.reload').then(() => 'accepted', (e) => String(e.code))`); got != "403" {
		t.Errorf("a forged reload with the ro token: %s, want 403", got)
	}
	screenshot(t, ro, "script-ro")
	// A wrong token: the form again, with the refusal shown.
	bad2 := needBrowser(t)
	if err := chromedp.Do(bad2, chromedp.Navigate(k.URL())); err != nil {
		t.Fatal(err)
	}
	waitJS(t, bad2, "the login form", `!document.getElementById('login').hidden`)
	if err := chromedp.Do(bad2, chromedp.SendKeys(chromedp.ID("token"), "nope"), chromedp.Click(chromedp.ID("login-submit"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, bad2, "#login-error", "refused")
	screenshot(t, bad2, "login")
}

// TestDashboardRestart: a kamd restart shows offline, then recovers and
// follows the new process (resubscribed: a new REGISTER appears).
func TestDashboardRestart(t *testing.T) {
	ctx := needBrowser(t)
	k := newDashKamd(t, dashScript(t, ""), "")
	openDashboard(t, ctx, k.URL()+"#registrations", "")
	c := newSIPClient(t, k.Port)
	c.register(t, "before")
	waitText(t, ctx, "#reg-table", "before")
	k.stop()
	waitText(t, ctx, "#conn", "offline")
	waitJS(t, ctx, "the offline banner", `!document.getElementById('banner').hidden && document.body.classList.contains('offline')`)
	screenshot(t, ctx, "offline")
	if err := k.start(); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#conn", "live")
	// usrloc is in memory only (db_mode 0): the old binding is gone and
	// must not be shown as current.
	waitJS(t, ctx, "the stale registration gone", `!document.getElementById('reg-table').textContent.includes('before')`)
	c.register(t, "after")
	waitText(t, ctx, "#reg-table", "after")
	waitJS(t, ctx, "the banner hidden", `document.getElementById('banner').hidden && !document.body.classList.contains('offline')`)
}

// scrape fetches /metrics and parses it with the Prometheus text parser.
func scrape(t testing.TB, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// metricValue is the value of the sample of name with the given labels
// ("k=v" pairs); ok false when absent.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// TestMetrics: /metrics parsed with the Prometheus text parser matches the
// traffic sent: SIP requests, registrations, contacts, RPC calls by result,
// reloads; and follows the RPC auth rule.
func TestMetrics(t *testing.T) {
	k := newDashKamd(t, dashScript(t, ""), "")
	murl := fmt.Sprintf("http://127.0.0.1:%d/metrics", k.RPCPort)
	c := newSIPClient(t, k.Port)
	for _, u := range []string{"m1", "m2", "m3"} {
		c.register(t, u)
	}
	for i := 0; i < 4; i++ {
		if code := c.do(t, sip.OPTIONS, "ping"); code != 200 {
			t.Fatalf("OPTIONS: %d", code)
		}
	}
	rpcURL := fmt.Sprintf("http://127.0.0.1:%d/RPC", k.RPCPort)
	for i := 0; i < 2; i++ {
		postRPC(t, rpcURL, "", call("core.version"))
	}
	postRPC(t, rpcURL, "", call("no.such_method"))
	postRPC(t, rpcURL, "", call("core.version", "extra", "params"))
	// A broken reload, then a good one.
	good, _ := os.ReadFile(k.Script)
	os.WriteFile(k.Script, []byte("x = (\n"), 0o644)
	postRPC(t, rpcURL, "", call("app_starlark.reload"))
	os.WriteFile(k.Script, good, 0o644)
	postRPC(t, rpcURL, "", call("app_starlark.reload"))

	fams := scrape(t, murl, "")
	want := []struct {
		name   string
		labels []string
		v      float64
	}{
		{"kamd_core_rcv_requests_total", nil, 7},
		{"kamd_registrar_accepted_regs_total", nil, 3},
		{"kamd_sl_200_replies_total", nil, 4 + 0}, // OPTIONS; registrar's 200s are its own replies
		{"kamd_usrloc_contacts", []string{"table=location"}, 3},
		{"kamd_usrloc_aors", []string{"table=location"}, 3},
		{"kamd_rpc_requests_total", []string{"method=core.version", "result=ok"}, 2},
		{"kamd_rpc_requests_total", []string{"method=unknown", "result=-32601"}, 1},
		{"kamd_rpc_requests_total", []string{"method=core.version", "result=-32602"}, 1},
		{"kamd_rpc_requests_total", []string{"method=app_starlark.reload", "result=500"}, 1},
		{"kamd_rpc_requests_total", []string{"method=app_starlark.reload", "result=ok"}, 1},
		{"kamd_script_reloads_total", nil, 1},
		{"kamd_script_reload_failures_total", nil, 1},
		{"kamd_script_version", nil, 2},
		{"kamd_tm_current", nil, 0},
	}
	for _, w := range want {
		got, ok := metricValue(fams, w.name, w.labels...)
		if !ok {
			t.Errorf("%s%v: missing", w.name, w.labels)
			continue
		}
		if got != w.v {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.v)
		}
	}
	if f := fams["kamd_tm_current"]; f != nil && f.GetType() != dto.MetricType_GAUGE {
		t.Errorf("kamd_tm_current is a %v, want a gauge", f.GetType())
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("%s missing (Go runtime metrics)", name)
		}
	}
	// The scrape itself is not an RPC request.
	if v, _ := metricValue(fams, "kamd_rpc_requests_total", "method=ul.dump"); v != 0 {
		t.Errorf("the collector's own in-process calls are counted as RPC requests: %v", v)
	}
	checkMetricsDocumented(t, fams)

	// stats.history (the charts' last 15 minutes) has the sample taken at start.
	_, h := postRPC(t, rpcURL, "", call("stats.history", "core:rcv_requests"))
	res, _ := h["result"].(map[string]any)
	if smp, _ := res["samples"].([]any); len(smp) == 0 || fmt.Sprint(res["names"]) != "[core:rcv_requests]" {
		t.Errorf("stats.history: %v", h)
	}
}

// TestMetricsAuth: /metrics with tokens configured needs one (either role).
func TestMetricsAuth(t *testing.T) {
	k := newDashKamd(t, dashScript(t, ""), "admin adm-secret\nro ro-secret\n")
	murl := fmt.Sprintf("http://127.0.0.1:%d/metrics", k.RPCPort)
	for _, tc := range []struct {
		token string
		code  int
	}{{"", 401}, {"wrong", 401}, {"ro-secret", 200}, {"adm-secret", 200}} {
		req, _ := http.NewRequest("GET", murl, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.code {
			t.Errorf("token %q: %d, want %d", tc.token, res.StatusCode, tc.code)
		}
	}
	// The page itself is public (it holds no data); its data needs the token.
	res, err := http.Get(k.URL())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), "app.js") {
		t.Errorf("GET /: %d", res.StatusCode)
	}
}

var docMetricRe = regexp.MustCompile("`((?:kamd|go|process)_[a-z0-9_]+)")

// documentedMetrics reads the metric names listed in docs/metrics.md.
func documentedMetrics(t testing.TB) map[string]bool {
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range docMetricRe.FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = true
	}
	return out
}

// checkMetricsDocumented: every kamd_ metric a kamd exports is in docs/metrics.md.
func checkMetricsDocumented(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	doc := documentedMetrics(t)
	var missing []string
	for name := range fams {
		if strings.HasPrefix(name, "kamd_") && !doc[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics not listed in docs/metrics.md: %s", strings.Join(missing, ", "))
	}
}

var promMetricRe = regexp.MustCompile(`\b((?:kamd|go|process)_[a-zA-Z0-9_]+)`)

// TestGrafanaDashboardMetricsExist: every metric examples/grafana/kamd.json
// queries is exported by a running kamd (uac with records, traffic sent) or,
// for those that only exist with IPsec in use, listed in docs/metrics.md.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "examples", "grafana", "kamd.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("kamd.json: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, v := range x {
				if s, ok := v.(string); ok && (k == "expr" || k == "query") {
					exprs = append(exprs, s)
				}
				walk(v)
			}
		case []any:
			for _, v := range x {
				walk(v)
			}
		}
	}
	walk(dash)
	if len(exprs) < 5 {
		t.Fatalf("only %d queries found in kamd.json", len(exprs))
	}
	reg := newTestRegistrar(t, nil)
	reg.SetUser("forbid", regUser{Reply: 403})
	u := newUACKamd(t, "", toRow("forbid", reg.Addr()))
	u.waitState(t, "forbid", "failed", 10*time.Second)
	postRPC(t, u.HTTP(), "", call("core.version"))
	fams := scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", u.RPCPort), "")
	doc := documentedMetrics(t)
	ipsecOnly := regexp.MustCompile(`^kamd_ipsec_(sa_|xfrm_|spi_|kernel_)`)
	for _, e := range exprs {
		for _, m := range promMetricRe.FindAllString(e, -1) {
			base := m
			if fams[base] == nil {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if s, ok := strings.CutSuffix(m, suf); ok && fams[s] != nil {
						base = s
					}
				}
			}
			switch {
			case fams[base] != nil:
			case ipsecOnly.MatchString(m) && doc[m]:
			default:
				t.Errorf("kamd.json queries %s (in %q), which kamd does not export", m, e)
			}
		}
	}
	if v, ok := metricValue(fams, "kamd_uac_reg_replies_total", "code=403"); !ok || v < 1 {
		t.Errorf("kamd_uac_reg_replies_total{code=403} = %v (present %v), want >= 1", v, ok)
	}
	if v, ok := metricValue(fams, "kamd_uac_records", "state=failed"); !ok || v != 1 {
		t.Errorf("kamd_uac_records{state=failed} = %v, want 1", v)
	}
	checkMetricsDocumented(t, fams)
}
