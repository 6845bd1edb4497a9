// Package mutation is the "mutation" L7 filter: it writes key/values into
// requests on their way upstream (Dubbo attachments, THeader/TTHeader
// headers) and into responses on their way back, for every request of the
// proxy and per route.
package mutation

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	mutationv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/mutation/v1"
)

// Name is the filter's registered name.
const Name = "mutation"

func init() {
	filter.Register(&filter.Factory{
		Name:          Name,
		Config:        func() proto.Message { return &mutationv1.Mutations{} },
		RouteConfig:   func() proto.Message { return &mutationv1.Mutations{} },
		Validate:      validate,
		ValidateRoute: validate,
		Build: func(cfg proto.Message, _ filter.BuildContext) (filter.Filter, error) {
			return &Filter{global: compile(cfg.(*mutationv1.Mutations))}, nil
		},
		ParseRoute: func(cfg proto.Message) (any, error) { return compile(cfg.(*mutationv1.Mutations)), nil },
	})
}

func validate(cfg proto.Message) error {
	m := cfg.(*mutationv1.Mutations)
	var errs []error
	for i, kv := range m.GetRequest() {
		if kv.GetKey() == "" {
			errs = append(errs, fmt.Errorf(`request[%d].key: "": must not be empty`, i))
		}
	}
	for i, kv := range m.GetResponse() {
		if kv.GetKey() == "" {
			errs = append(errs, fmt.Errorf(`response[%d].key: "": must not be empty`, i))
		}
	}
	return errors.Join(errs...)
}

// mutations is a compiled Mutations message.
type mutations struct {
	request, response codecs.Metadata
}

func compile(m *mutationv1.Mutations) *mutations {
	out := &mutations{}
	for _, kv := range m.GetRequest() {
		out.request = append(out.request, codecs.KV{Key: kv.GetKey(), Value: kv.GetValue()})
	}
	for _, kv := range m.GetResponse() {
		out.response = append(out.response, codecs.KV{Key: kv.GetKey(), Value: kv.GetValue()})
	}
	return out
}

// legacyRoute is a route with the request_mutation field of breeze.v1.Route
// (route.Route): kept working without this filter's own per-route config.
type legacyRoute interface {
	RequestMutations() codecs.Metadata
}

// Filter applies the proxy-wide mutations, then the route's: a route's
// value wins for a key both set.
type Filter struct {
	filter.Base
	global *mutations
}

var _ filter.Filter = (*Filter)(nil)

func (f *Filter) OnRequest(s *filter.Stream) filter.Status {
	set(&s.Request.Mutations, f.global.request)
	if r, ok := s.Route.(legacyRoute); ok {
		set(&s.Request.Mutations, r.RequestMutations())
	}
	if rc, ok := s.RouteConfig(Name).(*mutations); ok {
		set(&s.Request.Mutations, rc.request)
	}
	return filter.Continue
}

func (f *Filter) OnResponse(s *filter.Stream) {
	if s.Response.Type != codecs.Response {
		return
	}
	set(&s.Response.Mutations, f.global.response)
	if rc, ok := s.RouteConfig(Name).(*mutations); ok {
		set(&s.Response.Mutations, rc.response)
	}
}

func set(dst *codecs.Metadata, kvs codecs.Metadata) {
	for _, kv := range kvs {
		dst.Set(kv.Key, kv.Value)
	}
}
