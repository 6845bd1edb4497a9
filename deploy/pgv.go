package deploy

import (
	"errors"
	"strings"
	"unicode"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// validateTree runs the protoc-gen-validate rules Envoy enforces on load
// (go-control-plane's ValidateAll) on m and on the payload of every Any and
// TypedStruct inside it, at any depth: ValidateAll itself stops at an Any.
// Each violation is reported at its path under path.
func validateTree(m proto.Message, path string) []error {
	var errs []error
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			flattenPGV(err, path, &errs)
		}
	}
	eachAny(m.ProtoReflect(), path, func(a *anypb.Any, apath string) {
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, errorf(apath, "%v", err))
			return
		}
		inner, ok, err := typedStructMessage(inner)
		if err != nil {
			errs = append(errs, errorf(joinPath(apath, "value"), "%v", err))
			return
		}
		if ok {
			errs = append(errs, validateTree(inner, apath)...)
		}
	})
	return errs
}

// eachAny calls f for every Any set in m (not descending into them),
// with its path.
func eachAny(m protoreflect.Message, path string, f func(*anypb.Any, string)) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil {
			return true
		}
		fpath := joinPath(path, string(fd.Name()))
		visit := func(sub protoreflect.Message, p string) {
			if a, ok := sub.Interface().(*anypb.Any); ok {
				f(a, p)
				return
			}
			eachAny(sub, p, f)
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				visit(mv.Message(), fpath+"["+k.String()+"]")
				return true
			})
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				visit(l.Get(i).Message(), indexPath(fpath, i))
			}
		default:
			visit(v.Message(), fpath)
		}
		return true
	})
}

// pgvError is what every protoc-gen-validate error type implements.
type pgvError interface {
	Field() string
	Reason() string
	Cause() error
}

// flattenPGV turns protoc-gen-validate's nested errors ("embedded message
// failed validation | caused by: ...") into one Error per violation, at
// the path made of the nested field names.
func flattenPGV(err error, path string, out *[]error) {
	if m, ok := err.(interface{ AllErrors() []error }); ok {
		for _, e := range m.AllErrors() {
			flattenPGV(e, path, out)
		}
		return
	}
	var pe pgvError
	if !errors.As(err, &pe) {
		*out = append(*out, errorf(path, "%v", err))
		return
	}
	fpath := joinPath(path, snakeField(pe.Field()))
	if c := pe.Cause(); c != nil && isPGV(c) {
		flattenPGV(c, fpath, out)
		return
	}
	msg := pe.Reason()
	if c := pe.Cause(); c != nil {
		msg += ": " + c.Error()
	}
	*out = append(*out, errorf(fpath, "%s", msg))
}

func isPGV(err error) bool {
	if _, ok := err.(interface{ AllErrors() []error }); ok {
		return true
	}
	var pe pgvError
	return errors.As(err, &pe)
}

// snakeField turns protoc-gen-validate's Go field name ("StaticResources",
// "Listeners[2]", "Http2ProtocolOptions") into the proto name Envoy's YAML
// uses ("static_resources", "listeners[2]", "http2_protocol_options").
func snakeField(f string) string {
	name, index, _ := strings.Cut(f, "[")
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				prev := rune(name[i-1])
				if unicode.IsLower(prev) || unicode.IsDigit(prev) {
					b.WriteByte('_')
				}
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	if index != "" {
		b.WriteString("[" + index)
	}
	return b.String()
}
