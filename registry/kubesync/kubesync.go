// Package kubesync keeps a Dubbo registry's ServiceEntries in the
// Kubernetes API (Aeraki's dubbo2istio, in Breeze): `breeze controller
// -zookeeper/-nacos` runs a Sync on its leader, and the rest of the
// controller then treats the objects it writes as any ServiceEntry
// (EnvoyFilters for the clients, xDS routes, clusters and endpoints).
//
// The registry is the source of truth for the objects carrying Label
// SourceKind=registry in one namespace, and for nothing else:
//
//   - an interface with providers is one ServiceEntry (registry.ServiceEntries),
//     created, or updated only when its spec or Breeze's labels differ from
//     what the API server holds: an unchanged re-translation writes nothing;
//   - it gets an address (a VIP out of Sync.VIPs, kept for its life) so that
//     Istio builds the <vip>_20880 listener the controller's EnvoyFilter
//     puts Breeze on, and its DNS proxy answers the interface's host;
//   - an object of Breeze's that the registry no longer has is deleted, but
//     only on a fresh (not stale) set: while the registry cannot be reached
//     its last known set stands, and after a restart nothing is deleted
//     before the registry's first complete read;
//   - a ServiceEntry of the same name without Breeze's label is someone
//     else's: left alone (a Warning Event on it, a log line, a counter).
package kubesync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/breeze-mesh/breeze/registry"
)

// The labels of the ServiceEntries a Sync writes. LabelManagedBy and
// LabelSourceKind are the controller's own (its EnvoyFilters carry them
// too, with the source's kind); LabelRegistry says which registry.
const (
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedBy       = "breeze"
	LabelSourceKind = "breeze.io/source-kind"
	SourceKind      = "registry"
	LabelRegistry   = "breeze.io/registry"
)

// GVK is the kind written: networking.istio.io/v1 ServiceEntry, as
// `breeze registry export` writes it.
var GVK = schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "ServiceEntry"}

// DefaultVIPs is where the ServiceEntries' addresses come from: class E
// (reserved, never routed), next to and apart from 240.240.0.0/16, which
// Istio's own address auto-allocation takes.
var DefaultVIPs = netip.MustParsePrefix("240.241.0.0/16")

var (
	writes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_registry_serviceentry_writes_total",
		Help: "Writes of the registry's ServiceEntries to the Kubernetes API, by operation (create, update, delete).",
	}, []string{"op"})
	conflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "breeze_registry_serviceentry_conflicts_total",
		Help: "Times a registry interface's ServiceEntry name was found taken by a ServiceEntry that is not Breeze's (left alone, not written).",
	})
)

func init() {
	crmetrics.Registry.MustRegister(writes, conflicts)
}

// Sync writes the ServiceEntries of Registry into Namespace and keeps them
// in step with it. It is a controller-runtime Runnable that needs leader
// election: only the leader follows the registry and writes.
type Sync struct {
	Registry registry.Registry
	// Kind is the value of LabelRegistry: "zookeeper", "nacos", or
	// "zookeeper-nacos" for both followed as one.
	Kind      string
	Namespace string
	// Client writes; Reader lists what the API server holds now (the
	// manager's API reader, not its cache, which lags behind the writes
	// just made). Reader defaults to Client.
	Client client.Client
	Reader client.Reader
	// Recorder, if set, sends the Events on ServiceEntries left alone.
	Recorder record.EventRecorder
	// VIPs: the addresses handed out; DefaultVIPs when invalid (zero).
	VIPs netip.Prefix
	// Metrics, if set, records the registry's updates (stale, instances).
	Metrics *registry.Metrics
	Log     *slog.Logger
	// Retry after a failed write; Resync re-reads the API server that
	// often without a registry change, so that an object deleted or
	// edited by hand is put back (and a name freed by a hand-written
	// object is taken). Defaults 2s and 1m.
	Retry, Resync time.Duration
	// OnSync, if set, is called after each pass with the update it
	// applied and its error (tests wait on it rather than on time).
	OnSync func(u registry.Update, err error)

	mu     sync.Mutex
	latest *registry.Update
	wake   chan struct{}
	// taken: names held by someone else's ServiceEntry, by that object's
	// resourceVersion: reported once per version, not every pass.
	taken map[string]string
}

// NeedLeaderElection: only the leader writes.
func (s *Sync) NeedLeaderElection() bool { return true }

// Start follows the registry until ctx ends (controller-runtime's
// Runnable). A registry that gives up is an error: the ServiceEntries
// would otherwise silently stop following it.
func (s *Sync) Start(ctx context.Context) error {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Reader == nil {
		s.Reader = s.Client
	}
	if !s.VIPs.IsValid() {
		s.VIPs = DefaultVIPs
	}
	retry, resync := s.Retry, s.Resync
	if retry <= 0 {
		retry = 2 * time.Second
	}
	if resync <= 0 {
		resync = time.Minute
	}
	s.wake = make(chan struct{}, 1)
	s.taken = map[string]string{}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	regErr := make(chan error, 1)
	go func() { regErr <- s.Registry.Run(ctx, s.publish) }()
	timer := time.NewTimer(resync)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			<-regErr
			return nil
		case err := <-regErr:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("stopped")
			}
			return fmt.Errorf("registry %s: %w", s.Registry.Name(), err)
		case <-s.wake:
		case <-timer.C:
		}
		s.mu.Lock()
		u := s.latest
		s.mu.Unlock()
		if u == nil {
			// Not read once yet: nothing is known, nothing is touched
			// (the objects of a previous leader stay as they are).
			timer.Reset(resync)
			continue
		}
		err := s.pass(ctx, *u)
		if s.OnSync != nil {
			s.OnSync(*u, err)
		}
		if err != nil && ctx.Err() == nil {
			s.Log.Error("registry ServiceEntries not in step with the registry, retrying", "registry", s.Registry.Name(), "namespace", s.Namespace, "err", err)
			timer.Reset(retry)
			continue
		}
		timer.Reset(resync)
	}
}

// publish keeps the registry's last update and wakes the writer: the
// registry's watch loop never waits on the API server, and a burst of
// updates is one pass with the last of them.
func (s *Sync) publish(u registry.Update) {
	s.Metrics.Observe(s.Registry.Name(), u)
	s.mu.Lock()
	prev := s.latest
	s.latest = &u
	s.mu.Unlock()
	if prev != nil && prev.Stale != u.Stale {
		if u.Stale {
			s.Log.Warn("registry stale: its ServiceEntries keep its last known providers, none is deleted until it answers again", "registry", s.Registry.Name(), "instances", len(u.Instances))
		} else {
			s.Log.Info("registry fresh again", "registry", s.Registry.Name(), "instances", len(u.Instances))
		}
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Object is the ServiceEntry e as the API server stores it, labelled as
// the registry's of kind (what a Sync writes, less the address).
func Object(e registry.Entry, kind string) (*unstructured.Unstructured, error) {
	spec, err := protojson.Marshal(e.Spec)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(spec, &m); err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": m}}
	u.SetGroupVersionKind(GVK)
	u.SetName(e.Name)
	u.SetNamespace(e.Namespace)
	u.SetLabels(Labels(kind))
	// Numbers as the API server's answers have them (int64), so that
	// what is compared and written is what is read back.
	js, err := u.MarshalJSON()
	if err != nil {
		return nil, err
	}
	out := &unstructured.Unstructured{}
	return out, out.UnmarshalJSON(js)
}

// Labels are Breeze's labels on a ServiceEntry of a registry of kind.
func Labels(kind string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelSourceKind: SourceKind, LabelRegistry: kind}
}

// IsRegistryEntry reports whether a ServiceEntry is one a Sync wrote (and may
// update and delete).
func IsRegistryEntry(u *unstructured.Unstructured) bool {
	l := u.GetLabels()
	return l[LabelManagedBy] == ManagedBy && l[LabelSourceKind] == SourceKind
}

// pass is apply with a panic made its error (retried, logged) rather than
// taking the controller, and its xDS server, down.
func (s *Sync) pass(ctx context.Context, u registry.Update) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return s.apply(ctx, u)
}

// apply makes the namespace hold u's ServiceEntries.
func (s *Sync) apply(ctx context.Context, u registry.Update) error {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(GVK.GroupVersion().WithKind(GVK.Kind + "List"))
	if err := s.Reader.List(ctx, list, client.InNamespace(s.Namespace)); err != nil {
		return fmt.Errorf("listing the ServiceEntries of %s: %w", s.Namespace, err)
	}
	ours, others := map[string]*unstructured.Unstructured{}, map[string]*unstructured.Unstructured{}
	// used: every address a ServiceEntry of the namespace holds, so that
	// a new one gets none of them.
	used := map[netip.Addr]string{}
	for i := range list.Items {
		o := &list.Items[i]
		if IsRegistryEntry(o) {
			ours[o.GetName()] = o
		} else {
			others[o.GetName()] = o
		}
		addrs, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "addresses")
		for _, a := range addrs {
			if ip, err := netip.ParseAddr(a); err == nil {
				if _, ok := used[ip]; !ok {
					used[ip] = o.GetName()
				}
			}
		}
	}
	entries := registry.ServiceEntries(u.Instances, s.Namespace)
	want := make(map[string]bool, len(entries))
	var errs []error
	for _, e := range entries {
		want[e.Name] = true
		if o := others[e.Name]; o != nil {
			s.leftAlone(o, e)
			continue
		}
		delete(s.taken, e.Name)
		old := ours[e.Name]
		addr, ok := s.address(old, e, used)
		if !ok {
			errs = append(errs, fmt.Errorf("ServiceEntry %s/%s: no address left in %s", s.Namespace, e.Name, s.VIPs))
			continue
		}
		// ServiceEntries made this spec for this pass alone.
		e.Spec.Addresses = []string{addr.String()}
		if err := s.write(ctx, old, e); err != nil {
			errs = append(errs, err)
		}
	}
	for name := range s.taken {
		if !want[name] {
			delete(s.taken, name)
		}
	}
	if u.Stale {
		// The last known set, not the registry's word that the others
		// are gone.
		return errors.Join(errs...)
	}
	for _, name := range slices.Sorted(maps.Keys(ours)) {
		if want[name] {
			continue
		}
		old := ours[name]
		uid := old.GetUID()
		if err := s.Client.Delete(ctx, old, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting ServiceEntry %s/%s: %w", s.Namespace, name, err))
			continue
		}
		writes.WithLabelValues("delete").Inc()
		s.Log.Info("deleted ServiceEntry: the registry has no provider of its interface", "registry", s.Registry.Name(), "serviceentry", s.Namespace+"/"+name)
	}
	return errors.Join(errs...)
}

// address is the VIP of e: the one its object holds when it holds one
// address of VIPs no other object holds, else a new one: the host's hash
// in VIPs, the next free one on a collision. So an interface keeps its
// address for the life of its object, across restarts of the controller.
func (s *Sync) address(old *unstructured.Unstructured, e registry.Entry, used map[netip.Addr]string) (netip.Addr, bool) {
	if old != nil {
		addrs, _, _ := unstructured.NestedStringSlice(old.Object, "spec", "addresses")
		if len(addrs) == 1 {
			if ip, err := netip.ParseAddr(addrs[0]); err == nil && s.VIPs.Contains(ip) && used[ip] == e.Name {
				return ip, true
			}
		}
	}
	base := s.VIPs.Masked().Addr()
	bits := base.BitLen() - s.VIPs.Bits()
	if bits > 24 {
		bits = 24 // at most 16M candidates: more than any registry has
	}
	size := uint64(1) << bits
	if size < 4 {
		return netip.Addr{}, false
	}
	h := fnv.New64a()
	h.Write([]byte(e.Spec.GetHosts()[0]))
	// Neither the range's first address nor its last (network and
	// broadcast in an IPv4 /n).
	start := h.Sum64() % (size - 2)
	for i := uint64(0); i < size-2; i++ {
		ip := nth(base, 1+(start+i)%(size-2))
		if _, taken := used[ip]; !taken {
			used[ip] = e.Name
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// nth is base + n.
func nth(base netip.Addr, n uint64) netip.Addr {
	b := base.AsSlice()
	for i := len(b) - 1; i >= 0 && n > 0; i-- {
		sum := uint64(b[i]) + n&0xff
		b[i] = byte(sum)
		n = n>>8 + sum>>8
	}
	ip, _ := netip.AddrFromSlice(b)
	return ip
}

// write creates e, or updates old when its spec or Breeze's labels differ.
func (s *Sync) write(ctx context.Context, old *unstructured.Unstructured, e registry.Entry) error {
	key := s.Namespace + "/" + e.Name
	obj, err := Object(e, s.Kind)
	if err != nil {
		return fmt.Errorf("ServiceEntry %s: %w", key, err)
	}
	if old == nil {
		if err := s.Client.Create(ctx, obj); err != nil {
			// AlreadyExists: created since the list (by hand?); the
			// next pass sees whose it is.
			return fmt.Errorf("creating ServiceEntry %s: %w", key, err)
		}
		writes.WithLabelValues("create").Inc()
		s.Log.Info("created ServiceEntry", "registry", s.Registry.Name(), "serviceentry", key, "endpoints", len(e.Spec.Endpoints))
		return nil
	}
	if sameSpec(old, e.Spec) && hasLabels(old, obj.GetLabels()) {
		return nil
	}
	// Whatever else the object carries (labels, annotations added by
	// others) stays.
	next := old.DeepCopy()
	next.Object["spec"] = obj.Object["spec"]
	l := next.GetLabels()
	if l == nil {
		l = map[string]string{}
	}
	maps.Copy(l, obj.GetLabels())
	next.SetLabels(l)
	if err := s.Client.Update(ctx, next); err != nil {
		return fmt.Errorf("updating ServiceEntry %s: %w", key, err)
	}
	writes.WithLabelValues("update").Inc()
	s.Log.Info("updated ServiceEntry", "registry", s.Registry.Name(), "serviceentry", key, "endpoints", len(e.Spec.Endpoints))
	return nil
}

// sameSpec reports whether the stored object's spec is want, read as
// Istio's proto (so that key order and number forms do not count).
func sameSpec(have *unstructured.Unstructured, want *networkingv1alpha3.ServiceEntry) bool {
	js, err := json.Marshal(have.Object["spec"])
	if err != nil {
		return false
	}
	var got networkingv1alpha3.ServiceEntry
	if err := protojson.Unmarshal(js, &got); err != nil {
		return false // not what Breeze writes: written again
	}
	return proto.Equal(&got, want)
}

func hasLabels(u *unstructured.Unstructured, want map[string]string) bool {
	l := u.GetLabels()
	for k, v := range want {
		if l[k] != v {
			return false
		}
	}
	return true
}

// leftAlone reports, once per version of it, a ServiceEntry that holds an
// interface's name but is not Breeze's.
func (s *Sync) leftAlone(o *unstructured.Unstructured, e registry.Entry) {
	if s.taken[e.Name] == o.GetResourceVersion() {
		return
	}
	s.taken[e.Name] = o.GetResourceVersion()
	conflicts.Inc()
	msg := fmt.Sprintf("the registry's interface %s would be written as ServiceEntry %s/%s, which is not Breeze's (no label %s=%s): left alone, the interface is not written",
		e.Spec.GetHosts()[0], s.Namespace, e.Name, LabelSourceKind, SourceKind)
	s.Log.Warn("registry ServiceEntry not written: the name is taken", "registry", s.Registry.Name(), "serviceentry", s.Namespace+"/"+e.Name, "reason", "NameTaken")
	if s.Recorder != nil {
		s.Recorder.Event(o, corev1.EventTypeWarning, "NameTaken", msg)
	}
}
