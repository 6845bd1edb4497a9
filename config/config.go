// Package config turns Breeze's protobuf configuration into checked values:
// the ProxyConfig that Envoy passes as the Go filter's plugin_config (an Any,
// either our own type or a TypedStruct), and the standalone runner's file.
//
// Parsing and validation are separate steps: ParseAny only decodes, Validate
// checks meaning and reports every mistake at once, each naming the field
// path and the offending value.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

const typeURLPrefix = "type.googleapis.com/"

var (
	proxyConfigName = (*breezev1.ProxyConfig)(nil).ProtoReflect().Descriptor().FullName()
	xdsTypedStruct  = (*xdstypev3.TypedStruct)(nil).ProtoReflect().Descriptor().FullName()
	udpaTypedStruct = (*udpatypev1.TypedStruct)(nil).ProtoReflect().Descriptor().FullName()

	// ProxyConfigTypeURL is the type URL of a ProxyConfig, in an Any or in a
	// TypedStruct's type_url.
	ProxyConfigTypeURL = typeURLPrefix + string(proxyConfigName)
)

// ParseAny decodes an Envoy plugin_config into a ProxyConfig. It accepts
//
//   - an Any of type breeze.v1.ProxyConfig (binary protobuf; unknown fields
//     are ignored, as protobuf does for a newer sender);
//   - an Any of type xds.type.v3.TypedStruct or udpa.type.v1.TypedStruct
//     whose type_url names breeze.v1.ProxyConfig; its value is read as
//     ProxyConfig's JSON form (proto or JSON field names), and unknown fields
//     are errors that name each one by its path.
//
// As in protobuf's own Any handling, a type URL is matched on the message
// name after its last '/'. The result is not validated: see Validate.
func ParseAny(a *anypb.Any) (*breezev1.ProxyConfig, error) {
	if a == nil {
		return nil, errors.New("plugin_config: missing (want " + ProxyConfigTypeURL + " or a TypedStruct of it)")
	}
	c := &breezev1.ProxyConfig{}
	switch name := a.MessageName(); name {
	case proxyConfigName:
		if err := proto.Unmarshal(a.GetValue(), c); err != nil {
			return nil, fmt.Errorf("plugin_config %s: %w", name, err)
		}
		return c, nil
	case xdsTypedStruct, udpaTypedStruct:
		ts, err := typedStruct(a)
		if err != nil {
			return nil, fmt.Errorf("plugin_config %s: %w", name, err)
		}
		if inner := messageName(ts.typeURL); inner != proxyConfigName {
			return nil, fmt.Errorf("plugin_config %s: type_url %q: want %s", name, ts.typeURL, ProxyConfigTypeURL)
		}
		js, err := protojson.Marshal(ts.value)
		if err != nil {
			return nil, fmt.Errorf("plugin_config %s: value: %w", name, err)
		}
		if err := fromJSON(js, c); err != nil {
			return nil, fmt.Errorf("plugin_config %s: value: %w", name, err)
		}
		return c, nil
	default:
		return nil, fmt.Errorf("plugin_config: unsupported type URL %q (want %s, %s%s or %s%s)",
			a.GetTypeUrl(), ProxyConfigTypeURL, typeURLPrefix, xdsTypedStruct, typeURLPrefix, udpaTypedStruct)
	}
}

type typedStructFields struct {
	typeURL string
	value   *structpb.Struct
}

// typedStruct decodes either flavour of TypedStruct: they have the same fields.
func typedStruct(a *anypb.Any) (typedStructFields, error) {
	if a.MessageName() == udpaTypedStruct {
		var ts udpatypev1.TypedStruct
		if err := proto.Unmarshal(a.GetValue(), &ts); err != nil {
			return typedStructFields{}, err
		}
		return typedStructFields{ts.GetTypeUrl(), ts.GetValue()}, nil
	}
	var ts xdstypev3.TypedStruct
	if err := proto.Unmarshal(a.GetValue(), &ts); err != nil {
		return typedStructFields{}, err
	}
	return typedStructFields{ts.GetTypeUrl(), ts.GetValue()}, nil
}

// messageName returns the message name a type URL names: what follows its
// last '/'.
func messageName(typeURL string) protoreflect.FullName {
	return protoreflect.FullName(typeURL[strings.LastIndexByte(typeURL, '/')+1:])
}

// ToAny wraps c in an Any of its own type, as a typed control plane would
// send it. It fails only on a string field holding invalid UTF-8.
func ToAny(c *breezev1.ProxyConfig) (*anypb.Any, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: ProxyConfigTypeURL, Value: b}, nil
}

// ToTypedStruct wraps c in an Any of type xds.type.v3.TypedStruct, the form
// Istio passes through (its value uses proto field names).
func ToTypedStruct(c *breezev1.ProxyConfig) (*anypb.Any, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(c)
	if err != nil {
		return nil, err
	}
	value := &structpb.Struct{}
	if err := protojson.Unmarshal(js, value); err != nil {
		return nil, err
	}
	return anypb.New(&xdstypev3.TypedStruct{TypeUrl: ProxyConfigTypeURL, Value: value})
}

// DecodeJSON fills m from its JSON form (proto or JSON field names) the way
// ParseRunner reads its file: every unknown field is an error naming its
// path, and a value protojson rejects is reported with its path too;
// durations may be written as Go and Istio write them ("100ms", "15m") or
// as protobuf does ("0.1s"). Other programs reading protobuf-typed YAML
// (the control plane's Istio and Aeraki resources) use it for the same
// messages. It is DecodeStrict with GoDurations, of the JSON text.
func DecodeJSON(js []byte, m proto.Message) error { return fromJSON(js, m) }

// fromJSON fills m from its JSON form as DecodeStrict does, paths by proto
// field names, durations in Go's form accepted too (as Istio accepts them).
func fromJSON(js []byte, m proto.Message) error {
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber() // so that numbers re-encode exactly in locate
	var v any
	if err := d.Decode(&v); err != nil {
		return err
	}
	return decodeStrict(v, js, m, StrictOptions{GoDurations: true})
}
