package schemas

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

const (
	root      = "../.."
	configDir = "../../envoy-config"
)

// parseDockerfile parses the Dockerfile with BuildKit's own parser and
// linter (the rules of `docker build --check`): any lint warning fails.
func parseDockerfile(t *testing.T) []instructions.Stage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile: %s", w.Short)
	}
	var lints []string
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
		lints = append(lints, fmt.Sprintf("%s: %s (%v)", rule, msg, loc))
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, l := range lints {
		t.Errorf("Dockerfile lint: %s", l)
	}
	return stages
}

func TestDockerfileParses(t *testing.T) {
	stages := parseDockerfile(t)
	var names []string
	for _, s := range stages {
		names = append(names, s.Name)
	}
	for _, want := range []string{"build-plugin", "build-peers", "demo-peers", "plugin", "istio-proxy", "envoy", "build-controller", "controller"} {
		if !slices.Contains(names, want) {
			t.Errorf("no stage %q in %v", want, names)
		}
	}
}

func loadCompose(abs string, data []byte) (*types.Project, error) {
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Content: data}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("breeze-demo", true)
		o.Profiles = []string{"*"}
	})
}

// A mistake in the compose file fails the schema, named.
func TestComposeSchemaRejectsMistakes(t *testing.T) {
	abs, err := filepath.Abs(filepath.Join(configDir, "docker-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ old, new, want string }{
		{"    depends_on: [envoy]\n    healthcheck:", "    depend_on: [envoy]\n    healthcheck:", "depend_on"},
		{"  network_mode: service:envoy", "  network_mode: [service:envoy]", "network_mode"},
		{"      interval: 1s", "      interval: often", "interval"},
	} {
		bad := strings.Replace(string(data), tc.old, tc.new, 1)
		if bad == string(data) {
			t.Fatalf("%q not in docker-compose.yaml", tc.old)
		}
		if _, err := loadCompose(abs, []byte(bad)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.new, err, tc.want)
		}
	}
}

// The compose file loads with Compose's own loader, which validates it
// against the Compose Specification's schema, and builds stages the
// Dockerfile has.
func TestComposeFileLoads(t *testing.T) {
	abs, err := filepath.Abs(filepath.Join(configDir, "docker-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		t.Fatal(err)
	}
	project, err := loadCompose(abs, data)
	if err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	stages := map[string]bool{}
	for _, s := range parseDockerfile(t) {
		stages[s.Name] = true
	}
	rootAbs, _ := filepath.Abs(root)
	for _, name := range []string{"envoy", "provider-v1", "provider-v2", "consumer", "prometheus"} {
		s, ok := project.Services[name]
		if !ok {
			t.Errorf("services.%s: missing", name)
			continue
		}
		if b := s.Build; b != nil {
			if !stages[b.Target] {
				t.Errorf("services.%s.build.target: %q is no stage of the Dockerfile", name, b.Target)
			}
			if b.Context != rootAbs {
				t.Errorf("services.%s.build.context: %q, want the repository %q", name, b.Context, rootAbs)
			}
		}
		if name != "envoy" && name != "prometheus" && s.NetworkMode != "service:envoy" {
			t.Errorf("services.%s.network_mode: %q, want service:envoy", name, s.NetworkMode)
		}
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind {
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("services.%s.volumes: %s: %v", name, v.Source, err)
				}
			}
		}
	}
	if !strings.Contains(strings.Join(project.Services["consumer"].Command, " "), "consumer -addr 127.0.0.1:") {
		t.Errorf("services.consumer.command: %q", project.Services["consumer"].Command)
	}
}
