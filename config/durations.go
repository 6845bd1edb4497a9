package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
)

var durationName = (*durationpb.Duration)(nil).ProtoReflect().Descriptor().FullName()

// goDurations rewrites, in v (the JSON form of a message of type md, as
// decoded by encoding/json), every google.protobuf.Duration written the way
// Go writes durations ("100ms", "15m", "1h30m") into protobuf's JSON form
// ("0.100s", "900s", "5400s"), so that protojson accepts what Istio
// accepts: Istio and Aeraki read their resources with golang/protobuf's
// jsonpb, which parses a Duration with time.ParseDuration. Durations in
// protobuf's form parse the same way; what time.ParseDuration rejects is
// left for protojson to judge (a number, or more seconds than Go's
// Duration holds but protobuf's does).
//
// It looks into lists, maps and Any values (their type found with resolve);
// not into a TypedStruct's value, which whoever reads the TypedStruct
// decodes: Breeze's own parser, with these rules, or Envoy, with
// protobuf's. v is not modified: what changes is copied. changed reports
// whether anything did.
func goDurations(md protoreflect.MessageDescriptor, v any, resolve func(string) (protoreflect.MessageType, error)) (out any, changed bool) {
	if md.FullName() == durationName {
		s, ok := v.(string)
		if !ok {
			return v, false
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return v, false
		}
		if p := protoDuration(d); p != s {
			return p, true
		}
		return v, false
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return v, false
	}
	if md.FullName() == anyName {
		t, _ := obj["@type"].(string)
		mt, err := resolve(t)
		if err != nil {
			return v, false // reported by checkFields, or by protojson
		}
		inner := mt.Descriptor()
		if isWellKnown(inner) {
			// {"@type": ..., "value": <the type's own JSON form>}
			nv, ch := goDurations(inner, obj["value"], resolve)
			if !ch {
				return v, false
			}
			obj = maps.Clone(obj)
			obj["value"] = nv
			return obj, true
		}
		md = inner
	} else if isWellKnown(md) {
		return v, false
	}
	set := func(k string, nv any) {
		if !changed {
			obj, changed = maps.Clone(obj), true
		}
		obj[k] = nv
	}
	for k, fv := range obj {
		fd := fieldByName(md, k)
		if fd == nil {
			continue // "@type" of an Any; unknown fields were reported
		}
		switch {
		case fd.IsMap():
			vd := fd.MapValue().Message()
			m, ok := fv.(map[string]any)
			if vd == nil || !ok {
				continue
			}
			var nm map[string]any
			for mk, mv := range m {
				if nv, ch := goDurations(vd, mv, resolve); ch {
					if nm == nil {
						nm = maps.Clone(m)
					}
					nm[mk] = nv
				}
			}
			if nm != nil {
				set(k, nm)
			}
		case fd.Message() != nil && fd.IsList():
			l, ok := fv.([]any)
			if !ok {
				continue
			}
			var nl []any
			for i, e := range l {
				if nv, ch := goDurations(fd.Message(), e, resolve); ch {
					if nl == nil {
						nl = append([]any(nil), l...)
					}
					nl[i] = nv
				}
			}
			if nl != nil {
				set(k, nl)
			}
		case fd.Message() != nil:
			if nv, ch := goDurations(fd.Message(), fv, resolve); ch {
				set(k, nv)
			}
		}
	}
	return obj, changed
}

// globalResolve finds a type URL's message among the types linked into the
// binary, as protojson does for an Any.
func globalResolve(typeURL string) (protoreflect.MessageType, error) {
	if typeURL == "" {
		return nil, fmt.Errorf("no type")
	}
	return protoregistry.GlobalTypes.FindMessageByURL(typeURL)
}

// protoDuration writes d in protobuf's JSON form: seconds with up to nine
// fractional digits and an "s".
func protoDuration(d time.Duration) string {
	var b strings.Builder
	u := uint64(d) // the magnitude, also for math.MinInt64
	if d < 0 {
		b.WriteByte('-')
		u = uint64(-d)
	}
	b.WriteString(strconv.FormatUint(u/1e9, 10))
	if ns := u % 1e9; ns != 0 {
		b.WriteString(strings.TrimRight(fmt.Sprintf(".%09d", ns), "0"))
	}
	b.WriteByte('s')
	return b.String()
}

// protoSeconds is protobuf's JSON form of a duration: seconds, up to nine
// fractional digits, an "s".
var protoSeconds = regexp.MustCompile(`^-?[0-9]+(\.[0-9]{1,9})?s$`)

// durationError returns the error of v as a google.protobuf.Duration, nil
// if protojson takes it. It says which forms the reader accepts: with
// goForms, Go's and protobuf's (what Breeze and istiod read); without, only
// protobuf's seconds (what Envoy reads), and then the value in seconds
// when v is a Go duration.
func durationError(path string, v any, goForms bool) *FieldError {
	var shown string
	switch e := v.(type) {
	case nil:
		return nil
	case string:
		if protoSeconds.MatchString(e) {
			return nil // well formed; if protojson refused it, it is out of range: its words say so
		}
		shown = strconv.Quote(e)
		if d, err := time.ParseDuration(e); err == nil && !goForms {
			return &FieldError{Path: path, Value: shown, Err: fmt.Errorf("Envoy reads durations only as seconds with an \"s\": write %q", protoDuration(d))}
		}
	case json.Number:
		return &FieldError{Path: path, Value: string(e), Err: fmt.Errorf("a duration is a string with a unit: write %q", string(e)+"s")}
	default:
		shown = shownValue(v)
	}
	if goForms {
		return &FieldError{Path: path, Value: shown, Err: errors.New(DurationForms)}
	}
	return &FieldError{Path: path, Value: shown, Err: errors.New(envoyDurationForms)}
}

// DurationForms says which durations Breeze reads, for the error of one it
// cannot.
const DurationForms = "not a duration: write a number and a unit, as in 300ms, 1.5s, 15m or 1h30m (units: ns, us, ms, s, m, h)"

const envoyDurationForms = "not a duration: Envoy reads seconds with an \"s\", as in 5s, 0.25s or 900s"
