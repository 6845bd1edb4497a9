package main

import (
	"log/slog"
	"testing"

	"github.com/breeze-mesh/breeze/host"
)

// breeze run puts an upstream connection on its caller's worker unless
// $BREEZE_HOST_UPSTREAM_WORKER says otherwise.
func TestRunnerHostOptions(t *testing.T) {
	t.Setenv(host.UpstreamWorkerEnv, "")
	if got := runnerHostOptions(slog.Default()).UpstreamWorker; got != host.UpstreamWorkerCaller {
		t.Errorf("breeze run's upstream worker %q, want %q", got, host.UpstreamWorkerCaller)
	}
	t.Setenv(host.UpstreamWorkerEnv, host.UpstreamWorkerRoundRobin)
	if got := runnerHostOptions(slog.Default()).UpstreamWorker; got != "" {
		t.Errorf("with $%s set, breeze run's upstream worker %q, want it left to the host (the variable)", host.UpstreamWorkerEnv, got)
	}
}
