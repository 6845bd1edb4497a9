package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/deploy"
	"github.com/breeze-mesh/breeze/internal/release"
)

// What the test stamps into the binary, as the Makefile does.
const (
	testVersion = "v9.9.9-clitest"
	testCommit  = "0123456789abcdef0123456789abcdef01234567-dirty"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// breezeBin is this command built as shipped, stamped with testVersion
// and testCommit.
func breezeBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "breeze-cli-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "breeze")
		pkg := "github.com/breeze-mesh/breeze/internal/buildinfo"
		out, err := exec.Command("go", "build", "-ldflags", "-X "+pkg+".version="+testVersion+" -X "+pkg+".commit="+testCommit, "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// breeze runs the binary with args and returns what it wrote and its exit
// status. The deadline only keeps a command that wrongly serves instead
// of exiting from hanging the test.
func breeze(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, breezeBin(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("breeze %q did not exit", args)
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// Every command's help, however asked for: on standard output, exit
// status 0, its synopsis first.
func TestHelp(t *testing.T) {
	synopsis := map[string]string{
		"":           "usage: breeze <command> [flags] [arguments]",
		"run":        "usage: breeze run [-c FILE] [-log-level LEVEL] [-log-format FORMAT] [-pprof ADDR]",
		"render":     "usage: breeze render envoyfilter [--istio RELEASE] [-o OUT] FILE",
		"validate":   "usage: breeze validate [--istio RELEASE] FILE|DIR...",
		"xds":        "usage: " + xdsSynopsis,
		"registry":   "usage: breeze registry export [-watch] [-zookeeper HOST:PORT[,HOST:PORT]] [-zookeeper-root PATH] [-nacos HOST:PORT[,HOST:PORT]] [-nacos-namespace ID] [-nacos-group GROUP] [-nacos-list-interval DURATION] [-namespace NS] [-o DIR] [-log-level LEVEL] [-log-format FORMAT]",
		"version":    "usage: breeze version",
		"controller": "usage: " + controllerSynopsis,
		"help":       "usage: breeze <command> [flags] [arguments]",
	}
	for cmd, want := range synopsis {
		var asks [][]string
		if cmd == "" {
			asks = [][]string{{"--help"}, {"-h"}, {"-help"}, {"help"}}
		} else {
			asks = [][]string{{cmd, "--help"}, {cmd, "-h"}, {cmd, "-help"}, {"help", cmd}}
		}
		if cmd == "render" {
			asks = append(asks, []string{"render", "envoyfilter", "--help"}, []string{"render", "envoyfilter", "greeter.yaml", "-h"})
		}
		for _, args := range asks {
			stdout, stderr, code := breeze(t, args...)
			if code != exitOK || firstLine(stdout) != want || stderr != "" {
				t.Errorf("breeze %s: exit %d, first line %q, stderr %q; want exit 0, %q, nothing", strings.Join(args, " "), code, firstLine(stdout), stderr, want)
			}
		}
	}
}

// Mistakes: exit status 2, on standard error the mistake, the synopsis
// and where to read more, nothing on standard output. The text is part of
// the interface.
func TestUsageErrors(t *testing.T) {
	usageOf := func(cmd, synopsis string) string {
		return "usage: " + synopsis + "\nRun 'breeze " + cmd + " --help' for details.\n"
	}
	run := usageOf("run", "breeze run [-c FILE] [-log-level LEVEL] [-log-format FORMAT] [-pprof ADDR]")
	xds := usageOf("xds", xdsSynopsis)
	render := usageOf("render", "breeze render envoyfilter [--istio RELEASE] [-o OUT] FILE")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, usage},
		{[]string{"nope"}, `breeze: unknown command "nope"` + "\n" + usage},
		{[]string{"--nope"}, `breeze: unknown command "--nope"` + "\n" + usage},
		{[]string{"help", "nope"}, `breeze: unknown command "nope"` + "\n" + usage},
		{[]string{"help", "run", "xds"}, "breeze help: want one command, got 2\n" + usage},
		{[]string{"run", "-x"}, "breeze run: flag provided but not defined: -x\n" + run},
		{[]string{"run", "--log-level", "verbose"}, `breeze run: invalid value "verbose" for flag -log-level: want debug, info, warn or error` + "\n" + run},
		{[]string{"run", "-log-format", "xml"}, `breeze run: invalid value "xml" for flag -log-format: want text or json` + "\n" + run},
		{[]string{"run", "-c"}, "breeze run: flag needs an argument: -c\n" + run},
		{[]string{"run", "demo.yaml"}, `breeze run: unexpected argument "demo.yaml": to serve a config file, name it with -c: breeze run -c demo.yaml` + "\n" + run},
		{[]string{"run", "-c", "a.yaml", "b.yaml"}, `breeze run: unexpected argument "b.yaml": run takes one config file, with -c` + "\n" + run},
		{[]string{"xds"}, "breeze xds: nothing to serve: name the directory of MetaRouter, DestinationRule and ServiceEntry YAML with -dir, a registry with -zookeeper or -nacos, or both\n" + xds},
		{[]string{"registry"}, "breeze registry: want the subcommand export, as in breeze registry export -zookeeper 127.0.0.1:2181\n" + usageOf("registry", "breeze registry export [-watch] [-zookeeper HOST:PORT[,HOST:PORT]] [-zookeeper-root PATH] [-nacos HOST:PORT[,HOST:PORT]] [-nacos-namespace ID] [-nacos-group GROUP] [-nacos-list-interval DURATION] [-namespace NS] [-o DIR] [-log-level LEVEL] [-log-format FORMAT]")},
		{[]string{"registry", "export"}, "breeze registry: -zookeeper or -nacos is required: the registry to export\n" + usageOf("registry", "breeze registry export [-watch] [-zookeeper HOST:PORT[,HOST:PORT]] [-zookeeper-root PATH] [-nacos HOST:PORT[,HOST:PORT]] [-nacos-namespace ID] [-nacos-group GROUP] [-nacos-list-interval DURATION] [-namespace NS] [-o DIR] [-log-level LEVEL] [-log-format FORMAT]")},
		{[]string{"xds", "routes/"}, `breeze xds: unexpected argument "routes/": to serve a directory, name it with -dir: breeze xds -dir routes/` + "\n" + xds},
		{[]string{"xds", "-dir", ".", "-log-level", "loud"}, `breeze xds: invalid value "loud" for flag -log-level: want debug, info, warn or error` + "\n" + xds},
		{[]string{"xds", "-dir", ".", "-debounce", "5"}, `breeze xds: invalid value "5" for flag -debounce: parse error` + "\n" + xds},
		{[]string{"xds", "-dir", ".", "-xds-tls-cert", "c.pem"}, "breeze xds: -xds-tls-cert and -xds-tls-key go together: name both, or neither for plaintext\n" + xds},
		{[]string{"xds", "-dir", ".", "-xds-auth", "token", "-xds-token-file", "t"}, "breeze xds: -xds-auth token needs -xds-tls-cert and -xds-tls-key: a token must not travel in clear\n" + xds},
		{[]string{"xds", "-dir", ".", "-xds-tls-cert", "c", "-xds-tls-key", "k", "-xds-auth", "token"}, "breeze xds: -xds-auth token and -xds-token-file go together: breeze xds checks tokens against that file\n" + xds},
		{[]string{"xds", "-dir", ".", "-xds-auth", "mtls"}, `breeze xds: -xds-auth "mtls": want none or token` + "\n" + xds},
		{[]string{"controller", "-xds-address", "cp:15010", "-xds-auth", "token"}, "breeze controller: -xds-auth token needs -xds-tls-cert and -xds-tls-key: a token must not travel in clear\n" + usageOf("controller", controllerSynopsis)},
		{[]string{"controller", "-xds-address", "cp:15010", "-xds-tls-cert", "c", "-xds-tls-key", "k"}, "breeze controller: -xds-tls-cert and -xds-sidecar-ca-file go together: the sidecars' Breeze must trust the certificate the controller serves\n" + usageOf("controller", controllerSynopsis)},
		{[]string{"controller", "-xds-address", "cp:15010", "-xds-tls-cert", "c", "-xds-tls-key", "k", "-xds-sidecar-ca-file", "/ca.crt", "-xds-auth", "token"}, "breeze controller: -xds-auth token and -xds-sidecar-token-file go together: the sidecars' Breeze must send the token the controller checks\n" + usageOf("controller", controllerSynopsis)},
		{[]string{"render"}, "breeze render: nothing to render: name what and from which file, as in breeze render envoyfilter greeter.yaml\n" + render},
		{[]string{"render", "envoyfilters", "greeter.yaml"}, `breeze render: cannot render "envoyfilters": envoyfilter is the one kind render makes` + "\n" + render},
		{[]string{"render", "envoyfilter"}, "breeze render: envoyfilter wants one description file, got 0\n" + render},
		{[]string{"render", "envoyfilter", "-x", "greeter.yaml"}, "breeze render: flag provided but not defined: -x\n" + render},
		{[]string{"validate"}, "breeze validate: no files to check: name files or directories, as in breeze validate envoy.yaml or breeze validate mesh/\n" + usageOf("validate", "breeze validate [--istio RELEASE] FILE|DIR...")},
		{[]string{"controller"}, "breeze controller: -xds-address is required: the address the sidecars' Breeze reaches this controller's xDS server at\n" + usageOf("controller", controllerSynopsis)},
		{[]string{"controller", "-xds-address", "nowhere"}, `breeze controller: -xds-address "nowhere": want host:port` + "\n" + usageOf("controller", controllerSynopsis)},
		{[]string{"controller", "-xds-address", "cp:15010", "-zookeeper", "zk:2181", "-namespaces", "a,b"}, "breeze controller: -registry-namespace istio-system is not among -namespaces a,b: the registry's ServiceEntries would be written but not served\n" + usageOf("controller", controllerSynopsis)},
		{[]string{"controller", "-xds-address", "cp:15010", "-zookeeper", "zk:2181", "-registry-vips", "240.241.0.0/31"}, `breeze controller: -registry-vips "240.241.0.0/31": want a range of at least 4 addresses, as 240.241.0.0/16` + "\n" + usageOf("controller", controllerSynopsis)},
		{[]string{"version", "--short"}, "breeze version: flag provided but not defined: -short\n" + usageOf("version", "breeze version")},
		{[]string{"version", "x"}, `breeze version: unexpected argument "x"` + "\n" + usageOf("version", "breeze version")},
	} {
		stdout, stderr, code := breeze(t, tc.args...)
		if code != exitUsage || stderr != tc.want || stdout != "" {
			t.Errorf("breeze %s: exit %d\nstderr:\n%s\nstdout:\n%s\nwant exit 2 and stderr:\n%s", strings.Join(tc.args, " "), code, stderr, stdout, tc.want)
		}
	}
}

// A command that fails says why, with exit status 1.
func TestFailures(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"xds", "-dir", "/nonexistent"}, `breeze: -dir "/nonexistent": no such directory` + "\n"},
		{[]string{"xds", "-dir", file}, `breeze: -dir "` + file + `" is a file: want the directory holding it` + "\n"},
		{[]string{"validate", "/nonexistent.yaml"}, "breeze: /nonexistent.yaml: no such file or directory\n"},
	} {
		stdout, stderr, code := breeze(t, tc.args...)
		if code != exitFailure || stderr != tc.want || stdout != "" {
			t.Errorf("breeze %s: exit %d\nstderr:\n%s\nstdout:\n%s\nwant exit 1 and stderr:\n%s", strings.Join(tc.args, " "), code, stderr, stdout, tc.want)
		}
	}
}

// Flags may follow arguments; after "--" everything is an argument.
func TestFlagsAfterArguments(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "efs.yaml")
	if _, stderr, code := breeze(t, "render", "envoyfilter", "../../envoy-config/istio/greeter.yaml", "-o", out); code != exitOK {
		t.Fatalf("render with -o last: exit %d: %s", code, stderr)
	}
	if stdout, stderr, code := breeze(t, "validate", out, "--", "-h"); code != exitFailure || stdout != "" || stderr != "breeze: -h: no such file or directory\n" {
		t.Errorf(`validate FILE -- -h: exit %d, stdout %q, stderr %q; want "-h" read as a file`, code, stdout, stderr)
	}
}

func TestVersion(t *testing.T) {
	r := built(t)
	want := "breeze " + testVersion + " (commit " + testCommit + ") for Envoy Go API " + r.EnvoyGoAPI + " (Istio " + r.Istio + "), " + runtime.Version() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		stdout, stderr, code := breeze(t, args...)
		if code != exitOK || stdout != want || stderr != "" {
			t.Errorf("breeze %s: exit %d, stdout %q, stderr %q; want exit 0 and %q", args[0], code, stdout, stderr, want)
		}
	}
}

// built is the build target (go.mod, or the -modfile in GOFLAGS, which
// the go build of breezeBin uses too) this test and the binary are built
// for.
func built(t *testing.T) release.Release {
	t.Helper()
	r, ok := release.Built()
	if !ok {
		t.Fatalf("this test binary links no Envoy Go API of a build target (%s)", release.Names())
	}
	return r
}

// The Istio release `breeze version` names is the one render pins the
// EnvoyFilters to unless told otherwise, and whose types check them.
func TestVersionsIstioIsRendersDefault(t *testing.T) {
	if r := built(t); deploy.DefaultIstio() != r.Istio {
		t.Errorf("breeze is built for Envoy %s (Istio %s), but renders for Istio %s by default", r.EnvoyGoAPI, r.Istio, deploy.DefaultIstio())
	}
}

// --istio picks the release render pins to and validate checks the pins
// against; a release of another build says whose types checked the files.
func TestIstioFlag(t *testing.T) {
	r := built(t)
	desc := filepath.Join(t.TempDir(), "svc.yaml")
	if err := os.WriteFile(desc, []byte("host: greeter.demo.svc.cluster.local\nvip: 10.96.0.20\nport: 20880\nprotocol: dubbo\nclusters: [{name: greeter, endpoints: [{address: 10.1.0.1, port: 20880}]}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, want := range release.All {
		t.Run(want.Istio, func(t *testing.T) {
			stdout, stderr, code := breeze(t, "render", "envoyfilter", "--istio", want.Istio, desc)
			if code != exitOK || !strings.Contains(stdout, "proxyVersion: "+want.ProxyVersion()+"\n") {
				t.Fatalf("render --istio %s: exit %d, stderr %q; want EnvoyFilters pinned %s:\n%s", want.Istio, code, stderr, want.ProxyVersion(), stdout)
			}
			note := ""
			if want != r {
				arg := ""
				if want != release.Default() {
					arg = " ENVOY=" + want.Envoy
				}
				note = "note: checked with the API types of " + r.String() + ", which this breeze is built for; for " + want.String() + "'s own: make build" + arg + "\n"
			}
			if stderr != note {
				t.Errorf("render --istio %s: stderr %q, want %q", want.Istio, stderr, note)
			}
			efs := filepath.Join(t.TempDir(), "efs.yaml")
			os.WriteFile(efs, []byte(stdout), 0o644)
			for _, other := range release.All {
				_, stderr, code := breeze(t, "validate", "--istio", other.Istio, efs)
				if ok := other == want; (code == exitOK) != ok || ok != !strings.Contains(stderr, "does not select Istio "+other.Istio+" sidecars") {
					t.Errorf("EnvoyFilters for Istio %s, validate --istio %s: exit %d, stderr %q", want.Istio, other.Istio, code, stderr)
				}
			}
		})
	}
	if _, stderr, code := breeze(t, "render", "envoyfilter", "--istio", "1.29", desc); code != exitUsage || !strings.Contains(stderr, `--istio: no Breeze build for Istio "1.29"`) {
		t.Errorf("render --istio 1.29: exit %d, stderr %q; want a usage error", code, stderr)
	}
	if _, stderr, code := breeze(t, "validate", "--istio", "1.30", desc); code != exitUsage || !strings.Contains(stderr, `--istio: no Breeze build for Istio "1.30"`) {
		t.Errorf("validate --istio 1.30: exit %d, stderr %q; want a usage error", code, stderr)
	}
}

// -log-format json: every line on standard error is a JSON object, with
// the fields the text format has.
func TestLogFormatJSON(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "runner.yaml")
	if err := os.WriteFile(cfg, []byte(`listeners:
- name: t
  address: 127.0.0.1:0
  proxy:
    stat_prefix: t
    codec: dubbo
    route_config: {routes: [{route: {cluster: c}}]}
    clusters: [{name: c, endpoints: [{address: 127.0.0.1, port: 1}]}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args    []string
		ready   string // the first word of the line on standard output that says it serves
		running string // the message of its startup line
	}{
		{[]string{"run", "-c", cfg, "-log-format", "json"}, "LISTENING", "breeze running"},
		{[]string{"xds", "--dir", dir, "--listen", "127.0.0.1:0", "--log-format", "json"}, "LISTENING", "breeze xds running"},
	} {
		t.Run(tc.args[0], func(t *testing.T) {
			lines := serveAndStop(t, tc.args, tc.ready)
			var msgs []string
			for _, l := range lines {
				var rec map[string]any
				if err := json.Unmarshal([]byte(l), &rec); err != nil {
					t.Fatalf("not JSON: %q: %v", l, err)
				}
				msg, _ := rec["msg"].(string)
				msgs = append(msgs, msg)
				if msg == tc.running && (rec["version"] != testVersion || rec["commit"] != testCommit || rec["istio"] != built(t).Istio) {
					t.Errorf("startup line without the version: %s", l)
				}
			}
			if len(msgs) < 2 || !contains(msgs, tc.running) || msgs[len(msgs)-1] != "shutting down" {
				t.Errorf("log messages %q: want %q and, last, %q", msgs, tc.running, "shutting down")
			}
		})
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// serveAndStop starts a serving command, waits for its ready line on
// standard output, stops it with SIGTERM and returns its lines on
// standard error; it must exit with status 0.
func serveAndStop(t *testing.T, args []string, ready string) []string {
	t.Helper()
	cmd := exec.Command(breezeBin(t), args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), ready+" ") {
	}
	if !strings.HasPrefix(sc.Text(), ready+" ") {
		cmd.Wait()
		t.Fatalf("breeze %q exited before %s: %s", args, ready, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("breeze %q after SIGTERM: %v\n%s", args, err, stderr.String())
	}
	return strings.Split(strings.TrimSpace(stderr.String()), "\n")
}
