package main

import (
	"fmt"
	"os"

	"github.com/breeze-mesh/breeze/deploy"
)

const validateUsage = `Checks Envoy bootstraps, Istio EnvoyFilters (and the sidecar annotations of
workloads in the same manifests), Breeze runner configs, plugin_configs and
service descriptions: with Envoy 1.36's and Istio 1.28's own API types and
validation rules, and Breeze's own parser and rules. The EnvoyFilters of all
FILEs are also checked together. Errors name the field.
`

func validate(args []string) error {
	fs := newFlags("validate", "breeze validate FILE...", validateUsage)
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		return fs.usageErrorf("no files to check: name them, as in breeze validate envoy.yaml")
	}
	var files []deploy.File
	for _, name := range args {
		data, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		files = append(files, deploy.File{Name: name, Data: data})
	}
	f := deploy.Check(files...)
	for _, w := range f.Warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	for _, e := range f.Errors {
		fmt.Fprintln(os.Stderr, "error:", e)
	}
	if len(f.Errors) > 0 {
		return fmt.Errorf("validate: %d error(s)", len(f.Errors))
	}
	for _, file := range files {
		fmt.Printf("%s: ok (%s)\n", file.Name, deploy.Detect(file.Data))
	}
	return nil
}
