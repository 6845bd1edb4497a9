package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// LoadRunner reads the standalone runner's file and checks it as
// ParseRunner does, naming the file in every error.
func LoadRunner(path string) (*breezev1.Runner, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseRunner(path, b)
}

// ParseRunner reads a runner config, YAML or JSON (the JSON form of
// breeze.v1.Runner, proto or JSON field names), and validates it: at least
// one listener; listener names present and unique; listener and admin
// addresses host:port with a numeric port (0 picks a free port; an empty
// host listens on every interface); each listener's proxy as Validate
// does, paths prefixed "listeners[i].proxy.". Unknown fields are errors.
// Every error starts with name (a file name, say); validation errors are
// all reported, joined.
func ParseRunner(name string, data []byte) (*breezev1.Runner, error) {
	js, err := YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r := &breezev1.Runner{}
	if err := fromJSON(js, r); err != nil {
		return nil, prefixErrors(name, err)
	}
	if err := validateRunner(r); err != nil {
		return nil, prefixErrors(name, err)
	}
	return r, nil
}

// prefixErrors puts prefix before each joined error, so that every line of
// the message names the file.
func prefixErrors(prefix string, err error) error {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = fmt.Errorf("%s: %w", prefix, e)
	}
	return errors.Join(out...)
}

func validateRunner(r *breezev1.Runner) error {
	var v validator
	if len(r.GetListeners()) == 0 {
		v.add("listeners", "[]", "at least one listener is required")
	}
	names := map[string]int{}
	for i, l := range r.GetListeners() {
		path := fmt.Sprintf("listeners[%d]", i)
		if v.required(path+".name", l.GetName()) {
			if j, dup := names[l.GetName()]; dup {
				v.add(path+".name", strconv.Quote(l.GetName()), "duplicate listener name (also listeners[%d])", j)
			} else {
				names[l.GetName()] = i
			}
		}
		if v.required(path+".address", l.GetAddress()) {
			v.listenAddress(path+".address", l.GetAddress())
		}
		if l.GetProxy() == nil {
			v.addErr(path+".proxy", unset, errRequired)
			continue
		}
		pv := validator{prefix: path + ".proxy."}
		pv.proxy(l.GetProxy())
		v.errs = append(v.errs, pv.errs...)
	}
	if a := r.GetAdminAddress(); a != "" {
		v.listenAddress("admin_address", a)
	}
	v.sharedAddresses(r)
	return errors.Join(v.errs...)
}

// sharedAddresses reports every listener (or the admin server) whose
// address another one already binds: the second bind would fail with
// "address already in use" only once the runner starts, after the first
// listener took traffic. Two addresses clash on the same port when their
// hosts are equal or one of them listens on every interface (an empty
// host, 0.0.0.0 or ::). Port 0 picks a free port, and host names are left
// to the resolver: neither is judged.
func (v *validator) sharedAddresses(r *breezev1.Runner) {
	type bound struct{ path, name, host, port string }
	var seen []bound
	check := func(path, name, addr string) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "0" {
			return
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return
		}
		b := bound{path, name, host, port}
		for _, o := range seen {
			if o.port == port && hostsClash(o.host, host) {
				what := strings.TrimSuffix(o.path, ".address")
				if o.name != "" {
					what += " (" + o.name + ")"
				}
				v.add(path, strconv.Quote(addr), "%s already listens on %s: the second bind would fail with \"address already in use\"; give each listener an address of its own", what, net.JoinHostPort(o.host, o.port))
				return
			}
		}
		seen = append(seen, b)
	}
	for i, l := range r.GetListeners() {
		check(fmt.Sprintf("listeners[%d].address", i), l.GetName(), l.GetAddress())
	}
	if a := r.GetAdminAddress(); a != "" {
		check("admin_address", "", a)
	}
	// Proxies naming the same metrics address share one server.
	metrics := map[string]bool{}
	for i, l := range r.GetListeners() {
		if a := l.GetProxy().GetMetrics().GetAddress(); a != "" && !metrics[a] {
			metrics[a] = true
			check(fmt.Sprintf("listeners[%d].proxy.metrics.address", i), "", a)
		}
	}
}

// hostsClash reports whether listening on hosts a and b at one port
// clashes: the same address, or a wildcard that covers the other.
func hostsClash(a, b string) bool {
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	ipa, erra := netip.ParseAddr(a)
	ipb, errb := netip.ParseAddr(b)
	switch {
	case wild(a) || wild(b):
		// 0.0.0.0 covers IPv4 only; "" and "::" (dual stack) cover both.
		if a == "0.0.0.0" && errb == nil && !ipb.Unmap().Is4() || b == "0.0.0.0" && erra == nil && !ipa.Unmap().Is4() {
			return false
		}
		return true
	case erra == nil && errb == nil:
		return ipa.Unmap() == ipb.Unmap()
	}
	return strings.EqualFold(a, b)
}

func (v *validator) listenAddress(path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		if ae, ok := err.(*net.AddrError); ok {
			reason = ae.Err // its Error() would repeat the address
		}
		v.add(path, strconv.Quote(addr), "want host:port: %s", reason)
		return
	}
	if host != "" && !validHost(host) {
		v.add(path, strconv.Quote(addr), "host %q is neither an IP address nor a host name", host)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.add(path, strconv.Quote(addr), "port %q is not a number 0–65535", port)
	}
}
