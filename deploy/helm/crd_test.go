package helm

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	securityv1alpha1 "github.com/breeze-mesh/breeze/protos/breeze/security/v1alpha1"
)

// TestAuthorizationPolicySchemaIsTheProto: the CRD of Breeze's
// AuthorizationPolicy describes its spec as the proto does (the spec
// breeze xds decodes), field by field in both directions, with the enum's
// values: a field added to the proto but not to the CRD would be pruned
// by the API server, silently.
func TestAuthorizationPolicySchemaIsTheProto(t *testing.T) {
	objs := typed(t, render(t, defaultRelease))
	crd, ok := find[*apiextensionsv1.CustomResourceDefinition](objs, "authorizationpolicies.security.breeze.io")
	if !ok {
		t.Fatal("no CRD authorizationpolicies.security.breeze.io rendered")
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	compare(t, "spec", (&securityv1alpha1.AuthorizationPolicy{}).ProtoReflect().Descriptor(), spec)
}

func compare(t *testing.T, path string, md protoreflect.MessageDescriptor, s apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	if s.Type != "object" || s.XPreserveUnknownFields != nil {
		t.Errorf("%s: type %q (preserve unknown fields %v), want a closed object for %s", path, s.Type, s.XPreserveUnknownFields, md.FullName())
	}
	fields := md.Fields()
	for name := range s.Properties {
		if fields.ByJSONName(name) == nil {
			t.Errorf("%s.%s: in the CRD, not a field of %s", path, name, md.FullName())
		}
	}
	for i := range fields.Len() {
		f := fields.Get(i)
		p := path + "." + f.JSONName()
		fs, ok := s.Properties[f.JSONName()]
		if !ok {
			t.Errorf("%s: a field of %s the CRD lacks (the API server would prune it)", p, md.FullName())
			continue
		}
		if f.IsList() {
			if fs.Type != "array" || fs.Items == nil || fs.Items.Schema == nil {
				t.Errorf("%s: type %q, want an array", p, fs.Type)
				continue
			}
			fs = *fs.Items.Schema
		}
		switch f.Kind() {
		case protoreflect.MessageKind:
			compare(t, p, f.Message(), fs)
		case protoreflect.StringKind:
			if fs.Type != "string" {
				t.Errorf("%s: type %q, want string", p, fs.Type)
			}
		case protoreflect.EnumKind:
			var want, got []string
			for j := range f.Enum().Values().Len() {
				want = append(want, string(f.Enum().Values().Get(j).Name()))
			}
			for _, v := range fs.Enum {
				got = append(got, strings.Trim(string(v.Raw), `"`))
			}
			slices.Sort(want)
			slices.Sort(got)
			if fs.Type != "string" || !slices.Equal(got, want) {
				t.Errorf("%s: type %q enum %v, want string enum %v", p, fs.Type, got, want)
			}
		default:
			t.Errorf("%s: proto kind %s not compared here: extend the test", p, f.Kind())
		}
	}
}
