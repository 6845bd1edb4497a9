// Package grafana reads the PromQL out of Grafana dashboard JSON files and
// fills in their template variables, the way Grafana does before it sends a
// panel's query to Prometheus, so that a test can run a dashboard's own
// queries against a real Prometheus.
package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Dashboard is the part of a dashboard file the tests read.
type Dashboard struct {
	Title  string
	Panels []Panel
	// Variables are the names of its template variables.
	Variables []string
}

// Panel is one panel with queries (rows are flattened away).
type Panel struct {
	ID      int
	Title   string
	Targets []Target
}

// Target is one query of a panel.
type Target struct {
	RefID        string
	Expr         string
	LegendFormat string
}

type rawPanel struct {
	ID      int        `json:"id"`
	Title   string     `json:"title"`
	Type    string     `json:"type"`
	Targets []Target   `json:"targets"`
	Panels  []rawPanel `json:"panels"`
}

// Load reads a dashboard JSON file.
func Load(file string) (*Dashboard, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

// Parse reads dashboard JSON.
func Parse(b []byte) (*Dashboard, error) {
	var raw struct {
		Title      string     `json:"title"`
		Panels     []rawPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	d := &Dashboard{Title: raw.Title}
	var walk func([]rawPanel)
	walk = func(ps []rawPanel) {
		for _, p := range ps {
			// A collapsed row keeps its panels inside it.
			walk(p.Panels)
			if p.Type == "row" || len(p.Targets) == 0 {
				continue
			}
			d.Panels = append(d.Panels, Panel{ID: p.ID, Title: p.Title, Targets: p.Targets})
		}
	}
	walk(raw.Panels)
	for _, v := range raw.Templating.List {
		d.Variables = append(d.Variables, v.Name)
	}
	return d, nil
}

// Panel returns the panel titled title; it is an error if there is none or
// more than one.
func (d *Dashboard) Panel(title string) (Panel, error) {
	var found []Panel
	for _, p := range d.Panels {
		if p.Title == title {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		var titles []string
		for _, p := range d.Panels {
			titles = append(titles, p.Title)
		}
		return Panel{}, fmt.Errorf("%s: %d panels titled %q (panels: %q)", d.Title, len(found), title, titles)
	}
	return found[0], nil
}

// Target returns the panel's query with refID.
func (p Panel) Target(refID string) (Target, error) {
	for _, t := range p.Targets {
		if t.RefID == refID {
			return t, nil
		}
	}
	return Target{}, fmt.Errorf("panel %q has no query %s", p.Title, refID)
}

// Query is the panel's query refID with vars filled in (see Expand).
func (d *Dashboard) Query(title, refID string, vars map[string]string) (string, error) {
	p, err := d.Panel(title)
	if err != nil {
		return "", err
	}
	t, err := p.Target(refID)
	if err != nil {
		return "", err
	}
	q, err := Expand(t.Expr, vars)
	if err != nil {
		return "", fmt.Errorf("%s, %q %s: %w", d.Title, title, refID, err)
	}
	return q, nil
}

// variable matches Grafana's three spellings: $name, ${name} (optionally
// ${name:format}) and [[name]].
var variable = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)`)

// Expand replaces every variable of expr with its value in vars, as Grafana
// interpolates a Prometheus query: the value goes in as given (a
// multi-value selection is given as Grafana writes it, "a|b"). A variable
// missing from vars is an error: an unfilled variable would reach
// Prometheus as text and match nothing.
func Expand(expr string, vars map[string]string) (string, error) {
	missing := map[string]bool{}
	out := variable.ReplaceAllStringFunc(expr, func(m string) string {
		sub := variable.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		v, ok := vars[name]
		if !ok {
			missing[name] = true
			return m
		}
		return v
	})
	if len(missing) > 0 {
		names := make([]string, 0, len(missing))
		for n := range missing {
			names = append(names, "$"+n)
		}
		sort.Strings(names)
		return "", fmt.Errorf("no value for %s in %s", strings.Join(names, ", "), expr)
	}
	return out, nil
}

// RateInterval is Grafana's $__rate_interval for a data source whose scrape
// interval is scrape, on a panel whose $__interval is interval: the larger
// of interval+scrape and 4×scrape, so that a rate always spans several
// samples.
func RateInterval(interval, scrape time.Duration) time.Duration {
	return max(interval+scrape, 4*scrape)
}

// Duration writes d as PromQL range durations are written: "8s", "1500ms".
func Duration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

// regexMeta are the characters Grafana's Prometheus data source escapes in
// a multi-value variable's values.
const regexMeta = `$^*{}[]'+?.()|`

// MultiValue is how Grafana's Prometheus data source fills in a variable
// with several values selected (or All without an all value): each value
// with its regular expression characters escaped for a PromQL string
// (a backslash written as two), joined as (a|b). One value is escaped the
// same way, without the parentheses.
func MultiValue(values ...string) string {
	esc := make([]string, len(values))
	for i, v := range values {
		var b strings.Builder
		for _, r := range v {
			switch {
			case r == '\\':
				b.WriteString(`\\\\`)
			case strings.ContainsRune(regexMeta, r):
				b.WriteString(`\\`)
				b.WriteRune(r)
			default:
				b.WriteRune(r)
			}
		}
		esc[i] = b.String()
	}
	if len(esc) == 1 {
		return esc[0]
	}
	return "(" + strings.Join(esc, "|") + ")"
}
