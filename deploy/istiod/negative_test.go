package istiod

import (
	"fmt"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/deploy"
)

// recorder keeps the errors a check reports instead of failing the test;
// anything fatal still stops it.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// CheckPlacement must fail when the EnvoyFilters put Breeze anywhere else,
// or anything else, than the service descriptions say: each case renders
// EnvoyFilters from a description changed in one field and checks them
// against the unchanged one.
func TestCheckPlacementCatchesMisplacedBreeze(t *testing.T) {
	in := Inputs{Kubernetes: readFile(t, "testdata/mesh.yaml")}
	for _, tc := range []struct {
		name   string
		change func(s *deploy.Service)
		want   string // in one of the errors
	}{
		{"another client selected", func(s *deploy.Service) { s.Clients = map[string]string{"app": "other"} }, "other-0.demo (10.0.0.5) [push]: listener 10.96.20.80_20880"},
		{"inbound on another port", func(s *deploy.Service) { s.TargetPort = 20881 }, "greeter-0.demo (10.0.0.2) [ads]: listener virtualInbound"},
		{"outbound plainText without mTLS", func(s *deploy.Service) { s.UpstreamTLS = deploy.UpstreamPlaintext }, "consumer-0.demo (10.0.0.1) [push]: cluster plainText"},
		{"another request timeout", func(s *deploy.Service) { s.Outbound.RequestTimeout.Seconds++ }, "consumer-0.demo (10.0.0.1) [ads]: listener 10.96.20.80_20880"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss := services(t, "testdata/greeter.yaml")
			changed := services(t, "testdata/greeter.yaml")[0]
			tc.change(changed)
			r := &recorder{TB: t}
			CheckPlacement(r, in, render(t, changed), []Workload{consumer, greeterPod, otherClient}, ss)
			found := false
			for _, e := range r.errs {
				found = found || strings.Contains(e, tc.want)
			}
			if !found {
				t.Errorf("CheckPlacement reported %d errors, none about %q:\n%s", len(r.errs), tc.want, strings.Join(r.errs, "\n"))
			}
		})
	}
}
