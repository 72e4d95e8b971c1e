package sl_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kamgo/kamgo/modules/core"
	mt "github.com/kamgo/kamgo/modules/moduletest"
	"github.com/kamgo/kamgo/modules/sl"
)

const options = `OPTIONS sip:127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-1;rport
From: <sip:alice@example.com>;tag=f1
To: <sip:127.0.0.1>
Call-ID: o1@192.0.2.10
CSeq: 1 OPTIONS
Max-Forwards: 70`

func TestReplies(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fn       string
		args     []core.Val
		msg      string
		want     int64
		wantSent string // start of the sent reply, "" for none
		err      string
	}{
		{name: "200", fn: "sl_send_reply", args: []core.Val{core.Int(200), core.Str("OK")}, msg: options, want: 1, wantSent: "SIP/2.0 200 OK\r\n"},
		{name: "send_reply without transaction is stateless", fn: "send_reply", args: []core.Val{core.Int(404), core.Str("Not Here")}, msg: options, want: 1, wantSent: "SIP/2.0 404 Not Here\r\n"},
		{name: "reply error", fn: "sl_reply_error", msg: options, want: 1, wantSent: "SIP/2.0 500 Server Internal Error\r\n"},
		{name: "ACK is never answered", fn: "sl_send_reply", args: []core.Val{core.Int(200), core.Str("OK")},
			msg: strings.NewReplacer("OPTIONS sip", "ACK sip", "1 OPTIONS", "1 ACK").Replace(options), want: 1},
		{name: "CRLF in the reason", fn: "sl_send_reply", args: []core.Val{core.Int(200), core.Str("OK\r\nX: y")}, msg: options, err: "CR, LF"},
		{name: "bad code", fn: "sl_send_reply", args: []core.Val{core.Int(1000), core.Str("x")}, msg: options, err: "invalid reply code"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, rec := mt.NewEnv()
			mod := sl.New(env)
			m := mt.NewMsg(t, env, tc.msg, "")
			v, err := mt.Call(t, mod, m, tc.fn, tc.args...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if len(rec.All()) != 0 {
					t.Fatalf("something was sent after an error")
				}
				return
			}
			if err != nil || v.Int != tc.want {
				t.Fatalf("%s = %v, %v; want %d", tc.fn, v, err, tc.want)
			}
			out := rec.All()
			if tc.wantSent == "" {
				if len(out) != 0 {
					t.Fatalf("sent %d messages, want none", len(out))
				}
				return
			}
			if len(out) != 1 || !strings.HasPrefix(out[0].Text, tc.wantSent) || out[0].Dst.String() != "udp:192.0.2.10:5070" {
				t.Fatalf("sent %+v, want %q to udp:192.0.2.10:5070", out, tc.wantSent)
			}
		})
	}
}

func TestStatsRPC(t *testing.T) {
	env, _ := mt.NewEnv()
	mod := sl.New(env)
	m := mt.NewMsg(t, env, options, "")
	mt.MustInt(t, mod, m, "sl_send_reply", core.Int(200), core.Str("OK"))
	mt.MustInt(t, mod, m, "sl_send_reply", core.Int(404), core.Str("No"))
	res, err := mod.RPC[0].Handler(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := res.(map[string]int64)
	if st["200"] != 1 || st["404"] != 1 || st["4xx"] != 0 {
		t.Fatalf("sl.stats = %v", st)
	}
	if all := env.Stats.Get("sl"); all["sl:sent_replies"] != 2 || all["sl:200_replies"] != 1 {
		t.Fatalf("sl statistics = %v", all)
	}
}
