package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/auth_db"
	"github.com/kamgo/kamgo/modules/core"
)

// TestAuthRegisterDigest runs examples/auth/route.star in a real kamd with
// a subscriber provisioned in its SQLite file, and registers with sipgo's
// client-side digest: 401 then 200 with the right password, 401 again with
// a wrong one.
func TestAuthRegisterDigest(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "examples", "auth", "route.star"))
	if err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(t.TempDir(), "auth.db")
	db, err := core.OpenDB(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth_db.CreateSchema(db); err != nil {
		t.Fatal(err)
	}
	if err := auth_db.AddSubscriber(context.Background(), db, "MD5", "alice", "example.com", "wonderland", false); err != nil {
		t.Fatal(err)
	}
	db.Close()
	k := startKamd(t, string(src), "--db", dbPath)

	ua, err := sipgo.NewUA(sipgo.WithUserAgent("auth-uac"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	register := func(password string) (first, second *sip.Response) {
		t.Helper()
		ruri := sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: k.Port}
		req := sip.NewRequest(sip.REGISTER, ruri)
		aor := sip.Uri{Scheme: "sip", User: "alice", Host: "example.com"}
		from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
		from.Params.Add("tag", sip.GenerateTagN(8))
		req.AppendHeader(from)
		req.AppendHeader(&sip.ToHeader{Address: aor})
		req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "127.0.0.1"}})
		req.AppendHeader(sip.NewHeader("Expires", "60"))
		res, err := cli.Do(ctx, req, sipgo.ClientRequestRegisterBuild)
		if err != nil {
			t.Fatalf("REGISTER: %v\n%s", err, k.Log())
		}
		if res.StatusCode != 401 {
			return res, nil
		}
		res2, err := cli.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "alice", Password: password})
		if err != nil {
			t.Fatalf("REGISTER with credentials: %v\n%s", err, k.Log())
		}
		return res, res2
	}

	first, second := register("wonderland")
	if first.StatusCode != 401 || second == nil || second.StatusCode != 200 {
		t.Fatalf("right password: %v then %v, want 401 then 200", first.StartLine(), second)
	}
	if h := first.GetHeader("WWW-Authenticate"); h == nil || !strings.HasPrefix(h.Value(), `Digest realm="example.com", nonce="`) {
		t.Errorf("challenge: %v", h)
	}
	first, second = register("guess")
	if first.StatusCode != 401 || second == nil || second.StatusCode != 401 {
		t.Fatalf("wrong password: %v then %v, want 401 then 401", first.StartLine(), second)
	}
	k.WaitLog(t, "auth failed (-2) for alice@example.com", 5*time.Second)
}
