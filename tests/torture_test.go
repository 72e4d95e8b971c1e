package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// tortureScript is ../shared/torture/kamailio-torture.cfg in Starlark: the
// stock REQINIT checks (Max-Forwards, sanity when the module exists), then
// 200 to every request; replies from outside are dropped, nothing is
// ever forwarded.
const tortureScript = `
def ksr_request_route():
    KSR.info("torture: " + KSR.pv.get("$rm") + " from " + KSR.pv.get("$pr") + ":" + KSR.pv.get("$si"))
    if hasattr(KSR, "maxfwd"):
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return
    else:
        mf = KSR.hdr.get("Max-Forwards")
        if mf != None and mf.strip() == "0":
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return
    if hasattr(KSR, "sanity"):
        if KSR.sanity.sanity_check(17895, 7) < 0:
            KSR.warn("torture: sanity check failed")
            return
    KSR.sl.sl_send_reply(200, "OK")

def ksr_reply_route():
    KSR.info("torture: dropping reply")
    KSR.x.drop()
`

// tortureLiberal are the invalid messages for which RFC 4475 explicitly
// allows liberal acceptance instead of a 400.
var tortureLiberal = map[string]bool{
	"trws": true, "lwsstart": true, "escruri": true, "baddate": true, "regbadct": true,
	"badaspec": true, "quotbal": true, "ltgtruri": true, "lwsruri": true, "baddn": true,
}

type tortureResult struct {
	name, class, response, alive string
}

func parseTorture(out []byte) (map[string]tortureResult, []string) {
	res := map[string]tortureResult{}
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		ln := sc.Text()
		if strings.HasPrefix(ln, "#") {
			continue
		}
		f := strings.Split(ln, "\t")
		if len(f) != 4 {
			continue
		}
		res[f[0]] = tortureResult{f[0], f[1], f[2], f[3]}
		order = append(order, f[0])
	}
	return res, order
}

func TestTorture(t *testing.T) {
	runSh := needShared(t, "torture/run.sh")
	needTool(t, "python3", "python3")
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			k := startKamd(t, tortureScript)
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", runSh, "127.0.0.1", fmt.Sprint(k.Port), proto)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			ours, order := parseTorture(stdout.Bytes())
			anchor, _ := parseTorture(mustRead(t, filepath.Join(filepath.Dir(runSh), "kamailio-"+proto+".txt")))
			table := tortureTable(proto, order, ours, anchor)
			// The runner's own notes (which Via ports it could listen on:
			// if 5060 is taken on this host, UDP answers are not seen).
			for _, ln := range strings.Split(stdout.String(), "\n") {
				if strings.HasPrefix(ln, "# udp:") || strings.HasPrefix(ln, "torture:") {
					table += ln + "\n"
				}
			}
			t.Log("\n" + table)
			if p := os.Getenv("KAMGO_TORTURE_OUT"); p != "" {
				f, ferr := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
				if ferr == nil {
					fmt.Fprintln(f, table)
					f.Close()
				}
			}
			if err != nil {
				t.Fatalf("torture run over %s: %v (exit status 0 means kamd answered the probe after every message)\nstdout:\n%s\nstderr:\n%s",
					proto, err, stdout.String(), stderr.String())
			}
			if len(ours) != 61 {
				t.Fatalf("torture run reported %d messages, want 61:\n%s", len(ours), stdout.String())
			}
			for _, name := range order {
				r := ours[name]
				if r.alive != "yes" {
					t.Errorf("%s: kamd not alive after it", name)
				}
				if r.class == "invalid" && strings.HasPrefix(r.response, "2") && !tortureLiberal[name] {
					t.Errorf("%s (invalid, RFC 4475 wants it rejected) was answered %q; want 4xx/5xx or nothing", name, r.response)
				}
			}
			k.Alive(t)
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func code(resp string) string {
	if len(resp) >= 3 && resp[0] >= '1' && resp[0] <= '6' {
		return resp[:3]
	}
	if strings.HasPrefix(resp, "no response") {
		return "none"
	}
	return resp
}

func tortureTable(proto string, order []string, ours, anchor map[string]tortureResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "torture over %s: kamd vs Kamailio 5.6.3\n", proto)
	fmt.Fprintf(&b, "%-28s %-9s %-36s %-36s %s\n", "message", "class", "kamd", "kamailio", "")
	same := 0
	type k2 struct{ class, ours string }
	counts := map[k2]int{}
	for _, n := range order {
		o, a := ours[n], anchor[n]
		mark := ""
		if code(o.response) == code(a.response) {
			same++
		} else {
			mark = "≠"
		}
		if o.alive != "yes" {
			mark += " DEAD"
		}
		counts[k2{o.class, code(o.response)}]++
		fmt.Fprintf(&b, "%-28s %-9s %-36.36s %-36.36s %s\n", n, o.class, o.response, a.response, mark)
	}
	fmt.Fprintf(&b, "same status code as Kamailio: %d of %d\n", same, len(order))
	var keys []k2
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].class != keys[j].class {
			return keys[i].class < keys[j].class
		}
		return keys[i].ours < keys[j].ours
	})
	b.WriteString("kamd by class:")
	for _, k := range keys {
		fmt.Fprintf(&b, " %s/%s=%d", k.class, k.ours, counts[k])
	}
	b.WriteString("\n")
	return b.String()
}
