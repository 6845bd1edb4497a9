// Package require is the "require" L7 filter: a request that lacks one of
// the configured metadata keys (a tenant attachment, a caller header...)
// is refused with the protocol's own error reply instead of reaching a
// provider that would fail on it. It is also the worked example of
// docs/writing-a-filter.md.
package require

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	requirev1 "github.com/breeze-mesh/breeze/protos/breeze/filters/require/v1"
)

// Name is the filter's registered name.
const Name = "require"

func init() {
	filter.Register(&filter.Factory{
		Name:          Name,
		Config:        func() proto.Message { return &requirev1.Require{} },
		RouteConfig:   func() proto.Message { return &requirev1.Require{} },
		Validate:      validate,
		ValidateRoute: validate,
		Build: func(cfg proto.Message, _ filter.BuildContext) (filter.Filter, error) {
			return &Filter{keys: cfg.(*requirev1.Require).GetKeys()}, nil
		},
		// A route's keys are read on every request: keep the slice, not the message.
		ParseRoute: func(cfg proto.Message) (any, error) { return routeKeys(cfg.(*requirev1.Require).GetKeys()), nil },
	})
}

// validate names the field and the value, as every Breeze config error does.
func validate(cfg proto.Message) error {
	var errs []error
	for i, k := range cfg.(*requirev1.Require).GetKeys() {
		if k == "" {
			errs = append(errs, fmt.Errorf(`keys[%d]: "": must not be empty`, i))
		}
	}
	return errors.Join(errs...)
}

type routeKeys []string

// Filter refuses requests missing a required key.
type Filter struct {
	filter.Base // OnResponse and OnDone: nothing to do
	keys        []string
}

var _ filter.Filter = (*Filter)(nil)

// OnRequest checks the proxy-wide keys, then the route's.
func (f *Filter) OnRequest(s *filter.Stream) filter.Status {
	if k, ok := missing(s.Request.Metadata, f.keys); ok {
		return refuse(s, k)
	}
	if keys, _ := s.RouteConfig(Name).(routeKeys); keys != nil {
		if k, ok := missing(s.Request.Metadata, keys); ok {
			return refuse(s, k)
		}
	}
	return filter.Continue
}

func missing(md codecs.Metadata, keys []string) (string, bool) {
	for _, k := range keys {
		if _, ok := md.Get(k); !ok {
			return k, true
		}
	}
	return "", false
}

func refuse(s *filter.Stream, key string) filter.Status {
	s.Reply(codecs.ErrBadRequest, fmt.Sprintf("breeze: request lacks required metadata %q", key), 0)
	return filter.Stop
}
