// Package testport picks loopback TCP ports for servers a test starts as
// other processes (ZooKeeper, rnacos, the e2e peers), which bind the port
// themselves some time after it was chosen.
//
// Such a port is not taken from the kernel's ephemeral range (as binding
// port 0 would give): that range is also where every outgoing connection
// of the machine gets its local port, so in the moment between the choice
// and the server's bind, any connection a parallel test opens may take it,
// and the server dies with "Address already in use" (seen in CI for
// ZooKeeper). Below the range only listeners take ports, and those choose
// them the same way: randomly, checked free, and never twice in a process.
package testport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// lowest is the lowest port handed out: above the well-known and most
// registered services' ports.
const lowest = 10000

// Free returns a loopback TCP port nothing listened on a moment ago, below
// the kernel's ephemeral range, and not returned before in this process.
func Free(t testing.TB) int {
	t.Helper()
	return Set(t)
}

// Set returns a port P such that P and P+o for each offset o are all
// free as Free's are (rnacos listens on P, P+1000 and P+2000).
func Set(t testing.TB, offsets ...int) int {
	t.Helper()
	span := 0
	for _, o := range offsets {
		span = max(span, o)
	}
	top := ephemeralLow() - span
	if top <= lowest {
		t.Fatalf("testport: no room below the ephemeral range (%d) for a span of %d", ephemeralLow(), span)
	}
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		p := lowest + rand.IntN(top-lowest)
		ports := append([]int{p}, offsets...)
		for i := 1; i < len(ports); i++ {
			ports[i] += p
		}
		if free(ports) {
			for _, q := range ports {
				given[q] = true
			}
			return p
		}
	}
	t.Fatal("testport: no free port found in 200 tries")
	return 0
}

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// free reports whether every port can be listened on now and none was
// handed out before; it holds them together while it checks.
func free(ports []int) bool {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, p := range ports {
		if given[p] {
			return false
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		held = append(held, l)
	}
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux
// reads it from ip_local_port_range; 32768 elsewhere, Linux's default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > lowest {
				return n
			}
		}
	}
	return 32768
}
