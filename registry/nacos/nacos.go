// Package nacos follows the Dubbo providers a Nacos registry holds, as
// dubbo-go 3.3 (and Dubbo Java 3) register them, through Nacos' own Go SDK
// (github.com/nacos-group/nacos-sdk-go/v2):
//
//   - interface-level: one Nacos service per interface, version and group,
//     named providers:<interface>:<version>:<group>, its instances carrying
//     the provider URL's parameters as metadata;
//   - application-level: one Nacos service per application, its instances
//     carrying dubbo.metadata.revision; the MetadataInfo of that revision
//     is a Nacos configuration (dataId <application>, group <revision>)
//     written by the metadata report.
//
// Instances are followed with Subscribe (Nacos pushes every change over
// its gRPC stream). Nacos has no watch on the list of services: that list
// is polled (GetAllServicesInfo) every ListInterval, which is also how a
// server that stopped answering is noticed (see the README).
package nacos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/config_client"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/breeze-mesh/breeze/registry"
)

// Registry is a Nacos server (or cluster) holding Dubbo providers.
type Registry struct {
	// Servers are the servers' HTTP addresses, host:port (8848). Nacos 2's
	// clients speak gRPC on that port + 1000, and so does this one.
	Servers []string
	// Namespace is the Nacos namespace id; "" is the public namespace.
	Namespace string
	// Group is the Nacos group the providers registered in; DEFAULT_GROUP
	// when empty (dubbo-go's and Dubbo Java's default).
	Group string
	// ListInterval: how often the list of services is read again (new
	// interfaces and applications, and whether the server answers);
	// DefaultListInterval when zero.
	ListInterval time.Duration
	// Timeout of one request to the server; 5s when zero.
	Timeout time.Duration
	// RestartGrace: once Nacos answers again after an outage, how long the
	// providers known before it stay served (still marked stale) unless
	// back. A restarted Nacos holds no ephemeral instance until the
	// providers' clients, reconnecting, register again: without a grace,
	// every endpoint would go for that while. 15s when zero.
	RestartGrace time.Duration
	Log          *slog.Logger
	// now is the clock (time.Now when nil).
	now func() time.Time
}

// Name implements registry.Registry.
func (r *Registry) Name() string {
	n := "nacos " + strings.Join(r.Servers, ",")
	if r.Namespace != "" {
		n += " namespace " + r.Namespace
	}
	if r.Group != "" && r.Group != constant.DEFAULT_GROUP {
		n += " group " + r.Group
	}
	return n
}

// Run implements registry.Registry.
func (r *Registry) Run(ctx context.Context, publish func(registry.Update)) error {
	if len(r.Servers) == 0 {
		return errors.New("nacos: no servers")
	}
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("registry", r.Name())
	w := &watcher{r: r, log: log, group: r.Group, wake: make(chan struct{}, 1),
		services: map[string]*service{}, metadata: map[string]*metadataInfo{}}
	if w.group == "" {
		w.group = constant.DEFAULT_GROUP
	}
	// The SDK writes its own log files and a cache of every service it
	// sees: into a directory of this run's, removed at the end.
	dir, err := os.MkdirTemp("", "breeze-nacos-")
	if err != nil {
		return fmt.Errorf("nacos: %w", err)
	}
	defer os.RemoveAll(dir)
	param, err := r.clientParam(dir)
	if err != nil {
		return err
	}
	naming, err := clients.NewNamingClient(param)
	if err != nil {
		return fmt.Errorf("nacos: naming client: %w", err)
	}
	defer naming.CloseClient()
	cfg, err := clients.NewConfigClient(param)
	if err != nil {
		return fmt.Errorf("nacos: config client: %w", err)
	}
	defer cfg.CloseClient()
	setSDKLogger(log) // after the clients: each replaced the SDK's logger
	w.naming, w.config = naming, cfg
	defer w.unsubscribeAll()
	return w.loop(ctx, publish)
}

func (r *Registry) clientParam(dir string) (vo.NacosClientParam, error) {
	var servers []constant.ServerConfig
	for _, s := range r.Servers {
		host, portText, err := net.SplitHostPort(s)
		if err != nil {
			return vo.NacosClientParam{}, fmt.Errorf("nacos: server %q: %w", s, err)
		}
		port, err := strconv.ParseUint(portText, 10, 16)
		if err != nil {
			return vo.NacosClientParam{}, fmt.Errorf("nacos: server %q: port %q is not a port number", s, portText)
		}
		servers = append(servers, *constant.NewServerConfig(host, port))
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	cc := constant.NewClientConfig(
		constant.WithNamespaceId(r.Namespace),
		constant.WithTimeoutMs(uint64(timeout.Milliseconds())),
		constant.WithLogDir(dir), constant.WithCacheDir(dir),
		// A cache left by another run would be served as if it came from
		// the server.
		constant.WithNotLoadCacheAtStart(true),
		// Without it the SDK drops a push with no instance left, and the
		// last provider of a service would never go.
		constant.WithUpdateCacheWhenEmpty(true),
		constant.WithLogLevel("warn"),
	)
	return vo.NacosClientParam{ClientConfig: cc, ServerConfigs: servers}, nil
}

// A service is one Nacos service followed, with its last pushed instances.
type service struct {
	name      string
	subscribe *vo.SubscribeParam
	// instances: the last push (nil before the first).
	instances []model.Instance
	pushed    bool
	// pushes counts the pushes: a service whose count did not change
	// since it was last translated is not translated again.
	pushes int
}

// translated is an interface-level service's instances as translated
// after its pushes-th push, and their idKey.
type translated struct {
	pushes    int
	instances []registry.Instance
	key       string
}

// metadataInfo is the MetadataInfo of one application revision; services
// nil: not in the metadata report (yet).
type metadataInfo struct {
	services []serviceInfo
	checked  time.Time
	// timerPending: a wake-up to read it again is scheduled.
	timerPending atomic.Bool
}

type watcher struct {
	r      *Registry
	log    *slog.Logger
	group  string
	naming naming_client.INamingClient
	config config_client.IConfigClient

	// mu guards services' instances, written by the SDK's push goroutines.
	mu       sync.Mutex
	services map[string]*service
	wake     chan struct{}

	// Run goroutine only: MetadataInfos by "application/revision".
	metadata      map[string]*metadataInfo
	missingLogged map[string]bool
	// byService: interface-level services as last translated, by name:
	// with 1,000 services, one push translates one again, not all.
	byService map[string]*translated
}

// serviceKind: what a Nacos service name says it holds.
type serviceKind int

const (
	otherService serviceKind = iota
	interfaceService
	applicationService
)

// kindOf classifies a Nacos service name as dubbo-go and Dubbo Java name
// them: providers:<interface>:<version>:<group> for interface-level
// providers, consumers:... (and configurators:, routers:) for what is not
// a provider, any other name an application.
func kindOf(name string) serviceKind {
	category, _, found := strings.Cut(name, ":")
	switch {
	case found && category == "providers":
		return interfaceService
	case found && (category == "consumers" || category == "configurators" || category == "routers"):
		return otherService
	default:
		return applicationService
	}
}

func (w *watcher) loop(ctx context.Context, publish func(registry.Update)) error {
	interval := w.r.ListInterval
	if interval <= 0 {
		interval = DefaultListInterval
	}
	grace := w.r.RestartGrace
	if grace <= 0 {
		grace = 15 * time.Second
	}
	now := w.r.now
	if now == nil {
		now = time.Now
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	graceTimer := time.NewTimer(time.Hour)
	graceTimer.Stop()
	var (
		published, unreachable bool
		lastKey                string
		lastStale              bool
		// last: the set last published; kept: what was served when Nacos
		// became unreachable, served on through the grace after it answers.
		last, kept []registry.Instance
		graceUntil time.Time
	)
	listNow := true
	for {
		if listNow {
			if err := w.list(); err != nil {
				if !unreachable {
					w.log.Warn("Nacos unreachable: its providers are stale, the last known set is kept", "err", err)
					kept = last
				}
				unreachable = true
			} else if unreachable {
				unreachable = false
				graceUntil = now().Add(grace)
				graceTimer.Reset(grace)
			}
		}
		if published || (!unreachable && w.allPushed()) {
			instances, key := w.instances()
			stale := unreachable
			if unreachable {
				instances, key = last, lastKey // pushes of a disconnected client are not news
			} else if kept != nil {
				if now().Before(graceUntil) && !covers(instances, kept) {
					instances, stale = union(instances, kept), true
					key = idKey(instances)
				} else {
					kept = nil
				}
			}
			if !published || key != lastKey || stale != lastStale {
				published, lastKey, lastStale, last = true, key, stale, instances
				publish(registry.Update{Instances: instances, Stale: stale})
			}
		}
		listNow = false
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-graceTimer.C:
		case <-ticker.C:
			listNow = true
		}
	}
}

// endpointKey names an instance by interface, address and port.
func endpointKey(in registry.Instance) string {
	return in.Interface + "|" + in.Address + ":" + strconv.FormatUint(uint64(in.Port), 10)
}

// covers reports whether every endpoint of kept is in instances again.
func covers(instances, kept []registry.Instance) bool {
	have := make(map[string]bool, len(instances))
	for _, in := range instances {
		have[endpointKey(in)] = true
	}
	for _, in := range kept {
		if !have[endpointKey(in)] {
			return false
		}
	}
	return true
}

// union is instances and the endpoints of kept not among them.
func union(instances, kept []registry.Instance) []registry.Instance {
	out := slices.Clone(instances)
	have := make(map[string]bool, len(instances))
	for _, in := range instances {
		have[endpointKey(in)] = true
	}
	for _, in := range kept {
		if !have[endpointKey(in)] {
			out = append(out, in)
		}
	}
	return out
}

// list reads the service names of the group and subscribes to the new
// ones (unsubscribing those gone).
func (w *watcher) list() error {
	names, err := w.listServices()
	if err != nil {
		return err
	}
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if kindOf(name) == otherService {
			continue
		}
		seen[name] = true
		w.mu.Lock()
		_, known := w.services[name]
		w.mu.Unlock()
		if known {
			continue
		}
		if err := w.subscribe(name); err != nil {
			return fmt.Errorf("subscribe %s: %w", name, err)
		}
	}
	w.mu.Lock()
	var gone []*service
	for name, s := range w.services {
		if !seen[name] {
			gone = append(gone, s)
			delete(w.services, name)
		}
	}
	w.mu.Unlock()
	for _, s := range gone {
		if err := w.naming.Unsubscribe(s.subscribe); err != nil {
			w.log.Debug("Nacos unsubscribe failed", "service", s.name, "err", err)
		}
	}
	return nil
}

// DefaultListInterval is how often the list of services is read when
// Registry.ListInterval is zero. A new interface's first provider is found
// by this read only, so it bounds how soon the interface gets traffic;
// one read is a page of names per 500 services, cheap for the server.
const DefaultListInterval = time.Second

// pageSize of GetAllServicesInfo; pages are read until one is short.
const pageSize = 500

func (w *watcher) listServices() ([]string, error) {
	var names []string
	for page := uint32(1); ; page++ {
		l, err := w.naming.GetAllServicesInfo(vo.GetAllServiceInfoParam{NameSpace: w.r.Namespace, GroupName: w.group, PageNo: page, PageSize: pageSize})
		if err != nil {
			return nil, err
		}
		names = append(names, l.Doms...)
		if len(l.Doms) < pageSize || int64(len(names)) >= l.Count {
			return names, nil
		}
	}
}

func (w *watcher) subscribe(name string) error {
	s := &service{name: name}
	s.subscribe = &vo.SubscribeParam{ServiceName: name, GroupName: w.group,
		SubscribeCallback: func(instances []model.Instance, _ error) {
			// The SDK passes an error only to say the list is empty.
			w.mu.Lock()
			s.instances, s.pushed = slices.Clone(instances), true
			s.pushes++
			w.mu.Unlock()
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}}
	w.mu.Lock()
	w.services[name] = s
	w.mu.Unlock()
	if err := w.naming.Subscribe(s.subscribe); err != nil {
		w.mu.Lock()
		delete(w.services, name)
		w.mu.Unlock()
		return err
	}
	return nil
}

// allPushed: every service subscribed to had its first push, so a first
// set published is whole.
func (w *watcher) allPushed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.services {
		if !s.pushed {
			return false
		}
	}
	return true
}

func (w *watcher) unsubscribeAll() {
	w.mu.Lock()
	subs := make([]*vo.SubscribeParam, 0, len(w.services))
	for _, s := range w.services {
		subs = append(subs, s.subscribe)
	}
	w.mu.Unlock()
	for _, p := range subs {
		w.naming.Unsubscribe(p)
	}
}

// instances is the whole set the services' last pushes hold, and a key
// that is equal for equal sets (the services' idKeys in order).
func (w *watcher) instances() ([]registry.Instance, string) {
	type pushed struct {
		name      string
		instances []model.Instance
		pushes    int
	}
	w.mu.Lock()
	all := make([]pushed, 0, len(w.services))
	for _, s := range w.services {
		all = append(all, pushed{s.name, s.instances, s.pushes})
	}
	w.mu.Unlock()
	slices.SortFunc(all, func(a, b pushed) int { return strings.Compare(a.name, b.name) })
	var out []registry.Instance
	keys := make([]string, 0, len(all))
	next := make(map[string]*translated, len(w.byService))
	for _, p := range all {
		switch kindOf(p.name) {
		case interfaceService:
			tr := w.byService[p.name]
			if tr == nil || tr.pushes != p.pushes {
				tr = &translated{pushes: p.pushes}
				for _, in := range p.instances {
					if x, ok := InterfaceInstance(p.name, in); ok {
						tr.instances = append(tr.instances, x)
					}
				}
				tr.key = idKey(tr.instances)
			}
			next[p.name] = tr
			out = append(out, tr.instances...)
			keys = append(keys, tr.key)
		case applicationService:
			// Not kept: an instance's MetadataInfo may arrive without a
			// push.
			var app []registry.Instance
			for _, in := range p.instances {
				if !takesTraffic(in) {
					continue
				}
				md := w.metadataOf(p.name, in.Metadata["dubbo.metadata.revision"])
				app = append(app, ApplicationInstances(p.name, in, md)...)
			}
			out = append(out, app...)
			keys = append(keys, idKey(app))
		}
	}
	w.byService = next
	return out, strings.Join(keys, "\x00")
}

// takesTraffic: Nacos sends a provider traffic when it is healthy, enabled
// and weighs more than 0.
func takesTraffic(in model.Instance) bool {
	return in.Healthy && in.Enable && in.Weight > 0
}

// InterfaceInstance translates one instance of an interface-level service
// (providers:<interface>:<version>:<group>): its metadata are the provider
// URL's parameters (dubbo-go 3.3 adds nacos.category, protocol and path,
// the latter with a leading "/"). ok is
// false for an instance that takes no traffic (unhealthy, disabled, weight
// 0) or that names no interface.
func InterfaceInstance(serviceName string, in model.Instance) (registry.Instance, bool) {
	if !takesTraffic(in) || in.Ip == "" || in.Port == 0 || in.Port > math.MaxUint16 {
		return registry.Instance{}, false
	}
	params := maps.Clone(in.Metadata)
	if params == nil {
		params = map[string]string{}
	}
	iface := params["interface"]
	if iface == "" {
		iface = strings.TrimPrefix(params["path"], "/")
	}
	if iface == "" {
		// providers:<interface>:<version>:<group>
		parts := strings.Split(serviceName, ":")
		if len(parts) > 1 {
			iface = parts[1]
		}
	}
	if iface == "" {
		return registry.Instance{}, false
	}
	protocol := params["protocol"]
	if protocol == "" {
		protocol = registry.ProtocolDubbo
	}
	setWeight(params, in.Weight)
	return registry.Instance{Interface: iface, Address: in.Ip, Port: uint32(in.Port), Params: params, Protocol: protocol,
		ID: instanceID(serviceName, in)}, true
}

// setWeight makes the endpoint weight Dubbo's weight (the "weight"
// parameter, 100 when unset) times Nacos' instance weight (1 unless an
// operator changed it in Nacos): so a provider halved in Nacos' console
// gets half its share, and one with a Dubbo weight keeps it.
func setWeight(params map[string]string, nacosWeight float64) {
	if nacosWeight == 1 {
		return
	}
	dubbo := registry.Instance{Params: params}.Weight()
	w := math.Round(float64(dubbo) * nacosWeight)
	params["weight"] = strconv.FormatUint(uint64(max(1, min(w, math.MaxUint32))), 10)
}

// instanceID is all an instance says, so that Source translates a service
// again only when one of its instances changed.
func instanceID(service string, in model.Instance) string {
	b, _ := json.Marshal(struct {
		S string
		I string
		P uint64
		W float64
		M map[string]string
		H bool
		E bool
	}{service, in.Ip, in.Port, in.Weight, in.Metadata, in.Healthy, in.Enable})
	return string(b)
}

// idKey is a digest of a whole set: equal keys, equal sets (no publish).
func idKey(instances []registry.Instance) string {
	ids := make([]string, len(instances))
	for i, in := range instances {
		id := in.ID
		if id == "" {
			b, _ := json.Marshal(in)
			id = string(b)
		}
		ids[i] = id
	}
	slices.Sort(ids)
	return strings.Join(ids, "\n")
}
