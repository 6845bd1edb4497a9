// Package zookeeper follows the Dubbo providers a ZooKeeper registry holds,
// as Dubbo 2/3 Java and dubbo-go register them (interface-level discovery):
//
//	/dubbo/<interface>/providers/<URL-encoded dubbo://ip:port/interface?...>
//
// with ZooKeeper watches, not polling, through github.com/go-zookeeper/zk.
// consumers/, configurators/ and routers/ are not read (see the README).
package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/breeze-mesh/breeze/registry"
)

// Registry is a ZooKeeper ensemble holding Dubbo providers.
type Registry struct {
	// Servers are the ensemble's host:port addresses.
	Servers []string
	// Root is Dubbo's root node; "/dubbo" when empty.
	Root string
	// SessionTimeout of Breeze's own session (it creates no node, so it
	// only bounds how long ZooKeeper keeps its watches while it is away);
	// 15s when zero. A session not re-established within it is given up
	// and a new one opened (see Run).
	SessionTimeout time.Duration
	// RetryInterval: how long to wait before reading a node again after a
	// read failed while the session was up; 1s when zero.
	RetryInterval time.Duration
	// MetadataRetry: how long after a failed MetadataService call (see
	// application.go) to call again; DefaultMetadataRetry when zero.
	MetadataRetry time.Duration
	Log           *slog.Logger
}

// DefaultMetadataRetry is Registry.MetadataRetry's default.
const DefaultMetadataRetry = 10 * time.Second

// maxMetadataCalls bounds the MetadataService calls under way at once
// (one per revision not yet known, e.g. when Breeze starts).
const maxMetadataCalls = 8

// Nodes under the root that are not interfaces: Dubbo 3 keeps its
// interface→application mapping, its metadata report and its config
// center there.
var notInterfaces = map[string]bool{"mapping": true, "metadata": true, "config": true}

// Name implements registry.Registry.
func (r *Registry) Name() string { return "zookeeper " + strings.Join(r.Servers, ",") }

// watcher is the state of one Run.
type watcher struct {
	r    *Registry
	log  *slog.Logger
	conn *zk.Conn
	root string
	ctx  context.Context

	// mu guards what watch goroutines and the session callback write.
	mu sync.Mutex
	// pending: nodes to read again (their watch fired, or a read failed).
	pending map[string]bool
	// watching: the watches set that have not fired yet, by node and
	// kind; a node is read without setting another watch of that kind
	// (go-zookeeper would deliver every watch set on a path, and they
	// would pile up). The kind matters: a node watch (GetW, or ExistsW on
	// a node that is there) does not fire when a child comes or goes, so
	// it must not stand in for a child watch. The value is the generation
	// of the connection that set the watch.
	watching map[watchKey]uint64
	// gen counts the connections opened: events and fired watches of a
	// connection given up must not touch the state of the next one.
	gen        uint64
	hasSession bool
	// resync: a session was (re-)established: read every node again, in
	// case a change was missed while away.
	resync bool
	wake   chan struct{}
	// MetadataService calls (application.go): under way, answered, failed
	// and waiting for their retry, by "application/revision".
	fetching, retryWait map[string]bool
	fetched             map[string][]serviceInfo
	failures            map[string]int // consecutive failed calls
	callSlots           chan struct{}

	// Only the Run goroutine: the interfaces seen under the root, and
	// each one's providers by node name (the URL).
	interfaces map[string]bool
	providers  map[string]map[string]registry.Instance
	// sorted: each interface's providers in node order, for instances;
	// dropped when they change, so an update sorts one interface again,
	// not all.
	sorted map[string][]registry.Instance
	app    appState
}

// Run implements registry.Registry.
func (r *Registry) Run(ctx context.Context, publish func(registry.Update)) error {
	if len(r.Servers) == 0 {
		return errors.New("zookeeper: no servers")
	}
	w := &watcher{
		r: r, log: r.Log, root: r.Root,
		pending: map[string]bool{}, watching: map[watchKey]uint64{},
		wake:       make(chan struct{}, 1),
		interfaces: map[string]bool{}, providers: map[string]map[string]registry.Instance{}, sorted: map[string][]registry.Instance{},
		app: newAppState(), ctx: ctx,
		fetching: map[string]bool{}, retryWait: map[string]bool{}, fetched: map[string][]serviceInfo{}, failures: map[string]int{},
		callSlots: make(chan struct{}, maxMetadataCalls),
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.log = w.log.With("registry", r.Name())
	if w.root == "" {
		w.root = "/dubbo"
	}
	timeout := r.SessionTimeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	retry := r.RetryInterval
	if retry <= 0 {
		retry = time.Second
	}
	if err := w.dial(timeout); err != nil {
		return err
	}
	defer func() { w.conn.Close() }()
	w.pending[w.root] = true
	w.pending[servicesRoot] = true

	var (
		published, stale bool
		retryTimer       = time.NewTimer(time.Hour)
		// noSession fires when the connection has had no session for
		// SessionTimeout: see giveUpSession.
		noSession      = time.NewTimer(timeout)
		noSessionArmed bool
	)
	retryTimer.Stop()
	noSessionArmed = true // no session yet: the first one has as long
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-retryTimer.C:
		case <-noSession.C:
			noSessionArmed = false
			if err := w.giveUpSession(timeout); err != nil {
				return err
			}
		}
		// Read what is pending until nothing is: a new interface under the
		// root makes its providers pending, and a set is published whole.
		changed, failed := false, false
		var hasSession bool
		for !failed {
			w.mu.Lock()
			hasSession = w.hasSession
			if hasSession && w.resync {
				w.resync = false
				w.pending[w.root] = true
				for iface := range w.interfaces {
					w.pending[w.providersPath(iface)] = true
				}
				w.pending[servicesRoot] = true
				for app, insts := range w.app.apps {
					w.pending[path.Join(servicesRoot, app)] = true
					for inst := range insts {
						w.pending[path.Join(servicesRoot, app, inst)] = true
					}
				}
			}
			if !hasSession || len(w.pending) == 0 {
				w.mu.Unlock()
				break
			}
			todo := slices.Sorted(maps.Keys(w.pending))
			clear(w.pending)
			w.mu.Unlock()
			for _, p := range todo {
				c, err := w.read(p)
				changed = changed || c
				if err != nil {
					failed = true
					w.log.Warn("reading a ZooKeeper node; keeping what it held before", "node", p, "err", err)
					w.mu.Lock()
					w.pending[p] = true
					w.mu.Unlock()
				}
			}
		}
		if failed {
			retryTimer.Reset(retry)
		}
		// Every change of the session wakes this loop, so hasSession is
		// seen turning false (or never turning true) and the timer armed.
		switch {
		case hasSession && noSessionArmed:
			noSession.Stop()
			noSessionArmed = false
		case !hasSession && !noSessionArmed:
			noSession.Reset(timeout)
			noSessionArmed = true
		}
		nowStale := !hasSession || failed
		if !published && (nowStale || w.metadataCallsRunning()) {
			continue // the first set is a whole one
		}
		if changed || !published || nowStale != stale {
			if nowStale != stale && nowStale {
				w.log.Warn("ZooKeeper unreachable (or failing reads): its providers are stale, the last known set is kept", "interfaces", len(w.providers))
			}
			published, stale = true, nowStale
			publish(registry.Update{Instances: w.instances(), Stale: stale})
		}
	}
}

// dial opens a new connection (a new session; go-zookeeper connects in
// the background and reports through sessionEvent).
func (w *watcher) dial(timeout time.Duration) error {
	w.mu.Lock()
	w.gen++
	gen := w.gen
	w.hasSession = false
	// The new session has none of the old one's watches: each node is
	// read again with a watch (resync, once the session is there).
	clear(w.watching)
	w.mu.Unlock()
	conn, _, err := zk.Connect(w.r.Servers, timeout, zk.WithLogger(zkLogger{w.log}),
		zk.WithEventCallback(func(ev zk.Event) { w.sessionEvent(gen, ev) }))
	if err != nil {
		return fmt.Errorf("zookeeper: %w", err)
	}
	w.conn = conn
	return nil
}

// giveUpSession replaces the connection when it has had no session for
// the session timeout. go-zookeeper asks the servers for the same session
// again forever, and a server may refuse it for good without expiring it:
// one that came back with less than this client saw (restored from a
// backup, started on an empty volume, or its last writes lost) closes
// every such request ("client has seen zxid ..."), so the registry would
// stay stale however long the server serves. Past the session timeout the
// old session is of no use anyway (a server that was up has expired it),
// and Breeze holds no node in it: a new connection, with a new session and
// every node read again, loses nothing.
func (w *watcher) giveUpSession(timeout time.Duration) error {
	w.mu.Lock()
	has := w.hasSession
	w.mu.Unlock()
	if has {
		return nil // came back as the timer fired
	}
	w.log.Warn("no ZooKeeper session for the session timeout: opening a new one", "session_timeout", timeout.String())
	old := w.conn
	// Close waits for its close request to be sent (up to seconds when no
	// server answers): not on this goroutine. Its events and fired
	// watches belong to a past generation and are ignored.
	go old.Close()
	return w.dial(timeout)
}

// sessionEvent records the session's state (go-zookeeper calls it on its
// connection goroutine: it only records and wakes). gen is the generation
// of the connection reporting: a connection given up is ignored.
func (w *watcher) sessionEvent(gen uint64, ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	has := ev.State == zk.StateHasSession
	w.mu.Lock()
	if gen != w.gen {
		w.mu.Unlock()
		return
	}
	was := w.hasSession
	w.hasSession = has
	if has && !was {
		w.resync = true
	}
	w.mu.Unlock()
	if has != was {
		w.log.Info("ZooKeeper session", "state", ev.State.String())
		w.poke()
	}
}

func (w *watcher) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) providersPath(iface string) string {
	return path.Join(w.root, iface, "providers")
}

// read reads node p again (setting a watch on it unless one is set) and
// reports whether what is served changed.
func (w *watcher) read(p string) (bool, error) {
	if p == w.root {
		return w.readRoot()
	}
	if key, ok := strings.CutPrefix(p, retryPrefix); ok {
		w.retryMetadata(key)
		return false, nil
	}
	if inst, ok := w.app.metaWaiters[p]; ok {
		// A MetadataInfo awaited was written: read its instance again.
		delete(w.app.metaWaiters, p)
		w.mark(inst)
		return false, nil
	}
	if isAppPath(p) {
		return w.readApp(p)
	}
	iface := path.Base(path.Dir(p))
	if !w.interfaces[iface] {
		return false, nil // gone since
	}
	children, err := w.children(p)
	if errors.Is(err, zk.ErrNoNode) {
		// The interface's node is there but not its providers yet:
		// watch for the node to be created.
		err = w.exists(p)
		children = nil
	}
	if err != nil {
		return false, err
	}
	old := w.providers[iface]
	next := make(map[string]registry.Instance, len(children))
	for _, c := range children {
		if in, ok := old[c]; ok {
			next[c] = in
			continue
		}
		in, err := registry.ParseURL(c)
		if err != nil {
			w.log.Warn("a provider node that is not a provider URL; ignored", "node", path.Join(p, c), "err", err)
			continue
		}
		in.Interface = iface // the node it is filed under
		in.ID = c
		next[c] = in
	}
	if len(next) == len(old) && maps.EqualFunc(next, old, func(registry.Instance, registry.Instance) bool { return true }) {
		return false, nil
	}
	w.providers[iface] = next
	delete(w.sorted, iface)
	return true, nil
}

// childrenOrAwait lists p's children; when p is not there, none, and a
// watch for its creation.
func (w *watcher) childrenOrAwait(p string) ([]string, error) {
	c, err := w.children(p)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, w.exists(p)
	}
	return c, err
}

// readRoot reads the interfaces under the root.
func (w *watcher) readRoot() (bool, error) {
	children, err := w.childrenOrAwait(w.root)
	if err != nil {
		return false, err
	}
	next := map[string]bool{}
	for _, c := range children {
		if !notInterfaces[c] {
			next[c] = true
		}
	}
	changed := false
	for iface := range w.interfaces {
		if !next[iface] {
			changed = changed || len(w.providers[iface]) > 0
			delete(w.providers, iface)
			delete(w.sorted, iface)
		}
	}
	w.mu.Lock()
	for iface := range next {
		if !w.interfaces[iface] {
			w.pending[w.providersPath(iface)] = true
		}
	}
	w.mu.Unlock()
	w.interfaces = next
	if changed {
		return true, nil
	}
	// New interfaces change nothing served until their providers are read.
	return false, nil
}

// watchKind is what a watch on a node fires for.
type watchKind uint8

const (
	// childWatch (ChildrenW): a child created or deleted, the node deleted.
	childWatch watchKind = iota
	// nodeWatch (GetW, ExistsW): the node created, its data changed, the
	// node deleted.
	nodeWatch
)

type watchKey struct {
	path string
	kind watchKind
}

// children lists p's children, setting a child watch unless one is set.
func (w *watcher) children(p string) ([]string, error) {
	return readWatched(w, watchKey{p, childWatch}, w.conn.Children, w.conn.ChildrenW)
}

// readWatched reads the node with readW, which sets a watch of key's
// kind, unless one is set already: then with read, since go-zookeeper
// would deliver every watch set on a path and they would pile up (see
// watcher.watching).
func readWatched[T any](w *watcher, key watchKey, read func(string) (T, *zk.Stat, error),
	readW func(string) (T, *zk.Stat, <-chan zk.Event, error)) (T, error) {
	if w.isWatching(key) {
		v, _, err := read(key.path)
		return v, err
	}
	v, _, ch, err := readW(key.path)
	if err != nil {
		var zero T
		return zero, err
	}
	w.follow(key, ch)
	return v, nil
}

// exists watches p, which was not there, for its creation. When p was
// created meanwhile, ExistsW sets a node watch (not a child watch): p is
// read again, and that read sets the watch it needs.
func (w *watcher) exists(p string) error {
	key := watchKey{p, nodeWatch}
	if w.isWatching(key) {
		return nil
	}
	ok, _, ch, err := w.conn.ExistsW(p)
	if err != nil {
		return err
	}
	w.follow(key, ch)
	if ok {
		w.mark(p) // created meanwhile: read it
	}
	return nil
}

func (w *watcher) isWatching(key watchKey) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.watching[key]
	return ok
}

// follow waits for a watch to fire (a change, or the session's end), then
// has its node read again.
func (w *watcher) follow(key watchKey, ch <-chan zk.Event) {
	w.mu.Lock()
	gen := w.gen
	w.watching[key] = gen
	w.mu.Unlock()
	go func() {
		<-ch // go-zookeeper sends one event, then closes it (Close included)
		// Not watching any more before the read is asked for: that read
		// sets a new watch. Unless the entry is a newer connection's (this
		// one was given up, and closing it fired this watch).
		w.mu.Lock()
		if w.watching[key] == gen {
			delete(w.watching, key)
		}
		w.mu.Unlock()
		w.mark(key.path)
	}()
}

func (w *watcher) mark(p string) {
	w.mu.Lock()
	w.pending[p] = true
	w.mu.Unlock()
	w.poke()
}

// instances lists every provider: interface-level ones, then the
// application-level ones that no interface-level node announces too (a
// provider with registry-type "all" registers both ways; its URL has the
// richer parameters).
func (w *watcher) instances() []registry.Instance {
	var out []registry.Instance
	for _, iface := range slices.Sorted(maps.Keys(w.providers)) {
		sorted, ok := w.sorted[iface]
		if !ok {
			byNode := w.providers[iface]
			for _, n := range slices.Sorted(maps.Keys(byNode)) {
				sorted = append(sorted, byNode[n])
			}
			w.sorted[iface] = sorted
		}
		out = append(out, sorted...)
	}
	w.pruneMetadata()
	app := w.appInstances()
	if len(app) == 0 {
		return out
	}
	key := func(in registry.Instance) string {
		return fmt.Sprintf("%s|%s|%d|%s|%s", in.Interface, in.Address, in.Port, in.Params["version"], in.Params["group"])
	}
	seen := make(map[string]bool, len(out))
	for _, in := range out {
		seen[key(in)] = true
	}
	for _, in := range app {
		if !seen[key(in)] {
			out = append(out, in)
		}
	}
	return out
}

// zkLogger sends go-zookeeper's logs (connection attempts, mostly) to slog
// at debug level: the session's state is logged by the watcher. Except a
// failed session handshake: a server closing it is what keeps a registry
// stale while ZooKeeper answers (a server still starting, or one refusing
// the session for good: see giveUpSession), so it is logged at info.
type zkLogger struct{ log *slog.Logger }

func (l zkLogger) Printf(f string, a ...any) {
	if strings.HasPrefix(f, "authentication failed") {
		l.log.Info("ZooKeeper session handshake failed", "detail", fmt.Sprintf(f, a...))
		return
	}
	l.log.Debug(fmt.Sprintf(f, a...))
}
