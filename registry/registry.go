// Package registry turns the providers a Dubbo service registry announces
// into Istio ServiceEntries — one per interface, every URL parameter an
// endpoint label — and feeds them to the control plane as the objects of
// one more source, next to the YAML directory.
//
// A registry (ZooKeeper in registry/zookeeper, Nacos in registry/nacos)
// implements Registry: it publishes the full set of provider Instances each
// time it changes. Everything registry-independent lives here: reading a
// provider URL, the label mapping, enabled/disabled, the weight, the host
// and port naming, and the translation to ServiceEntries.
package registry

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Instance is one provider of one interface as a registry announces it.
type Instance struct {
	// Interface is the Dubbo interface (service) name, as the registry
	// files it (ZooKeeper: the /dubbo/<interface> node).
	Interface string
	// Address is the provider's IP address; Port its port.
	Address string
	Port    uint32
	// Params are all the URL parameters (or, application-level, the
	// instance's metadata and the service's parameters), verbatim.
	Params map[string]string
	// Protocol is the URL's scheme: "dubbo", "tri"...
	Protocol string
	// ID, when set, identifies the instance with all it says: equal IDs,
	// equal instances (ZooKeeper: the node's URL). Source translates an
	// interface again only when the IDs of its instances change.
	ID string
}

// Update is the whole content of a registry at one time.
type Update struct {
	Instances []Instance
	// Stale: the registry cannot be reached; Instances is the last set it
	// was seen to hold, kept until it answers again.
	Stale bool
}

// Registry is a Dubbo service registry the control plane follows.
type Registry interface {
	// Name names the registry in logs and in the origin of its objects
	// ("zookeeper 127.0.0.1:2181").
	Name() string
	// Run calls publish with the whole content of the registry once it
	// was read, then after every change (and when it becomes stale or
	// fresh again), until ctx ends. Calls are sequential.
	Run(ctx context.Context, publish func(Update)) error
}

// ProtocolDubbo is the only provider protocol translated: Breeze's codec
// speaks Dubbo. A provider that exports an interface over several
// protocols registers one URL per protocol (tri://, rest://...); only its
// dubbo:// URL becomes an endpoint.
const ProtocolDubbo = "dubbo"

// ParseURL reads a provider URL as Dubbo writes it into the registry:
// dubbo://ip:port/interface?key=value&..., URL-encoded as a ZooKeeper node
// name is, or not. The interface is the URL path, else its "interface"
// parameter.
func ParseURL(raw string) (Instance, error) {
	s := raw
	if !strings.Contains(s, "://") {
		un, err := url.QueryUnescape(s)
		if err != nil {
			return Instance{}, fmt.Errorf("not a URL-encoded provider URL: %w", err)
		}
		s = un
	}
	u, err := url.Parse(s)
	if err != nil {
		return Instance{}, err
	}
	if u.Scheme == "" || u.Host == "" {
		return Instance{}, fmt.Errorf("%q: want protocol://ip:port/interface?parameters", s)
	}
	host, portText, err := net.SplitHostPort(u.Host)
	if err != nil {
		return Instance{}, fmt.Errorf("%q: %w", u.Host, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return Instance{}, fmt.Errorf("%q: port %q is not a port number", u.Host, portText)
	}
	if net.ParseIP(host) == nil {
		return Instance{}, fmt.Errorf("%q: %q is not an IP address", u.Host, host)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Instance{}, fmt.Errorf("parameters: %w", err)
	}
	params := make(map[string]string, len(q))
	for k, v := range q {
		params[k] = v[0] // Dubbo writes each key once; the first wins
	}
	in := Instance{Interface: strings.Trim(u.Path, "/"), Address: host, Port: uint32(port), Params: params, Protocol: u.Scheme}
	if in.Interface == "" {
		in.Interface = params["interface"]
	}
	if in.Interface == "" {
		return Instance{}, fmt.Errorf("%q: no interface (neither a path nor an interface parameter)", s)
	}
	return in, nil
}

// Enabled reports whether the provider takes traffic: Dubbo's governance
// (dubbo-admin, an override) marks a provider out with enabled=false or
// disabled=true in its URL.
func (in Instance) Enabled() bool {
	return in.Params["enabled"] != "false" && in.Params["disabled"] != "true"
}

// DefaultWeight is Dubbo's weight for a provider that sets none.
const DefaultWeight = 100

// Weight is the provider's "weight" parameter; DefaultWeight when it is
// missing, not a number, or not above 0 (an Istio endpoint weight of 0
// means "unset", not "no traffic").
func (in Instance) Weight() uint32 {
	w, err := strconv.ParseUint(in.Params["weight"], 10, 32)
	if err != nil || w == 0 {
		return DefaultWeight
	}
	return uint32(w)
}
