package schemas

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	clientnetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/kubesync"
)

// What `breeze controller -zookeeper` writes to the API server
// (kubesync.Object, with the address its Sync gives) decodes strictly into
// Istio client-go's ServiceEntry, reads back as the spec written, and
// carries valid Kubernetes labels: the captured dubbo-go 3.3 provider.
func TestRegistrySyncObjectWithClientGo(t *testing.T) {
	raw, err := os.ReadFile("../../registry/testdata/dubbo-go-3.3.0/interface-provider.txt")
	if err != nil {
		t.Fatal(err)
	}
	in, err := registry.ParseURL(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	entries := registry.ServiceEntries([]registry.Instance{in}, "istio-system")
	if len(entries) != 1 {
		t.Fatalf("%d ServiceEntries, want 1", len(entries))
	}
	e := entries[0]
	e.Spec.Addresses = []string{"240.241.17.3"}
	u, err := kubesync.Object(e, "zookeeper-nacos")
	if err != nil {
		t.Fatal(err)
	}
	js, err := u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientnetworkingv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	obj, _, err := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer().Decode(js, nil, nil)
	if err != nil {
		t.Fatalf("%s: %v\n%s", e.Name, err, js)
	}
	se, ok := obj.(*clientnetworkingv1.ServiceEntry)
	if !ok {
		t.Fatalf("decoded as %T, want a ServiceEntry", obj)
	}
	if !proto.Equal(&se.Spec, e.Spec) {
		t.Errorf("client-go reads another spec than written:\n%v\n%v", &se.Spec, e.Spec)
	}
	if se.Name != e.Name || se.Namespace != "istio-system" {
		t.Errorf("metadata %s/%s, want istio-system/%s", se.Namespace, se.Name, e.Name)
	}
	for k, v := range se.Labels {
		if errs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(errs) > 0 {
			t.Errorf("label %s=%q: %v", k, v, errs)
		}
	}
	t.Logf("%s decodes strictly as networking.istio.io/v1 ServiceEntry; labels %v", se.Name, se.Labels)
}
