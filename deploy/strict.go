package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	"github.com/breeze-mesh/breeze/config"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Error is one mistake in a file, at a field path such as
// static_resources.clusters[1].lb_policy.
type Error struct {
	// Doc names the document of a multi-document file (an EnvoyFilter's
	// name), empty otherwise.
	Doc string
	// Path is the field, in the file's own names; empty for the whole
	// document.
	Path string
	Msg  string
}

func (e *Error) Error() string {
	s := e.Msg
	if e.Path != "" {
		s = e.Path + ": " + s
	}
	if e.Doc != "" {
		s = e.Doc + ": " + s
	}
	return s
}

func errorf(path, format string, args ...any) error {
	return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func indexPath(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

var (
	anyName        = (*anypb.Any)(nil).ProtoReflect().Descriptor().FullName()
	xdsTypedStruct = (*xdstypev3.TypedStruct)(nil).ProtoReflect().Descriptor().FullName()
	udpaTypedStrct = (*udpatypev1.TypedStruct)(nil).ProtoReflect().Descriptor().FullName()
)

// yamlValue turns YAML (or JSON) into a JSON value with numbers kept as
// written.
func yamlValue(data []byte) (any, []byte, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, nil, err
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, nil, err
	}
	return v, js, nil
}

// decodeStrict fills m from v, the JSON form of m (proto or JSON field
// names), the way Envoy loads a static config: unknown fields are errors,
// and so is an Any whose type Envoy cannot know. Every unknown field and
// unresolvable type is reported, each by its path under path; a value
// protojson rejects is reported with the path of the innermost field that
// holds it.
func decodeStrict(v any, m proto.Message, path string) error {
	md := m.ProtoReflect().Descriptor()
	if _, ok := v.(map[string]any); !ok {
		return errorf(path, "want an object (%s), got %s", md.FullName(), config.JSONKind(v))
	}
	var errs []error
	checkFields(md, v, path, &errs)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	js, err := json.Marshal(v)
	if err != nil {
		return errorf(path, "%v", err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		if e := locate(md, v.(map[string]any), path); e != nil {
			return e
		}
		return errorf(path, "%s", config.TrimProtojsonPosition(err.Error()))
	}
	return nil
}

// resolveType finds the message type a type URL names, among the types
// Envoy 1.36 (and istiod) can resolve. Breeze's own types are linked into
// this binary but known to neither, so they do not count.
func resolveType(typeURL string) (protoreflect.MessageType, error) {
	name := typeURL[strings.LastIndexByte(typeURL, '/')+1:]
	if strings.HasPrefix(name, "breeze.") {
		return nil, fmt.Errorf("type %q is Breeze's own: Envoy and istiod cannot resolve it; carry it as a %s (type_url %s) instead", typeURL, xdsTypedStruct, typeURL)
	}
	if !strings.Contains(typeURL, "/") {
		return nil, fmt.Errorf("type URL %q: want type.googleapis.com/<message name>", typeURL)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(typeURL)
	if err != nil {
		return nil, fmt.Errorf("unknown type %q: not an Envoy v1.36 API type (misspelt, or an extension breeze validate does not link)", typeURL)
	}
	return mt, nil
}

// checkFields appends an error for every key of v (a JSON object) that
// names no field of md, and for every Any whose @type cannot be resolved,
// recursing into messages, lists, maps and the payloads of Any and
// TypedStruct. Values of the wrong JSON type are left to protojson.
func checkFields(md protoreflect.MessageDescriptor, v any, path string, errs *[]error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	switch md.FullName() {
	case anyName:
		checkAny(obj, path, errs)
		return
	case xdsTypedStruct, udpaTypedStrct:
		checkTypedStruct(md, obj, path, errs)
		return
	}
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return // well-known types have their own JSON forms
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		fd := fieldByName(md, k)
		fpath := joinPath(path, k)
		if fd == nil {
			*errs = append(*errs, errorf(fpath, "unknown field (%s has no field %q)", md.FullName(), k))
			continue
		}
		switch {
		case fd.IsMap():
			if vd := fd.MapValue().Message(); vd != nil {
				if m, ok := obj[k].(map[string]any); ok {
					for _, mk := range slices.Sorted(maps.Keys(m)) {
						checkFields(vd, m[mk], fpath+"["+strconv.Quote(mk)+"]", errs)
					}
				}
			}
		case fd.Message() != nil && fd.IsList():
			if l, ok := obj[k].([]any); ok {
				for i, e := range l {
					checkFields(fd.Message(), e, indexPath(fpath, i), errs)
				}
			}
		case fd.Message() != nil:
			checkFields(fd.Message(), obj[k], fpath, errs)
		}
	}
}

func fieldByName(md protoreflect.MessageDescriptor, k string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByJSONName(k); fd != nil {
		return fd
	}
	return md.Fields().ByTextName(k)
}

func checkAny(obj map[string]any, path string, errs *[]error) {
	t, ok := obj["@type"].(string)
	if !ok {
		*errs = append(*errs, errorf(joinPath(path, "@type"), "required: an Any names its type"))
		return
	}
	mt, err := resolveType(t)
	if err != nil {
		*errs = append(*errs, errorf(joinPath(path, "@type"), "%v", err))
		return
	}
	inner := maps.Clone(obj)
	delete(inner, "@type")
	if strings.HasPrefix(string(mt.Descriptor().FullName()), "google.protobuf.") {
		return // {"@type": ..., "value": ...}
	}
	checkFields(mt.Descriptor(), inner, path, errs)
}

// checkTypedStruct checks a TypedStruct's own fields, then its value
// against the type it names, as Envoy converts it. A Breeze config is left
// to the Breeze checks, which parse it with the plugin's own code.
func checkTypedStruct(md protoreflect.MessageDescriptor, obj map[string]any, path string, errs *[]error) {
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if fieldByName(md, k) == nil {
			*errs = append(*errs, errorf(joinPath(path, k), "unknown field (%s has no field %q)", md.FullName(), k))
		}
	}
	t, _ := obj["type_url"].(string)
	if t == "" {
		t, _ = obj["typeUrl"].(string)
	}
	if t == "" {
		*errs = append(*errs, errorf(joinPath(path, "type_url"), "required: a TypedStruct names the type of its value"))
		return
	}
	if t[strings.LastIndexByte(t, '/')+1:] == string(proxyConfigName) {
		return
	}
	mt, err := resolveType(t)
	if err != nil {
		*errs = append(*errs, errorf(joinPath(path, "type_url"), "%v", err))
		return
	}
	if v, ok := obj["value"]; ok {
		checkFields(mt.Descriptor(), v, joinPath(path, "value"), errs)
	}
}

var proxyConfigName = (*breezev1.ProxyConfig)(nil).ProtoReflect().Descriptor().FullName()

// locate finds the innermost field of obj (a JSON object of message md)
// whose value protojson rejects on its own, by decoding one field at a
// time. Only called once decoding has failed, so its cost does not matter.
func locate(md protoreflect.MessageDescriptor, obj map[string]any, path string) error {
	if md.FullName() == anyName {
		t, _ := obj["@type"].(string)
		mt, err := resolveType(t)
		if err != nil {
			return nil
		}
		inner := maps.Clone(obj)
		delete(inner, "@type")
		if strings.HasPrefix(string(mt.Descriptor().FullName()), "google.protobuf.") {
			return nil
		}
		return locate(mt.Descriptor(), inner, path)
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		one, err := json.Marshal(map[string]any{k: obj[k]})
		if err != nil {
			continue
		}
		err = protojson.Unmarshal(one, dynamicpb.NewMessage(md))
		if err == nil {
			continue
		}
		fd := fieldByName(md, k)
		if fd == nil {
			continue
		}
		fpath := joinPath(path, k)
		if sub := fd.Message(); sub != nil && (sub.FullName() == anyName || !strings.HasPrefix(string(sub.FullName()), "google.protobuf.")) {
			var inner error
			switch val := obj[k].(type) {
			case []any:
				for i, e := range val {
					if eo, ok := e.(map[string]any); ok && inner == nil {
						inner = locate(sub, eo, indexPath(fpath, i))
					}
				}
			case map[string]any:
				if fd.IsMap() {
					if vd := fd.MapValue().Message(); vd != nil {
						for _, mk := range slices.Sorted(maps.Keys(val)) {
							if eo, ok := val[mk].(map[string]any); ok && inner == nil {
								inner = locate(vd, eo, fpath+"["+strconv.Quote(mk)+"]")
							}
						}
					}
				} else {
					inner = locate(sub, val, fpath)
				}
			}
			if inner != nil {
				return inner
			}
		}
		return errorf(fpath, "%s", config.TrimProtojsonPosition(err.Error()))
	}
	return nil
}

// typedStructMessage converts a TypedStruct (either flavour) into the
// message its type_url names, as Envoy does. ok is false for a Breeze
// config, which the Breeze checks parse themselves.
func typedStructMessage(m proto.Message) (msg proto.Message, ok bool, err error) {
	var typeURL string
	var value *structpb.Struct
	switch ts := m.(type) {
	case *xdstypev3.TypedStruct:
		typeURL, value = ts.GetTypeUrl(), ts.GetValue()
	case *udpatypev1.TypedStruct:
		typeURL, value = ts.GetTypeUrl(), ts.GetValue()
	default:
		return m, true, nil
	}
	if typeURL[strings.LastIndexByte(typeURL, '/')+1:] == string(proxyConfigName) {
		return nil, false, nil
	}
	mt, err := resolveType(typeURL)
	if err != nil {
		return nil, false, err
	}
	js, err := protojson.Marshal(value)
	if err != nil {
		return nil, false, err
	}
	out := mt.New().Interface()
	if err := protojson.Unmarshal(js, out); err != nil {
		return nil, false, errors.New(config.TrimProtojsonPosition(err.Error()))
	}
	return out, true, nil
}
