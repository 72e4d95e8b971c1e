package dispatcher

import (
	"fmt"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
)

// BenchmarkSelectDst is ds_select_dst's own cost per call (choose, $du,
// the failover list), for each algorithm over a set of 8 destinations.
func BenchmarkSelectDst(b *testing.B) {
	env := core.NewEnv(nil)
	d := &DS{env: env, sets: map[int]*Set{}, pending: map[string]*pending{}, pendingOld: map[string]*pending{}, loads: map[string]*loadRec{}}
	core.ApplyDefaults(d.module())
	sets := map[int]*Set{}
	for i := 0; i < 8; i++ {
		x, err := newDest(fmt.Sprintf("sip:10.0.0.%d:5060", i+1), 0, i%3, "weight=12;rweight=12", "")
		if err != nil {
			b.Fatal(err)
		}
		add(sets, 1, x)
	}
	finish(sets)
	d.install(sets)
	for _, alg := range []int{AlgHashCallID, AlgRoundRobin, AlgPriority, AlgWeight, AlgRelWeight} {
		b.Run(fmt.Sprint("alg", alg), func(b *testing.B) {
			reqs := make([]*sip.Request, 1024)
			for i := range reqs {
				r := sip.NewRequest(sip.INVITE, sip.Uri{User: "bob", Host: "example.com"})
				cid := sip.CallIDHeader(fmt.Sprintf("c%d@x", i))
				r.AppendHeader(&cid)
				r.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
				fh := &sip.FromHeader{Address: sip.Uri{User: "alice", Host: "example.com"}, Params: sip.NewParams()}
				fh.Params.Add("tag", "t")
				r.AppendHeader(fh)
				reqs[i] = r
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m := &core.Msg{Env: env, Req: reqs[i%len(reqs)]}
				if v, err := d.selectDst(m, 1, alg, 0, false); err != nil || v.Int != 1 {
					b.Fatal(v, err)
				}
			}
		})
	}
}
