package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// TLS secures the connection to the xDS server: the server's certificate
// must chain to a CA of CAFile and be valid for ServerName.
type TLS struct {
	// CAFile is a PEM bundle of the CAs trusted for the server's
	// certificate (in Kubernetes, a mounted ConfigMap or Secret).
	CAFile string
	// ServerName is checked against the certificate; unset means the
	// host of Address.
	ServerName string
}

// transport returns the dial options for opts' transport security and
// identity.
func transport(opts Options) ([]grpc.DialOption, error) {
	if opts.TLS == nil {
		if opts.TokenFile != "" {
			return nil, errors.New("token_file needs tls: the token must not travel in clear")
		}
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	if opts.TLS.CAFile == "" {
		return nil, errors.New("tls: ca_file is required (the CA bundle that signs the xDS server's certificate)")
	}
	pem, err := os.ReadFile(opts.TLS.CAFile)
	if err != nil {
		return nil, fmt.Errorf("tls ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls ca_file %q: no PEM certificate in it", opts.TLS.CAFile)
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: opts.TLS.ServerName, MinVersion: tls.VersionTLS12,
	}))}
	if opts.TokenFile != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(tokenFile(opts.TokenFile)))
	}
	return dial, nil
}

// tokenFile sends the token in a file as "authorization: Bearer". gRPC
// asks for it at the start of each RPC, that is of each ADS stream, so a
// reconnect reads the file again: Kubernetes rotates projected
// service-account tokens in place.
type tokenFile string

func (f tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("xds token_file: %w", err)
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return nil, fmt.Errorf("xds token_file %q is empty", string(f))
	}
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (tokenFile) RequireTransportSecurity() bool { return true }
