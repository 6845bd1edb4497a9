package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// StrictOptions configure DecodeStrict.
type StrictOptions struct {
	// Path is where the value sits in its file (e.g. "spec"), put before
	// every path in errors; empty for a whole file.
	Path string
	// KeysAsWritten names fields in paths by the keys the JSON value uses
	// (camelCase or snake_case, as in the file). Unset, fields are named by
	// their proto names, as Validate's errors name them.
	KeysAsWritten bool
	// Resolve, when set, makes Any and TypedStruct values checked too: it
	// returns the message type a type URL names, or an error that rejects
	// the type (reported at the @type or type_url), and the contents are
	// checked against that type. An Any without @type and a TypedStruct
	// without type_url are errors. A TypedStruct of breeze.v1.ProxyConfig is
	// not looked into: ParseAny reads it. Unset, both are left to protojson,
	// as other well-known types are.
	Resolve func(typeURL string) (protoreflect.MessageType, error)
	// GoDurations accepts google.protobuf.Duration values written as Go
	// and Istio write them ("100ms", "15m", "1h30m") besides protobuf's
	// "1.5s": set it for what Breeze or istiod read (they accept both), not
	// for what Envoy reads (it wants protobuf's form). A TypedStruct's value
	// is not looked into: its reader decides.
	GoDurations bool
}

// DecodeStrict fills m from v, the JSON form of m (proto or JSON field
// names) as decoded by encoding/json with UseNumber, the way a strict loader
// such as Envoy's reads a file: every unknown field is an error, each named
// by its path (protojson alone stops at the first and names only its last
// element); so is every type o.Resolve rejects. A value protojson rejects is
// reported at the path of the innermost field that holds it. Errors are
// *FieldError (with an empty Value), joined; one that names no field is a
// plain error when o.Path is empty.
func DecodeStrict(v any, m proto.Message, o StrictOptions) error {
	return decodeStrict(v, nil, m, o)
}

// decodeStrict is DecodeStrict of v, whose JSON text is js if not nil.
func decodeStrict(v any, js []byte, m proto.Message, o StrictOptions) error {
	md := m.ProtoReflect().Descriptor()
	obj, ok := v.(map[string]any)
	if !ok {
		return o.errorf(o.Path, "want an object (%s), got %s", md.FullName(), JSONKind(v))
	}
	var errs []error
	o.checkFields(md, obj, o.Path, &errs)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if o.GoDurations {
		resolve := o.Resolve
		if resolve == nil {
			resolve = globalResolve
		}
		if nv, changed := goDurations(md, obj, resolve); changed {
			obj, js = nv.(map[string]any), nil
			v = obj
		}
	}
	if js == nil {
		var err error
		if js, err = json.Marshal(v); err != nil {
			return o.errorf(o.Path, "%v", err)
		}
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, m); err != nil {
		if fes := o.locate(md, obj, o.Path); len(fes) > 0 {
			errs := make([]error, len(fes))
			for i, fe := range fes {
				errs[i] = fe
			}
			return errors.Join(errs...)
		}
		return o.errorf(o.Path, "%s", TrimProtojsonPosition(err.Error()))
	}
	return nil
}

// errorf returns a FieldError at path, or a plain error for an empty path.
func (o StrictOptions) errorf(path, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if path == "" {
		return err
	}
	return &FieldError{Path: path, Err: err}
}

// shownValue shows a JSON value in a message: a scalar as written, a list
// or an object by its kind.
func shownValue(v any) string {
	switch e := v.(type) {
	case string:
		return strconv.Quote(e)
	case json.Number:
		return string(e)
	case bool:
		return strconv.FormatBool(e)
	case nil:
		return "null"
	}
	return JSONKind(v)
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

var anyName = (*anypb.Any)(nil).ProtoReflect().Descriptor().FullName()

func isWellKnown(md protoreflect.MessageDescriptor) bool {
	return strings.HasPrefix(string(md.FullName()), "google.protobuf.")
}

func fieldByName(md protoreflect.MessageDescriptor, k string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByJSONName(k); fd != nil {
		return fd
	}
	return md.Fields().ByTextName(k)
}

// fieldPath is the path of field fd, written k in the JSON value, under path.
func (o StrictOptions) fieldPath(path, k string, fd protoreflect.FieldDescriptor) string {
	if o.KeysAsWritten {
		return join(path, k)
	}
	return join(path, string(fd.Name()))
}

// checkFields appends a FieldError for every key of v (a JSON object) that
// names no field of md, recursing into message fields, lists and maps of
// messages and, with o.Resolve, the contents of Any and TypedStruct.
// Well-known types have their own JSON forms and are left to protojson, as
// are values of the wrong JSON type.
func (o StrictOptions) checkFields(md protoreflect.MessageDescriptor, v any, path string, errs *[]error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	if o.Resolve != nil {
		switch md.FullName() {
		case anyName:
			o.checkAny(obj, path, errs)
			return
		case xdsTypedStruct, udpaTypedStruct:
			o.checkTypedStruct(md, obj, path, errs)
			return
		}
	}
	if isWellKnown(md) {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		fd := fieldByName(md, k)
		if fd == nil {
			*errs = append(*errs, unknownField(md, path, k))
			continue
		}
		fpath := o.fieldPath(path, k, fd)
		switch {
		case fd.IsMap():
			if vd := fd.MapValue().Message(); vd != nil {
				if m, ok := obj[k].(map[string]any); ok {
					for _, mk := range slices.Sorted(maps.Keys(m)) {
						o.checkFields(vd, m[mk], fpath+"["+strconv.Quote(mk)+"]", errs)
					}
				}
			}
		case fd.Message() != nil && fd.IsList():
			if l, ok := obj[k].([]any); ok {
				for i, e := range l {
					o.checkFields(fd.Message(), e, fpath+"["+strconv.Itoa(i)+"]", errs)
				}
			}
		case fd.Message() != nil:
			o.checkFields(fd.Message(), obj[k], fpath, errs)
		}
	}
}

// unknownField is the error of key k, which names no field of md: with
// the nearest field's name, when one is near.
func unknownField(md protoreflect.MessageDescriptor, path, k string) error {
	msg := fmt.Sprintf("unknown field (%s has no field %q)", md.FullName(), k)
	if near := nearestField(md, k); near != "" {
		msg += "; did you mean " + near + "?"
	}
	return &FieldError{Path: join(path, k), Err: errors.New(msg)}
}

// checkAny checks an Any's @type with o.Resolve, then its other keys as
// fields of that type.
func (o StrictOptions) checkAny(obj map[string]any, path string, errs *[]error) {
	t, ok := obj["@type"].(string)
	if !ok {
		*errs = append(*errs, &FieldError{Path: join(path, "@type"), Err: errors.New("required: an Any names its type")})
		return
	}
	mt, err := o.Resolve(t)
	if err != nil {
		*errs = append(*errs, &FieldError{Path: join(path, "@type"), Err: err})
		return
	}
	if isWellKnown(mt.Descriptor()) {
		return // {"@type": ..., "value": ...}
	}
	inner := maps.Clone(obj)
	delete(inner, "@type")
	o.checkFields(mt.Descriptor(), inner, path, errs)
}

// checkTypedStruct checks a TypedStruct's own fields, then its value
// against the type it names, as Envoy converts it. A Breeze config is left
// to ParseAny, which reads it with the plugin's own code.
func (o StrictOptions) checkTypedStruct(md protoreflect.MessageDescriptor, obj map[string]any, path string, errs *[]error) {
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if fieldByName(md, k) == nil {
			*errs = append(*errs, unknownField(md, path, k))
		}
	}
	t, _ := obj["type_url"].(string)
	if t == "" {
		t, _ = obj["typeUrl"].(string)
	}
	if t == "" {
		*errs = append(*errs, &FieldError{Path: join(path, "type_url"), Err: errors.New("required: a TypedStruct names the type of its value")})
		return
	}
	if messageName(t) == proxyConfigName {
		return
	}
	mt, err := o.Resolve(t)
	if err != nil {
		*errs = append(*errs, &FieldError{Path: join(path, "type_url"), Err: err})
		return
	}
	if v, ok := obj["value"]; ok {
		o.checkFields(mt.Descriptor(), v, join(path, "value"), errs)
	}
}

// locate finds the innermost fields of obj (a JSON object of message md)
// whose values protojson rejects on their own, by decoding one field at a
// time; with o.Resolve, also inside Any. Every such field is reported, so
// that one run shows every value to fix. Only called once decoding has
// failed, so its cost does not matter.
func (o StrictOptions) locate(md protoreflect.MessageDescriptor, obj map[string]any, path string) []*FieldError {
	if md.FullName() == anyName {
		if o.Resolve == nil {
			return nil
		}
		t, _ := obj["@type"].(string)
		mt, err := o.Resolve(t)
		if err != nil || isWellKnown(mt.Descriptor()) {
			return nil
		}
		inner := maps.Clone(obj)
		delete(inner, "@type")
		return o.locate(mt.Descriptor(), inner, path)
	}
	var out []*FieldError
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
		fpath := o.fieldPath(path, k, fd)
		var inner []*FieldError
		if sub := fd.Message(); sub != nil && (!isWellKnown(sub) || sub.FullName() == anyName && o.Resolve != nil) {
			switch val := obj[k].(type) {
			case []any:
				for i, e := range val {
					if eo, ok := e.(map[string]any); ok {
						inner = append(inner, o.locate(sub, eo, fpath+"["+strconv.Itoa(i)+"]")...)
					}
				}
			case map[string]any:
				if fd.IsMap() {
					if vd := fd.MapValue().Message(); vd != nil {
						for _, mk := range slices.Sorted(maps.Keys(val)) {
							if eo, ok := val[mk].(map[string]any); ok {
								inner = append(inner, o.locate(vd, eo, fpath+"["+strconv.Quote(mk)+"]")...)
							}
						}
					}
				} else {
					inner = o.locate(sub, val, fpath)
				}
			}
		}
		if len(inner) == 0 {
			inner = []*FieldError{o.valueError(fd, k, fpath, obj[k], err)}
		}
		out = append(out, inner...)
	}
	return out
}

// valueError is the error of field fd (written k, at path) whose value v
// protojson rejected with err: for an enum, the values it takes; for a
// duration, the forms its reader accepts; otherwise protojson's words.
func (o StrictOptions) valueError(fd protoreflect.FieldDescriptor, k, path string, v any, err error) *FieldError {
	name := k
	if !o.KeysAsWritten {
		name = string(fd.Name())
	}
	one := func(fd protoreflect.FieldDescriptor, path string, e any) *FieldError {
		switch {
		case fd.Enum() != nil:
			return enumError(fd.Enum(), name, path, e)
		case fd.Message() != nil && fd.Message().FullName() == durationName:
			return durationError(path, e, o.GoDurations)
		}
		return nil
	}
	switch {
	case fd.IsMap():
		if m, ok := v.(map[string]any); ok {
			for _, mk := range slices.Sorted(maps.Keys(m)) {
				if fe := one(fd.MapValue(), path+"["+strconv.Quote(mk)+"]", m[mk]); fe != nil {
					return fe
				}
			}
		}
	case fd.IsList():
		if l, ok := v.([]any); ok {
			for i, e := range l {
				if fe := one(fd, path+"["+strconv.Itoa(i)+"]", e); fe != nil {
					return fe
				}
			}
		}
	default:
		if fe := one(fd, path, v); fe != nil {
			return fe
		}
	}
	return &FieldError{Path: path, Err: errors.New(TrimProtojsonPosition(err.Error()))}
}

// enumError returns the error of v as a value of enum ed (field name),
// nil if protojson takes it: a name of the enum, or a number.
func enumError(ed protoreflect.EnumDescriptor, name, path string, v any) *FieldError {
	var shown string
	switch e := v.(type) {
	case nil:
		return nil
	case string:
		if ed.Values().ByName(protoreflect.Name(e)) != nil {
			return nil
		}
		shown = strconv.Quote(e)
	case json.Number:
		if _, err := strconv.ParseInt(string(e), 10, 32); err == nil {
			return nil // protojson takes any number; Validate judges it
		}
		shown = string(e)
	default:
		shown = shownValue(v)
	}
	msg := EnumMessage(ed, name)
	if s, ok := v.(string); ok {
		if near := Nearest(s, enumValues(ed)); near != "" {
			msg += "; did you mean " + near + "?"
		}
	}
	return &FieldError{Path: path, Value: shown, Err: errors.New(msg)}
}

// EnumMessage says which values field name, of enum type ed, takes:
// "lb_policy must be one of ROUND_ROBIN, LEAST_REQUEST, RANDOM".
func EnumMessage(ed protoreflect.EnumDescriptor, name string) string {
	return name + " must be one of " + strings.Join(enumValues(ed), ", ")
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}
