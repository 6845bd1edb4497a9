// Package fault is the "fault" L7 filter: it delays a share of the
// requests (flag DI) and answers a share with the protocol's own error
// reply instead of sending them upstream (flag FI), for all requests of a
// proxy, per route, or only those whose metadata match (say, an attachment
// test-fault: yes), so that callers' timeouts, retries and fallbacks can be
// tried against Dubbo and Thrift services without touching them.
//
// A delay never blocks: the request pauses and a timer resumes it.
package fault

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/logs"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/filters/route"
	faultv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/fault/v1"
)

// Name is the filter's registered name.
const Name = "fault"

func init() {
	filter.Register(&filter.Factory{
		Name:          Name,
		Config:        func() proto.Message { return &faultv1.Fault{} },
		RouteConfig:   func() proto.Message { return &faultv1.Fault{} },
		Validate:      Validate,
		ValidateRoute: Validate,
		Build:         build,
		ParseRoute:    func(cfg proto.Message) (any, error) { return compile(cfg.(*faultv1.Fault)) },
	})
}

var injected = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "breeze_faults_injected_total", Help: "Faults the fault filter injected, by route and fault: delay (flag DI), abort (answered with an error reply, flag FI).",
}, []string{"proxy", "route", "fault"})

func init() { metrics.Registry.MustRegister(injected) }

// million is the resolution of percentages: a share is drawn as an
// integer below it, so 0.0001 % is the smallest share that is not 0.
const million = 1_000_000

// randN returns a uniform integer in [0, n), safely from any goroutine.
// Tests replace it with a seeded source.
var randN = rand.Uint32N

// afterFunc starts a delay's timer. Tests replace it to fire timers
// themselves.
var afterFunc = func(d time.Duration, f func()) { time.AfterFunc(d, f) }

// Validate checks a Fault (the filter's or a route's); errors name the
// field path and value.
func Validate(cfg proto.Message) error {
	c := cfg.(*faultv1.Fault)
	var errs []error
	if _, err := route.CompileMatcher(c.GetMatch()); err != nil {
		errs = append(errs, fmt.Errorf("match%w", err))
	}
	if d := c.GetDelay(); d != nil {
		switch fd := d.GetFixedDelay(); {
		case fd == nil:
			errs = append(errs, errors.New("delay.fixed_delay: required"))
		case fd.CheckValid() != nil:
			errs = append(errs, fmt.Errorf("delay.fixed_delay: %w", fd.CheckValid()))
		case fd.AsDuration() <= 0:
			errs = append(errs, fmt.Errorf("delay.fixed_delay: %v: must be above 0", fd.AsDuration()))
		}
		errs = append(errs, validatePercent("delay.percentage", d.GetPercentage())...)
	}
	if a := c.GetAbort(); a != nil {
		switch r := a.GetReply().(type) {
		case nil:
			errs = append(errs, errors.New("abort: needs error_kind or status"))
		case *faultv1.Abort_ErrorKind:
			if _, ok := codecs.ErrorKindByName(r.ErrorKind); !ok {
				errs = append(errs, fmt.Errorf("abort.error_kind: %q: not an error kind (no_route, no_healthy_upstream, timeout, overloaded, bad_request, internal)", r.ErrorKind))
			}
		case *faultv1.Abort_Status:
			// Which codec will reply is known when the filter is built
			// (build checks it then); a route's config may serve any.
			if len(codecsReplying(r.Status)) == 0 {
				errs = append(errs, fmt.Errorf("abort.status: %d: no codec replies with this status (%s)", r.Status, replyStatuses()))
			}
		}
		errs = append(errs, validatePercent("abort.percentage", a.GetPercentage())...)
	}
	return errors.Join(errs...)
}

func validatePercent(path string, p *faultv1.Percent) []error {
	if p != nil && (math.IsNaN(p.GetValue()) || p.GetValue() < 0 || p.GetValue() > 100) {
		return []error{fmt.Errorf("%s.value: %v: must be 0–100", path, p.GetValue())}
	}
	return nil
}

// faults is a compiled Fault.
type faults struct {
	match route.Matcher
	// delayShare and abortShare are per million; 0 for none.
	delayShare, abortShare uint32
	delay                  time.Duration
	// The abort's reply: a kind, or a status the filter's codec maps to one.
	kind   codecs.ErrorKind
	status uint32
	byCode bool
}

// share reads a percentage: unset is all, as in Istio.
func share(p *faultv1.Percent) uint32 {
	if p == nil {
		return million
	}
	return uint32(math.Round(p.GetValue() * million / 100))
}

func compile(c *faultv1.Fault) (*faults, error) {
	m, err := route.CompileMatcher(c.GetMatch())
	if err != nil {
		return nil, fmt.Errorf("match%w", err)
	}
	f := &faults{match: m}
	if d := c.GetDelay(); d != nil {
		f.delay, f.delayShare = d.GetFixedDelay().AsDuration(), share(d.GetPercentage())
	}
	if a := c.GetAbort(); a != nil {
		f.abortShare = share(a.GetPercentage())
		switch r := a.GetReply().(type) {
		case *faultv1.Abort_ErrorKind:
			f.kind, _ = codecs.ErrorKindByName(r.ErrorKind)
		case *faultv1.Abort_Status:
			f.status, f.byCode = r.Status, true
		}
	}
	return f, nil
}

// draw reports whether a request falls in a share (per million).
func draw(share uint32) bool {
	return share >= million || share > 0 && randN(million) < share
}

func build(cfg proto.Message, ctx filter.BuildContext) (filter.Filter, error) {
	fl, err := compile(cfg.(*faultv1.Fault))
	if err != nil {
		return nil, err
	}
	f := &Filter{
		proxy:    ctx.ProxyName,
		codec:    ctx.Codec,
		faults:   fl,
		statuses: statusKinds(ctx.Codec),
		plog:     logs.New(slog.Default().With("proxy", ctx.ProxyName, "filter", Name), logs.Options{}),
	}
	if fl.byCode {
		if _, ok := f.statuses[fl.status]; !ok {
			return nil, fmt.Errorf("abort.status: %d: codec %s replies with none such (%s)", fl.status, ctx.Codec, replyStatuses())
		}
	}
	return f, nil
}

// Filter injects the faults of the request's route (or else the filter's own).
type Filter struct {
	filter.Base
	proxy, codec string
	faults       *faults
	// statuses maps the statuses the proxy's codec replies with to the
	// kind it replies with them for.
	statuses map[uint32]codecs.ErrorKind
	plog     *logs.Logger
}

var _ filter.Filter = (*Filter)(nil)

// OnRequest draws the request's faults: a delay pauses it and a timer
// resumes it (or answers it, when it is also aborted); an abort alone
// answers it at once.
func (f *Filter) OnRequest(s *filter.Stream) filter.Status {
	fl := f.faults
	if rc, ok := s.RouteConfig(Name).(*faults); ok {
		fl = rc
	}
	if fl.delayShare == 0 && fl.abortShare == 0 || !fl.match.Matches(s.Request.Metadata) {
		return filter.Continue
	}
	delay, abort := draw(fl.delayShare), draw(fl.abortShare)
	if !delay && !abort {
		return filter.Continue
	}
	routeName := ""
	if s.Route != nil {
		routeName = s.Route.RouteName()
	}
	var kind codecs.ErrorKind
	var detail string
	if abort {
		kind, detail = f.abortReply(fl)
		injected.WithLabelValues(f.proxy, routeName, "abort").Inc()
	}
	if !delay {
		s.Reply(kind, detail, filter.FaultInjected)
		return filter.Stop
	}
	injected.WithLabelValues(f.proxy, routeName, "delay").Inc()
	s.AddFlags(filter.DelayInjected)
	// The timer only resumes or answers the stream: both do nothing once
	// it has ended (its client went away meanwhile), so it is not stopped.
	if abort {
		afterFunc(fl.delay, func() { s.Reply(kind, detail, filter.FaultInjected) })
	} else {
		afterFunc(fl.delay, s.Resume)
	}
	return filter.Pause
}

// abortReply is the kind an abort answers with, and why.
func (f *Filter) abortReply(fl *faults) (codecs.ErrorKind, string) {
	if !fl.byCode {
		return fl.kind, "fault injected: abort"
	}
	if k, ok := f.statuses[fl.status]; ok {
		return k, "fault injected: abort"
	}
	// A route's status that this proxy's codec has no reply for: the
	// route table was valid for another codec.
	f.plog.Warn("abort_status", "fault abort status not replied by this codec; answering internal", "status", fl.status, "codec", f.codec)
	return codecs.ErrInternal, fmt.Sprintf("fault injected: abort (status %d: codec %s has no such reply)", fl.status, f.codec)
}

// statusKinds maps the statuses codec replies with to their kinds; where
// two kinds share a status the later (the more general: internal over
// no_healthy_upstream) is kept.
func statusKinds(codec string) map[uint32]codecs.ErrorKind {
	out := map[uint32]codecs.ErrorKind{}
	rs, ok := codecs.Instance(codec).(codecs.ReplyCoder)
	if !ok {
		return out
	}
	for k := codecs.ErrorKind(1); ; k++ {
		if _, ok := codecs.ErrorKindByName(k.String()); !ok {
			break
		}
		out[rs.ReplyCode(k)] = k
	}
	return out
}

// codecsReplying names the registered codecs that reply with status.
func codecsReplying(status uint32) []string {
	var names []string
	for _, n := range codecs.Names() {
		if _, ok := statusKinds(n)[status]; ok {
			names = append(names, n)
		}
	}
	return names
}

// replyStatuses lists, per registered codec, the statuses it replies with.
func replyStatuses() string {
	var s string
	for _, n := range codecs.Names() {
		m := statusKinds(n)
		if len(m) == 0 {
			continue
		}
		if s != "" {
			s += "; "
		}
		s += n + ":"
		for _, st := range slices.Sorted(maps.Keys(m)) {
			s += fmt.Sprintf(" %d (%v)", st, m[st])
		}
	}
	if s == "" {
		return "no registered codec names its statuses"
	}
	return s
}
