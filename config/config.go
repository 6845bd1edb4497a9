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
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
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
// path, and a value protojson rejects is reported with its path too. Other
// programs reading protobuf-typed YAML (the control plane's Istio and
// Aeraki resources) use it for the same messages.
func DecodeJSON(js []byte, m proto.Message) error { return fromJSON(js, m) }

// fromJSON fills m from its JSON form. Every unknown field is reported, by
// path; protojson alone would stop at the first and name only its last
// element. A value protojson rejects is reported with its path too.
func fromJSON(js []byte, m proto.Message) error {
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber() // so that numbers re-encode exactly in locateError
	var v any
	if err := d.Decode(&v); err != nil {
		return err
	}
	md := m.ProtoReflect().Descriptor()
	if _, ok := v.(map[string]any); !ok {
		return fmt.Errorf("want an object (%s), got %s", md.FullName(), JSONKind(v))
	}
	var unknown []error
	unknownFields(md, v, "", &unknown)
	if len(unknown) > 0 {
		return errors.Join(unknown...)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, m); err != nil {
		if fe := locateError(md, v.(map[string]any), ""); fe != nil {
			return fe
		}
		return errors.New(TrimProtojsonPosition(err.Error()))
	}
	return nil
}

// JSONKind names the JSON type of a value decoded with json.Decoder.UseNumber,
// for messages such as "want an object, got a list".
func JSONKind(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// locateError finds the innermost field of obj (a JSON object of message
// md) whose value protojson rejects on its own, by decoding one field at a
// time. Only called once decoding has failed, so its cost does not matter.
func locateError(md protoreflect.MessageDescriptor, obj map[string]any, path string) *FieldError {
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		one, err := json.Marshal(map[string]any{k: obj[k]})
		if err != nil {
			continue
		}
		err = protojson.Unmarshal(one, dynamicpb.NewMessage(md))
		if err == nil {
			continue
		}
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByTextName(k)
		}
		if fd == nil {
			continue
		}
		fpath := join(path, string(fd.Name()))
		if sub := fd.Message(); sub != nil && !strings.HasPrefix(string(sub.FullName()), "google.protobuf.") {
			var inner *FieldError
			switch val := obj[k].(type) {
			case []any:
				for i, e := range val {
					if eo, ok := e.(map[string]any); ok && inner == nil {
						inner = locateError(sub, eo, fpath+"["+strconv.Itoa(i)+"]")
					}
				}
			case map[string]any:
				if fd.IsMap() {
					if vd := fd.MapValue().Message(); vd != nil {
						for _, mk := range slices.Sorted(maps.Keys(val)) {
							if eo, ok := val[mk].(map[string]any); ok && inner == nil {
								inner = locateError(vd, eo, fpath+"["+strconv.Quote(mk)+"]")
							}
						}
					}
				} else {
					inner = locateError(sub, val, fpath)
				}
			}
			if inner != nil {
				return inner
			}
		}
		return &FieldError{Path: fpath, Err: errors.New(TrimProtojsonPosition(err.Error()))}
	}
	return nil
}

// TrimProtojsonPosition drops protojson's "proto: " prefix and its
// "(line 1:234)" positions: they point into JSON generated from the user's
// input, not into the input itself, so they would only mislead.
func TrimProtojsonPosition(msg string) string {
	rest, ok := strings.CutPrefix(msg, "proto:")
	if !ok {
		return msg
	}
	rest = protojsonPosition.ReplaceAllString(rest, "")
	return strings.TrimLeft(rest, "\u00a0 :")
}

var protojsonPosition = regexp.MustCompile(` ?\(line \d+:\d+\)`)

// unknownFields appends a FieldError for every key of v (a JSON object as a
// map) that names no field of md, recursing into message fields, lists and
// maps of messages. Well-known types have their own JSON forms and are left
// to protojson, as are values of the wrong JSON type.
func unknownFields(md protoreflect.MessageDescriptor, v any, path string, out *[]error) {
	obj, ok := v.(map[string]any)
	if !ok || strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByTextName(k)
		}
		if fd == nil {
			*out = append(*out, &FieldError{Path: join(path, k), Err: errors.New("unknown field")})
			continue
		}
		fpath := join(path, string(fd.Name()))
		switch {
		case fd.IsMap():
			if vd := fd.MapValue(); vd.Message() != nil {
				if m, ok := obj[k].(map[string]any); ok {
					for _, mk := range slices.Sorted(maps.Keys(m)) {
						unknownFields(vd.Message(), m[mk], fpath+"["+strconv.Quote(mk)+"]", out)
					}
				}
			}
		case fd.Message() != nil && fd.IsList():
			if l, ok := obj[k].([]any); ok {
				for i, e := range l {
					unknownFields(fd.Message(), e, fpath+"["+strconv.Itoa(i)+"]", out)
				}
			}
		case fd.Message() != nil:
			unknownFields(fd.Message(), obj[k], fpath, out)
		}
	}
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}
