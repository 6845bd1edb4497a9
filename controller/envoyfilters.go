package controller

import (
	"errors"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

var errXDSAddress = errors.New("controller: XDSAddress is required")

// ServiceEnvoyFilters is what the controller writes for one Service, with
// the EndpointSlices that resolve its named target ports: the EnvoyFilters
// (labelled as the reconciler labels them, without owner references, which
// only the API server gives meaning to) and the messages of the Events it
// would send. It runs the reconciler's own pure computation, so that
// deploy/istiod can put the controller's EnvoyFilters, rather than a
// re-rendering of them, through istiod's config generation.
func ServiceEnvoyFilters(svc *corev1.Service, slices []discoveryv1.EndpointSlice, opts Options) ([]*unstructured.Unstructured, []string, error) {
	s, err := standaloneSettings(opts)
	if err != nil {
		return nil, nil, err
	}
	m := &mesh{services: []corev1.Service{*svc}, endpointSlices: slices}
	res := m.compute(s, true)
	var filters []*unstructured.Unstructured
	for _, f := range res.filters {
		filters = append(filters, f.obj)
	}
	var messages []string
	for _, is := range res.issues {
		messages = append(messages, is.reason+": "+is.message)
	}
	return filters, messages, nil
}
