package deploy

import (
	"net"
	"net/netip"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// CheckBootstrap checks an Envoy bootstrap (YAML or JSON) the way the
// Envoy this binary is built for (1.36, or 1.39 with envoy-1.39.mod) with
// breeze.so would load it: parsed with go-control-plane's types of that
// Envoy (unknown fields and unresolvable Any types are errors, as in
// Envoy's static config), validated with their protoc-gen-validate rules,
// every Go filter checked with Breeze's rules and its plugin_config parsed
// and validated by Breeze's own config package, and the plainText cluster
// checked. It returns the decoded bootstrap if it parsed.
func CheckBootstrap(data []byte) (*bootstrapv3.Bootstrap, Findings) {
	var f Findings
	v, _, err := yamlValue(data)
	if err != nil {
		f.Errors = append(f.Errors, err)
		return nil, f
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := decodeStrict(v, bs, "", envoy); err != nil {
		f.Errors = append(f.Errors, unjoin(err)...)
		return nil, f
	}
	f.Errors = append(f.Errors, validateTree(bs, "")...)

	var breezes []breezeFilter
	for i, l := range bs.GetStaticResources().GetListeners() {
		lpath := indexPath("static_resources.listeners", i)
		for j, fc := range l.GetFilterChains() {
			breezes = append(breezes, checkFilterChain(fc.GetFilters(), joinPath(indexPath(joinPath(lpath, "filter_chains"), j), "filters"), &f)...)
		}
		if dc := l.GetDefaultFilterChain(); dc != nil {
			breezes = append(breezes, checkFilterChain(dc.GetFilters(), joinPath(lpath, "default_filter_chain.filters"), &f)...)
		}
	}
	checkLibraries(breezes, &f)
	checkListenerAddresses(bs, &f)

	if bs.GetAdmin().GetAddress() == nil {
		f.warnf("admin", "no admin listener: nothing to read Envoy's stats, clusters and config from")
	}
	found := false
	for i, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() == PlainTextCluster {
			found = true
			checkPlainText(c, indexPath("static_resources.clusters", i), &f)
		}
	}
	switch {
	case len(breezes) == 0:
		f.warnf("static_resources.listeners", "no %s filter: this bootstrap does not run Breeze", GolangFilterName)
	case found:
	case bs.GetDynamicResources().GetCdsConfig() != nil:
		f.warnf("static_resources.clusters", "no %q cluster here: CDS must serve it, or every Breeze upstream connection fails with \"cluster not found\"", PlainTextCluster)
	default:
		f.errorf("static_resources.clusters", "no cluster named %q: Envoy's Go filter dials every upstream connection through it (type ORIGINAL_DST, lb_policy CLUSTER_PROVIDED); without it each one fails with \"cluster not found\"", PlainTextCluster)
	}
	return bs, f
}

// unjoin splits a joined error into its parts.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// checkListenerAddresses reports a static listener whose socket address
// (IP, port and protocol) an earlier one has: Envoy refuses such a
// bootstrap ("duplicate address") when it starts, after everything else
// passed. Port 0 picks a free port and is not judged. Overlaps with a
// wildcard are not reported: Envoy sets SO_REUSEPORT, and both bind.
func checkListenerAddresses(bs *bootstrapv3.Bootstrap, f *Findings) {
	type key struct {
		ip       netip.Addr
		host     string // when not an IP
		port     uint32
		protocol corev3.SocketAddress_Protocol
	}
	seen := map[key]string{}
	for i, l := range bs.GetStaticResources().GetListeners() {
		sa := l.GetAddress().GetSocketAddress()
		if sa == nil || sa.GetPortValue() == 0 {
			continue
		}
		k := key{port: sa.GetPortValue(), protocol: sa.GetProtocol()}
		if ip, err := netip.ParseAddr(sa.GetAddress()); err == nil {
			k.ip = ip.Unmap()
		} else {
			k.host = sa.GetAddress()
		}
		path := indexPath("static_resources.listeners", i)
		what := path
		if l.GetName() != "" {
			what += " (" + l.GetName() + ")"
		}
		if prev, dup := seen[k]; dup {
			f.errorf(joinPath(path, "address.socket_address"), "%s: %s has this address too: Envoy refuses a bootstrap with two listeners on one address (\"duplicate address\"); give each listener an address of its own",
				net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)), prev)
			continue
		}
		seen[k] = what
	}
}
