// The Go clients of scripts/cause-scenarios.sh (standard library only):
//
//	goclients SCENARIO TRUTH_FILE BASE_URL
//
// SCENARIO is go-pool-limit, go-raised-pool, go-unread-body,
// go-client-idle-timeout or go-dial-race. The
// transport's DialContext wraps every connection it dials so that the client
// itself records, in order, each connection's local port (conn.LocalAddr())
// once connected and each Close() the transport calls on it; httptrace
// GotConn says whether a request got a reused connection. The truth file has
// one entry per dialed connection.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
)

type event struct {
	Kind   string `json:"kind"` // "dial" or "close"
	Port   int    `json:"port"`
	Worker int    `json:"worker"`
}

var (
	mu     sync.Mutex
	events []event
)

func record(kind string, port, worker int) {
	mu.Lock()
	events = append(events, event{kind, port, worker})
	mu.Unlock()
}

type trackedConn struct {
	net.Conn
	port int
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { record("close", c.port, -1) })
	return c.Conn.Close()
}

type workerKey struct{}

func transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	var d net.Dialer
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		port := c.LocalAddr().(*net.TCPAddr).Port
		w, _ := ctx.Value(workerKey{}).(int)
		record("dial", port, w)
		return &trackedConn{Conn: c, port: port}, nil
	}
	return t
}

type got struct {
	port   int
	reused bool
}

// get GETs url; drain says whether to read the body to the end before closing it.
func get(client *http.Client, url string, worker int, drain bool) got {
	var g got
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		g.port = info.Conn.LocalAddr().(*net.TCPAddr).Port
		g.reused = info.Reused
	}}
	ctx := context.WithValue(httptrace.WithClientTrace(context.Background(), trace), workerKey{}, worker)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	must(err)
	resp, err := client.Do(req)
	must(err)
	if resp.StatusCode != 200 {
		fail("%s: %d", url, resp.StatusCode)
	}
	if drain {
		_, err = io.Copy(io.Discard, resp.Body)
		must(err)
	}
	must(resp.Body.Close())
	return g
}

type conn struct {
	ClientPort int    `json:"client_port"`
	Code       string `json:"code"`
	Note       string `json:"note,omitempty"`
}

func must(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	mu.Lock()
	ev, _ := json.Marshal(events)
	mu.Unlock()
	fmt.Fprintf(os.Stderr, "the scenario did not run as built: "+format+"\nevents: %s\n", append(args, ev)...)
	os.Exit(1)
}

func writeTruth(path, scenario, client, server, truthFrom string, conns []conn) {
	var b strings.Builder
	q := func(s string) string { j, _ := json.Marshal(s); return string(j) }
	fmt.Fprintf(&b, `{"scenario": %s, "client": %s, "server": %s, "truth_from": %s, "connections": [`+"\n",
		q(scenario), q(client), q(server), q(truthFrom))
	for i, c := range conns {
		j, _ := json.Marshal(c)
		s := strings.NewReplacer(`":`, `": `, `,"`, `, "`).Replace(string(j))
		sep := ","
		if i == len(conns)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "  %s%s\n", s, sep)
	}
	b.WriteString("]}\n")
	must(os.WriteFile(path, []byte(b.String()), 0o644))
}

func dialsSince(n int) []event {
	mu.Lock()
	defer mu.Unlock()
	var out []event
	for _, e := range events[n:] {
		if e.Kind == "dial" {
			out = append(out, e)
		}
	}
	return out
}

func mark() int { mu.Lock(); defer mu.Unlock(); return len(events) }

func closed(port int) bool {
	mu.Lock()
	defer mu.Unlock()
	for _, e := range events {
		if e.Kind == "close" && e.Port == port {
			return true
		}
	}
	return false
}

var goVersion = "go " + strings.TrimPrefix(runtime.Version(), "go") + " net/http"

// inRounds GETs url from workers goroutines, rounds times over: in each
// round goroutine w starts w*stagger in, and the round ends when all are done.
func inRounds(client *http.Client, url string, workers, rounds int, stagger time.Duration) {
	var wg sync.WaitGroup
	for r := 0; r < rounds; r++ {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				time.Sleep(time.Duration(w) * stagger)
				get(client, url, w, true)
			}(w)
		}
		wg.Wait()
	}
}

func poolLimit(truth, base string) {
	const workers, rounds, stagger = 10, 4, 10 * time.Millisecond
	client := &http.Client{Transport: transport()}
	inRounds(client, base+"/a.txt", workers, rounds, stagger)
	client.CloseIdleConnections()
	var conns []conn
	mu.Lock()
	evs := append([]event(nil), events...)
	mu.Unlock()
	closes := 0
	for _, e := range evs {
		switch {
		case e.Kind == "close":
			closes++
		case len(conns) == 0:
			conns = append(conns, conn{e.Port, "first", ""})
		case closes == 0:
			conns = append(conns, conn{e.Port, "concurrency",
				fmt.Sprintf("goroutine %d: every open connection had a request in flight", e.Worker)})
		default:
			conns = append(conns, conn{e.Port, "pool_limit", fmt.Sprintf(
				"goroutine %d: opened after the transport had closed %d connection(s) on return (MaxIdleConnsPerHost 2)",
				e.Worker, closes)})
		}
	}
	if len(conns) != workers+(rounds-1)*(workers-2) {
		fail("%d connections", len(conns))
	}
	writeTruth(truth, "go-pool-limit", goVersion+", default Transport (MaxIdleConnsPerHost 2), 10 goroutines x 4 rounds",
		"python http.server, 0.2 s per response, keep-alive, no idle timeout",
		"the client's own record, in order: each dial (local port from conn.LocalAddr()) and each Close() the "+
			"transport called on a connection; a close before the first pooled reuse is a connection the full "+
			"idle pool refused; goroutine i starts 10*i ms into each round", conns)
}

func unreadBody(truth, base string) {
	client := &http.Client{Transport: transport()}
	var conns []conn
	prev := 0
	for i := 0; i < 3; i++ {
		m := mark()
		g := get(client, base+"/a.txt", 0, true)
		d := dialsSince(m)
		if len(d) != 1 || g.reused || d[0].Port != g.port {
			fail("round %d: %v %+v", i, d, g)
		}
		if i == 0 {
			conns = append(conns, conn{g.port, "first", ""})
		} else {
			if !closed(prev) {
				fail("port %d was not closed by the client", prev)
			}
			conns = append(conns, conn{g.port, "unread_body", fmt.Sprintf(
				"port %d: resp.Body.Close() with the 1 MiB /big body unread; the transport closed that connection", prev)})
		}
		prev = g.port
		if i < 2 {
			m = mark()
			g = get(client, base+"/big", 0, false)
			if !g.reused || g.port != prev || len(dialsSince(m)) != 0 {
				fail("/big did not reuse port %d: %+v", prev, g)
			}
		}
	}
	client.CloseIdleConnections()
	writeTruth(truth, "go-unread-body", goVersion+", one Client; resp.Body.Close() on /big without reading it",
		"python http.server, keep-alive, no idle timeout; /big is 1 MiB",
		"httptrace GotConn (Reused, Conn.LocalAddr()) and the client's record of the Close() the transport called on "+
			"the connection whose body was left unread", conns)
}

func clientIdleTimeout(truth, base string) {
	t := transport()
	t.IdleConnTimeout = time.Second
	client := &http.Client{Transport: t}
	var conns []conn
	prev := 0
	for i, step := range []string{"/a.txt", "/b.txt", "pause", "/c.txt", "/a.txt", "pause", "/b.txt"} {
		if step == "pause" {
			time.Sleep(2 * time.Second)
			if !closed(prev) {
				fail("port %d still open after the pause", prev)
			}
			continue
		}
		g := get(client, base+step, 0, true)
		switch {
		case i == 0:
			conns = append(conns, conn{g.port, "first", ""})
		case !g.reused:
			if !closed(prev) {
				fail("new connection while port %d was open", prev)
			}
			conns = append(conns, conn{g.port, "client_idle_timeout", fmt.Sprintf(
				"port %d: closed by the transport after IdleConnTimeout 1s during a 2 s pause", prev)})
		case g.port != prev:
			fail("reused an unexpected connection %+v", g)
		}
		prev = g.port
	}
	client.CloseIdleConnections()
	writeTruth(truth, "go-client-idle-timeout", goVersion+", Transport IdleConnTimeout 1s, 2 s pauses",
		"nginx keepalive_timeout 30s",
		"httptrace GotConn (Reused, Conn.LocalAddr()) and the client's record of the Close() its transport "+
			"called on the idle connection during each pause", conns)
}

// raisedPool is poolLimit with the idle pool raised to the concurrency:
// every connection is kept, so only the first round opens any.
func raisedPool(truth, base string) {
	const workers, rounds, stagger = 10, 4, 10 * time.Millisecond
	t := transport()
	t.MaxIdleConnsPerHost = workers
	client := &http.Client{Transport: t}
	inRounds(client, base+"/a.txt", workers, rounds, stagger)
	mu.Lock()
	evs := append([]event(nil), events...)
	mu.Unlock()
	client.CloseIdleConnections()
	var conns []conn
	for _, e := range evs {
		if e.Kind == "close" {
			fail("the transport closed port %d before the end", e.Port)
		}
		if len(conns) == 0 {
			conns = append(conns, conn{e.Port, "first", ""})
		} else {
			conns = append(conns, conn{e.Port, "concurrency",
				fmt.Sprintf("goroutine %d: every open connection had a request in flight", e.Worker)})
		}
	}
	if len(conns) != workers {
		fail("%d connections", len(conns))
	}
	writeTruth(truth, "go-raised-pool", goVersion+", Transport MaxIdleConnsPerHost 10, 10 goroutines x 4 rounds",
		"python http.server, 0.2 s per response, keep-alive, no idle timeout",
		"the client's own record, in order: each dial (local port from conn.LocalAddr()) and each Close() the "+
			"transport called (none before the end); goroutine i starts 10*i ms into each round", conns)
}

// dialRace makes the transport's dial race: three goroutines hold three
// connections busy with 0.2 s responses; 150 ms in, three more ask, and the
// transport dials for each, but every dial takes 100 ms more after connect
// (a slow handshake, as TLS would be); the busy connections come free at
// 200 ms and the waiting requests take them. The dialled connections go to
// the idle pool unused.
func dialRace(truth, base string) {
	const busy = 3
	t := transport()
	dial := t.DialContext
	slow := false
	var slowMu sync.Mutex
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		slowMu.Lock()
		s := slow
		slowMu.Unlock()
		if err == nil && s {
			time.Sleep(100 * time.Millisecond)
		}
		return c, err
	}
	client := &http.Client{Transport: t}
	var wg sync.WaitGroup
	var gotMu sync.Mutex
	used := map[int]bool{}
	reusedBy := map[int]int{}
	for w := 0; w < 2*busy; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if w >= busy {
				time.Sleep(150 * time.Millisecond)
			} else {
				time.Sleep(time.Duration(w) * 10 * time.Millisecond)
			}
			g := get(client, base+"/a.txt", w, true)
			gotMu.Lock()
			used[g.port] = true
			if w >= busy {
				if !g.reused {
					fail("goroutine %d got a new connection %d", w, g.port)
				}
				reusedBy[w] = g.port
			}
			gotMu.Unlock()
		}(w)
		if w == busy-1 {
			time.Sleep(50 * time.Millisecond)
			slowMu.Lock()
			slow = true
			slowMu.Unlock()
		}
	}
	wg.Wait()
	time.Sleep(150 * time.Millisecond) // the slow dials finish
	mu.Lock()
	evs := append([]event(nil), events...)
	mu.Unlock()
	client.CloseIdleConnections()
	var conns []conn
	dials := 0
	for _, e := range evs {
		if e.Kind != "dial" {
			continue
		}
		dials++
		switch {
		case dials == 1:
			conns = append(conns, conn{e.Port, "first", ""})
		case e.Worker < busy:
			conns = append(conns, conn{e.Port, "concurrency",
				fmt.Sprintf("goroutine %d: every open connection had a request in flight", e.Worker)})
		case used[e.Port]:
			fail("dialled port %d carried a request", e.Port)
		default:
			conns = append(conns, conn{e.Port, "unused:dial_race", fmt.Sprintf(
				"goroutine %d: dialled while every connection was busy; httptrace GotConn gave it port %d (reused) "+
					"before this dial finished, and no request ever got this one", e.Worker, reusedBy[e.Worker])})
		}
	}
	if dials != 2*busy {
		fail("%d dials", dials)
	}
	writeTruth(truth, "go-dial-race", goVersion+", default Transport whose dial waits 100 ms after connect, 3 busy + 3 waiting goroutines",
		"python http.server, 0.2 s per response, keep-alive, no idle timeout",
		"the client's own record of each dial (local port from conn.LocalAddr()) and httptrace GotConn for every "+
			"request (Reused, Conn.LocalAddr()): a dialled connection no request ever got lost the race", conns)
}

func main() {
	if len(os.Args) != 4 {
		fail("usage: goclients SCENARIO TRUTH_FILE BASE_URL")
	}
	scenario, truth, base := os.Args[1], os.Args[2], os.Args[3]
	switch scenario {
	case "go-pool-limit":
		poolLimit(truth, base)
	case "go-unread-body":
		unreadBody(truth, base)
	case "go-client-idle-timeout":
		clientIdleTimeout(truth, base)
	case "go-raised-pool":
		raisedPool(truth, base)
	case "go-dial-race":
		dialRace(truth, base)
	default:
		fail("unknown scenario %s", scenario)
	}
}
