package dispatcher

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	"github.com/kamgo/kamgo/modules/tm"
)

var probeSeq atomic.Uint64

func (d *DS) start(ctx context.Context) error {
	d.tmu.Lock()
	d.stopped = false
	d.tmu.Unlock()
	d.arm()
	return nil
}

func (d *DS) stop() {
	d.tmu.Lock()
	d.stopped = true
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.tmu.Unlock()
	instances.Drop(d.env, d)
}

// arm schedules the next probe round (one timer for the module).
func (d *DS) arm() {
	iv := d.pingInterval.Load()
	d.tmu.Lock()
	defer d.tmu.Unlock()
	if d.stopped || iv <= 0 {
		return
	}
	d.timer = d.env.Clock.AfterFunc(time.Duration(iv)*time.Second, func() {
		d.probeRound()
		d.arm()
	})
}

// needsProbe is ds_probing_mode's rule.
func (d *DS) needsProbe(x *Dest) bool {
	if x.Flags&FlagDisabled != 0 || x.probing {
		return false
	}
	switch d.probingMode.Load() {
	case 1:
		return true
	case 2:
		return x.Flags&FlagInactive != 0 && x.Flags&FlagProbing != 0
	}
	return x.Flags&FlagProbing != 0
}

// probeRound sends one request to every destination that needs it.
func (d *DS) probeRound() {
	if d.pingActive.Load() == 0 {
		return
	}
	type job struct {
		set int
		x   *Dest
	}
	var jobs []job
	d.mu.Lock()
	for _, id := range d.ids {
		for _, x := range d.sets[id].Dests {
			if d.needsProbe(x) {
				x.probing = true
				x.lastProbed = d.env.Clock.Now()
				jobs = append(jobs, job{id, x})
			}
		}
	}
	d.mu.Unlock()
	for _, j := range jobs {
		d.probe(j.set, j.x)
	}
}

func (d *DS) probe(set int, x *Dest) {
	done := func(code int, local bool) {
		d.mu.Lock()
		x.probing = false
		d.mu.Unlock()
		d.probeResult(set, x, code, local)
	}
	t, err := tm.Of(d.env)
	if err != nil {
		done(500, true)
		return
	}
	req, err := d.probeRequest(x)
	if err != nil {
		d.env.Log.Warn("dispatcher: cannot build probe", "uri", x.URI, "err", err)
		done(500, true)
		return
	}
	err = t.SendRequest(&tm.LocalRequest{Req: req, Dst: x.Target, Socket: x.Socket, OnReply: func(res *sip.Response) {
		if res.StatusCode >= 200 {
			done(res.StatusCode, tm.Generated(res))
		}
	}})
	if err != nil {
		d.env.Log.Warn("dispatcher: cannot send probe", "uri", x.URI, "err", err)
		done(500, true)
	}
}

func (d *DS) probeRequest(x *Dest) (*sip.Request, error) {
	from, err := core.ParseURI(strp(&d.pingFrom))
	if err != nil {
		return nil, fmt.Errorf("ds_ping_from: %w", err)
	}
	ruri := x.uri
	req := sip.NewRequest(sip.RequestMethod(strp(&d.pingMethod)), ruri)
	n := probeSeq.Add(1)
	fh := &sip.FromHeader{Address: from, Params: sip.NewParams()}
	fh.Params.Add("tag", "ds"+strconv.FormatUint(n, 36))
	req.AppendHeader(fh)
	req.AppendHeader(&sip.ToHeader{Address: ruri, Params: sip.NewParams()})
	cid := sip.CallIDHeader("dsping-" + strconv.FormatUint(n, 36) + "-" + strconv.FormatInt(d.env.Clock.Now().UnixNano(), 36))
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: req.Method})
	return req, nil
}

// probeResult applies a probe's final code: 2xx (and ds_ping_reply_codes)
// counts as up (towards
// ds_inactive_threshold), anything else (a 408 on timeout, a 503 when it
// cannot be sent) as down (towards ds_probing_threshold).
func (d *DS) probeResult(set int, x *Dest, code int, local bool) {
	var old, nw int
	d.mu.Lock()
	old = x.Flags
	if x.Flags&FlagDisabled != 0 {
		d.mu.Unlock()
		return
	}
	if !local && d.probeOK(code) { // a timeout's local 408 is never up
		x.failCount = 0
		if x.Flags&(FlagInactive|FlagTrying) != 0 {
			x.okCount++
			if x.okCount >= int(d.inactiveThreshold.Load()) {
				x.okCount = 0
				x.Flags &^= FlagInactive | FlagTrying
			}
		}
		// Mode 0 probes a flagged destination until it answers; 1 and 3
		// keep probing.
		if d.probingMode.Load() == 0 && x.Flags&(FlagInactive|FlagTrying) == 0 {
			x.Flags &^= FlagProbing
		}
	} else {
		x.okCount = 0
		x.failCount++
		if x.failCount >= int(d.probingThreshold.Load()) {
			x.Flags = (x.Flags &^ FlagTrying) | FlagInactive | FlagProbing
		} else if x.Flags&FlagInactive == 0 {
			x.Flags |= FlagTrying | FlagProbing
		}
	}
	nw = x.Flags
	uri := x.URI
	d.mu.Unlock()
	if old != nw {
		d.notify(set, uri, old, nw, "probe "+strconv.Itoa(code))
	}
}
