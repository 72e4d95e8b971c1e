package transport

// Transport-stage benchmarks: parsing (sipgo) and the whole
// receive → parse → route → serialise → send path over real loopback UDP.
//
//	go test ./kamd/transport -run '^$' -bench . -benchmem

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kamgo/kamgo/modules/moduletest/sippmsg"

	"github.com/emiago/sipgo/sip"
	"github.com/kamgo/kamgo/modules/core"
	_ "github.com/kamgo/kamgo/modules/sl"
	"github.com/kamgo/kamgo/starlark"
)

func BenchmarkParseInvite(b *testing.B)   { benchParse(b, sippmsg.Invite) }
func BenchmarkParseRegister(b *testing.B) { benchParse(b, sippmsg.Register) }

// benchParse uses one parser per goroutine, as the transport's readers do.
func benchParse(b *testing.B, raw string) {
	data := []byte(raw)
	p := sip.NewParser()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.ParseSIP(data); err != nil {
			b.Fatal(err)
		}
	}
}

const loopScript = `
def ksr_request_route():
    if KSR.is_method("REGISTER"):
        KSR.sl.send_reply(200, "OK")
    elif KSR.is_method_in("IABC"):
        KSR.hdr.append("X-KEMI: I came from KEMI at 127.0.0.1\r\n")
        KSR.sethost("127.0.0.1")
        KSR.pv.seti("$rp", %d)
        KSR.forward()
    else:
        KSR.sl.send_reply(500, "Got no idea...")
    return 1
`

func cpuNanos() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// benchLoop runs kamd's transport + engine on 127.0.0.1 and pushes b.N
// requests through it from a client socket with up to `window` messages in
// flight; the client also plays the UAS for forwarded INVITEs. Reported:
// ns/op (wall) and cpu-ns/op (the whole test process: proxy + client).
func benchLoop(b *testing.B, raw string) {
	client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	_ = client.SetReadBuffer(4 << 20)
	cport := client.LocalAddr().(*net.UDPAddr).Port

	env := core.NewEnv(nil)
	env.Log = env.Log.With() // default logger; routing does not log
	eng := starlark.New(env)
	if _, err := eng.Load("bench.star", []byte(fmt.Sprintf(loopScript, cport))); err != nil {
		b.Fatal(err)
	}
	tr := New(env, eng, Config{})
	socks, err := tr.Listen(context.Background(), []core.Socket{{Proto: "udp", IP: "127.0.0.1", Port: 0}})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	env.SetSockets(socks)
	env.Sender = eng.WrapSender(tr)
	tr.Start() // after Sender and Sockets are set (see Transport.Start)
	proxy := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: socks[0].Port}
	data := []byte(strings.Replace(raw, "127.0.0.1:5090", fmt.Sprintf("127.0.0.1:%d", cport), 1))
	data = []byte(strings.Replace(string(data), "127.0.0.1:5080", fmt.Sprintf("127.0.0.1:%d", cport), 1))

	const window = 32
	slots := make(chan struct{}, window)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // receiver: every reply or forwarded request frees a slot
		defer wg.Done()
		buf := make([]byte, 65535)
		for {
			_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := client.ReadFromUDP(buf); err != nil {
				return
			}
			select {
			case <-slots:
			default:
			}
		}
	}()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	c0 := cpuNanos()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		select {
		case slots <- struct{}{}:
		case <-time.After(50 * time.Millisecond): // a lost datagram: go on
		}
		if _, err := client.WriteToUDP(data, proxy); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < window; i++ { // drain
		select {
		case slots <- struct{}{}:
		case <-time.After(50 * time.Millisecond):
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuNanos()-c0)/float64(b.N), "cpu-ns/op")
	client.SetReadDeadline(time.Now())
	wg.Wait()
}

// BenchmarkLoopRegister: REGISTER in, 200 OK out (stateless reply).
func BenchmarkLoopRegister(b *testing.B) { benchLoop(b, sippmsg.Register) }

// BenchmarkLoopInvite: INVITE in, forwarded INVITE out (stateless forward).
func BenchmarkLoopInvite(b *testing.B) { benchLoop(b, sippmsg.Invite) }
