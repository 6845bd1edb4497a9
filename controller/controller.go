// Package controller is `breeze controller`: it watches Kubernetes
// Services and EndpointSlices, Istio ServiceEntries, DestinationRules,
// WorkloadEntries and Gateways, and Aeraki MetaRouters and ApplicationProtocols (the
// Istio and Aeraki kinds as unstructured objects: no clientsets), and
//
//   - writes the EnvoyFilters that put Breeze on the listeners of the
//     services whose ports are Breeze protocols (deploy.Render, as
//     `breeze render` does), and on the Breeze ports of Gateways
//     (gateway.go), owned by and labelled with their source, and updated
//     only when a service's shape changes;
//   - feeds the control plane (controlplane.Feed) that serves routes,
//     clusters and endpoints over xDS to the plugins those EnvoyFilters
//     configure;
//   - writes the status of MetaRouters and Events on what it cannot honour.
//
// Every change of any watched object recomputes the whole mesh from the
// informers' caches (a pure function, mesh.compute): what is written to
// the API server is only the difference, and the xDS server sends only the
// resources that changed.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/deploy"
)

// Options configure the controller.
type Options struct {
	// XDSAddress is the address the plugins reach this controller's xDS
	// server at (host:port), written into every EnvoyFilter; required.
	XDSAddress string
	// XDSCAFile and XDSTokenFile, if set, are written into every
	// EnvoyFilter's xds block as tls.ca_file and token_file: where the
	// sidecars have the CA bundle of the xDS server's certificate and a
	// projected service-account token (paths inside the sidecar; the pods
	// mount them, see controller/README.md). The server name checked is
	// the host of XDSAddress.
	XDSCAFile, XDSTokenFile string
	// UpstreamTLS of the clients' plainText cluster; default Istio mTLS.
	UpstreamTLS deploy.UpstreamTLS
	// Istio release the EnvoyFilters are for; default deploy's.
	Istio string
	// LibraryPath of breeze.so in the sidecars; default deploy's.
	LibraryPath string
	// Revision, if set, is the istio.io/rev label of every EnvoyFilter
	// written: istiod gives an object of a revision to that revision's
	// proxies only, and one without the label to every revision's.
	Revision string
	// KnownCodec reports whether Breeze has a codec of that name; default:
	// the codecs registered in this binary.
	KnownCodec func(string) bool
	Log        *slog.Logger
}

// Controller holds what both of its reconcilers share.
type Controller struct {
	reader   client.Reader
	writer   client.Client
	recorder record.EventRecorder
	feed     *controlplane.Feed
	settings settings
	log      *slog.Logger
	// kinds: the CRD kinds the API server has (a cluster without Aeraki
	// has no MetaRouters: the controller runs without them).
	kinds map[schema.GroupVersionKind]bool

	mu sync.Mutex
	// reported: the Events already sent, by object UID, version and
	// text: each is sent once per version of its object, not on every
	// recomputation.
	reported map[string]bool
}

var (
	filterWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_controller_envoyfilter_writes_total",
		Help: "EnvoyFilters the controller created, updated or deleted, by operation.",
	}, []string{"op"})
	snapshots = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "breeze_controller_snapshots_total",
		Help: "Snapshots of the mesh handed to the xDS server.",
	})
	statusWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "breeze_controller_metarouter_status_writes_total",
		Help: "MetaRouter status updates, by result (accepted, rejected).",
	}, []string{"result"})
)

func init() {
	crmetrics.Registry.MustRegister(filterWrites, snapshots, statusWrites)
}

// the one work item: any change recomputes the whole mesh.
var meshKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "mesh"}}

// Setup adds the controller's two reconcilers to mgr: one that feeds
// feed on every replica (followers serve xDS too), one that writes
// EnvoyFilters, statuses and Events on the leader only.
func Setup(mgr manager.Manager, feed *controlplane.Feed, opts Options) (*Controller, error) {
	if opts.XDSAddress == "" {
		return nil, errors.New("controller: XDSAddress is required: the plugins' xDS server address written into the EnvoyFilters")
	}
	if opts.KnownCodec == nil {
		opts.KnownCodec = func(name string) bool { _, ok := codecs.Lookup(name); return ok }
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	c := &Controller{
		reader:   mgr.GetCache(),
		writer:   mgr.GetClient(),
		recorder: mgr.GetEventRecorderFor("breeze-controller"),
		feed:     feed,
		settings: settings{XDSAddress: opts.XDSAddress, XDSCAFile: opts.XDSCAFile, XDSTokenFile: opts.XDSTokenFile, UpstreamTLS: opts.UpstreamTLS, Istio: opts.Istio, LibraryPath: opts.LibraryPath, Revision: opts.Revision, KnownCodec: opts.KnownCodec},
		log:      opts.Log,
		kinds:    map[schema.GroupVersionKind]bool{},
		reported: map[string]bool{},
	}
	for _, gvk := range []schema.GroupVersionKind{ServiceEntryGVK, DestinationRuleGVK, WorkloadEntryGVK, MetaRouterGVK, ApplicationProtocolGVK,
		DubboAuthorizationPolicyGVK, AuthorizationPolicyGVK, EnvoyFilterGVK, GatewayGVK} {
		if _, err := mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			if meta.IsNoMatchError(err) {
				c.log.Warn("the API server does not serve this kind: running without it", "kind", gvk.String())
				continue
			}
			return nil, fmt.Errorf("controller: looking up %s: %w", gvk, err)
		}
		c.kinds[gvk] = true
	}
	if !c.kinds[EnvoyFilterGVK] {
		return nil, errors.New("controller: the API server has no EnvoyFilter kind (networking.istio.io/v1alpha3): install Istio's CRDs")
	}
	toMesh := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request { return []reconcile.Request{meshKey} })
	// One reconcile at start, whatever the caches hold: watched namespaces
	// without objects send no event, and without a first snapshot the xDS
	// server never serves and /readyz never passes.
	atStart := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(meshKey)
		return nil
	})
	watch := func(b *ctrl.Builder, withFilters bool) *ctrl.Builder {
		b = b.WatchesRawSource(atStart).Watches(&corev1.Service{}, toMesh).Watches(&discoveryv1.EndpointSlice{}, toMesh)
		for gvk := range c.kinds {
			if gvk == EnvoyFilterGVK && !withFilters {
				continue
			}
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(gvk)
			b = b.Watches(u, toMesh)
		}
		return b
	}
	notLeader := false
	if err := watch(ctrl.NewControllerManagedBy(mgr).Named("breeze-xds").
		WithOptions(crcontroller.Options{NeedLeaderElection: &notLeader, MaxConcurrentReconciles: 1}), false).
		Complete(reconcile.Func(c.reconcileFeed)); err != nil {
		return nil, err
	}
	if err := watch(ctrl.NewControllerManagedBy(mgr).Named("breeze-writer").
		WithOptions(crcontroller.Options{MaxConcurrentReconciles: 1}), true).
		Complete(reconcile.Func(c.reconcileWrites)); err != nil {
		return nil, err
	}
	return c, nil
}

// read lists everything the controller watches from the caches.
func (c *Controller) read(ctx context.Context) (*mesh, error) {
	m := &mesh{}
	var svcs corev1.ServiceList
	if err := c.reader.List(ctx, &svcs); err != nil {
		return nil, err
	}
	m.services = svcs.Items
	var eps discoveryv1.EndpointSliceList
	if err := c.reader.List(ctx, &eps); err != nil {
		return nil, err
	}
	m.endpointSlices = eps.Items
	for gvk, dst := range map[schema.GroupVersionKind]*[]unstructured.Unstructured{
		ServiceEntryGVK: &m.serviceEntries, DestinationRuleGVK: &m.destinationRules, WorkloadEntryGVK: &m.workloadEntries,
		MetaRouterGVK: &m.metaRouters, ApplicationProtocolGVK: &m.appProtocols,
		DubboAuthorizationPolicyGVK: &m.authzPolicies, AuthorizationPolicyGVK: &m.authzPolicies,
		GatewayGVK: &m.gateways,
	} {
		if !c.kinds[gvk] {
			continue
		}
		items, err := c.list(ctx, gvk, nil)
		if err != nil {
			return nil, err
		}
		*dst = append(*dst, items...) // both authorization kinds share one list
	}
	slices.SortFunc(m.authzPolicies, func(a, b unstructured.Unstructured) int {
		return strings.Compare(a.GetKind()+"/"+a.GetNamespace()+"/"+a.GetName(), b.GetKind()+"/"+b.GetNamespace()+"/"+b.GetName())
	})
	// Objects in order of namespace and name: the same mesh computes the
	// same result.
	slices.SortFunc(m.services, func(a, b corev1.Service) int { return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	return m, nil
}

func (c *Controller) list(ctx context.Context, gvk schema.GroupVersionKind, opts []client.ListOption) ([]unstructured.Unstructured, error) {
	l := &unstructured.UnstructuredList{}
	l.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err := c.reader.List(ctx, l, opts...); err != nil {
		return nil, err
	}
	slices.SortFunc(l.Items, func(a, b unstructured.Unstructured) int {
		return strings.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName())
	})
	return l.Items, nil
}

// panicAsError, deferred by a reconcile, makes a panic the reconcile's
// error (retried with backoff) rather than taking the process down.
func panicAsError(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("panic: %v", r)
	}
}

// reconcileFeed hands the mesh's snapshot to the xDS server.
func (c *Controller) reconcileFeed(ctx context.Context, _ reconcile.Request) (_ reconcile.Result, err error) {
	defer panicAsError(&err)
	m, err := c.read(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	res := m.compute(c.settings, false)
	c.feed.Push(res.snapshot)
	snapshots.Inc()
	return reconcile.Result{}, nil
}

// reconcileWrites makes the API server hold what the mesh asks for:
// EnvoyFilters, MetaRouter statuses, Events.
func (c *Controller) reconcileWrites(ctx context.Context, _ reconcile.Request) (_ reconcile.Result, err error) {
	defer panicAsError(&err)
	m, err := c.read(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	res := m.compute(c.settings, true)
	errs := []error{c.syncFilters(ctx, &res)}
	problems := append(slices.Clone(res.snapshot.Problems), res.translation.Problems...)
	errs = append(errs, c.writeStatuses(ctx, res.metaRouterRefs, problems))
	c.sendEvents(res, problems)
	return reconcile.Result{}, errors.Join(errs...)
}

// syncFilters creates, updates and deletes the controller's EnvoyFilters.
// One is updated only when what it should hold differs from what it holds:
// a routing change (MetaRouter, DestinationRule, endpoints) changes none.
func (c *Controller) syncFilters(ctx context.Context, res *result) error {
	have, err := c.list(ctx, EnvoyFilterGVK, []client.ListOption{client.MatchingLabels{LabelManagedBy: ManagedBy}, client.HasLabels{LabelSourceKind}})
	if err != nil {
		return err
	}
	existing := map[string]*unstructured.Unstructured{}
	for i := range have {
		existing[have[i].GetNamespace()+"/"+have[i].GetName()] = &have[i]
	}
	want := map[string]bool{}
	var errs []error
	for _, d := range res.filters {
		key := d.obj.GetNamespace() + "/" + d.obj.GetName()
		if want[key] {
			res.issues = append(res.issues, issue{obj: d.obj, kind: "EnvoyFilter", reason: "NameTaken",
				message: fmt.Sprintf("EnvoyFilter %s is made for two ports or sources; only the first is written", key)})
			continue
		}
		want[key] = true
		d.obj.SetOwnerReferences([]metav1.OwnerReference{d.owner})
		old := existing[key]
		if old == nil {
			if err := c.writer.Create(ctx, d.obj); err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, fmt.Errorf("creating EnvoyFilter %s: %w", key, err))
				continue
			}
			filterWrites.WithLabelValues("create").Inc()
			c.log.Info("created EnvoyFilter", "envoyfilter", key)
			continue
		}
		if sameFilter(old, d.obj) {
			continue
		}
		d.obj.SetResourceVersion(old.GetResourceVersion())
		if err := c.writer.Update(ctx, d.obj); err != nil {
			errs = append(errs, fmt.Errorf("updating EnvoyFilter %s: %w", key, err))
			continue
		}
		filterWrites.WithLabelValues("update").Inc()
		c.log.Info("updated EnvoyFilter", "envoyfilter", key)
	}
	// What no source asks for any more: the API server's garbage
	// collector would delete it with its owner, but the controller does
	// not rely on it (a source can also stop asking without being
	// deleted: a port renamed to HTTP).
	for key, old := range existing {
		if want[key] {
			continue
		}
		if err := c.writer.Delete(ctx, old, client.Preconditions{UID: ptr(old.GetUID())}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting EnvoyFilter %s: %w", key, err))
			continue
		}
		filterWrites.WithLabelValues("delete").Inc()
		c.log.Info("deleted EnvoyFilter", "envoyfilter", key)
	}
	return errors.Join(errs...)
}

func ptr[T any](v T) *T { return &v }

// sameFilter compares what the controller sets: spec, labels and owners.
func sameFilter(have, want *unstructured.Unstructured) bool {
	a, _ := json.Marshal(have.Object["spec"])
	b, _ := json.Marshal(want.Object["spec"])
	if string(a) != string(b) || !maps.Equal(have.GetLabels(), want.GetLabels()) {
		return false
	}
	ho, wo := have.GetOwnerReferences(), want.GetOwnerReferences()
	return len(ho) == len(wo) && (len(ho) == 0 || ho[0].UID == wo[0].UID && ho[0].Kind == wo[0].Kind && ho[0].Name == wo[0].Name)
}

// writeStatuses writes each MetaRouter's status: Accepted, or Rejected
// with the field and the reason of each error, for the generation read.
func (c *Controller) writeStatuses(ctx context.Context, routers map[string]*unstructured.Unstructured, problems []controlplane.Problem) error {
	byRef := map[string][]controlplane.Problem{}
	for _, p := range problems {
		byRef[p.Object] = append(byRef[p.Object], p)
	}
	var errs []error
	for _, ref := range slices.Sorted(maps.Keys(routers)) {
		u := routers[ref]
		status := metaRouterStatus(u.GetGeneration(), byRef[ref])
		if equalJSON(u.Object["status"], status) {
			continue
		}
		next := u.DeepCopy()
		next.Object["status"] = status
		if err := c.writer.Status().Update(ctx, next); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("writing the status of MetaRouter %s/%s: %w", u.GetNamespace(), u.GetName(), err))
			continue
		}
		statusWrites.WithLabelValues(strings.ToLower(status["conditions"].([]any)[0].(map[string]any)["reason"].(string))).Inc()
	}
	return errors.Join(errs...)
}

// metaRouterStatus is a MetaRouter's status for its problems: errors
// reject it (the routes it fed keep their last good version), warnings
// name what is ignored.
func metaRouterStatus(generation int64, problems []controlplane.Problem) map[string]any {
	var errs, warnings []any
	for _, p := range problems {
		e := map[string]any{"message": p.Err.Error()}
		if p.Field != "" {
			e["field"] = p.Field
		}
		if p.Warning {
			warnings = append(warnings, e)
		} else {
			errs = append(errs, e)
		}
	}
	cond := map[string]any{"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": generation,
		"message": "served over xDS"}
	if len(errs) > 0 {
		first := errs[0].(map[string]any)
		msg := first["message"].(string)
		if f, ok := first["field"].(string); ok {
			msg = f + ": " + msg
		}
		cond["status"], cond["reason"] = "False", "Rejected"
		cond["message"] = msg + "; the routes it fed keep their last good version"
	}
	st := map[string]any{"observedGeneration": generation, "conditions": []any{cond}}
	if len(errs) > 0 {
		st["errors"] = errs
	}
	if len(warnings) > 0 {
		st["warnings"] = warnings
	}
	return st
}

// equalJSON compares an object's stored status with a computed one.
func equalJSON(a any, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	var xa, ya any
	_ = json.Unmarshal(x, &xa)
	_ = json.Unmarshal(y, &ya)
	x, _ = json.Marshal(xa)
	y, _ = json.Marshal(ya)
	return string(x) == string(y)
}

// sendEvents sends an Event for each issue and each error of an Istio or
// Aeraki object, once per version of its object.
func (c *Controller) sendEvents(res result, problems []controlplane.Problem) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	send := func(obj runtime.Object, mo metav1.Object, eventType, reason, message string) {
		key := string(mo.GetUID()) + " " + mo.GetResourceVersion() + " " + reason + " " + message
		seen[key] = true
		if c.reported[key] {
			return
		}
		c.recorder.Event(obj, eventType, reason, message)
	}
	for _, is := range res.issues {
		if ro, ok := is.obj.(runtime.Object); ok {
			send(ro, is.obj, corev1.EventTypeWarning, is.reason, is.message)
		}
	}
	// Every Istio and Aeraki object gets an Event for each error (a
	// MetaRouter its status too).
	for _, p := range problems {
		u := res.refs[p.Object]
		if u == nil || p.Warning {
			continue
		}
		field := p.Field
		if field != "" {
			field += ": "
		}
		send(u, u, corev1.EventTypeWarning, "Rejected", field+p.Err.Error())
	}
	c.reported = seen
}
