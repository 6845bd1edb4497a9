package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Environment knobs.
const (
	// EnvBreezeBin names a prebuilt proxy binary to use instead of building
	// github.com/breeze-mesh/breeze/cmd/breeze.
	EnvBreezeBin = "BREEZE_BIN"
	// EnvRaceProxy=1 builds the proxy with the race detector.
	EnvRaceProxy = "BREEZE_E2E_RACE_PROXY"
)

// BreezePackage is the proxy's main package.
const BreezePackage = "github.com/breeze-mesh/breeze/cmd/breeze"

var (
	binDir     string
	binDirOnce sync.Once
	binDirErr  error

	peersOnce sync.Once
	peersErr  error

	thriftOnce sync.Once
	thriftErr  error

	breezeOnce sync.Once
	breezeBin  string
	breezeErr  error
)

// e2eDir is the e2e module's directory; RepoDir the root module's.
func e2eDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// RepoDir is the Breeze repository root (the root module).
func RepoDir() string { return filepath.Dir(e2eDir()) }

func dir() (string, error) {
	binDirOnce.Do(func() { binDir, binDirErr = os.MkdirTemp("", "breeze-e2e-bin-") })
	return binDir, binDirErr
}

// Cleanup removes the built binaries; call it from TestMain after m.Run.
func Cleanup() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}

// Main runs a package's tests, then Cleanup: a test package's TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

func goBuild(workdir, out, pkg string, extra ...string) error {
	args := append([]string{"build", "-o", out}, extra...)
	args = append(args, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = workdir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s (in %s): %v\n%s", pkg, workdir, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// ProviderBin and ConsumerBin are the built dubbo-go peers.
func ProviderBin(t testing.TB) string { buildPeers(t); return filepath.Join(binDir, "provider") }
func ConsumerBin(t testing.TB) string { buildPeers(t); return filepath.Join(binDir, "consumer") }

func buildPeers(t testing.TB) {
	t.Helper()
	buildPeersOnce()
	if peersErr != nil {
		t.Fatalf("build test peers: %v", peersErr)
	}
}

func buildPeersOnce() {
	peersOnce.Do(func() {
		d, err := dir()
		if err != nil {
			peersErr = err
			return
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, name := range []string{"provider", "consumer"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = goBuild(e2eDir(), filepath.Join(d, name), "./cmd/"+name)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && peersErr == nil {
				peersErr = err
			}
		}
	})
}

// ThriftPeerBin is the built Thrift peer (thrift/cmd/thriftpeer: Apache
// Thrift Go and Kitex servers and clients).
func ThriftPeerBin(t testing.TB) string {
	t.Helper()
	buildThriftOnce()
	if thriftErr != nil {
		t.Fatalf("build the Thrift peer: %v", thriftErr)
	}
	return filepath.Join(binDir, "thriftpeer")
}

func buildThriftOnce() {
	thriftOnce.Do(func() {
		d, err := dir()
		if err != nil {
			thriftErr = err
			return
		}
		thriftErr = goBuild(e2eDir(), filepath.Join(d, "thriftpeer"), "./thrift/cmd/thriftpeer")
	})
}

// BreezeBin returns the proxy binary, building it on first use. A test that
// needs the proxy is skipped while it cannot be built (the message says why),
// unless BREEZE_E2E_REQUIRE_PROXY=1.
func BreezeBin(t testing.TB) string {
	t.Helper()
	buildBreezeOnce()
	if breezeErr != nil {
		t.Fatalf("build the Breeze proxy: %v", breezeErr)
	}
	return breezeBin
}

func buildBreezeOnce() {
	breezeOnce.Do(func() {
		if bin := os.Getenv(EnvBreezeBin); bin != "" {
			if _, err := os.Stat(bin); err != nil {
				breezeErr = fmt.Errorf("%s=%s: %w", EnvBreezeBin, bin, err)
			}
			breezeBin = bin
			return
		}
		d, err := dir()
		if err != nil {
			breezeErr = err
			return
		}
		var extra []string
		if os.Getenv(EnvRaceProxy) == "1" {
			extra = append(extra, "-race")
		}
		breezeBin = filepath.Join(d, "breeze")
		breezeErr = goBuild(RepoDir(), breezeBin, BreezePackage, extra...)
	})
}

// BuildAll builds the dubbo-go peers, the Thrift peer and the proxy side by
// side (each still once per test binary): a test that runs all of them
// waits for the slowest build rather than for the sum.
func BuildAll(t testing.TB) {
	t.Helper()
	var wg sync.WaitGroup
	for _, build := range []func(){buildPeersOnce, buildThriftOnce, buildBreezeOnce} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			build()
		}()
	}
	wg.Wait()
	buildPeers(t)
	ThriftPeerBin(t)
	BreezeBin(t)
}
