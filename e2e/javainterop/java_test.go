package javainterop

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// Environment knobs.
const (
	// envRebuild=1 runs Maven even when a build of the same sources is cached.
	envRebuild = "BREEZE_E2E_JAVA_REBUILD"
)

// mvnTimeout bounds the Maven build, downloads included.
const mvnTimeout = 8 * time.Minute

// javaReadyWithin bounds a JVM's start (Dubbo's start is slow on a busy
// 2-core machine).
const javaReadyWithin = 90 * time.Second

var (
	javaOnce    sync.Once
	javaBin     string
	javaCP      string // the runtime class path of the Java peers
	javaMissing string // the tools the Java tests need and do not find
	javaErr     error  // the build failed
	javaNote    string // how the build was had, for the log
)

// javaProjectDir is e2e/java.
func javaProjectDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "java")
}

// javaClasspath returns the class path of the built Java peers, building
// them with Maven on first use. It fails t if java or mvn is missing.
func javaClasspath(t testing.TB) string {
	t.Helper()
	javaOnce.Do(buildJava)
	if javaMissing != "" {
		t.Fatal(javaMissing)
	}
	if javaErr != nil {
		t.Fatalf("build the Java peers: %v", javaErr)
	}
	t.Log(javaNote)
	return javaCP
}

func buildJava() {
	var missing []string
	for _, tool := range []string{"java", "mvn"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		javaMissing = fmt.Sprintf("the Apache Dubbo Java interop tests need %s on PATH (a JDK 17+ and Maven; .ci/run installs them with scripts/install-test-deps.sh)", strings.Join(missing, " and "))
		return
	}
	javaBin, _ = exec.LookPath("java")
	dir := javaProjectDir()
	sum, err := hashSources(dir)
	if err != nil {
		javaErr = err
		return
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	root := filepath.Join(cache, "breeze-e2e-java")
	out := filepath.Join(root, sum[:16])
	if os.Getenv(envRebuild) != "1" {
		if cp, err := readBuild(out); err == nil {
			javaCP = cp
			javaNote = "Java peers: the cached build " + out
			return
		}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		javaErr = err
		return
	}
	tmp, err := os.MkdirTemp(root, "build-")
	if err != nil {
		javaErr = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), mvnTimeout)
	defer cancel()
	// -B: no colours or progress; the local repository is Maven's default
	// (~/.m2/repository), where the first build downloads Dubbo.
	cmd := exec.CommandContext(ctx, "mvn", "-q", "-B", "-Dstyle.color=never", "package", "-Dbreeze.java.out="+tmp)
	cmd.Dir = dir
	start := time.Now()
	b, err := cmd.CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(tmp)
		javaErr = fmt.Errorf("mvn -q -B package (in %s, after %s): %v\n%s", dir, time.Since(start).Round(time.Second), err, strings.TrimSpace(string(b)))
		return
	}
	if cp, err := readBuild(out); err == nil && os.Getenv(envRebuild) != "1" {
		// Another test process built the same sources meanwhile.
		_ = os.RemoveAll(tmp)
		javaCP = cp
		javaNote = "Java peers: the build of another test process, " + out
		return
	}
	_ = os.RemoveAll(out) // a broken build of the same sources
	if err := os.Rename(tmp, out); err != nil {
		_ = os.RemoveAll(tmp)
		javaErr = err
		return
	}
	javaCP, javaErr = readBuild(out)
	javaNote = fmt.Sprintf("Java peers: built with mvn package in %s into %s", time.Since(start).Round(100*time.Millisecond), out)
}

// hashSources hashes the Maven project's pom.xml and src/ tree. Reading the
// files here also makes `go test` invalidate its cached result when they
// change.
func hashSources(dir string) (string, error) {
	h := sha256.New()
	files := []string{filepath.Join(dir, "pom.xml")}
	err := filepath.WalkDir(filepath.Join(dir, "src"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("the Java peers' sources: %w", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(dir, f)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readBuild checks a build directory and returns its class path: its classes
// and every jar Maven listed, all present.
func readBuild(out string) (string, error) {
	b, err := os.ReadFile(filepath.Join(out, "classpath.txt"))
	if err != nil {
		return "", err
	}
	classes := filepath.Join(out, "classes")
	if _, err := os.Stat(filepath.Join(classes, "org", "breeze", "e2e", "JavaProvider.class")); err != nil {
		return "", err
	}
	entries := strings.Split(strings.TrimSpace(string(b)), string(os.PathListSeparator))
	for _, e := range entries {
		if _, err := os.Stat(e); err != nil {
			return "", fmt.Errorf("class path entry: %w", err)
		}
	}
	return strings.Join(append([]string{classes}, entries...), string(os.PathListSeparator)), nil
}

// jvmArgs runs main class with the peers' class path: C1 only and the serial
// collector, for fast starts of short-lived JVMs.
func jvmArgs(cp, main string, args ...string) []string {
	return append([]string{
		"-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss512k", "-Xmx256m",
		"-Djava.net.preferIPv4Stack=true", "-Dfile.encoding=UTF-8",
		"-cp", cp, main,
	}, args...)
}

// lineLog counts a process's stdout lines so a test can wait for them.
type lineLog struct {
	mu      sync.Mutex
	counts  map[string]int
	changed chan struct{}
}

func newLineLog() *lineLog {
	return &lineLog{counts: map[string]int{}, changed: make(chan struct{})}
}

func (l *lineLog) see(line string) bool {
	l.mu.Lock()
	l.counts[line]++
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	return true
}

// waitCount waits until line has been printed at least n times.
func (l *lineLog) waitCount(ctx context.Context, line string, n int) error {
	for {
		l.mu.Lock()
		got, changed := l.counts[line], l.changed
		l.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d lines %q (saw %d): %w", n, line, got, ctx.Err())
		}
	}
}

// javaProvider is a running JavaProvider (Apache Dubbo Java serving
// org.breeze.Greeter).
type javaProvider struct {
	Name  string
	Port  int
	Addr  string
	Proc  *harness.Proc
	Lines *lineLog
}

type javaProviderSpec struct {
	Name string
	// Version is the Dubbo service version exported; "" the unversioned one.
	Version string
	// Heartbeat is the protocol's heartbeat param: the provider closes a
	// connection that carried nothing for 3 heartbeats. 0 keeps Dubbo's 60s.
	Heartbeat time.Duration
	// ShutdownWait bounds Dubbo's graceful shutdown (0: Dubbo's 10s).
	ShutdownWait time.Duration
	// ZooKeeper: register there through Dubbo's own ZooKeeper registry,
	// with RegisterMode (interface, instance, all), Application and
	// MetadataType (local, remote).
	ZooKeeper, RegisterMode, Application, MetadataType string
}

// startJavaProviders starts the providers and waits for their READY lines.
func startJavaProviders(t testing.TB, specs ...javaProviderSpec) []*javaProvider {
	t.Helper()
	ps := launchJavaProviders(t, specs...)
	waitJavaProviders(t, ps...)
	return ps
}

// launchJavaProviders starts the provider JVMs without waiting for them, so
// that several JVMs start at once; see waitJavaProviders.
func launchJavaProviders(t testing.TB, specs ...javaProviderSpec) []*javaProvider {
	t.Helper()
	cp := javaClasspath(t)
	ps := make([]*javaProvider, len(specs))
	for i, s := range specs {
		port := harness.FreePort(t)
		args := []string{"--port", strconv.Itoa(port), "--name", s.Name}
		if s.Version != "" {
			args = append(args, "--version", s.Version)
		}
		if s.Heartbeat > 0 {
			args = append(args, "--heartbeat", strconv.FormatInt(s.Heartbeat.Milliseconds(), 10))
		}
		if s.ShutdownWait > 0 {
			args = append(args, "--shutdown-wait", strconv.FormatInt(s.ShutdownWait.Milliseconds(), 10))
		}
		if s.ZooKeeper != "" {
			args = append(args, "--zookeeper", s.ZooKeeper, "--register-mode", s.RegisterMode, "--application", s.Application, "--metadata-type", s.MetadataType)
		}
		lines := newLineLog()
		p := harness.StartWith(t, harness.ProcOptions{OnLine: lines.see}, "java provider "+s.Name, javaBin,
			jvmArgs(cp, "org.breeze.e2e.JavaProvider", args...)...)
		ps[i] = &javaProvider{Name: s.Name, Port: port, Addr: harness.Addr(port), Proc: p, Lines: lines}
	}
	return ps
}

// waitJavaProviders waits for each provider's "READY port" line.
func waitJavaProviders(t testing.TB, ps ...*javaProvider) {
	t.Helper()
	for _, p := range ps {
		line, err := p.Proc.WaitReady(javaReadyWithin)
		if err != nil {
			t.Fatalf("java provider %s: %v\n%s", p.Name, err, p.Proc.Output())
		}
		if line != "READY "+strconv.Itoa(p.Port) {
			t.Fatalf("java provider %s: READY line %q, want port %d", p.Name, line, p.Port)
		}
	}
}

// javaPorts names the providers' ports for a runner config template.
func javaPorts(ps ...*javaProvider) map[string]int {
	m := make(map[string]int, len(ps))
	for _, p := range ps {
		m[p.Name] = p.Port
	}
	return m
}

// javaClient is a JavaConsumer process: Apache Dubbo Java calling
// org.breeze.Greeter at any address, for calls sent as JSON lines.
type javaClient struct {
	Proc *harness.Proc

	calls *harness.LineCalls[javaResult]
}

// javaCall is one call; Addr is where the Java client connects (a direct
// dubbo:// URL).
type javaCall struct {
	ID          int64             `json:"id"`
	Addr        string            `json:"addr"`
	Method      string            `json:"method"`
	Arg         string            `json:"arg"`
	Attachments map[string]string `json:"attachments,omitempty"`
	// Generic calls go out as $invoke(method, types, args); others through
	// the Greeter interface.
	Generic bool `json:"generic"`
	// TimeoutMS is Dubbo's own call timeout; 0 means 3000.
	TimeoutMS int    `json:"timeout,omitempty"`
	Version   string `json:"version,omitempty"`
}

// javaResult is JavaConsumer's answer to one call.
type javaResult struct {
	ID         int64    `json:"id"`
	Reply      string   `json:"reply"`
	Error      string   `json:"error"`
	ErrorClass string   `json:"error_class"`
	Code       *int     `json:"code"` // RpcException.getCode()
	Causes     []string `json:"causes"`
	MS         int64    `json:"ms"`
	// ResponseAttachments are the response's attachments as Dubbo Java
	// hands them to the caller (RpcContext.getServerContext()).
	ResponseAttachments map[string]string `json:"response_attachments"`
}

// RpcException codes (org.apache.dubbo.rpc.RpcException).
const (
	rpcNetworkException = 1
	rpcTimeoutException = 2
)

// javaCallError is a call that Dubbo Java ended with an exception.
type javaCallError struct {
	Method string
	Result javaResult
}

func (e *javaCallError) Error() string {
	code := "-"
	if e.Result.Code != nil {
		code = strconv.Itoa(*e.Result.Code)
	}
	msg := e.Result.Error
	if len(msg) > 600 {
		msg = msg[:600] + "…"
	}
	return fmt.Sprintf("%s: Java %s (code %s) after %dms: %s", e.Method, e.Result.ErrorClass, code, e.Result.MS, msg)
}

// Elapsed is how long the call took inside the JVM.
func (e *javaCallError) Elapsed() time.Duration { return time.Duration(e.Result.MS) * time.Millisecond }

// HasCause reports whether the exception or one of its causes mentions s.
func (e *javaCallError) HasCause(s string) bool {
	if strings.Contains(e.Result.ErrorClass, s) || strings.Contains(e.Result.Error, s) {
		return true
	}
	for _, c := range e.Result.Causes {
		if strings.Contains(c, s) {
			return true
		}
	}
	return false
}

type javaClientSpec struct {
	// Heartbeat is the Dubbo client's heartbeat period (sent after this long
	// without reading anything); 0 keeps Dubbo's 60s.
	Heartbeat time.Duration
}

// startJavaClient starts a JavaConsumer and waits for its READY line.
func startJavaClient(t testing.TB, spec javaClientSpec) *javaClient {
	t.Helper()
	c := launchJavaClient(t, spec)
	c.waitReady(t)
	return c
}

// waitReady waits for the consumer's READY line.
func (c *javaClient) waitReady(t testing.TB) {
	t.Helper()
	if _, err := c.Proc.WaitReady(javaReadyWithin); err != nil {
		t.Fatalf("java consumer: %v\n%s", err, c.Proc.Output())
	}
}

// launchJavaClient starts a JavaConsumer without waiting for it.
func launchJavaClient(t testing.TB, spec javaClientSpec) *javaClient {
	t.Helper()
	cp := javaClasspath(t)
	c := &javaClient{calls: harness.NewLineCalls("the Java consumer", func(r javaResult) int64 { return r.ID })}
	var args []string
	if spec.Heartbeat > 0 {
		args = append(args, "--heartbeat", strconv.FormatInt(spec.Heartbeat.Milliseconds(), 10))
	}
	c.Proc = harness.StartWith(t, harness.ProcOptions{Stdin: true, OnLine: c.calls.OnLine}, "java consumer", javaBin,
		jvmArgs(cp, "org.breeze.e2e.JavaConsumer", args...)...)
	c.calls.Proc = c.Proc
	return c
}

// Call makes one call and returns the provider's reply. It returns when the
// JVM answers or ctx ends, whichever is first. A Dubbo exception is a
// *javaCallError.
func (c *javaClient) Call(ctx context.Context, call javaCall) (greeter.Reply, error) {
	r, err := c.calls.Do(ctx, func(id int64) any {
		call.ID = id
		return call
	})
	if err != nil {
		return greeter.Reply{}, fmt.Errorf("%s(%q) via %s: %w", call.Method, call.Arg, call.Addr, err)
	}
	if r.Error != "" || r.ErrorClass != "" {
		return greeter.Reply{}, &javaCallError{Method: call.Method, Result: r}
	}
	return greeter.ParseReply(r.Reply)
}

// callRaw makes one call and returns the consumer's whole answer.
func (c *javaClient) callRaw(ctx context.Context, call javaCall) (javaResult, error) {
	return c.calls.Do(ctx, func(id int64) any {
		call.ID = id
		return call
	})
}

// callOutcome is one call of a batch.
type callOutcome = harness.Outcome[javaCall]

func (c javaCall) MethodArg() (string, string) { return c.Method, c.Arg }

// perCall bounds each call a test makes: Dubbo's 3s default timeout and a
// margin. A call that has not ended by then hangs.
const perCall = 6 * time.Second

// runJava makes n calls, conc at a time, each bounded by perCall; a Greet or
// Slow answer must echo its own argument.
func runJava(ctx context.Context, c *javaClient, n, conc int, mk func(i int) javaCall) []callOutcome {
	return harness.RunCalls(ctx, n, conc, perCall, mk, c.Call)
}

var errNotJava = errors.New("not a javaCallError")

// asJava returns err as a *javaCallError.
func asJava(err error) (*javaCallError, error) {
	var je *javaCallError
	if errors.As(err, &je) {
		return je, nil
	}
	return nil, fmt.Errorf("%w: %v", errNotJava, err)
}
