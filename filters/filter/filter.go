// Package filter is Breeze's L7 filter API: the per-request Stream, the
// Filter interface every L7 filter implements, and the registry filters
// join from init, as codecs do.
//
// A request walks the chain in order: each filter's OnRequest, then the
// router (the terminal filter, always last) sends it upstream. The
// response walks back through OnResponse in reverse order. OnDone runs
// exactly once on every filter of the chain, however the request ended:
// the one place for stats, access logs and tracing.
//
// The package imports only codecs and the standard library, so that a
// control plane can validate filter configs and an outside team can write
// a filter without reading the proxy.
package filter

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/internal/registry"
)

// Status is what OnRequest returns.
type Status uint8

const (
	// Continue passes the request to the next filter.
	Continue Status = iota
	// Stop ends the walk: the filter answered the request (Stream.Reply)
	// or will finish it otherwise. The terminal filter always stops.
	Stop
	// Pause holds the request until Stream.Resume or Stream.Reply is
	// called, from any goroutine. Later requests of the connection are not
	// held back; the request's message stays valid while it waits.
	Pause
)

// Filter is one L7 filter instance. One instance serves every request of
// every connection of a proxy config, concurrently: keep per-request state
// in the Stream (or a map keyed by it), never in the filter.
type Filter interface {
	// OnRequest sees the decoded request, the matched route (if any) and
	// what the filters before it did. It runs on the connection's
	// goroutine with the connection's codec held: do not block. Return
	// Pause and finish asynchronously to wait for something.
	OnRequest(s *Stream) Status
	// OnResponse sees the upstream's response (Stream.Response) before it
	// is written to the client, in reverse filter order, only on filters
	// whose OnRequest returned Continue. It runs on an upstream goroutine.
	OnResponse(s *Stream)
	// OnDone runs once per request, on every filter of the chain, after
	// the outcome is known (Stream.Outcome). The Stream must not be kept
	// after it returns.
	OnDone(s *Stream)
}

// Base implements every Filter method as a pass-through, so that a filter
// embeds it and writes only the callbacks it needs.
type Base struct{}

func (Base) OnRequest(*Stream) Status { return Continue }
func (Base) OnResponse(*Stream)       {}
func (Base) OnDone(*Stream)           {}

// Factory describes a registered filter: its name, its config messages,
// how to validate them and how to build an instance. Configs arrive as
// protobuf messages (an Any of the filter's own type, or a TypedStruct of
// it: the proxy unpacks both before Validate).
type Factory struct {
	// Name is what ProxyConfig.filters[].name and
	// Route.typed_per_filter_config keys say.
	Name string
	// Config returns an empty config message; nil for a filter without
	// config.
	Config func() proto.Message
	// RouteConfig returns an empty per-route config message; nil when the
	// filter takes none.
	RouteConfig func() proto.Message
	// Validate checks a config (never nil: the defaults are an empty
	// message). Errors name the field path inside the message and the
	// value, e.g. `request[0].key: "": must not be empty`; the proxy
	// prefixes where the message sits.
	Validate func(cfg proto.Message) error
	// ValidateRoute checks a per-route config, like Validate.
	ValidateRoute func(cfg proto.Message) error
	// Build makes the filter instance of one proxy from a validated config.
	Build func(cfg proto.Message, ctx BuildContext) (Filter, error)
	// ParseRoute turns a validated per-route config into the value
	// Stream.RouteConfig returns (built once per route table, shared by its
	// requests). Nil: the message itself.
	ParseRoute func(cfg proto.Message) (any, error)
}

// BuildContext is what a filter may know of the proxy it is built for.
type BuildContext struct {
	// ProxyName is the proxy's stat_prefix.
	ProxyName string
	// Codec is the proxy's codec name.
	Codec string
}

var byName registry.Registry[*Factory]

// Register makes a filter available under f.Name. Filters call it from
// init; registering a name twice, or the router's name, panics.
func Register(f *Factory) {
	if f.Name == "" || f.Build == nil {
		panic("filter: Register needs a Name and a Build")
	}
	if f.Name == RouterName || !byName.Add(f.Name, f) {
		panic("filter: registered twice: " + f.Name)
	}
}

// RouterName is the terminal filter: always last, added by the proxy.
const RouterName = "router"

// Lookup returns the factory registered under name.
func Lookup(name string) (*Factory, bool) { return byName.Lookup(name) }

// Names lists the registered filters, sorted.
func Names() []string { return byName.Names() }

// UnknownError is the error for a filter name nobody registered.
func UnknownError(name string) error {
	return fmt.Errorf("%q: no such filter (registered: %v)", name, Names())
}

// Flag says why a request did not end with an upstream response, in
// Envoy's response-flag letters so that dashboards and log pipelines read
// them as they read Envoy's.
type Flag uint16

const (
	// NoRoute (NR): no route matched.
	NoRoute Flag = 1 << iota
	// NoHealthyUpstream (UH): the cluster had no usable endpoint.
	NoHealthyUpstream
	// UpstreamConnectionFailure (UF): the upstream connection never opened.
	UpstreamConnectionFailure
	// UpstreamOverflow (UO): the endpoint's request limit was reached.
	UpstreamOverflow
	// UpstreamRetryLimitExceeded (URX): every attempt failed.
	UpstreamRetryLimitExceeded
	// UpstreamRequestTimeout (UT): the upstream did not answer in time.
	UpstreamRequestTimeout
	// UpstreamConnectionTermination (UC): the upstream connection closed
	// with the request in flight.
	UpstreamConnectionTermination
	// DownstreamConnectionTermination (DC): the client went away first.
	DownstreamConnectionTermination
	// DelayInjected (DI): a fault filter delayed the request.
	DelayInjected
	// FaultInjected (FI): a fault filter answered the request.
	FaultInjected
	// RateLimited (RL): a rate limit refused the request.
	RateLimited
	// UnauthorizedExternalService (UAEX): an authorization check refused it.
	UnauthorizedExternalService
	// InternalError (IE): the proxy failed (a recovered panic, an encode error).
	InternalError
)

var flagNames = [...]string{"NR", "UH", "UF", "UO", "URX", "UT", "UC", "DC", "DI", "FI", "RL", "UAEX", "IE"}

// String lists the flags as Envoy does: letters joined by commas, "-" for none.
func (f Flag) String() string {
	if f == 0 {
		return "-"
	}
	var s string
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if s != "" {
				s += ","
			}
			s += n
		}
	}
	return s
}
