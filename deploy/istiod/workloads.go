package istiod

import (
	"fmt"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// docSeparator is a YAML stream's document separator line.
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// WorkloadsOf is a Workload for each Pod among Kubernetes objects (a YAML
// stream): its name, namespace ("default" when unset), labels and
// status.podIP, which istiod finds it by. A Pod without an IP is an error:
// istiod would give its sidecar no inbound chains.
func WorkloadsOf(kubernetes string) ([]Workload, error) {
	var out []Workload
	for i, doc := range docSeparator.Split(kubernetes, -1) {
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string            `json:"name"`
				Namespace string            `json:"namespace"`
				Labels    map[string]string `json:"labels"`
			} `json:"metadata"`
			Status struct {
				PodIP string `json:"podIP"`
			} `json:"status"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if obj.Kind != "Pod" {
			continue
		}
		m := obj.Metadata
		if m.Namespace == "" {
			m.Namespace = "default"
		}
		if strings.TrimSpace(obj.Status.PodIP) == "" {
			return nil, fmt.Errorf("document %d: Pod %s/%s has no status.podIP", i, m.Namespace, m.Name)
		}
		out = append(out, Workload{Name: m.Name, Namespace: m.Namespace, IP: obj.Status.PodIP, Labels: m.Labels})
	}
	return out, nil
}
