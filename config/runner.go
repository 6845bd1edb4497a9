package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

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
	return errors.Join(v.errs...)
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
