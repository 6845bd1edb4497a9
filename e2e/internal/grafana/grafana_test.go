package grafana

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExpandSpellings(t *testing.T) {
	got, err := Expand(`sum(irate(x{a=~"$qrep", b="${service}", c="[[ns]]", d="${service:raw}"}[$__rate_interval])) / $__interval`,
		map[string]string{"qrep": "source|destination", "service": "s", "ns": "n", "__rate_interval": "8s", "__interval": "2s"})
	want := `sum(irate(x{a=~"source|destination", b="s", c="n", d="s"}[8s])) / 2s`
	if err != nil || got != want {
		t.Fatalf("got %q, %v\nwant %q", got, err, want)
	}
}

func TestExpandMissing(t *testing.T) {
	_, err := Expand(`x{a="$workload", b="$namespace"}[$__rate_interval]`, map[string]string{"workload": "w"})
	if err == nil || !strings.Contains(err.Error(), "no value for $__rate_interval, $namespace") {
		t.Fatalf("got %v, want the two missing variables named", err)
	}
}

func TestRateInterval(t *testing.T) {
	for _, tc := range []struct{ interval, scrape, want time.Duration }{
		{2 * time.Second, 2 * time.Second, 8 * time.Second},
		{30 * time.Second, 2 * time.Second, 32 * time.Second},
	} {
		if got := RateInterval(tc.interval, tc.scrape); got != tc.want {
			t.Errorf("RateInterval(%s, %s) = %s, want %s", tc.interval, tc.scrape, got, tc.want)
		}
	}
	if Duration(8*time.Second) != "8s" || Duration(1500*time.Millisecond) != "1500ms" {
		t.Errorf("Duration: %s %s", Duration(8*time.Second), Duration(1500*time.Millisecond))
	}
}

// Istio's dashboards, as shipped in testdata: the panels the e2e test runs
// are there, under these titles, and every variable they use is one the
// dashboard declares or one of Grafana's own.
func TestIstioDashboardsPanels(t *testing.T) {
	for file, panels := range map[string][]string{
		"istio-service-dashboard.json": {"Client Request Volume", "Client Success Rate (non-5xx responses)", "Client Request Duration",
			"Server Request Volume", "Server Success Rate (non-5xx responses)", "Server Request Duration"},
		"istio-workload-dashboard.json": {"Incoming Request Volume", "Incoming Success Rate (non-5xx responses)", "Request Duration",
			"Outgoing Requests By Destination And Response Code", "Outgoing Success Rate (non-5xx responses) By Destination", "Outgoing Request Duration By Destination"},
	} {
		d, err := Load(filepath.Join("..", "..", "testdata", "dashboards", file))
		if err != nil {
			t.Fatal(err)
		}
		vars := map[string]string{"__rate_interval": "8s", "__interval": "2s"}
		for _, v := range d.Variables {
			vars[v] = "x"
		}
		for _, title := range panels {
			p, err := d.Panel(title)
			if err != nil {
				t.Error(err)
				continue
			}
			for _, tg := range p.Targets {
				if _, err := Expand(tg.Expr, vars); err != nil {
					t.Errorf("%s: %v", file, err)
				}
			}
		}
	}
}

// As Grafana's Prometheus data source writes a multi-value selection into
// a query: regex characters escaped with a PromQL-escaped backslash.
func TestMultiValue(t *testing.T) {
	if got, want := MultiValue("org.breeze.Greeter", "echo.backend.svc.cluster.local"), `(org\\.breeze\\.Greeter|echo\\.backend\\.svc\\.cluster\\.local)`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got, want := MultiValue(`a\b`), `a\\\\b`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
