package load

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/bench/internal/wire"
)

// fakeServer answers each Dubbo request with answer(frame), or closes the
// connection when it returns nil.
func fakeServer(t *testing.T, answer func(f []byte) []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					h := make([]byte, 16)
					if _, err := io.ReadFull(br, h); err != nil {
						return
					}
					f := append(h, make([]byte, binary.BigEndian.Uint32(h[12:]))...)
					if _, err := io.ReadFull(br, f[16:]); err != nil {
						return
					}
					out := answer(f)
					if out == nil {
						return
					}
					c.Write(out)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func dubboProto(t *testing.T) wire.Protocol {
	p, err := wire.Lookup("dubbo")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func runLoad(t *testing.T, addr string, n int64) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{Addr: addr, Proto: dubboProto(t), Mix: wire.MixRoutes, Payload: 64,
		Conns: 2, InFlight: 3, Requests: n, Verify: true, Drain: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Error statuses are counted by status, and the run still ends.
func TestErrorStatusCounted(t *testing.T) {
	addr := fakeServer(t, func(f []byte) []byte {
		r := append([]byte(nil), f[:16]...)
		r[2], r[3] = 0x02, 60 // response, SERVICE_NOT_FOUND
		binary.BigEndian.PutUint32(r[12:], 2)
		return append(r, 0x01, 'x') // hessian2 string "x"
	})
	res := runLoad(t, addr, 50)
	if res.Responses != 50 || res.OK != 0 || res.ErrorKinds["status_60"] != 50 {
		t.Errorf("%+v", res)
	}
}

// A server that closes the connection loses what was in flight; the run
// ends and says so.
func TestPeerCloseCounted(t *testing.T) {
	var n atomic.Int32
	addr := fakeServer(t, func(f []byte) []byte {
		if n.Add(1) > 5 {
			return nil
		}
		return must(dubboProto(t).Echo(nil, f))
	})
	res := runLoad(t, addr, 100)
	if res.ErrorKinds["conn_closed"] == 0 && res.ErrorKinds["conn_error"] == 0 {
		t.Errorf("no connection error counted: %+v", res)
	}
	if res.ErrorKinds["lost_response"] == 0 {
		t.Errorf("no lost response counted: %+v", res)
	}
}

// A response whose length is not the echo's is caught by Verify, and one
// with an id never sent is counted without releasing a slot.
func TestBadResponses(t *testing.T) {
	addr := fakeServer(t, func(f []byte) []byte {
		r := must(dubboProto(t).Echo(nil, f))
		r = append(r, 0) // one byte too many ...
		binary.BigEndian.PutUint32(r[12:], binary.BigEndian.Uint32(r[12:])+1)
		stray := append([]byte(nil), r...)
		binary.BigEndian.PutUint64(stray[4:], 1<<40) // ... and a stray copy
		return append(r, stray...)
	})
	res := runLoad(t, addr, 30)
	// The reader stops at the last awaited response, so the last stray may go unread.
	if res.ErrorKinds["bad_length"] != 30 || res.ErrorKinds["unexpected_id"] < 25 {
		t.Errorf("%+v", res.ErrorKinds)
	}
}

func TestConfigChecked(t *testing.T) {
	for _, cfg := range []Config{
		{Proto: dubboProto(t), Conns: 0, InFlight: 1, Requests: 1},
		{Proto: dubboProto(t), Conns: 1, InFlight: 0, Requests: 1},
		{Proto: dubboProto(t), Conns: 1, InFlight: 1},
		{Proto: dubboProto(t), Conns: 1, InFlight: 1, Requests: 1, Duration: time.Second},
		{Conns: 1, InFlight: 1, Requests: 1},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	if _, err := Run(context.Background(), Config{Addr: "127.0.0.1:1", Proto: dubboProto(t), Mix: wire.MixSingle, Conns: 1, InFlight: 1, Requests: 1}); err == nil {
		t.Error("no error without any connection")
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// narrowIDs is Thrift with 18-bit ids, so that they wrap within a short run.
type narrowIDs struct{ wire.Protocol }

func (narrowIDs) IDMask() uint64 { return 0x3ffff }

// Ids are masked to the protocol's width (Thrift's seqids are 32-bit) and
// stay unique in flight when they wrap, skipping the id 0.
func TestIDMaskWraps(t *testing.T) {
	p, err := wire.Lookup("thrift")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var maxID atomic.Uint64
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			h := make([]byte, 4)
			if _, err := io.ReadFull(br, h); err != nil {
				return
			}
			f := append(h, make([]byte, binary.BigEndian.Uint32(h))...)
			if _, err := io.ReadFull(br, f[4:]); err != nil {
				return
			}
			nl := binary.BigEndian.Uint32(f[8:])
			id := uint64(binary.BigEndian.Uint32(f[12+nl:]))
			maxID.Store(max(id, maxID.Load())) // one connection: no race
			out, err := p.Echo(nil, f)
			if err != nil || id == 0 {
				return // id 0 marks a free slot: never sent
			}
			c.Write(out)
		}
	}()
	res, err := Run(context.Background(), Config{Addr: ln.Addr().String(), Proto: narrowIDs{p}, Mix: wire.MixRoutes,
		Payload: 10, Conns: 1, InFlight: 2, Requests: 20, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 20 || res.Errors != 0 || maxID.Load() > 0x3ffff {
		t.Errorf("%d ok, %d errors %v, largest id %#x", res.OK, res.Errors, res.ErrorKinds, maxID.Load())
	}
}
