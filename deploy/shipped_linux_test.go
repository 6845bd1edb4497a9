package deploy

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The shipped listener's socket option is TCP_USER_TIMEOUT, and on Linux it
// does what envoy.yaml says: set on the listening socket before bind, the
// accepted socket inherits it, and a client that keeps its receive window
// shut has its connection ended, freeing what is buffered for it. Checked
// with the option's own level and name, and a 1s timeout instead of 30s.
func TestShippedTCPUserTimeoutEndsClientThatDoesNotRead(t *testing.T) {
	bs, f := CheckBootstrap(readFile(t, filepath.Join(envoyConfigDir, "envoy.yaml")))
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
	opts := bs.GetStaticResources().GetListeners()[0].GetSocketOptions()
	if len(opts) != 1 {
		t.Fatalf("want one socket option on the Breeze listener, got %v", opts)
	}
	o := opts[0]
	if o.GetLevel() != unix.IPPROTO_TCP || o.GetName() != unix.TCP_USER_TIMEOUT || o.GetIntValue() <= 0 {
		t.Fatalf("socket option %v is not TCP_USER_TIMEOUT (level %d, name %d)", o, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}

	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), int(o.GetLevel()), int(o.GetName()), 1000)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close() // never read
	_ = client.(*net.TCPConn).SetReadBuffer(4 << 10)
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	// Without the option the writes would block until the deadline.
	_ = server.SetWriteDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		if _, err = server.Write(buf); err != nil {
			break
		}
	}
	if !errors.Is(err, unix.ETIMEDOUT) {
		t.Fatalf("writing to a client that does not read ended with %v, want ETIMEDOUT from TCP_USER_TIMEOUT", err)
	}
}
