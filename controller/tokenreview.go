package controller

import (
	"context"
	"fmt"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"

	"github.com/breeze-mesh/breeze/controlplane"
)

// TokenReview (a controlplane.Authenticator) authenticates a Kubernetes service-account token with the API
// server's TokenReview API, the way istiod authenticates istio-agent.
type TokenReview struct {
	Reviews authnclient.TokenReviewInterface
	// Audiences the token must be issued for (e.g. "breeze"); empty means
	// the API server's own audience.
	Audiences []string
}

func (a TokenReview) Authenticate(ctx context.Context, token string) (string, error) {
	r, err := a.Reviews.Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: a.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenReview: %w", err)
	}
	if !r.Status.Authenticated {
		reason := r.Status.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return "", &controlplane.RefusedError{Cause: controlplane.RefusedInvalidToken, Reason: "TokenReview: " + reason}
	}
	return r.Status.User.Username, nil
}
