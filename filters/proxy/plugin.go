package proxy

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/logs"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// PluginName is the plugin_name an Envoy config (or the standalone runner)
// gives the Go network filter.
const PluginName = "breeze"

var registerOnce sync.Once

// Register installs Breeze's config parser and filter factory in Envoy's Go
// shim. The Envoy plugin calls it from init; the standalone runner and tests
// call it before starting their host.
func Register() {
	registerOnce.Do(func() {
		network.RegisterNetworkFilterConfigParser(&parser{cache: map[[32]byte]*Proxy{}})
		network.RegisterNetworkFilterConfigFactory(PluginName, factory{})
	})
}

type parser struct {
	mu sync.Mutex
	// Envoy parses a config again on every listener update and never frees
	// the result; identical configs share one Proxy (and its upstream
	// pools and DNS goroutines) instead of piling up.
	cache map[[32]byte]*Proxy
}

// ParseConfig cannot return an error in Envoy 1.36's API: a rejected
// config becomes a Proxy that refuses its connections with a log line.
func (ps *parser) ParseConfig(a *anypb.Any) (result interface{}) {
	defer func() {
		if r := recover(); r != nil {
			metrics.Panics.WithLabelValues("ParseConfig").Inc()
			slog.Error("panic while parsing breeze config", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			result = invalid(fmt.Errorf("panic while parsing config: %v", r))
		}
	}()
	cfg, err := config.ParseAny(a)
	if err == nil {
		err = config.Validate(cfg)
	}
	if err != nil {
		return rejected(err)
	}
	if a := cfg.GetMetrics().GetAddress(); a != "" {
		// Every parse, cached or not: the first config naming an address
		// may have failed to listen on it.
		procMetrics.ensure(a, slog.Default())
	}
	// Key on the parsed config: the same config may arrive serialized
	// differently (a TypedStruct's map order is not stable).
	canonical, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return rejected(err)
	}
	key := sha256.Sum256(canonical)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p := ps.cache[key]; p != nil {
		return p
	}
	p, err := New(cfg, slog.Default())
	if err != nil {
		return rejected(err)
	}
	ps.cache[key] = p
	return p
}

func rejected(err error) *Proxy {
	metrics.ConfigErrors.Inc()
	slog.Error("breeze config rejected; its connections will be refused", "err", err)
	return invalid(err)
}

// invalid is the Proxy of a config that could not be used: it refuses
// each of its connections with a log line, limited like every line a
// peer can trigger.
func invalid(err error) *Proxy {
	return &Proxy{name: "invalid", log: slog.Default(), plog: logs.New(slog.Default(), peerLogOptions), err: err}
}

type factory struct{}

// CreateFactoryFromConfig runs for every new connection: it only unwraps.
func (factory) CreateFactoryFromConfig(c interface{}) network.FilterFactory {
	if p, ok := c.(*Proxy); ok {
		return p
	}
	return invalid(fmt.Errorf("unexpected parsed config type %T", c))
}
