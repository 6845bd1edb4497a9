package proxy

import (
	"time"

	"github.com/breeze-mesh/breeze/filters/internal/fault"
)

// A proxy's live state follows its downstream connections. Envoy never
// frees a parsed config (nor says when it stops using one), and every
// EnvoyFilter change makes it parse a new one; so a proxy with no
// connection left sleeps: its upstream connections close (with their
// timers and goroutines), its DNS refreshes pause, and its xDS
// subscriptions end (the process's xDS stream closes with the last one).
// What stays is the parsed config with its last routes, clusters and
// endpoints. The next connection wakes it: it serves with what it had and
// subscribes again, catching up within an xDS round trip.

// unusedSleep is how long a proxy that never got a connection keeps its
// state (a config Envoy parsed and replaced before using it).
var unusedSleep = time.Minute

// connOpened counts a downstream connection; the first one wakes a
// sleeping proxy.
func (p *Proxy) connOpened() {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	p.conns++
	if p.unused != nil {
		p.unused.Stop()
	}
	if p.asleep && !p.closed {
		p.wake()
	}
}

// connClosed uncounts a downstream connection; the proxy sleeps when it
// was the last.
func (p *Proxy) connClosed() {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	p.conns--
	if p.conns == 0 && !p.asleep && !p.closed {
		p.sleep()
	}
}

func (p *Proxy) sleepIfUnused() {
	defer p.recovered("unused")
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	fault.Point("unused", p.name)
	if p.conns == 0 && !p.asleep && !p.closed {
		p.sleep()
	}
}

// sleep releases the live state. Called with lifeMu held.
func (p *Proxy) sleep() {
	p.asleep = true
	p.xds.stop()
	p.xds = nil
	p.router.Sleep()
	p.up.Suspend()
	p.log.Debug("proxy asleep: no connection left")
}

// wake restores what sleep released. Called with lifeMu held, on the
// thread of a new connection: it does not wait for the xDS server.
func (p *Proxy) wake() {
	p.asleep = false
	p.up.Resume()
	p.router.Wake()
	if err := p.startXDS(false); err != nil {
		// Only a malformed address fails here, and New saw it work.
		p.log.Error("xds: cannot subscribe again; serving the last routes and clusters", "err", err)
	}
	p.log.Debug("proxy awake")
}

// Asleep reports whether the proxy released its live state (tests).
func (p *Proxy) Asleep() bool {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	return p.asleep
}
