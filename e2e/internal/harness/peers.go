package harness

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"
)

var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a loopback TCP port that was free a moment ago, that no
// earlier call of this process returned, and that lies below the
// kernel's ephemeral range: binding port 0 would give one from that range,
// where a parallel test's outgoing connection may take it before the
// server the port is for binds it ("Address already in use"). The root
// module's internal/testport does the same; this module does not depend
// on the root module.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	top := 32768 // Linux's default first ephemeral port
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				top = n
			}
		}
	}
	for range 200 {
		port := 10000 + rand.IntN(top-10000)
		if given[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		given[port] = true
		return port
	}
	t.Fatal("find a free port: none in 200 tries")
	return 0
}

// Addr is "127.0.0.1:port".
func Addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// WaitAccepting dials addr until it accepts a connection, proc exits, or
// within passes.
func WaitAccepting(addr string, proc *Proc, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if proc != nil {
			if ok, perr := proc.Exited(); ok {
				return fmt.Errorf("%s exited (%v) before %s accepted connections", proc.Name, perr, addr)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s accepts no connection after %s: %w", addr, within, err)
		}
		select {
		case <-time.After(25 * time.Millisecond):
		case <-procDone(proc):
		}
	}
}

func procDone(p *Proc) <-chan struct{} {
	if p == nil {
		return nil
	}
	return p.exited
}

// Provider is a running cmd/provider.
type Provider struct {
	Name string
	Port int
	Addr string
	Proc *Proc
	// Control is the address of its control (see ProviderControl).
	Control string
}

// ProviderSpec says how to start a provider.
type ProviderSpec struct {
	Name string
	// Versions exported; none means the unversioned service.
	Versions []string
	// Heartbeat is the provider's heartbeat period to its clients; 0 keeps
	// dubbo-go's default.
	Heartbeat time.Duration
	// ZooKeeper: register there with dubbo-go's own ZooKeeper registry,
	// RegistryType "interface" (when empty), "service" or "all", under
	// Application, with a session of RegistryTimeout.
	ZooKeeper, RegistryType, Application string
	RegistryTimeout                      time.Duration
	// OTLP, when set, traces the calls with dubbo-go's OpenTelemetry
	// filter, exporting to this collector.
	OTLP string
	// MetadataServicePort: metadata-type local, the MetadataService on
	// this port (0: metadata-type remote).
	MetadataServicePort int
	// Nacos: register there (host:port, the HTTP port) with dubbo-go's
	// own Nacos registry, RegistryType and Application as above.
	Nacos string
}

// StartProvider starts a dubbo-go provider on a free port and waits for its
// READY line.
func StartProvider(t testing.TB, spec ProviderSpec) *Provider {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := FreePort(t)
		args := []string{"-port", strconv.Itoa(port), "-name", spec.Name, "-version", strings.Join(spec.Versions, ","), "-control"}
		if spec.Heartbeat > 0 {
			args = append(args, "-heartbeat", spec.Heartbeat.String())
		}
		if spec.ZooKeeper != "" {
			args = append(args, "-zookeeper", spec.ZooKeeper, "-registry-type", cmp.Or(spec.RegistryType, "interface"), "-application", spec.Application)
			if spec.RegistryTimeout > 0 {
				args = append(args, "-registry-timeout", spec.RegistryTimeout.String())
			}
			if spec.MetadataServicePort > 0 {
				args = append(args, "-metadata-service-port", strconv.Itoa(spec.MetadataServicePort))
			}
		}
		if spec.OTLP != "" {
			args = append(args, "-otlp", spec.OTLP)
		}
		if spec.Nacos != "" {
			args = append(args, "-nacos", spec.Nacos, "-registry-type", cmp.Or(spec.RegistryType, "interface"), "-application", spec.Application)
		}
		p := Start(t, "provider "+spec.Name, ProviderBin(t), args...)
		line, err := p.WaitReady(30 * time.Second)
		// A port free a moment ago may have become another process's
		// meanwhile (the source port of any connection on the machine):
		// try another.
		if err != nil && attempt < 3 && strings.Contains(p.Output(), "address already in use") {
			t.Logf("provider %s: port %d taken meanwhile; trying another", spec.Name, port)
			continue
		}
		if err != nil {
			t.Fatalf("provider %s: %v\n%s", spec.Name, err, p.Output())
		}
		if line != "READY "+strconv.Itoa(port) {
			t.Fatalf("provider %s: READY line %q, want port %d", spec.Name, line, port)
		}
		// CONTROL comes before READY on stdout, so it is kept by now.
		_, rest, ok := strings.Cut(p.Output(), "CONTROL ")
		control, _, _ := strings.Cut(rest, "\n")
		if !ok || control == "" {
			t.Fatalf("provider %s printed no CONTROL line:\n%s", spec.Name, p.Output())
		}
		return &Provider{Name: spec.Name, Port: port, Addr: Addr(port), Proc: p, Control: control}
	}
}

// Proxy is a running `breeze run -c FILE`.
type Proxy struct {
	// Addr is the listener address ({{.Listen}} in the config template).
	Addr string
	// Admin is the admin address ({{.Admin}}), serving /metrics.
	Admin string
	// Config is the rendered runner file.
	Config string
	Proc   *Proc
}

// ProxyVars are what a runner config template can use besides the funcs
// `port NAME` and `addr NAME` (a provider's port and address).
type ProxyVars struct {
	Listen string
	Admin  string
	// Extra values the test passes through.
	Extra map[string]interface{}
}

// RenderConfig renders a runner YAML template: {{.Listen}}, {{.Admin}},
// {{port "v1-a"}}, {{addr "v1-a"}}, {{index .Extra "k"}}.
func RenderConfig(t testing.TB, tmpl string, vars ProxyVars, ports map[string]int) string {
	t.Helper()
	funcs := template.FuncMap{
		"port": func(name string) (int, error) {
			p, ok := ports[name]
			if !ok {
				return 0, fmt.Errorf("config template: no port named %q", name)
			}
			return p, nil
		},
		"addr": func(name string) (string, error) {
			p, ok := ports[name]
			if !ok {
				return "", fmt.Errorf("config template: no port named %q", name)
			}
			return Addr(p), nil
		},
	}
	tp, err := template.New("runner").Funcs(funcs).Option("missingkey=error").Parse(tmpl)
	if err != nil {
		t.Fatalf("runner config template: %v", err)
	}
	var b bytes.Buffer
	if err := tp.Execute(&b, vars); err != nil {
		t.Fatalf("runner config template: %v", err)
	}
	return b.String()
}

// StartProxy renders tmpl (see RenderConfig) with a free listener and admin
// port, writes it to a file, runs `breeze run -c FILE` and waits until the
// listener accepts connections. Tests calling it are skipped while the proxy
// does not build.
func StartProxy(t testing.TB, tmpl string, ports map[string]int) *Proxy {
	t.Helper()
	return StartProxyVars(t, tmpl, nil, ports)
}

// StartProxyVars is StartProxy with extra template values ({{.Extra}}).
func StartProxyVars(t testing.TB, tmpl string, extra map[string]interface{}, ports map[string]int) *Proxy {
	t.Helper()
	return StartProxyWith(t, tmpl, ProxyOptions{Extra: extra}, ports)
}

// ProxyOptions are StartProxyWith's options.
type ProxyOptions struct {
	// Extra values for the template ({{index .Extra "k"}}).
	Extra map[string]interface{}
	// Env is added to the proxy process's environment: what a sidecar's
	// environment tells the proxy (ISTIO_META_WORKLOAD_NAME, POD_NAMESPACE...).
	Env []string
	// Listen and Admin are the listener and admin addresses ({{.Listen}},
	// {{.Admin}}); empty: a free loopback port each. A test gives Admin when
	// something must know it before the proxy starts (a Prometheus scrape
	// config).
	Listen, Admin string
}

// StartProxyWith is StartProxy with options.
func StartProxyWith(t testing.TB, tmpl string, o ProxyOptions, ports map[string]int) *Proxy {
	t.Helper()
	bin := BreezeBin(t)
	vars := ProxyVars{Listen: o.Listen, Admin: o.Admin, Extra: o.Extra}
	if vars.Listen == "" {
		vars.Listen = Addr(FreePort(t))
	}
	if vars.Admin == "" {
		vars.Admin = Addr(FreePort(t))
	}
	cfg := RenderConfig(t, tmpl, vars, ports)
	file := filepath.Join(t.TempDir(), "breeze.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := StartWith(t, ProcOptions{Env: o.Env}, "breeze", bin, "run", "-c", file)
	if err := WaitAccepting(vars.Listen, p, 30*time.Second); err != nil {
		t.Fatalf("breeze run -c %s: %v\nconfig:\n%s\noutput:\n%s", file, err, cfg, p.Output())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("breeze config:\n%s", cfg)
		}
	})
	return &Proxy{Addr: vars.Listen, Admin: vars.Admin, Config: cfg, Proc: p}
}

// Metrics fetches the proxy's Prometheus text from http://Admin/metrics.
func (p *Proxy) Metrics(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Admin+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return string(b), err
}

// ConsumerSummary is cmd/consumer's SUMMARY line.
type ConsumerSummary struct {
	Requests   int            `json:"requests"`
	OK         int            `json:"ok"`
	Failed     int            `json:"failed"`
	Mismatched int            `json:"mismatched"`
	Providers  map[string]int `json:"providers"`
	Errors     []string       `json:"errors"`
	ElapsedMS  int64          `json:"elapsed_ms"`
}

// StartConsumer starts cmd/consumer with args; collect it with Summary.
func StartConsumer(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return Start(t, name, ConsumerBin(t), append([]string{"-quiet"}, args...)...)
}

// Summary waits for a consumer to exit (at most within) and parses its
// SUMMARY line; exitErr is the process's exit status (non-nil on failures).
func Summary(p *Proc, within time.Duration) (s ConsumerSummary, exitErr error, err error) {
	select {
	case <-p.Done():
	case <-time.After(within):
		p.Kill()
		return s, nil, fmt.Errorf("%s did not finish within %s", p.Name, within)
	}
	_, exitErr = p.Exited()
	out := p.Output()
	i := strings.LastIndex(out, "SUMMARY ")
	if i < 0 {
		return s, exitErr, fmt.Errorf("%s printed no SUMMARY line (exit: %v)", p.Name, exitErr)
	}
	line, _, _ := strings.Cut(out[i+len("SUMMARY "):], "\n")
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		return s, exitErr, fmt.Errorf("%s SUMMARY: %w", p.Name, err)
	}
	return s, exitErr, nil
}
