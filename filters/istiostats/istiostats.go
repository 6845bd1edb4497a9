// Package istiostats is the "istio_stats" L7 filter: Istio's standard
// request metrics (istio_requests_total,
// istio_request_duration_milliseconds, istio_request_bytes,
// istio_response_bytes) with Istio's labels, for every request of every
// codec, recorded once per request in OnDone. Local labels come from the
// sidecar's environment, remote ones from the endpoint's labels (outbound)
// or from peer metadata the outbound side adds to each request
// (inbound, which removes it before the app sees it).
//
// Recording allocates nothing in steady state: every label value is
// interned in process-wide tables (table.go) and each distinct label set
// resolves its Prometheus children once.
package istiostats

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	istiostatsv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/istiostats/v1"
)

// Name is the filter's registered name.
const Name = "istio_stats"

func init() {
	filter.Register(&filter.Factory{
		Name:     Name,
		Config:   func() proto.Message { return &istiostatsv1.IstioStats{} },
		Validate: validate,
		Build: func(cfg proto.Message, ctx filter.BuildContext) (filter.Filter, error) {
			return build(cfg.(*istiostatsv1.IstioStats), ctx, processLocal())
		},
	})
}

// processLocal is the local identity, read from the environment once.
var processLocal = sync.OnceValue(localFromProcess)

// Values of connection_security_policy.
const (
	MutualTLS = "mutual_tls"
	NoTLS     = "none"
)

func validate(m proto.Message) error {
	cfg := m.(*istiostatsv1.IstioStats)
	var errs []error
	switch cfg.GetReporter() {
	case istiostatsv1.IstioStats_SOURCE, istiostatsv1.IstioStats_DESTINATION:
	default:
		errs = append(errs, fmt.Errorf("reporter: %s: want SOURCE (an outbound proxy, the client's) or DESTINATION (an inbound proxy, the server's)", cfg.GetReporter()))
	}
	switch p := cfg.GetConnectionSecurityPolicy(); p {
	case "", MutualTLS, NoTLS, unknown:
	default:
		errs = append(errs, fmt.Errorf("connection_security_policy: %q: want %s, %s or %s", p, MutualTLS, NoTLS, unknown))
	}
	return errors.Join(errs...)
}

// Bounds of the process-wide tables: distinct remote identities, services
// and label sets. Beyond them a peer or a service is recorded as unknown,
// and a request of a new label set is not recorded; each is counted
// (breeze_istio_stats_overflow_total). Peers are bounded by the
// endpoints of the clusters (outbound) and by what callers send
// (inbound, untrusted: hence the bound).
const (
	maxPeers    = 1000
	maxServices = 1000
	maxSeries   = 10000
)

// side is one end's label values; "unknown" for what is not known.
type side struct {
	workload, namespace, principal, app, version, canonicalService, canonicalRevision, cluster string
}

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

func sideOf(id Identity) side {
	return side{
		workload: orUnknown(id.Workload), namespace: orUnknown(id.Namespace),
		// Envoy 1.36's Go network filter cannot see the TLS peer (its
		// StreamInfo has no TLS accessor), and a Go plugin's upstream
		// connections are dialled by Envoy: no principal is known on
		// either side (README, "Principals").
		principal: unknown,
		app:       orUnknown(id.App), version: orUnknown(id.Version),
		canonicalService: orUnknown(id.CanonicalService), canonicalRevision: orUnknown(id.CanonicalRevision),
		cluster: orUnknown(id.Cluster),
	}
}

// service is the destination_service labels.
type service struct{ host, name, namespace string }

var unknownService = &service{unknown, unknown, unknown}

// serviceOf derives a service's name and namespace from its host, as
// Kubernetes names services: <name>.<namespace>.svc.<domain>.
func serviceOf(host, name, namespace string) service {
	if host == "" {
		return *unknownService
	}
	labels := strings.Split(host, ".")
	if name == "" {
		name = host
		if len(labels) >= 3 && labels[2] == "svc" {
			name = labels[0]
		}
	}
	if namespace == "" && len(labels) >= 3 && labels[2] == "svc" {
		namespace = labels[1]
	}
	return service{host, name, orUnknown(namespace)}
}

// hostOfCluster is the service host of a cluster: Istio names its
// clusters outbound|<port>|<subset>|<host>; another name is taken as the
// host itself.
func hostOfCluster(name string) string {
	if rest, ok := strings.CutPrefix(name, "outbound|"); ok {
		if i := strings.LastIndexByte(rest, '|'); i >= 0 {
			return rest[i+1:]
		}
	}
	return name
}

// static is what a filter's config fixes of every label set.
type static struct {
	reporter string // "source" or "destination"
	local    side
	protocol string
	security string
}

// seriesKey names one label set: everything but the static part is
// interned, so the key compares pointers and numbers only.
type seriesKey struct {
	st    *static
	peer  *side
	svc   *service
	code  uint32
	flags filter.Flag
}

// series are the resolved children of one label set.
type series struct {
	requests                      prometheus.Counter
	duration, reqBytes, respBytes prometheus.Observer
}

// Response codes beyond the protocol's statuses: codeOther for a status
// above maxCode (a hostile Thrift server's type), codeUnknown for a local
// reply of a codec that does not say its status.
const (
	maxCode     = 999
	codeOther   = 1 << 30
	codeUnknown = codeOther + 1
)

// The process-wide tables.
var (
	statics       = newTable[static, *static](256)
	sides         = newTable[side, *side](maxPeers)
	peerValues    = newTable[string, *side](maxPeers)
	clusterSvcs   = newTable[string, *service](maxServices)
	services      = newTable[service, *service](maxServices)
	seriesByLabel = newTable[seriesKey, *series](maxSeries)

	unknownSide = &side{unknown, unknown, unknown, unknown, unknown, unknown, unknown, unknown}

	overflowPeers    = metrics.IstioStatsOverflow.WithLabelValues("peers")
	overflowServices = metrics.IstioStatsOverflow.WithLabelValues("services")
	overflowSeries   = metrics.IstioStatsOverflow.WithLabelValues("series")
	peerRead         = metrics.IstioPeerMetadata.WithLabelValues("read")
	peerAbsent       = metrics.IstioPeerMetadata.WithLabelValues("absent")
	peerInvalid      = metrics.IstioPeerMetadata.WithLabelValues("invalid")
)

// Filter records Istio's standard metrics for the requests of one proxy.
type Filter struct {
	filter.Base
	st       *static
	outbound bool
	// exchange: add the local identity to requests (outbound), read and
	// remove the caller's (inbound).
	exchange  bool
	peerValue string
	// svc is the configured destination service, nil: from the cluster.
	svc     *service
	carrier codecs.KeyCarrier
	replies codecs.ReplyCoder
	gateway codecs.GatewayErrors
	// httpCodes: response_codes HTTP (httpCode).
	httpCodes bool
}

var _ filter.Filter = (*Filter)(nil)

func build(cfg *istiostatsv1.IstioStats, ctx filter.BuildContext, local Identity) (*Filter, error) {
	f := &Filter{
		outbound:  cfg.GetReporter() == istiostatsv1.IstioStats_SOURCE,
		exchange:  !cfg.GetDisablePeerMetadata(),
		peerValue: encodePeer(local),
		httpCodes: cfg.GetResponseCodes() == istiostatsv1.IstioStats_HTTP,
	}
	if f.outbound && local == (Identity{}) {
		// Outside a mesh (no sidecar environment) there is nothing to
		// tell the server: its app would only see one more key.
		f.exchange = false
	}
	st := static{reporter: "destination", local: sideOf(local), protocol: orUnknown(ctx.Codec),
		security: orUnknown(cfg.GetConnectionSecurityPolicy())}
	if f.outbound {
		st.reporter = "source"
	}
	var ok bool
	if f.st, ok = statics.getOrAdd(st, func() *static { return &st }); !ok {
		return nil, errors.New("too many distinct istio_stats configs in this process")
	}
	if h := cfg.GetDestinationService(); h != "" || !f.outbound {
		sv := serviceOf(h, cfg.GetDestinationServiceName(), cfg.GetDestinationServiceNamespace())
		if f.svc, ok = services.getOrAdd(sv, func() *service { return &sv }); !ok {
			overflowServices.Inc()
			f.svc = unknownService
		}
	}
	c := codecs.Instance(ctx.Codec)
	f.carrier, _ = c.(codecs.KeyCarrier)
	f.replies, _ = c.(codecs.ReplyCoder)
	f.gateway, _ = c.(codecs.GatewayErrors)
	return f, nil
}

// OnRequest exchanges peer metadata: outbound, the local identity goes
// with the request (where its frame can carry it); inbound, the caller's
// is removed before the request reaches the app (OnDone reads it).
func (f *Filter) OnRequest(s *filter.Stream) filter.Status {
	if !f.exchange {
		return filter.Continue
	}
	if f.outbound {
		if f.carrier == nil || f.carrier.CarriesKeys(&s.Request) {
			s.Request.Mutations.Set(PeerKey, f.peerValue)
		}
		return filter.Continue
	}
	if _, ok := s.Request.Metadata.Get(PeerKey); ok {
		s.Request.Removals = append(s.Request.Removals, PeerKey)
	}
	return filter.Continue
}

// OnDone records the request under its label set.
func (f *Filter) OnDone(s *filter.Stream) {
	key := seriesKey{st: f.st, peer: f.peer(s), svc: f.service(s), code: f.code(s), flags: s.Outcome.Flags}
	se, ok := seriesByLabel.get(key)
	if !ok {
		if se, ok = seriesByLabel.getOrAdd(key, func() *series { return newSeries(key) }); !ok {
			overflowSeries.Inc()
			return
		}
	}
	se.requests.Inc()
	se.duration.Observe(float64(s.End.Sub(s.Start)) / float64(time.Millisecond))
	se.reqBytes.Observe(float64(s.BytesIn))
	se.respBytes.Observe(float64(s.BytesOut))
}

// peer is the remote end: the endpoint that served the request
// (outbound), the caller its peer metadata names (inbound).
func (f *Filter) peer(s *filter.Stream) *side {
	if f.outbound {
		return intern(sideOf(fromEndpoint(s.UpstreamLabels)))
	}
	if !f.exchange {
		return unknownSide
	}
	v, ok := s.Request.Metadata.Get(PeerKey)
	if !ok {
		peerAbsent.Inc()
		return unknownSide
	}
	p, ok := peerValues.get(v)
	if !ok {
		if p, ok = peerValues.getOrAdd(v, func() *side { return decodeAndIntern(v) }); !ok {
			overflowPeers.Inc()
			return unknownSide
		}
	}
	if p == unknownSide {
		peerInvalid.Inc()
	} else {
		peerRead.Inc()
	}
	return p
}

func decodeAndIntern(v string) *side {
	id, ok := decodePeer(v)
	if !ok {
		return unknownSide
	}
	return intern(sideOf(id))
}

// intern returns the one *side of a label set (unknown past maxPeers).
func intern(sv side) *side {
	if p, ok := sides.get(sv); ok {
		return p
	}
	if sides.full() { // before add, which would allocate sv
		overflowPeers.Inc()
		return unknownSide
	}
	return add(sv)
}

// add is intern's slow path, apart so that sv goes to the heap only on
// a miss (the closure takes its address).
func add(sv side) *side {
	p, ok := sides.getOrAdd(sv, func() *side { return &sv })
	if !ok {
		overflowPeers.Inc()
		return unknownSide
	}
	return p
}

func (f *Filter) service(s *filter.Stream) *service {
	if f.svc != nil {
		return f.svc
	}
	if s.Cluster == "" {
		return unknownService
	}
	if sv, ok := clusterSvcs.get(s.Cluster); ok {
		return sv
	}
	name := s.Cluster
	sv, ok := clusterSvcs.getOrAdd(name, func() *service {
		v := serviceOf(hostOfCluster(name), "", "")
		if p, ok := services.getOrAdd(v, func() *service { return &v }); ok {
			return p
		}
		return unknownService
	})
	if !ok || sv == unknownService {
		overflowServices.Inc()
		return unknownService
	}
	return sv
}

// code is the response code: the upstream's status, the status of the
// reply Breeze answered with, or 0 when the client got no response (a
// oneway, a client gone), as Istio reports a stream without one.
func (f *Filter) code(s *filter.Stream) uint32 {
	o := &s.Outcome
	if f.httpCodes {
		return f.httpCode(s)
	}
	switch {
	case o.Responded:
		if o.Code > maxCode {
			return codeOther
		}
		return o.Code
	case o.LocalReply != 0 && s.Request.Type != codecs.Oneway:
		if f.replies == nil {
			return codeUnknown
		}
		return f.replies.ReplyCode(o.LocalReply)
	}
	return 0
}

// httpCode is the HTTP status Envoy reports for the same outcome
// (response_codes HTTP), so that success rates computed from 5xx codes
// (Istio's dashboards, Kiali) see Dubbo's and Thrift's failures; 0 when
// the client got no response, as code.
func (f *Filter) httpCode(s *filter.Stream) uint32 {
	o := &s.Outcome
	switch {
	case o.Responded:
		if o.Status != codecs.StatusError {
			return 200 // an application exception is a response, as gRPC's are
		}
		if f.gateway != nil && f.gateway.IsGatewayError(o.Code) {
			return 503
		}
		return 500
	case o.LocalReply != 0 && s.Request.Type != codecs.Oneway:
		if o.Flags&filter.RateLimited != 0 {
			return 429
		}
		switch o.LocalReply {
		case codecs.ErrNoRoute:
			return 404
		case codecs.ErrNoHealthyUpstream, codecs.ErrOverloaded:
			return 503
		case codecs.ErrTimeout:
			return 504
		case codecs.ErrBadRequest:
			return 400
		}
		return 500
	}
	return 0
}

func codeLabel(c uint32) string {
	switch c {
	case codeOther:
		return "other"
	case codeUnknown:
		return unknown
	}
	return strconv.FormatUint(uint64(c), 10)
}

// newSeries resolves the children of a new label set (once per set).
func newSeries(k seriesKey) *series {
	src, dst := &k.st.local, k.peer
	if k.st.reporter == "destination" {
		src, dst = k.peer, &k.st.local
	}
	lv := []string{
		k.st.reporter,
		src.workload, src.namespace, src.principal, src.app, src.version, src.canonicalService, src.canonicalRevision, src.cluster,
		dst.workload, dst.namespace, dst.principal, dst.app, dst.version,
		k.svc.host, k.svc.name, k.svc.namespace,
		dst.canonicalService, dst.canonicalRevision, dst.cluster,
		k.st.protocol, codeLabel(k.code), k.flags.String(), k.st.security,
	}
	return &series{
		requests:  metrics.IstioRequests.WithLabelValues(lv...),
		duration:  metrics.IstioRequestDuration.WithLabelValues(lv...),
		reqBytes:  metrics.IstioRequestBytes.WithLabelValues(lv...),
		respBytes: metrics.IstioResponseBytes.WithLabelValues(lv...),
	}
}
