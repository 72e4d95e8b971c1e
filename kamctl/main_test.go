package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kamgo/kamgo/rpc"
)

var kamctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kamctl-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	kamctlBin = filepath.Join(dir, "kamctl")
	build := exec.Command("go", "build", "-o", kamctlBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building kamctl:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type regRecord struct {
	LUUID    string `json:"l_uuid"`
	LUser    string `json:"l_username"`
	Expires  int    `json:"expires"`
	Flags    int    `json:"flags"`
	Password any    `json:"auth_password"`
}

func testMethods() []rpc.Method {
	return []rpc.Method{
		{
			Name: "uac.reg_dump", Doc: "Dump the contents of user registrations table.", ReadOnly: true,
			Result: "array of records",
			Handler: func(ctx context.Context, p rpc.Params) (any, error) {
				return []regRecord{{"1001", "alice", 3600, 0, nil}, {"1002", "bob", 60, 4, "***"}}, nil
			},
		},
		{
			Name: "stats.get_statistics", ReadOnly: true, Result: "array of strings",
			Params: []rpc.Param{{Name: "names", Type: rpc.TypeString, Variadic: true, Doc: "all, grp: or a name"}},
			Handler: func(ctx context.Context, p rpc.Params) (any, error) {
				return []string{"uac:regactive = 0", "uac:regtotal = 6"}, nil
			},
		},
		{
			Name: "test.echo", ReadOnly: true,
			Params: []rpc.Param{{Name: "v", Variadic: true, Optional: true}},
			Handler: func(ctx context.Context, p rpc.Params) (any, error) {
				out := []json.RawMessage{}
				for i := 0; i < p.Len(); i++ {
					r, _ := p.Raw(i)
					out = append(out, r)
				}
				return map[string]any{"params": out}, nil
			},
		},
		{
			Name: "test.nested", ReadOnly: true,
			Handler: func(ctx context.Context, p rpc.Params) (any, error) {
				type stats struct {
					Records int `json:"Records"`
				}
				type domain struct {
					Domain string   `json:"Domain"`
					Stats  stats    `json:"Stats"`
					AoRs   []string `json:"AoRs"`
					Empty  []int    `json:"Empty"`
				}
				return struct {
					Domains []domain `json:"Domains"`
					Up      bool     `json:"up"`
				}{[]domain{{"location", stats{2}, []string{"sip:a@x", "sip:b@x"}, []int{}}}, true}, nil
			},
		},
		{Name: "test.void", ReadOnly: true, Handler: func(ctx context.Context, p rpc.Params) (any, error) { return nil, nil }},
		{Name: "test.fail", ReadOnly: true, Handler: func(ctx context.Context, p rpc.Params) (any, error) { return nil, rpc.ErrNotFound() }},
		{Name: "test.admin", Handler: func(ctx context.Context, p rpc.Params) (any, error) { return map[string]bool{"ok": true}, nil }},
	}
}

func startServer(t *testing.T, cfg rpc.Config) (*rpc.Server, string) {
	t.Helper()
	s := rpc.NewServer(cfg)
	for _, m := range testMethods() {
		s.MustRegister(m)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return s, ln.Addr().String()
}

type result struct {
	code           int
	stdout, stderr string
}

func kamctl(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kamctlBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KAMCTL_") {
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+os.TempDir())
}

func TestCommands(t *testing.T) {
	_, addr := startServer(t, rpc.Config{})
	wsEnv := []string{"KAMCTL_URL=ws://" + addr + "/ws"}
	cases := []struct {
		name       string
		env        []string
		args       []string
		code       int
		stdout     string // exact, unless contains is set
		contains   []string
		stderrPart string
	}{
		{name: "reg_dump readable", args: []string{"uac.reg_dump"}, stdout: "{\n\tl_uuid: 1001\n\tl_username: alice\n\texpires: 3600\n\tflags: 0\n\tauth_password: <null string>\n}\n" +
			"{\n\tl_uuid: 1002\n\tl_username: bob\n\texpires: 60\n\tflags: 4\n\tauth_password: ***\n}\n"},
		{name: "stats readable", args: []string{"stats.get_statistics", "all"}, stdout: "uac:regactive = 0\nuac:regtotal = 6\n"},
		{name: "nested readable", args: []string{"test.nested"}, stdout: "{\n\tDomains: [\n\t\t{\n\t\t\tDomain: location\n\t\t\tStats: {\n\t\t\t\tRecords: 2\n\t\t\t}\n\t\t\tAoRs: [\n\t\t\t\tsip:a@x\n\t\t\t\tsip:b@x\n\t\t\t]\n\t\t\tEmpty: []\n\t\t}\n\t]\n\tup: true\n}\n"},
		{name: "void prints nothing", args: []string{"test.void"}, stdout: ""},
		{name: "void json", args: []string{"--json", "test.void"}, stdout: "{}\n"},
		{name: "http url", args: []string{"-s", "http://" + addr + "/RPC", "stats.get_statistics", "all"}, stdout: "uac:regactive = 0\nuac:regtotal = 6\n"},
		{name: "http url without path", args: []string{"-s", "http://" + addr, "test.void"}, stdout: ""},
		{name: "rpc error", args: []string{"test.fail"}, code: 1, stderrPart: "error: 404 - Record not found\n"},
		{name: "unknown method", args: []string{"no.such"}, code: 1, stderrPart: "error: -32601 - Method not found"},
		{name: "invalid params", args: []string{"stats.get_statistics"}, code: 1, stderrPart: "error: -32602 - Invalid params: names: missing"},
		{name: "bad i: value", args: []string{"test.echo", "i:abc"}, code: 2, stderrPart: "not an integer"},
		{name: "bad b: value", args: []string{"test.echo", "b:maybe"}, code: 2, stderrPart: "not a boolean"},
		{name: "transport error", args: []string{"-s", "ws://127.0.0.1:1/ws", "test.void"}, code: 2, stderrPart: "kamctl: rpc: cannot connect"},
		{name: "http transport error", args: []string{"-s", "http://127.0.0.1:1/RPC", "test.void"}, code: 2, stderrPart: "kamctl: "},
		{name: "bad scheme", args: []string{"-s", "ftp://x", "test.void"}, code: 2, stderrPart: "unsupported URL scheme"},
		{name: "ls", args: []string{"ls"}, contains: []string{"events.subscribe\n", "stats.get_statistics\n", "system.listMethods\n", "uac.reg_dump\n"}},
		{name: "ls json", args: []string{"--json", "ls"}, contains: []string{"[\n  \"events.subscribe\",\n"}},
		{name: "help", args: []string{"help", "stats.get_statistics"}, contains: []string{"stats.get_statistics - undocumented\n", "\tnames... (string): all, grp: or a name\n", "result: array of strings\n", "access: read-only\n", "signature: stats.get_statistics(string...) -> array of strings\n"}},
		{name: "help unknown", args: []string{"help", "x.y"}, code: 1, stderrPart: "error: 404 - command x.y not found"},
		{name: "help usage", args: []string{"help"}, code: 2, stderrPart: "usage: kamctl help METHOD"},
		{name: "version", args: []string{"version"}, contains: []string{"kamctl ", "go1."}},
		{name: "no method, no tty", args: nil, code: 2, stderrPart: "usage: kamctl"},
		{name: "bad flag", args: []string{"--nope"}, code: 2, stderrPart: "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := kamctl(t, append(wsEnv, tc.env...), tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			if tc.contains != nil {
				for _, c := range tc.contains {
					if !strings.Contains(r.stdout, c) {
						t.Errorf("stdout %q lacks %q", r.stdout, c)
					}
				}
			} else if tc.code == 0 && r.stdout != tc.stdout {
				t.Errorf("stdout:\n%q\nwant:\n%q", r.stdout, tc.stdout)
			}
			if !strings.Contains(r.stderr, tc.stderrPart) {
				t.Errorf("stderr %q lacks %q", r.stderr, tc.stderrPart)
			}
			if tc.code != 0 && r.stdout != "" {
				t.Errorf("stdout on error: %q", r.stdout)
			}
		})
	}
}

func TestJSONOutputAndTyping(t *testing.T) {
	_, addr := startServer(t, rpc.Config{})
	env := []string{"KAMCTL_URL=ws://" + addr + "/ws"}

	r := kamctl(t, env, "--json", "uac.reg_dump")
	if r.code != 0 || !json.Valid([]byte(r.stdout)) || !strings.HasPrefix(r.stdout, "[\n  {\n    \"l_uuid\": \"1001\",") {
		t.Fatalf("--json reg_dump: %d %q %s", r.code, r.stdout, r.stderr)
	}

	cases := []struct {
		arg  string
		want string // JSON of the param as the server saw it
	}{
		{"123", `123`},
		{"-5", `-5`},
		{"1.5", `1.5`},
		{"s:123", `"123"`},
		{"i:7", `7`},
		{"i:-7", `-7`},
		{"b:true", `true`},
		{"b:0", `false`},
		{"true", `"true"`},
		{"abc", `"abc"`},
		{"0049123", `"0049123"`},
		{"+4930123", `"+4930123"`},
		{"1e3", `"1e3"`},
		{"s:", `""`},
		{`j:["a",1]`, `["a",1]`},
		{"sip:alice@example.com", `"sip:alice@example.com"`},
	}
	args := []string{"--json", "test.echo"}
	for _, c := range cases {
		args = append(args, c.arg)
	}
	r = kamctl(t, env, args...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got struct {
		Params []json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Params) != len(cases) {
		t.Fatalf("bad output %q: %v", r.stdout, err)
	}
	for i, c := range cases {
		var a, b any
		json.Unmarshal(got.Params[i], &a)
		json.Unmarshal([]byte(c.want), &b)
		if fmt.Sprint(a) != fmt.Sprint(b) || string(got.Params[i])[0] != c.want[0] {
			t.Errorf("%s sent as %s, want %s", c.arg, got.Params[i], c.want)
		}
	}
}

func TestTokens(t *testing.T) {
	_, addr := startServer(t, rpc.Config{Tokens: map[string]rpc.Role{"adm-secret": rpc.RoleAdmin, "ro-secret": rpc.RoleReadOnly}})
	dir := t.TempDir()
	admFile := filepath.Join(dir, "admin.token")
	os.WriteFile(admFile, []byte("# kamd token\nadm-secret\n"), 0o600)
	roleFile := filepath.Join(dir, "role.token")
	os.WriteFile(roleFile, []byte("ro ro-secret\n"), 0o600)
	for _, url := range []string{"ws://" + addr + "/ws", "http://" + addr + "/RPC"} {
		env := []string{"KAMCTL_URL=" + url}
		cases := []struct {
			name   string
			env    []string
			args   []string
			code   int
			stderr string
		}{
			{"no token", nil, []string{"test.void"}, 1, "error: 401 - Unauthorized"},
			{"wrong token", []string{"KAMCTL_TOKEN=nope"}, []string{"test.void"}, 1, "error: 401 - Unauthorized"},
			{"ro env token reads", []string{"KAMCTL_TOKEN=ro-secret"}, []string{"test.void"}, 0, ""},
			{"ro env token cannot admin", []string{"KAMCTL_TOKEN=ro-secret"}, []string{"test.admin"}, 1, "error: 403 - Forbidden"},
			{"ro file", nil, []string{"--token-file", roleFile, "test.admin"}, 1, "error: 403 - Forbidden"},
			{"admin file", nil, []string{"--token-file", admFile, "test.admin"}, 0, ""},
			{"missing file", nil, []string{"--token-file", filepath.Join(dir, "none"), "test.void"}, 2, "token file"},
		}
		for _, tc := range cases {
			t.Run(url+"/"+tc.name, func(t *testing.T) {
				r := kamctl(t, append(env, tc.env...), tc.args...)
				if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
					t.Fatalf("exit %d stderr %q, want %d %q", r.code, r.stderr, tc.code, tc.stderr)
				}
			})
		}
	}
}

func TestWatch(t *testing.T) {
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprint("json=", asJSON), func(t *testing.T) {
			s, addr := startServer(t, rpc.Config{})
			args := []string{"-s", "ws://" + addr + "/ws"}
			if asJSON {
				args = append(args, "--json")
			}
			args = append(args, "watch", "uac.*")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, kamctlBin, args...)
			cmd.Env = cleanEnv()
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			for i := 0; s.Hub().Subscribers() == 0; i++ {
				if i > 1000 {
					t.Fatalf("kamctl watch never subscribed: %s", stderr.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			s.Hub().Publish("usrloc.x", 1) // not subscribed
			s.Hub().Publish("uac.reg_state", map[string]string{"l_uuid": "1001", "state": "registered"})
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				t.Fatalf("reading watch output: %v (%s)", err, stderr.String())
			}
			if asJSON {
				var ev struct {
					Topic string          `json:"topic"`
					Data  json.RawMessage `json:"data"`
					TS    string          `json:"ts"`
				}
				if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Topic != "uac.reg_state" || string(ev.Data) != `{"l_uuid":"1001","state":"registered"}` || ev.TS == "" {
					t.Fatalf("event line %q: %v", line, err)
				}
			} else if !strings.HasSuffix(line, ` uac.reg_state {"l_uuid":"1001","state":"registered"}`+"\n") {
				t.Fatalf("event line %q", line)
			}
			cmd.Process.Signal(syscall.SIGINT)
			err = cmd.Wait()
			if err != nil {
				t.Fatalf("watch after SIGINT: %v (%s)", err, stderr.String())
			}
		})
	}
}

func TestParseHelpers(t *testing.T) {
	words, err := splitWords(`uac.reg_info l_uuid "a b" 'c\d' e\ f`)
	if err != nil || fmt.Sprintf("%q", words) != `["uac.reg_info" "l_uuid" "a b" "c\\d" "e f"]` {
		t.Fatalf("splitWords: %q %v", words, err)
	}
	if _, err := splitWords(`"open`); err == nil {
		t.Fatal("unterminated quote accepted")
	}
}
