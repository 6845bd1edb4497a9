package controlplane

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func readFiles(t *testing.T, dir string) []File {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var files []File
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Name: n, Data: data})
	}
	return files
}

// Every mistake of the broken mesh, word for word, each with its file and
// object: errors and warnings.
func TestLintBrokenMesh(t *testing.T) {
	var got []string
	for _, p := range Lint(readFiles(t, "testdata/broken-mesh")...) {
		sev := "error"
		if p.Warning {
			sev = "warning"
		}
		got = append(got, sev+": "+p.Error())
		if !strings.HasPrefix(p.Error(), p.File+": ") && !strings.HasPrefix(p.Error(), p.File+"#") {
			t.Errorf("problem %q is not in its file %s", p.Error(), p.File)
		}
	}
	want := []string{
		`error: testdata/broken-mesh/meta-router.yaml#3: MetaRouter demo/greeter-admin: spec.routes[0].requestMutations: unknown field (metaprotocol.aeraki.io.v1alpha1.MetaRoute has no field "requestMutations"); did you mean requestMutation?`,
		`warning: testdata/broken-mesh/kubernetes.yaml#2: MetaRouter demo/echo: spec.hosts[0]: "echo.demo.svc.cluster.local": declared by testdata/broken-mesh/kubernetes.yaml#1: Service demo/echo, but Breeze's control plane serves the hosts of ServiceEntries only: nothing is served for it; add a ServiceEntry with its endpoints`,
		`warning: testdata/broken-mesh/service-entry.yaml: ServiceEntry demo/greeter: spec.subjectAltNames: not applied by Breeze: its upstream connections take the TLS of Envoy's plainText cluster, which authenticates peers as mesh members; ignored`,
		`warning: testdata/broken-mesh/meta-router.yaml#2: MetaRouter demo/greeter-typo: spec.hosts[0]: "org.breeze.Greter": no ServiceEntry or Service declares this host: nothing is served for it; did you mean org.breeze.Greeter?`,
		`error: testdata/broken-mesh/meta-router.yaml#1: MetaRouter demo/greeter: spec.routes[0].route[0].destination.subset: "v3": testdata/broken-mesh/destination-rule.yaml: DestinationRule demo/greeter defines no such subset (only v1, v2)`,
		`warning: testdata/broken-mesh/meta-router.yaml#1: MetaRouter demo/greeter: spec.routes[1].route: the weights add up to 110, not 100: Breeze takes them as relative and splits traffic 72.7% / 27.3%; make them add up to 100`,
		`warning: testdata/broken-mesh/envoy-filter.yaml: EnvoyFilter demo/greeter-tcp: spec.configPatches[0].match.listener.name: "240.240.0.1_20881": no Service or ServiceEntry among these files has address 240.240.0.1 and port 20881: this patch applies to no listener; did you mean 240.240.0.1_20880?`,
		`warning: testdata/broken-mesh/envoy-filter.yaml: EnvoyFilter demo/greeter-tcp: spec.configPatches[1].match.listener.filterChain.destinationPort: 20882: no Service or ServiceEntry among these files has this target port: this patch applies to no inbound filter chain`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// EnvoyFilters are judged against Services and ServiceEntries only when
// there are some: alone, nothing says which listeners exist.
func TestLintEnvoyFiltersWithoutServices(t *testing.T) {
	ef, err := os.ReadFile("testdata/broken-mesh/envoy-filter.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if ps := Lint(File{Name: "ef.yaml", Data: ef}); len(ps) != 0 {
		t.Fatalf("got %v", ps)
	}
	// A Service whose targetPort names the pods' port: any inbound port may be it.
	svc := "apiVersion: v1\nkind: Service\nmetadata: {name: greeter, namespace: demo}\nspec:\n  clusterIP: 240.240.0.1\n  ports: [{port: 20881, targetPort: dubbo}]\n"
	if ps := Lint(File{Name: "ef.yaml", Data: ef}, File{Name: "svc.yaml", Data: []byte(svc)}); len(ps) != 0 {
		t.Fatalf("got %v", ps)
	}
}

// A directory stands for the files breeze xds reads there; one without
// any is an error, not a silent pass.
func TestReadPaths(t *testing.T) {
	d := t.TempDir()
	for name, content := range map[string]string{"a.yaml": "a: 1\n", "b.json": "{}", ".a.yaml.swp": "x", "notes.txt": "x"} {
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(d, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := ReadPaths(d, filepath.Join(d, "notes.txt"))
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f.Name))
	}
	if err != nil || !slices.Equal(names, []string{"a.yaml", "b.json", "notes.txt"}) {
		t.Fatalf("got %q, %v", names, err)
	}
	empty := t.TempDir()
	if _, err := ReadPaths(empty); err == nil || err.Error() != empty+": no *.yaml, *.yml or *.json files in this directory" {
		t.Fatalf("empty directory: got %v", err)
	}
}

// A document that is not YAML does not hide the other objects of its
// file: the ServiceEntry after it still declares its host.
func TestLintSyntaxErrorInOneDocument(t *testing.T) {
	se, err := os.ReadFile("testdata/broken-mesh/service-entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	router := "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata: {name: r, namespace: demo}\nspec:\n  hosts: [org.breeze.Greeter]\n"
	ps := Lint(File{Name: "mesh.yaml", Data: []byte("kind: [\n---\n" + string(se) + "---\n" + router)})
	if len(ps) != 1 || ps[0].Error() != "mesh.yaml#2: ServiceEntry demo/greeter: spec.subjectAltNames: not applied by Breeze: its upstream connections take the TLS of Envoy's plainText cluster, which authenticates peers as mesh members; ignored" {
		t.Errorf("got %v", ps)
	}
}
