package main

import (
	"crypto/tls"

	"github.com/breeze-mesh/breeze/controlplane"
)

// xdsSecurityFlags are the flags of the xDS server's transport security
// and client authentication, shared by breeze xds and breeze controller.
type xdsSecurityFlags struct {
	cert, key *string
	auth      *string
}

func addXDSSecurityFlags(f *cmdFlags, tokenSource string) *xdsSecurityFlags {
	return &xdsSecurityFlags{
		cert: f.String("xds-tls-cert", "", "serve xDS over TLS with this certificate `FILE` (PEM; read again at each handshake, so it may rotate in place)"),
		key:  f.String("xds-tls-key", "", "the private key `FILE` (PEM) of -xds-tls-cert"),
		auth: f.String("xds-auth", "none", "`MODE` of authenticating proxies: none, or token (each stream carries \"authorization: Bearer <token>\", checked "+tokenSource+"; needs -xds-tls-cert)"),
	}
}

// check validates the flags' combination.
func (s *xdsSecurityFlags) check(f *cmdFlags) error {
	if (*s.cert == "") != (*s.key == "") {
		return f.usageErrorf("-xds-tls-cert and -xds-tls-key go together: name both, or neither for plaintext")
	}
	switch *s.auth {
	case "none":
	case "token":
		if *s.cert == "" {
			return f.usageErrorf("-xds-auth token needs -xds-tls-cert and -xds-tls-key: a token must not travel in clear")
		}
	default:
		return f.usageErrorf("-xds-auth %q: want none or token", *s.auth)
	}
	return nil
}

// tls is the server's TLS config, nil for plaintext.
func (s *xdsSecurityFlags) tls() (*tls.Config, error) {
	if *s.cert == "" {
		return nil, nil
	}
	return controlplane.ServerTLS(*s.cert, *s.key)
}
