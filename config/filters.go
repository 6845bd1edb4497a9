package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/breeze-mesh/breeze/filters/filter"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// UnpackFilterConfig fills into from a filter's config as a ProxyConfig
// carries it: an Any of into's own type (binary protobuf), or an
// xds.type.v3 / udpa.type.v1 TypedStruct whose type_url names into's type
// and whose value is its JSON form (unknown fields are errors, by path). A
// nil Any leaves into empty: the filter's defaults.
func UnpackFilterConfig(a *anypb.Any, into proto.Message) error {
	if a == nil {
		return nil
	}
	want := into.ProtoReflect().Descriptor().FullName()
	switch name := a.MessageName(); name {
	case want:
		return proto.Unmarshal(a.GetValue(), into)
	case xdsTypedStruct, udpaTypedStruct:
		ts, err := typedStruct(a)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if inner := messageName(ts.typeURL); inner != want {
			return fmt.Errorf("%s: type_url %q: want %s%s", name, ts.typeURL, typeURLPrefix, want)
		}
		js, err := protojson.Marshal(ts.value)
		if err != nil {
			return fmt.Errorf("%s: value: %w", name, err)
		}
		if err := fromJSON(js, into); err != nil {
			return errors.Join(underPath("value", err)...)
		}
		return nil
	default:
		return fmt.Errorf("type %q: want %s%s or a TypedStruct of it", a.GetTypeUrl(), typeURLPrefix, want)
	}
}

// underPath places each error of err (joined or single) under path: a
// FieldError's path is appended to it, a "field.path: value: problem"
// message from a filter's Validate reads as path.field.path, anything else
// becomes a FieldError at path.
func underPath(path string, err error) []error {
	var out []error
	for _, e := range splitErrors(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			c := *fe
			c.Path = path + "." + fe.Path
			out = append(out, &c)
			continue
		}
		msg := e.Error()
		if i := strings.Index(msg, ": "); i > 0 && !strings.ContainsAny(msg[:i], " \"") {
			out = append(out, errors.New(path+"."+msg))
			continue
		}
		out = append(out, &FieldError{Path: path, Err: e})
	}
	return out
}

// splitErrors returns the errors errors.Join put together, or err alone.
func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// FilterConfig unpacks and validates the config of filter f.
func FilterConfig(f *filter.Factory, a *anypb.Any) (proto.Message, error) {
	if f.Config == nil {
		if a != nil {
			return nil, errors.New("this filter takes no config")
		}
		return nil, nil
	}
	cfg := f.Config()
	if err := UnpackFilterConfig(a, cfg); err != nil {
		return nil, err
	}
	if f.Validate != nil {
		if err := f.Validate(cfg); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// FilterRouteConfig unpacks and validates a per-route config of filter f.
func FilterRouteConfig(f *filter.Factory, a *anypb.Any) (proto.Message, error) {
	if f.RouteConfig == nil {
		return nil, errors.New("this filter takes no per-route config")
	}
	cfg := f.RouteConfig()
	if err := UnpackFilterConfig(a, cfg); err != nil {
		return nil, err
	}
	if f.ValidateRoute != nil {
		if err := f.ValidateRoute(cfg); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// filterErr records err (a filter's own error, paths relative to its
// config message) under path.
func (v *validator) filterErr(path string, err error) {
	v.errs = append(v.errs, underPath(v.prefix+path, err)...)
}

// errUnknownFilter says which filters there are.
func errUnknownFilter() error {
	return fmt.Errorf("no such filter (registered: %v)", filter.Names())
}

// filters checks the proxy's filter list: known names, each once, valid
// configs; the router is implicit and may only be named last.
func (v *validator) filters(c *breezev1.ProxyConfig) {
	seen := map[string]bool{}
	list := c.GetFilters()
	for i, fc := range list {
		path := "filters[" + strconv.Itoa(i) + "]"
		name := fc.GetName()
		if !v.required(path+".name", name) {
			continue
		}
		if name == filter.RouterName {
			if i != len(list)-1 {
				v.add(path+".name", strconv.Quote(name), "the router is the terminal filter: it can only be last (or left out)")
			}
			if fc.GetTypedConfig() != nil {
				v.add(path+".typed_config", fc.GetTypedConfig().GetTypeUrl(), "the router takes its config from routes and clusters")
			}
			continue
		}
		f, ok := filter.Lookup(name)
		if !ok {
			v.addErr(path+".name", strconv.Quote(name), errUnknownFilter())
			continue
		}
		if seen[name] {
			v.add(path+".name", strconv.Quote(name), "listed twice")
		}
		seen[name] = true
		if _, err := FilterConfig(f, fc.GetTypedConfig()); err != nil {
			v.filterErr(path+".typed_config", err)
		}
	}
}

// routeFilters checks a route's per-filter configs.
func (v *validator) routeFilters(path string, r *breezev1.Route) {
	for name, a := range r.GetTypedPerFilterConfig() {
		p := path + ".typed_per_filter_config[" + strconv.Quote(name) + "]"
		f, ok := filter.Lookup(name)
		if !ok {
			v.addErr(p, "", errUnknownFilter())
			continue
		}
		if _, err := FilterRouteConfig(f, a); err != nil {
			v.filterErr(p, err)
		}
	}
}
