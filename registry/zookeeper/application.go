package zookeeper

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/metadataservice"
)

// Application-level discovery (Dubbo 3's default in new deployments):
//
//	/services/<application>/<ip:port>   the instance (Curator's ServiceInstance JSON)
//	metadata report: the instance's MetadataInfo by revision, its interfaces
//
// Every application under /services is followed (Breeze serves every
// interface, so the interface→application mapping under /dubbo/mapping,
// which tells a consumer which applications to follow, is not needed).
// The MetadataInfo of revision R of application A is read where the
// metadata report in ZooKeeper keeps it: /dubbo/metadata/A/R (Dubbo Java),
// or <root>/A/R (dubbo-go 3.3's report writes it under the registry root).
// An instance that keeps its metadata local (metadata storage type
// "local", Dubbo Java's default) publishes it only through its own
// MetadataService: Breeze calls it (registry/metadataservice), once per
// revision, off the Run goroutine; see fetchedMetadata.

// servicesRoot is where Dubbo keeps application instances.
const servicesRoot = "/services"

// appInstance is what one instance node says.
type appInstance struct {
	address  string
	port     uint32
	revision string
	// endpoints: the port of each protocol (metadata "dubbo.endpoints").
	endpoints map[string]uint32
	metadata  map[string]string
}

// serviceInfo is one service of a MetadataInfo.
type serviceInfo = metadataservice.ServiceInfo

// appState is the application-level part of a watcher (Run goroutine only).
type appState struct {
	apps map[string]map[string]*appInstance // application → instance node → instance
	// metadata by "application/revision"; nil: not in the report (yet).
	metadata map[string][]serviceInfo
	// metaWaiters: a MetadataInfo node watched for its creation → the
	// instance node to read again when it appears.
	metaWaiters map[string]string
	// missingLogged: revisions whose absence was logged.
	missingLogged map[string]bool
}

func newAppState() appState {
	return appState{apps: map[string]map[string]*appInstance{}, metadata: map[string][]serviceInfo{},
		metaWaiters: map[string]string{}, missingLogged: map[string]bool{}}
}

// isAppPath reports whether p is an application-level node.
func isAppPath(p string) bool {
	return p == servicesRoot || strings.HasPrefix(p, servicesRoot+"/")
}

// readApp reads an application-level node: /services, an application, or
// an instance.
func (w *watcher) readApp(p string) (bool, error) {
	rest := strings.TrimPrefix(strings.TrimPrefix(p, servicesRoot), "/")
	switch parts := strings.Split(rest, "/"); {
	case rest == "":
		return w.readApps()
	case len(parts) == 1:
		return w.readInstances(parts[0])
	default:
		return w.readInstance(parts[0], parts[1])
	}
}

func (w *watcher) readApps() (bool, error) {
	children, err := w.childrenOrAwait(servicesRoot)
	if err != nil {
		return false, err
	}
	next := setOf(children)
	changed := false
	for app, insts := range w.app.apps {
		if !next[app] {
			changed = changed || len(insts) > 0
			delete(w.app.apps, app)
		}
	}
	for app := range next {
		if _, ok := w.app.apps[app]; !ok {
			w.app.apps[app] = map[string]*appInstance{}
			w.mark(path.Join(servicesRoot, app))
		}
	}
	return changed, nil
}

// setOf is the set of a node's children.
func setOf(children []string) map[string]bool {
	set := make(map[string]bool, len(children))
	for _, c := range children {
		set[c] = true
	}
	return set
}

func (w *watcher) readInstances(app string) (bool, error) {
	insts, ok := w.app.apps[app]
	if !ok {
		return false, nil // gone since
	}
	p := path.Join(servicesRoot, app)
	children, err := w.children(p)
	if errors.Is(err, zk.ErrNoNode) {
		return false, nil // the /services watch says when it is back
	}
	if err != nil {
		return false, err
	}
	next := setOf(children)
	changed := false
	for inst := range insts {
		if !next[inst] {
			changed = true
			delete(insts, inst)
		}
	}
	for inst := range next {
		if _, ok := insts[inst]; !ok {
			w.mark(path.Join(p, inst))
		}
	}
	return changed, nil
}

// readInstance reads an instance node (its data, with a watch: Dubbo
// rewrites it when the instance's revision changes) and the MetadataInfo
// of its revision.
func (w *watcher) readInstance(app, inst string) (bool, error) {
	insts, ok := w.app.apps[app]
	if !ok {
		return false, nil
	}
	p := path.Join(servicesRoot, app, inst)
	data, err := w.get(p)
	if errors.Is(err, zk.ErrNoNode) {
		_, had := insts[inst]
		delete(insts, inst)
		return had, nil
	}
	if err != nil {
		return false, err
	}
	in, err := parseInstance(data)
	if err != nil {
		w.log.Warn("an application instance node that is not a Dubbo service instance; ignored", "node", p, "err", err)
		_, had := insts[inst]
		delete(insts, inst)
		return had, nil
	}
	key := app + "/" + in.revision
	learned := false // the revision's MetadataInfo came with this read
	if _, known := w.app.metadata[key]; !known && in.revision != "" {
		svcs, err := w.readMetadata(app, in, p)
		if err != nil {
			return false, err
		}
		if svcs != nil {
			w.app.metadata[key] = svcs
			learned = true
		}
	}
	old := insts[inst]
	insts[inst] = in
	return learned || old == nil || old.revision != in.revision || old.address != in.address || !maps.Equal(old.metadata, in.metadata), nil
}

// metadataPaths are where the MetadataInfo of app's revision may be.
func (w *watcher) metadataPaths(app, revision string) []string {
	return []string{path.Join("/dubbo/metadata", app, revision), path.Join(w.root, app, revision)}
}

// readMetadata reads a MetadataInfo; nil when it is not known yet. An
// instance that keeps its metadata local gets it from its MetadataService
// (fetchMetadata; instance is read again once the call ended). Otherwise,
// when no report holds it, its nodes are watched for their creation (then
// instance is read again).
func (w *watcher) readMetadata(app string, in *appInstance, instance string) ([]serviceInfo, error) {
	revision := in.revision
	if in.metadata[metadataservice.StorageTypeKey] == "local" {
		return w.fetchedMetadata(app, in, instance), nil
	}
	paths := w.metadataPaths(app, revision)
	for _, p := range paths {
		data, _, err := w.conn.Get(p)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, err
		}
		svcs, err := metadataservice.ParseReport(data)
		if err != nil {
			w.log.Warn("a MetadataInfo that cannot be read; the instance's interfaces are not served", "node", p, "err", err)
			return []serviceInfo{}, nil
		}
		return svcs, nil
	}
	key := app + "/" + revision
	if !w.app.missingLogged[key] {
		w.app.missingLogged[key] = true
		w.log.Warn("no MetadataInfo in the metadata report for this revision: its interfaces are not served until one is written",
			"application", app, "revision", revision, "looked_in", strings.Join(paths, ","))
	}
	for _, p := range paths {
		w.app.metaWaiters[p] = instance
		if err := w.exists(p); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// get reads p's data, setting a node watch unless one is set.
func (w *watcher) get(p string) ([]byte, error) {
	return readWatched(w, watchKey{p, nodeWatch}, w.conn.Get, w.conn.GetW)
}

// parseInstance reads an instance node: Curator's ServiceInstance JSON as
// Dubbo Java and dubbo-go write it.
func parseInstance(data []byte) (*appInstance, error) {
	var raw struct {
		Address string `json:"address"`
		Port    uint32 `json:"port"`
		Payload struct {
			Metadata map[string]string `json:"metadata"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	if raw.Address == "" {
		return nil, errors.New("no address")
	}
	md := raw.Payload.Metadata
	in := &appInstance{address: raw.Address, port: raw.Port, revision: md["dubbo.metadata.revision"], metadata: md, endpoints: map[string]uint32{}}
	if eps := md["dubbo.endpoints"]; eps != "" {
		var list []struct {
			Port     uint32 `json:"port"`
			Protocol string `json:"protocol"`
		}
		if err := json.Unmarshal([]byte(eps), &list); err != nil {
			return nil, fmt.Errorf("dubbo.endpoints: %w", err)
		}
		for _, e := range list {
			in.endpoints[e.Protocol] = e.Port
		}
	}
	return in, nil
}

// appInstances lists the providers of every application instance whose
// MetadataInfo is known: one per service of the instance's revision. The
// labels are the service's parameters, its version and group, and the
// instance's metadata (but dubbo.endpoints, the ports it already gave).
func (w *watcher) appInstances() []registry.Instance {
	var out []registry.Instance
	for app, insts := range w.app.apps {
		for _, in := range insts {
			endpointPort := func(protocol string) uint32 { return in.endpoints[protocol] }
			for _, s := range w.app.metadata[app+"/"+in.revision] {
				// No ID: translated again on every update (an instance
				// node's data may change without its name).
				out = append(out, registry.ApplicationServiceInstance(app, in.address, in.port, in.metadata, endpointPort, s))
			}
		}
	}
	return out
}

// pruneMetadata forgets the MetadataInfo of revisions no instance has any
// more.
func (w *watcher) pruneMetadata() {
	used := map[string]bool{}
	for app, insts := range w.app.apps {
		for _, in := range insts {
			used[app+"/"+in.revision] = true
		}
	}
	maps.DeleteFunc(w.app.metadata, func(k string, _ []serviceInfo) bool { return !used[k] })
	maps.DeleteFunc(w.app.missingLogged, func(k string, _ bool) bool { return !used[k] })
	w.mu.Lock()
	maps.DeleteFunc(w.fetched, func(k string, _ []serviceInfo) bool { return !used[k] })
	maps.DeleteFunc(w.failures, func(k string, _ int) bool { return !used[k] })
	w.mu.Unlock()
}

// fetchedMetadata is the MetadataInfo of in's revision as its
// MetadataService answered; nil while a call is under way or waits to be
// retried. Otherwise it starts one (instance is read again when it
// succeeds).
//
// Calls run off the Run goroutine, so that a provider that does not
// answer delays only its own interfaces; at most maxMetadataCalls at once.
func (w *watcher) fetchedMetadata(app string, in *appInstance, instance string) []serviceInfo {
	key := app + "/" + in.revision
	w.mu.Lock()
	svcs, done := w.fetched[key]
	busy := w.fetching[key] || w.retryWait[key]
	w.mu.Unlock()
	if done || busy {
		return svcs
	}
	target, err := metadataservice.TargetOf(app, in.address, in.port, in.metadata, in.endpoints)
	if err != nil {
		if !w.app.missingLogged[key] {
			w.app.missingLogged[key] = true
			w.log.Warn("an instance with local metadata whose MetadataService Breeze cannot call: its interfaces are not served",
				"application", app, "revision", in.revision, "instance", instance, "err", err)
		}
		return nil
	}
	w.mu.Lock()
	w.fetching[key] = true
	w.mu.Unlock()
	go w.fetch(key, target, in.revision, instance)
	return nil
}

// fetch calls a MetadataService. On success the instance is read again
// (and takes the answer); on failure every instance of that revision is
// read again after MetadataRetry (retryPrefix), and one of them calls
// again.
func (w *watcher) fetch(key string, t metadataservice.Target, revision, instance string) {
	info, err := func() (metadataservice.MetadataInfo, error) {
		select {
		case w.callSlots <- struct{}{}:
		case <-w.ctx.Done():
			return metadataservice.MetadataInfo{}, w.ctx.Err()
		}
		defer func() { <-w.callSlots }()
		return metadataservice.Get(w.ctx, t, revision)
	}()
	w.mu.Lock()
	delete(w.fetching, key)
	failures := 0
	if err == nil {
		w.fetched[key] = slices.AppendSeq([]serviceInfo{}, maps.Values(info.Services))
		delete(w.failures, key)
	} else {
		w.retryWait[key] = true
		w.failures[key]++
		failures = w.failures[key]
	}
	w.mu.Unlock()
	if err == nil {
		w.mark(instance)
		return
	}
	if w.ctx.Err() != nil {
		w.mark(instance) // wakes Run, which is ending: nothing is retried
		return
	}
	retry := w.r.MetadataRetry
	if retry <= 0 {
		retry = DefaultMetadataRetry
	}
	app, _, _ := strings.Cut(key, "/")
	// Said once at warn level; the retries that fail too at debug level.
	level := slog.LevelWarn
	if failures > 1 {
		level = slog.LevelDebug
	}
	w.log.Log(w.ctx, level, "calling an instance's MetadataService failed: its interfaces are not served until a call succeeds",
		"application", app, "revision", revision, "metadata_service", t.Address, "failures", failures, "retry_in", retry, "err", err)
	time.AfterFunc(retry, func() {
		w.mu.Lock()
		delete(w.retryWait, key)
		w.mu.Unlock()
		w.mark(retryPrefix + key)
	})
	w.mark(instance) // wakes Run: a first set waits for no failed call
}

// retryPrefix marks, in pending, a revision whose MetadataService is to be
// called again: "metadata-retry:<app>/<revision>" (not a ZooKeeper path).
const retryPrefix = "metadata-retry:"

// retryMetadata reads again every instance of a revision whose
// MetadataService call failed.
func (w *watcher) retryMetadata(key string) {
	app, revision, _ := strings.Cut(key, "/")
	for name, in := range w.app.apps[app] {
		if in.revision == revision {
			w.mark(path.Join(servicesRoot, app, name))
		}
	}
}

// metadataCallsRunning reports whether a MetadataService call is under way.
func (w *watcher) metadataCallsRunning() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.fetching) > 0
}
