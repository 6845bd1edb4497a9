package load

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/bench/internal/echo"
	"github.com/breeze-mesh/breeze/bench/internal/wire"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// readFrame reads one whole frame of p.
func readFrame(br *bufio.Reader, p wire.Protocol) ([]byte, error) {
	h, err := br.Peek(p.HeaderLen())
	if err != nil {
		return nil, err
	}
	n, err := p.FrameLen(h)
	if err != nil {
		return nil, err
	}
	f := make([]byte, n)
	_, err = io.ReadFull(br, f)
	return f, err
}

// The cause of the paced runs that never ended: with its replies back
// within the pace, a paced writer finds a free slot at every turn, so it
// never left its inner loop, where neither the end of the run nor its wait
// for the next turn (a plain sleep) looked at the stop. Here the test is the
// peer and the reader (conn.handle): every request is answered before the
// writer's next turn, and the run ends while the writer waits for a turn.
func TestPacedWriterStopsWhileRepliesKeepUp(t *testing.T) {
	for _, name := range []string{"thrift", "dubbo"} {
		t.Run(name, func(t *testing.T) {
			p, err := wire.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			clk := newFakeClock()
			r, err := newRunner(Config{Proto: p, Mix: wire.MixRoutes, Payload: 16, Conns: 1, InFlight: 2,
				Duration: time.Second, Rate: 1000, clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			client, server := tcpPair(t)
			r.start = clk.Now()
			c := r.newConn(0, client)
			r.conns = []*conn{c}
			exited := make(chan struct{})
			go func() { defer close(exited); c.writeLoop() }()

			br := bufio.NewReader(server)
			answered := 0
			answer := func() {
				t.Helper()
				f, err := readFrame(br, p)
				if err != nil {
					t.Fatalf("request %d: %v", answered+1, err)
				}
				reply, err := p.Echo(nil, f)
				if err != nil {
					t.Fatal(err)
				}
				c.handle(reply)
				answered++
			}
			const turns = 5
			for turn := 1; turn <= turns; turn++ {
				a := <-clk.armed // the writer waits for its turn, the request before it sent
				if a.d != time.Millisecond {
					t.Fatalf("turn %d: the writer waits %v, want the pace of 1 request/ms", turn, a.d)
				}
				answer() // ... and answered: its slot is free again
				if turn == turns {
					close(r.stop) // the measured duration ends while the writer waits
				}
				clk.advance(time.Millisecond)
			}
			select {
			case <-exited:
			case a := <-clk.armed:
				t.Fatalf("after the end of the run, the writer waited for another turn (at %v, %d requests answered) instead of returning: a peer that keeps up kept it sending", a.at, answered)
			}
			// Every request counted in flight was written: the reader's drain
			// waits for exactly these.
			client.Close()
			left := 0
			for {
				if _, err := readFrame(br, p); err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatal(err)
					}
					break
				}
				left++
			}
			if got := c.outstanding.Load(); got != int64(left) || c.seq != uint64(answered+left) {
				t.Errorf("writer ended with %d requests in flight and %d sent; the peer got %d unanswered and %d answered", got, c.seq, left, answered)
			}
		})
	}
}

// silentPeer accepts connections, reads requests and never answers; got
// receives one value per request read.
func silentPeer(t *testing.T, p wire.Protocol) (addr string, got <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 1024)
	conns := make(chan net.Conn, 16)
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-conns:
				c.Close()
			default:
				return
			}
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() {
				br := bufio.NewReader(c)
				for {
					if _, err := readFrame(br, p); err != nil {
						return
					}
					ch <- struct{}{}
				}
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// A run that has not ended its grace after the measured duration gives up
// with an error saying what it still waits for, rather than hanging the
// bench: here replies that never come, with a Drain far longer than the
// grace.
func TestRunGivesUpAfterGrace(t *testing.T) {
	p, err := wire.Lookup("thrift")
	if err != nil {
		t.Fatal(err)
	}
	addr, got := silentPeer(t, p)
	clk := newFakeClock()
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := Run(context.Background(), Config{Label: "silent", Addr: addr, Proto: p, Mix: wire.MixRoutes, Payload: 16,
			Conns: 1, InFlight: 2, Duration: 10 * time.Millisecond, Drain: time.Hour, Grace: time.Second, clock: clk})
		done <- outcome{res, err}
	}()
	<-got
	<-got // both slots in flight
	if a := <-clk.armed; a.d != 10*time.Millisecond {
		t.Fatalf("first timer set to %v, want the measured duration of 10ms", a.d)
	}
	clk.advance(10 * time.Millisecond)
	if a := <-clk.armed; a.d != time.Second {
		t.Fatalf("after the end, timer set to %v, want the grace of 1s", a.d)
	}
	clk.advance(time.Second)
	o := <-done
	t.Logf("Run: %v", o.err)
	if o.err == nil {
		t.Fatalf("Run ended without an error although 2 replies never came: %+v", o.res)
	}
	for _, want := range []string{"silent (thrift to " + addr + ")", "not ended 1s after the end of the measured duration", "2 requests in flight on 1 of 1 connections", "1 of 1 readers still waiting"} {
		if !strings.Contains(o.err.Error(), want) {
			t.Errorf("error %q does not say %q", o.err, want)
		}
	}
}

// End to end on the real clock, against the echo server, at a pace far
// slower than its replies (the quiet machine's case): the runs end, with
// every reply. It is not the proof of the fix (the real clock decides when a
// slot is free; TestPacedWriterStopsWhileRepliesKeepUp is): with the fix
// reverted, one trial's Dubbo run gave up at the 10s grace and its Thrift
// run ended after 6.5s instead of 0.1s.
func TestPacedRunAgainstEchoEnds(t *testing.T) {
	for _, name := range []string{"thrift", "dubbo"} {
		t.Run(name, func(t *testing.T) {
			p, err := wire.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := &echo.Server{Proto: p}
			go s.Serve(ln)
			t.Cleanup(s.Close)
			res, err := Run(context.Background(), Config{Addr: ln.Addr().String(), Proto: p, Mix: wire.MixRoutes, Payload: 64,
				Conns: 4, InFlight: 4, Duration: 100 * time.Millisecond, Rate: 200, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.OK == 0 || res.Errors != 0 {
				t.Errorf("%d ok, %d errors %v", res.OK, res.Errors, res.ErrorKinds)
			}
		})
	}
}
