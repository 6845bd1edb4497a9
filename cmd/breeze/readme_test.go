package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestReadmeShowsDemoConfig: the root README shows the embedded demo config
// in full, byte for byte, in the first YAML block after its link to
// cmd/breeze/demo.yaml, so that what a reader sees is what `breeze run` and
// `make demo` run.
func TestReadmeShowsDemoConfig(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	shown, err := demoBlock(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	if d := firstDiff(shown, string(demoConfig)); d != "" {
		t.Errorf("README.md's demo config is not cmd/breeze/demo.yaml (the config `breeze run` embeds): %s; copy the file into the README's block", d)
	}
}

const demoLink = "(cmd/breeze/demo.yaml)"

// demoBlock is the body of the first ```yaml block after demoLink.
func demoBlock(readme string) (string, error) {
	_, after, ok := strings.Cut(readme, demoLink)
	if !ok {
		return "", fmt.Errorf("README.md does not link %s", demoLink)
	}
	_, body, ok := strings.Cut(after, "```yaml\n")
	if !ok {
		return "", fmt.Errorf("README.md: no ```yaml block after %s", demoLink)
	}
	// The closing fence starts a line.
	body, _, ok = strings.Cut(body, "\n```")
	if !ok {
		return "", fmt.Errorf("README.md: the ```yaml block after %s is not closed", demoLink)
	}
	return body + "\n", nil
}

// firstDiff names the first line where readme and file differ; "" if they
// are equal.
func firstDiff(readme, file string) string {
	if readme == file {
		return ""
	}
	r, f := strings.Split(readme, "\n"), strings.Split(file, "\n")
	line := func(lines []string, i int) string {
		if i < len(lines) {
			return lines[i]
		}
		return ""
	}
	i := 0
	for i < len(r) && i < len(f) && r[i] == f[i] {
		i++
	}
	return fmt.Sprintf("line %d of the block is %q, of the file %q", i+1, line(r, i), line(f, i))
}
