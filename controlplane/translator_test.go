package controlplane

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
)

// objectsOf parses files as the directory source does (each call parses
// anew: new specs, the same versions for the same text).
func objectsOf(t *testing.T, files map[string]string) []Object {
	t.Helper()
	var fs []File
	for _, name := range slices.Sorted(maps.Keys(files)) {
		fs = append(fs, File{Name: name, Data: []byte(files[name])})
	}
	snap := (&DirSource{Log: quiet}).read(fs, Snapshot{})
	if len(snap.Problems) > 0 {
		t.Fatalf("reading the test's files: %v", snap.Problems)
	}
	return snap.Objects
}

// sameAsOneShot checks that a Translator's translation is what Translate
// makes of the same objects: the same resources (by content) and problems.
func sameAsOneShot(t *testing.T, got Translation, objs []Object) {
	t.Helper()
	want := Translate(objs)
	check := func(kind string, got, want map[string]proto.Message) {
		t.Helper()
		if g, w := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)); !slices.Equal(g, w) {
			t.Fatalf("%s: the Translator serves %v, Translate %v", kind, g, w)
		}
		for name, m := range got {
			if !proto.Equal(m, want[name]) {
				t.Fatalf("%s %s: the Translator serves\n%v\nTranslate\n%v", kind, name, m, want[name])
			}
		}
	}
	check("routes", asMessages(got.Resources.Routes), asMessages(want.Resources.Routes))
	check("clusters", asMessages(got.Resources.Clusters), asMessages(want.Resources.Clusters))
	check("endpoints", asMessages(got.Resources.Endpoints), asMessages(want.Resources.Endpoints))
	if g, w := problemTexts(got.Problems), problemTexts(want.Problems); g != w {
		t.Fatalf("problems: the Translator reports\n%s\nTranslate\n%s", g, w)
	}
}

func asMessages[M proto.Message](m map[string]M) map[string]proto.Message {
	out := make(map[string]proto.Message, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func problemTexts(ps []Problem) string {
	var lines []string
	for _, p := range ps {
		lines = append(lines, fmt.Sprintf("%s (warning %v)", p.Error(), p.Warning))
	}
	return strings.Join(lines, "\n")
}

// replaced is objs with the object named name replaced by with.
func replaced(t *testing.T, objs []Object, name string, with Object) []Object {
	t.Helper()
	out := slices.Clone(objs)
	i := slices.IndexFunc(out, func(o Object) bool { return o.Name == name })
	if i < 0 {
		t.Fatalf("no object %s among %d", name, len(objs))
	}
	out[i] = with
	return out
}

// A Translator hands back the same endpoint sets, and for hosts no rule
// names the same clusters and route tables, for the objects passed again
// as they were (as registry.Source passes an unchanged interface's), so
// that Server.Set sends nothing for them without comparing them, and
// translates again what changed: always what Translate makes of the same
// objects, problems of unchanged objects included.
func TestTranslatorReusesUnchanged(t *testing.T) {
	third := func(address string) string {
		return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: third}
spec:
  hosts: [org.example.Third]
  ports: [{number: 20880, name: tcp-dubbo}]
  endpoints:
  - {address: ` + address + `, network: n1}
`
	}
	files := map[string]string{"greeter.yaml": serviceEntry + "---\n" + destinationRule + "---\n" + metaRouter,
		"other.yaml": otherService, "third.yaml": third("10.0.2.1")}
	var tr Translator
	objs := objectsOf(t, files)
	first := tr.Translate(objs)
	sameAsOneShot(t, first, objs)
	if !strings.Contains(problemTexts(first.Problems), "spec.endpoints[0].network") {
		t.Fatalf("no warning about third's endpoint network (the test needs one from an object alone); problems:\n%s", problemTexts(first.Problems))
	}

	objs = replaced(t, objs, "third", objectsOf(t, map[string]string{"third.yaml": third("10.0.2.2")})[0])
	second := tr.Translate(objs)
	sameAsOneShot(t, second, objs)
	const (
		other      = "outbound|20880||org.example.Other"
		otherAdmin = "outbound|20990||org.example.Alias"
		thirdName  = "outbound|20880||org.example.Third"
		greeter    = "outbound|20880||org.example.Greeter"
	)
	for _, name := range []string{other, otherAdmin, greeter} {
		if second.Resources.Endpoints[name] != first.Resources.Endpoints[name] {
			t.Errorf("endpoints %s of an unchanged ServiceEntry: a new set, want the last one", name)
		}
	}
	for _, name := range []string{other, otherAdmin} {
		if second.Resources.Clusters[name] != first.Resources.Clusters[name] {
			t.Errorf("cluster %s of a host no rule names: a new one, want the last one", name)
		}
	}
	for _, name := range []string{"org.example.Other_20880", "org.example.Alias_20990"} {
		if second.Resources.Routes[name] != first.Resources.Routes[name] {
			t.Errorf("route table %s of a host no rule names: a new one, want the last one", name)
		}
	}
	if second.Resources.Endpoints[thirdName] == first.Resources.Endpoints[thirdName] {
		t.Errorf("endpoints %s: the last set, though its ServiceEntry changed", thirdName)
	}

	// A new Spec under the same Version (the controller's ServiceEntry of
	// a Service: the Service's resourceVersion, endpoints from elsewhere)
	// is translated again.
	i := slices.IndexFunc(objs, func(o Object) bool { return o.Name == "other" })
	moved := objs[i]
	spec := proto.Clone(moved.Spec).(*networkingv1alpha3.ServiceEntry)
	spec.Endpoints[0].Address = "10.0.1.9"
	moved.Spec = spec
	objs = replaced(t, objs, "other", moved)
	third3 := tr.Translate(objs)
	sameAsOneShot(t, third3, objs)
	if third3.Resources.Endpoints[other] == second.Resources.Endpoints[other] {
		t.Errorf("endpoints %s: the last set, though its Spec is a new one (same Version)", other)
	}

	// A rule for a host that had none: its cluster is made anew.
	rule := objectsOf(t, map[string]string{"other-rule.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: other}
spec:
  host: org.example.Other
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
`})
	objs = append(slices.Clone(objs), rule...)
	ruled := tr.Translate(objs)
	sameAsOneShot(t, ruled, objs)
	if ruled.Resources.Clusters[other] == third3.Resources.Clusters[other] {
		t.Errorf("cluster %s: the last one, though a DestinationRule now names its host", other)
	}
}
