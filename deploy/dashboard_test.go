package deploy

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

const breezeDashboard = envoyConfigDir + "/grafana/breeze-dashboard.json"

// dashboard is the part of a Grafana dashboard these checks read.
type dashboard struct {
	Title      string
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// definedMetrics are the names of the Prometheus series Breeze defines: the
// "breeze_..." string literals of its non-test Go files (every metric is
// declared with its name as one).
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	lit := regexp.MustCompile(`"(breeze_[a-z0-9_]+)"`)
	names := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && (d.Name() == "testdata" || d.Name() == "e2e" || d.Name() == "bench" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// Breeze's Grafana dashboard: every query names series Breeze defines (a
// renamed metric would leave a panel empty), uses only variables the
// dashboard declares or Grafana's own, and every panel reads the data
// source variable. The e2e test (TestPrometheusIstioAndBreezeSeries) runs
// the queries against a real Prometheus.
func TestShippedBreezeDashboard(t *testing.T) {
	var d dashboard
	if err := json.Unmarshal(readFile(t, breezeDashboard), &d); err != nil {
		t.Fatalf("%s: %v", breezeDashboard, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both needed (Grafana links dashboards by uid)", d.UID, d.Title)
	}
	vars := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] {
		t.Errorf("no datasource variable: the dashboard would be bound to one Prometheus")
	}
	defined := definedMetrics(t)
	if !defined["breeze_requests_total"] {
		t.Fatalf("found no metric definitions (%d names): the scan is broken", len(defined))
	}
	series := regexp.MustCompile(`\bbreeze_[a-z0-9_]+`)
	variable := regexp.MustCompile(`\$\{?(\w+)`)
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] {
				t.Errorf("panel %q: refId %s twice", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			for _, name := range series.FindAllString(tg.Expr, -1) {
				base := name
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if b, ok := strings.CutSuffix(name, suffix); ok && defined[b] {
						base = b
					}
				}
				if !defined[base] {
					t.Errorf("panel %q %s: %s is no series of Breeze's", p.Title, tg.RefID, name)
				}
				used[base] = true
			}
			for _, m := range variable.FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[m[1]] {
					t.Errorf("panel %q %s: variable $%s is not declared", p.Title, tg.RefID, m[1])
				}
			}
		}
	}
	// Every data-plane series has a panel. (Left out on purpose: none
	// today; a new metric needs a panel or a reason here.)
	var missing []string
	for name := range defined {
		if !used[name] && !slices.Contains(withoutPanel, name) {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("series without a panel in %s: %v", breezeDashboard, missing)
	}
}

// withoutPanel are Breeze series the dashboard shows on purpose nowhere.
var withoutPanel = []string{
	// Probes before writes to an upstream silent for too long: a detail of
	// the idle-close race, read with the upstream connection events.
	"breeze_upstream_probes_total",
	// The control plane's own series (breeze controller, breeze xds
	// -metrics and its registries), served by those processes, not by the
	// plugin whose dashboard this is.
	"breeze_controller_envoyfilter_writes_total",
	"breeze_controller_metarouter_status_writes_total",
	"breeze_controller_snapshots_total",
	"breeze_registry_instances",
	"breeze_registry_serviceentry_conflicts_total",
	"breeze_registry_serviceentry_writes_total",
	"breeze_registry_stale",
	"breeze_registry_updates_total",
	"breeze_xds_problems",
	"breeze_xds_resources",
	"breeze_xds_refused_streams_total",
}

// The compose demo's Prometheus config passes Prometheus's own check
// (promtool, from Debian's prometheus package that `make test-deps`
// installs): the scrape jobs checkPrometheus reads are ones Prometheus runs.
func TestShippedPrometheusConfigPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("no promtool on PATH (%v): `make test-deps` installs Debian's prometheus package, which has it", err)
	}
	out, err := exec.Command(promtool, "check", "config", filepath.Join(envoyConfigDir, "prometheus.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}
