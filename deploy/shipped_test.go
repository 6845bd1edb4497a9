package deploy

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	golangv3alpha "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/golang/v3alpha"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/proto"

	// The codecs and filters breeze.so links; so must the checks of its configs.
	_ "github.com/breeze-mesh/breeze/builtin"
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/proxy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

const envoyConfigDir = "../envoy-config"

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPluginNameIsTheProxys(t *testing.T) {
	if PluginName != proxy.PluginName {
		t.Fatalf("deploy.PluginName %q, but breeze.so registers %q", PluginName, proxy.PluginName)
	}
}

// Every YAML file under envoy-config/ passes the check of its kind, with no
// warning. A new file needs a case here.
func TestShippedFilesPass(t *testing.T) {
	var seen []string
	err := filepath.WalkDir(envoyConfigDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !slices.Contains([]string{".yaml", ".yml"}, filepath.Ext(path)) {
			return err
		}
		rel, _ := filepath.Rel(envoyConfigDir, path)
		seen = append(seen, rel)
		t.Run(rel, func(t *testing.T) {
			data := readFile(t, path)
			switch rel {
			case "docker-compose.yaml":
				if errs := checkCompose(t, data, readFile(t, filepath.Join(envoyConfigDir, "envoy.yaml")), readFile(t, "../Dockerfile")); len(errs) > 0 {
					t.Fatal(errors.Join(errs...))
				}
				return
			case "prometheus.yml":
				if err := checkPrometheus(data, readFile(t, filepath.Join(envoyConfigDir, "envoy.yaml"))); err != nil {
					t.Fatal(err)
				}
				return
			}
			kind := Detect(data)
			want := map[string]Kind{
				"envoy.yaml":                      KindBootstrap,
				"istio/demo.yaml":                 KindKubernetes,
				"istio/greeter.yaml":              KindService,
				"istio/greeter-envoyfilters.yaml": KindKubernetes,
			}[rel]
			if want == "" {
				t.Fatalf("no check for %s: add it to this test", rel)
			}
			if kind != want {
				t.Fatalf("detected as %s, want %s", kind, want)
			}
			f := Check(File{Name: rel, Data: data})
			if len(f.Errors)+len(f.Warnings) > 0 {
				t.Fatalf("errors:\n%v\nwarnings:\n%v", f.Err(), errors.Join(f.Warnings...))
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) < 6 {
		t.Fatalf("found only %v under %s", seen, envoyConfigDir)
	}
}

// The Istio files check together: the demo's workloads, the rendered
// EnvoyFilters, and the description they come from.
func TestShippedIstioFilesTogether(t *testing.T) {
	var files []File
	for _, n := range []string{"demo.yaml", "greeter-envoyfilters.yaml", "greeter.yaml"} {
		files = append(files, File{Name: n, Data: readFile(t, filepath.Join(envoyConfigDir, "istio", n))})
	}
	if f := Check(files...); len(f.Errors)+len(f.Warnings) > 0 {
		t.Fatalf("errors:\n%v\nwarnings:\n%v", f.Err(), errors.Join(f.Warnings...))
	}
}

// The committed EnvoyFilters are exactly what `breeze render` makes of the
// committed description.
func TestRenderedFilesUpToDate(t *testing.T) {
	desc := filepath.Join(envoyConfigDir, "istio", "greeter.yaml")
	got, err := RenderFile("envoy-config/istio/greeter.yaml", readFile(t, desc))
	if err != nil {
		t.Fatal(err)
	}
	want := readFile(t, filepath.Join(envoyConfigDir, "istio", "greeter-envoyfilters.yaml"))
	if string(got) != string(want) {
		t.Fatalf("envoy-config/istio/greeter-envoyfilters.yaml is stale: run\n  go run ./cmd/breeze render envoyfilter envoy-config/istio/greeter.yaml > envoy-config/istio/greeter-envoyfilters.yaml")
	}
}

// The demo bootstrap and the standalone runner's demo route the same way.
func TestBootstrapMatchesRunnerDemo(t *testing.T) {
	bs, f := CheckBootstrap(readFile(t, filepath.Join(envoyConfigDir, "envoy.yaml")))
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
	r, err := config.LoadRunner("../cmd/breeze/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := breezeConfigs(t, bs)
	if len(got) != 1 {
		t.Fatalf("want one Breeze filter, got %d", len(got))
	}
	want := r.GetListeners()[0].GetProxy()
	if got[0].GetRouteConfig().String() != want.GetRouteConfig().String() || fmt.Sprint(got[0].GetClusters()) != fmt.Sprint(want.GetClusters()) {
		t.Fatalf("envoy.yaml's routes or clusters differ from cmd/breeze/demo.yaml's:\n%v\n%v", got[0], want)
	}
}

func breezeConfigs(t *testing.T, bs *bootstrapv3.Bootstrap) []*breezev1.ProxyConfig {
	t.Helper()
	var out []*breezev1.ProxyConfig
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, flt := range fc.GetFilters() {
				gc := golangConfig(t, flt.GetTypedConfig().GetValue(), flt.GetTypedConfig().GetTypeUrl())
				if gc == nil {
					continue
				}
				pc, err := config.ParseAny(gc.GetPluginConfig())
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, pc)
			}
		}
	}
	return out
}

func golangConfig(t *testing.T, value []byte, typeURL string) *golangv3alpha.Config {
	if typeURL != golangConfigType {
		return nil
	}
	gc := &golangv3alpha.Config{}
	if err := proto.Unmarshal(value, gc); err != nil {
		t.Fatal(err)
	}
	return gc
}

// dockerStage is one stage of a Dockerfile: its base and instructions
// (continuation lines joined).
type dockerStage struct {
	from  string
	lines []string
}

// parseDockerfile reads the stages of a Dockerfile, with the values of the
// ARGs declared before the first FROM substituted. A real parser checks
// the syntax in deploy/schemas; this reads what the cross-checks need.
func parseDockerfile(data []byte) (map[string]*dockerStage, []string) {
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	args := map[string]string{}
	stages := map[string]*dockerStage{}
	var order []string
	var cur *dockerStage
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		word, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(word) {
		case "ARG":
			if cur == nil {
				k, v, _ := strings.Cut(rest, "=")
				args[k] = v
			}
		case "FROM":
			f := strings.Fields(rest)
			from := f[0]
			for k, v := range args {
				from = strings.ReplaceAll(from, "${"+k+"}", v)
			}
			name := ""
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				name = f[2]
			}
			cur = &dockerStage{from: from}
			stages[name] = cur
			order = append(order, name)
		default:
			if cur != nil {
				cur.lines = append(cur.lines, l)
			}
		}
	}
	return stages, order
}

// glibcOf is the glibc minor version (2.x) of the base images the
// Dockerfile may build breeze.so on (from the distributions' packages).
var glibcOf = map[string]int{
	"ubuntu:20.04":    31,
	"ubuntu:22.04":    35,
	"debian:bullseye": 31,
}

// The Dockerfile builds breeze.so against glibc 2.35 at most and puts it
// where the configs say, in both images, with GODEBUG set.
func TestDockerfile(t *testing.T) {
	stages, _ := parseDockerfile(readFile(t, "../Dockerfile"))
	build := stages["build-plugin"]
	if build == nil {
		t.Fatal("no build-plugin stage")
	}
	if g, ok := glibcOf[build.from]; !ok || g > 35 {
		t.Errorf("build-plugin is FROM %s: want a base with glibc <= 2.35, one of %v", build.from, glibcOf)
	}
	if !slices.ContainsFunc(build.lines, func(l string) bool {
		return strings.Contains(l, "-buildmode=c-shared") && strings.Contains(l, "scripts/check-plugin.sh /out/breeze.so 2.35")
	}) {
		t.Error("build-plugin must build with -buildmode=c-shared and run scripts/check-plugin.sh /out/breeze.so 2.35")
	}
	for name, base := range map[string]*regexp.Regexp{
		"envoy":       regexp.MustCompile(`^envoyproxy/envoy:contrib-v1\.36\.\d+$`),
		"istio-proxy": regexp.MustCompile(`^istio/proxyv2:1\.28\.\d+$`),
	} {
		st := stages[name]
		if st == nil {
			t.Errorf("no %s stage", name)
			continue
		}
		if !base.MatchString(st.from) {
			t.Errorf("%s is FROM %s, want %s", name, st.from, base)
		}
		if !slices.Contains(st.lines, "COPY --from=build-plugin /out/breeze.so "+DefaultLibraryPath) {
			t.Errorf("%s: want COPY --from=build-plugin /out/breeze.so %s", name, DefaultLibraryPath)
		}
		if !slices.Contains(st.lines, "ENV GODEBUG=cgocheck=0") {
			t.Errorf("%s: want ENV GODEBUG=cgocheck=0", name)
		}
	}
	if p := stages["plugin"]; p == nil || p.from != "scratch" || !slices.Contains(p.lines, "COPY --from=build-plugin /out/breeze.so /"+filepath.Base(DefaultLibraryPath)) {
		t.Errorf("want a plugin stage FROM scratch with breeze.so at /%s (the image volume of demo.yaml)", filepath.Base(DefaultLibraryPath))
	}
}

// checkCompose checks docker-compose.yaml against the bootstrap it runs
// and the Dockerfile it builds: build targets, the bootstrap's mount and
// path, published ports, GODEBUG, the providers at the Breeze endpoints,
// the consumer at the Breeze listener, and the library path.
func checkCompose(t *testing.T, compose, bootstrap, dockerfile []byte) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	bs, f := CheckBootstrap(bootstrap)
	if err := f.Err(); err != nil {
		return []error{fmt.Errorf("envoy.yaml: %w", err)}
	}
	stages, _ := parseDockerfile(dockerfile)
	v, _, err := yamlValue(compose)
	if err != nil {
		return []error{err}
	}
	services, _ := v.(map[string]any)["services"].(map[string]any)
	svc := func(name string) map[string]any { m, _ := services[name].(map[string]any); return m }
	strs := func(v any) []string {
		var out []string
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				out = append(out, fmt.Sprint(e))
			}
		case string:
			out = strings.Fields(x)
		}
		return out
	}
	for _, name := range sortedKeys(services) {
		if b, ok := svc(name)["build"].(map[string]any); ok {
			if tg, _ := b["target"].(string); stages[tg] == nil {
				bad("services.%s.build.target: %q is no stage of the Dockerfile", name, tg)
			}
			if c, _ := b["context"].(string); c != ".." {
				bad("services.%s.build.context: %q: want \"..\" (the repository, where the Dockerfile is)", name, c)
			}
		}
	}

	envoy := svc("envoy")
	if envoy == nil {
		return append(errs, errors.New("services.envoy: missing"))
	}
	cmd := strs(envoy["command"])
	i := slices.Index(cmd, "-c")
	if i < 0 || i+1 >= len(cmd) {
		bad("services.envoy.command: %q: want -c <bootstrap path>", cmd)
	} else if want := "./envoy.yaml:" + cmd[i+1] + ":ro"; !slices.Contains(strs(envoy["volumes"]), want) {
		bad("services.envoy.volumes: %q: want %q (the bootstrap at the path of -c)", strs(envoy["volumes"]), want)
	}
	if env, _ := envoy["environment"].(map[string]any); env["GODEBUG"] != "cgocheck=0" {
		bad("services.envoy.environment.GODEBUG: %v: want cgocheck=0", env["GODEBUG"])
	}
	ports := strs(envoy["ports"])
	var listenerPorts []uint32
	for _, l := range bs.GetStaticResources().GetListeners() {
		listenerPorts = append(listenerPorts, l.GetAddress().GetSocketAddress().GetPortValue())
	}
	adminPort := bs.GetAdmin().GetAddress().GetSocketAddress().GetPortValue()
	for _, p := range append(slices.Clone(listenerPorts), adminPort) {
		if want := fmt.Sprintf("%d:%d", p, p); !slices.Contains(ports, want) {
			bad("services.envoy.ports: %q: want %q (a port of envoy.yaml)", ports, want)
		}
	}

	// Every Breeze endpoint is a provider sharing Envoy's network
	// namespace, named after its version label.
	for _, pc := range breezeConfigs(t, bs) {
		for _, c := range pc.GetClusters() {
			for _, e := range c.GetEndpoints() {
				if e.GetAddress() != "127.0.0.1" {
					bad("envoy.yaml: endpoint %s:%d: the compose services share Envoy's network namespace: want 127.0.0.1", e.GetAddress(), e.GetPort())
					continue
				}
				port := strconv.Itoa(int(e.GetPort()))
				found := false
				for _, name := range sortedKeys(services) {
					c := strs(svc(name)["command"])
					if len(c) == 0 || c[0] != "provider" {
						continue
					}
					if j := slices.Index(c, "-port"); j < 0 || j+1 >= len(c) || c[j+1] != port {
						continue
					}
					found = true
					if svc(name)["network_mode"] != "service:envoy" {
						bad("services.%s.network_mode: %v: want service:envoy (the provider listens on 127.0.0.1)", name, svc(name)["network_mode"])
					}
					if j := slices.Index(c, "-name"); j < 0 || j+1 >= len(c) || c[j+1] != e.GetLabels()["version"] {
						bad("services.%s.command: %q: want -name %s, the endpoint's version label", name, c, e.GetLabels()["version"])
					}
				}
				if !found {
					bad("services: no provider with -port %s for envoy.yaml's endpoint 127.0.0.1:%s", port, port)
				}
			}
		}
	}
	for _, name := range sortedKeys(services) {
		c := strings.Join(strs(svc(name)["command"]), " ")
		if !strings.Contains(c, "consumer ") {
			continue
		}
		ok := false
		for _, p := range listenerPorts {
			ok = ok || strings.Contains(c, fmt.Sprintf("-addr 127.0.0.1:%d", p))
		}
		if !ok {
			bad("services.%s.command: %q: want -addr 127.0.0.1:<a listener port of envoy.yaml> %v", name, c, listenerPorts)
		}
		if svc(name)["network_mode"] != "service:envoy" {
			bad("services.%s.network_mode: %v: want service:envoy", name, svc(name)["network_mode"])
		}
	}

	// The plugin is where the image puts it.
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, flt := range fc.GetFilters() {
				if gc := golangConfig(t, flt.GetTypedConfig().GetValue(), flt.GetTypedConfig().GetTypeUrl()); gc != nil {
					if st := stages["envoy"]; st == nil || !slices.Contains(st.lines, "COPY --from=build-plugin /out/breeze.so "+gc.GetLibraryPath()) {
						bad("envoy.yaml: library_path %q: the Dockerfile's envoy stage does not put breeze.so there", gc.GetLibraryPath())
					}
				}
			}
		}
	}
	return errs
}

// checkPrometheus wants prometheus.yml to scrape Envoy's admin and the
// Breeze plugin's metrics endpoint of every plugin config that names one
// (metrics.address), reachable from Prometheus's own container: not a
// loopback address, which only Envoy's network namespace could reach.
func checkPrometheus(data, bootstrap []byte) error {
	bs, f := CheckBootstrap(bootstrap)
	if err := f.Err(); err != nil {
		return err
	}
	v, _, err := yamlValue(data)
	if err != nil {
		return err
	}
	// Every target, by metrics path ("/metrics" when a job names none, as
	// Prometheus defaults it).
	scraped := map[string][]string{}
	jobs, _ := v.(map[string]any)["scrape_configs"].([]any)
	for _, j := range jobs {
		job, _ := j.(map[string]any)
		path, _ := job["metrics_path"].(string)
		if path == "" {
			path = "/metrics"
		}
		scs, _ := job["static_configs"].([]any)
		for _, sc := range scs {
			tgs, _ := sc.(map[string]any)["targets"].([]any)
			for _, tg := range tgs {
				if s, ok := tg.(string); ok {
					scraped[path] = append(scraped[path], s)
				}
			}
		}
	}
	var errs []error
	admin := fmt.Sprintf("envoy:%d", bs.GetAdmin().GetAddress().GetSocketAddress().GetPortValue())
	if !slices.Contains(scraped["/stats/prometheus"], admin) {
		errs = append(errs, fmt.Errorf("no scrape config with metrics_path /stats/prometheus and target %s (envoy.yaml's admin)", admin))
	}
	named := 0
	for _, pc := range bootstrapBreezeConfigs(bs) {
		addr := pc.GetMetrics().GetAddress()
		if addr == "" {
			continue
		}
		named++
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("envoy.yaml: %s metrics.address %q: %v", pc.GetStatPrefix(), addr, err))
			continue
		}
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			errs = append(errs, fmt.Errorf("envoy.yaml: %s metrics.address %q: a loopback address, which Prometheus's container cannot reach: bind 0.0.0.0", pc.GetStatPrefix(), addr))
		}
		if want := "envoy:" + port; !slices.Contains(scraped["/metrics"], want) {
			errs = append(errs, fmt.Errorf("no scrape config with metrics_path /metrics and target %s (envoy.yaml's Breeze metrics.address %s)", want, addr))
		}
	}
	if named == 0 {
		errs = append(errs, errors.New("envoy.yaml: no Breeze plugin config names metrics.address: Breeze's series would not be served"))
	}
	return errors.Join(errs...)
}

// bootstrapBreezeConfigs are the Breeze plugin configs of a bootstrap's
// static listeners.
func bootstrapBreezeConfigs(bs *bootstrapv3.Bootstrap) []*breezev1.ProxyConfig {
	var out []*breezev1.ProxyConfig
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, flt := range fc.GetFilters() {
				gc := &golangv3alpha.Config{}
				if flt.GetTypedConfig().MessageName() != "envoy.extensions.filters.network.golang.v3alpha.Config" ||
					proto.Unmarshal(flt.GetTypedConfig().GetValue(), gc) != nil {
					continue
				}
				if pc, err := config.ParseAny(gc.GetPluginConfig()); err == nil {
					out = append(out, pc)
				}
			}
		}
	}
	return out
}

// The Prometheus check catches the mistakes a compose demo can make.
func TestPrometheusMistakes(t *testing.T) {
	prom := string(readFile(t, filepath.Join(envoyConfigDir, "prometheus.yml")))
	bootstrap := string(readFile(t, filepath.Join(envoyConfigDir, "envoy.yaml")))
	for _, tc := range []struct{ file, old, new, want string }{
		{"prometheus.yml", `"envoy:15093"`, `"envoy:15094"`, "no scrape config with metrics_path /metrics and target envoy:15093"},
		{"prometheus.yml", "metrics_path: /metrics", "metrics_path: /stats", "target envoy:15093"},
		{"prometheus.yml", `"envoy:9901"`, `"envoy:9902"`, "target envoy:9901 (envoy.yaml's admin)"},
		{"envoy.yaml", `metrics: {address: "0.0.0.0:15093"}`, `metrics: {address: "127.0.0.1:15093"}`, "a loopback address"},
		{"envoy.yaml", `metrics: {address: "0.0.0.0:15093"}`, `metrics: {address: "0.0.0.0:15095"}`, "target envoy:15095"},
		{"envoy.yaml", `metrics: {address: "0.0.0.0:15093"}`, ``, "no Breeze plugin config names metrics.address"},
	} {
		t.Run(tc.file+": "+tc.new, func(t *testing.T) {
			p, b := prom, bootstrap
			target := &p
			if tc.file == "envoy.yaml" {
				target = &b
			}
			bad := strings.Replace(*target, tc.old, tc.new, 1)
			if bad == *target {
				t.Fatalf("%q not in %s", tc.old, tc.file)
			}
			*target = bad
			if err := checkPrometheus([]byte(p), []byte(b)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestComposeMistakes(t *testing.T) {
	compose := string(readFile(t, filepath.Join(envoyConfigDir, "docker-compose.yaml")))
	bootstrap := readFile(t, filepath.Join(envoyConfigDir, "envoy.yaml"))
	dockerfile := readFile(t, "../Dockerfile")
	for _, tc := range []struct{ old, new, want string }{
		{`"-port", "20001"`, `"-port", "20003"`, "no provider with -port 20001"},
		{`"-name", "v2"`, `"-name", "v3"`, "want -name v2"},
		{`"9901:9901"`, `"9902:9902"`, `want "9901:9901"`},
		{`./envoy.yaml:/etc/envoy/envoy.yaml:ro`, `./envoy.yaml:/etc/envoy/other.yaml:ro`, "services.envoy.volumes"},
		{`target: envoy`, `target: envoy-proxy`, `services.envoy.build.target: "envoy-proxy"`},
		{`GODEBUG: cgocheck=0`, `GODEBUG: cgocheck=1`, "services.envoy.environment.GODEBUG"},
		{`-addr 127.0.0.1:20880`, `-addr 127.0.0.1:20881`, "services.consumer.command"},
	} {
		t.Run(tc.new, func(t *testing.T) {
			bad := strings.Replace(compose, tc.old, tc.new, 1)
			if bad == compose {
				t.Fatalf("%q not in docker-compose.yaml", tc.old)
			}
			errs := checkCompose(t, []byte(bad), bootstrap, dockerfile)
			if err := errors.Join(errs...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// And a Dockerfile that puts the plugin elsewhere.
	badDocker := strings.Replace(string(dockerfile), "/out/breeze.so /usr/local/lib/breeze/breeze.so\nCOPY envoy-config", "/out/breeze.so /opt/breeze.so\nCOPY envoy-config", 1)
	if err := errors.Join(checkCompose(t, []byte(compose), bootstrap, []byte(badDocker))...); err == nil || !strings.Contains(err.Error(), "library_path") {
		t.Fatalf("got %v, want a library_path error", err)
	}
}
