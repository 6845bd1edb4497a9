package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/structpb"

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

// didYouMean is "; did you mean X?" with X the name among known nearest
// to k, or "" when none is near.
func didYouMean(k string, known []string) string {
	if near := config.Nearest(k, known); near != "" {
		return "; did you mean " + near + "?"
	}
	return ""
}

func indexPath(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

var xdsTypedStruct = (*xdstypev3.TypedStruct)(nil).ProtoReflect().Descriptor().FullName()

// yamlValue turns YAML (or JSON) into a JSON value with numbers kept as
// written. YAML that does not parse is a *config.SyntaxError, which names
// the line and column.
func yamlValue(data []byte) (any, []byte, error) {
	js, err := config.YAMLToJSON(data)
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

// reader is who reads a value, which decides the duration forms it takes.
type reader bool

const (
	// envoy reads static configs and TypedStruct values with protobuf's
	// JSON parser: durations only as "1.5s".
	envoy reader = false
	// istiod reads its resources, EnvoyFilter patch values among them
	// (Any contents too), with golang/protobuf's jsonpb, which parses
	// durations with time.ParseDuration: "100ms", "15m" and "1.5s".
	istiod reader = true
)

// decodeStrict fills m from v, the JSON form of m (proto or JSON field
// names), the way Envoy loads a static config: config.DecodeStrict with
// paths in the file's own names under path, and Any and TypedStruct
// contents checked against the types Envoy can resolve. Every unknown field
// and unresolvable type is reported, each by its path; a value protojson
// rejects is reported with the path of the innermost field that holds it.
// by says who reads the value in production, and so which durations it
// accepts.
func decodeStrict(v any, m proto.Message, path string, by reader) error {
	err := config.DecodeStrict(v, m, config.StrictOptions{Path: path, KeysAsWritten: true, Resolve: resolveType, GoDurations: bool(by)})
	if err == nil {
		return nil
	}
	var errs []error
	for _, e := range unjoin(err) {
		if fe, ok := e.(*config.FieldError); ok {
			errs = append(errs, &Error{Path: fe.Path, Msg: fieldErrorMsg(fe)})
		} else {
			errs = append(errs, &Error{Msg: e.Error()})
		}
	}
	return errors.Join(errs...)
}

// resolveType finds the message type a type URL names, among the types
// this binary's Envoy (DefaultIstio's) and istiod can resolve. Breeze's own types are linked into
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
		return nil, fmt.Errorf("unknown type %q: not an Envoy v%s API type (misspelt, or an extension breeze validate does not link)", typeURL, builtRelease().Envoy)
	}
	return mt, nil
}

var proxyConfigName = (*breezev1.ProxyConfig)(nil).ProtoReflect().Descriptor().FullName()

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
