package schemas

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	clientnetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/breeze-mesh/breeze/registry"
)

// What `breeze registry export` writes decodes strictly into Istio
// client-go's ServiceEntry, reads back as the spec written, and passes
// the rules istiod's ServiceEntry validation applies to it
// (pkg/config/validation: hosts as ValidateWildcardDomain, endpoint labels
// as labels.Instance.Validate, port names as ValidatePortName): the
// providers are a dubbo-go 3.3 provider node as captured, rewritten into
// the cases the label mapping has to handle.
func TestRegistryExportWithClientGo(t *testing.T) {
	raw, err := os.ReadFile("../../registry/testdata/dubbo-go-3.3.0/interface-provider.txt")
	if err != nil {
		t.Fatal(err)
	}
	node := strings.TrimSpace(string(raw))
	var instances []registry.Instance
	for _, edit := range []func(string) string{
		func(s string) string { return s },
		func(s string) string {
			return strings.NewReplacer("127.0.0.1", "10.0.0.2", "version%3D1.0.0", "version%3D2.0.0%26weight%3D7%26tag%3Dgray%26env%3D%26note%3Da%2520b%252Fc").Replace(s)
		},
		func(s string) string {
			return strings.NewReplacer("127.0.0.1", "10.0.0.3", "methods%3D", "methods%3D"+strings.Repeat("m", 70)+"%2C").Replace(s)
		},
	} {
		in, err := registry.ParseURL(edit(node))
		if err != nil {
			t.Fatal(err)
		}
		instances = append(instances, in)
	}
	nested := instances[0]
	nested.Interface = "org.breeze.Outer$Inner_Service"
	instances = append(instances, nested)

	entries := registry.ServiceEntries(instances, "dubbo")
	if len(entries) != 2 {
		t.Fatalf("%d ServiceEntries, want 2 (two interfaces)", len(entries))
	}
	// Strictly (unknown and duplicate fields are errors), as
	// networking.istio.io/v1, the version export writes.
	scheme := runtime.NewScheme()
	if err := clientnetworkingv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	for _, e := range entries {
		doc, err := registry.YAML(e)
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v\n%s", e.Name, err, doc)
		}
		se, ok := obj.(*clientnetworkingv1.ServiceEntry)
		if !ok {
			t.Fatalf("%s: decoded as %T, want a ServiceEntry", e.Name, obj)
		}
		if !proto.Equal(&se.Spec, e.Spec) {
			t.Errorf("%s: client-go reads another spec than written:\n%v\n%v", e.Name, &se.Spec, e.Spec)
		}
		if errs := validation.IsDNS1123Subdomain(se.Name); len(errs) > 0 {
			t.Errorf("name %q: %v", se.Name, errs)
		}
		for _, h := range se.Spec.Hosts {
			if !istioHost(h) {
				t.Errorf("%s: host %q is not a valid Istio host", se.Name, h)
			}
		}
		for _, p := range se.Spec.Ports {
			if errs := validation.IsDNS1123Label(p.Name); len(errs) > 0 {
				t.Errorf("%s: port name %q: %v", se.Name, p.Name, errs)
			}
		}
		for _, ep := range se.Spec.Endpoints {
			for k, v := range ep.Labels {
				if errs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(errs) > 0 {
					t.Errorf("%s: endpoint %s: label %s=%q: %v", se.Name, ep.Address, k, v, errs)
				}
			}
			for name := range ep.Ports {
				if name != se.Spec.Ports[0].Name {
					t.Errorf("%s: endpoint %s names port %q, which the ServiceEntry does not define", se.Name, ep.Address, name)
				}
			}
		}
	}
}

// istioHost is istiod's ValidateWildcardDomain for a host without
// wildcard: at most 255 characters, dot-separated labels of
// [a-zA-Z0-9](-[a-zA-Z0-9])* up to 63 characters each.
func istioHost(h string) bool {
	if len(h) > 255 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if len(l) > 63 || !istioLabel.MatchString(l) {
			return false
		}
	}
	return true
}

var istioLabel = regexp.MustCompile(`^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
