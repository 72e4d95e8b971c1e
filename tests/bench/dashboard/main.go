// Command dashboard measures what open dashboards cost kamd (issue 11):
//
//	go run ./tests/bench/dashboard -clients 20 -url ws://127.0.0.1:8060/ws -for 30s
//	    opens N websocket clients that do what the page does (list methods,
//	    whoami, subscribe to every topic and to stats every second, load every
//	    panel) and keep them open, reading events, for the given time.
//	go run ./tests/bench/dashboard -firstload http://127.0.0.1:8060/
//	    loads the page in headless chromium and prints its transfer size and
//	    the time to first data (the page's "kamd-first-data" mark).
//
// tests/bench/dashboard.sh runs kamd under sipp load with and without the
// clients and compares kamd's CPU.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/kamgo/kamgo/rpc"
)

func main() {
	clients := flag.Int("clients", 20, "websocket clients")
	url := flag.String("url", "ws://127.0.0.1:8060/ws", "kamd's websocket")
	token := flag.String("token", "", "RPC token")
	dur := flag.Duration("for", 30*time.Second, "how long the clients stay")
	first := flag.String("firstload", "", "page URL: measure first load in chromium instead")
	shot := flag.String("screenshot", "", "PNG file: open the page (-url's http form), wait -for, save a screenshot (docs/dashboard.png)")
	flag.Parse()
	if *shot != "" {
		if err := screenshot(strings.Replace(strings.Replace(*url, "ws", "http", 1), "/ws", "/", 1), *shot, *dur); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if *first != "" {
		if err := firstLoad(*first); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	var events atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	for i := 0; i < *clients; i++ {
		c, err := rpc.Dial(*url, *token)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(1)
		}
		defer c.Close()
		for _, m := range []string{"system.listMethods", "core.whoami", "core.version", "core.uptime", "core.sockets_list", "app_starlark.status", "ul.dump", "uac.reg_dump", "ipsec.list", "ipsec.stats"} {
			var params any
			if m == "ul.dump" {
				params = []any{nil, 500} // one page, as the page asks
			}
			// A module the script does not load is fine (-32601); any
			// other failure (a refused or closed connection) ends the
			// bench: its figures would be for fewer clients.
			var re *rpc.Error
			if _, err := c.Call(ctx, m, params); err != nil && !(errors.As(err, &re) && re.Code == -32601) {
				fmt.Fprintf(os.Stderr, "client %d: %s: %v\n", i, m, err)
				os.Exit(1)
			}
		}
		evs, err := c.SubscribeInterval(ctx, time.Second, "*", "stats")
		if err != nil {
			fmt.Fprintln(os.Stderr, "subscribe:", err)
			os.Exit(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case _, ok := <-evs:
					if !ok {
						if ctx.Err() == nil {
							fmt.Fprintln(os.Stderr, "a client's event stream closed before the end")
							os.Exit(1)
						}
						return
					}
					events.Add(1)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("clients=%d events_received=%d over %v\n", *clients, events.Load(), *dur)
}

func screenshot(url, file string, wait time.Duration) error {
	ctx, cancel, err := newBrowser(wait + 30*time.Second)
	if err != nil {
		return err
	}
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 760), chromedp.Navigate(url)); err != nil {
		return err
	}
	time.Sleep(wait)
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return err
	}
	return os.WriteFile(file, png, 0o644)
}

func newBrowser(timeout time.Duration) (context.Context, func(), error) {
	path, err := exec.LookPath("chromium")
	if err != nil {
		return nil, nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	tctx, tcancel := context.WithTimeout(ctx, timeout)
	return tctx, func() { tcancel(); cancel(); acancel() }, nil
}

func firstLoad(url string) error {
	ctx, cancel, err := newBrowser(30 * time.Second)
	if err != nil {
		return err
	}
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // the browser is up before the clock starts
		return err
	}
	for round := 1; round <= 3; round++ {
		if err := measureTab(ctx, url, round); err != nil {
			return err
		}
	}
	return nil
}

// measureTab loads the page in a new tab (a fresh start: no cache shared
// with an open tab's state) and prints its figures.
func measureTab(parent context.Context, url string, round int) error {
	ctx, cancel := chromedp.NewContext(parent)
	defer cancel()
	{
		if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
			return err
		}
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`performance.getEntriesByName('kamd-first-data').length > 0`, chromedp.WithPollingInterval(10*time.Millisecond))); err != nil {
			return err
		}
		res, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](`(() => {
			const nav = performance.getEntriesByType('navigation')[0];
			let bytes = nav.encodedBodySize, transfer = nav.transferSize;
			for (const r of performance.getEntriesByType('resource')) { bytes += r.encodedBodySize; transfer += r.transferSize; }
			return { bytes, transfer, dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
				first: performance.getEntriesByName('kamd-first-data')[0].startTime,
				resources: performance.getEntriesByType('resource').length + 1 };
		})()`))
		if err != nil {
			return err
		}
		fmt.Printf("round=%d files=%.0f body_bytes=%.0f transfer_bytes=%.0f dom_content_loaded_ms=%.1f load_ms=%.1f first_data_ms=%.1f\n",
			round, res["resources"], res["bytes"], res["transfer"], res["dcl"], res["load"], res["first"])
	}
	return nil
}
