package certs_test

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// A core device CA issues the broker's short-lived server certificate; devices verify it with the
// CA's pool, as they would with the CA file ggbroker gives them.
func Example() {
	ca, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "Example Core Device CA"})
	if err != nil {
		fmt.Println(err)
		return
	}
	leaf, err := ca.IssueServer(certs.ServerCertRequest{DNSNames: []string{"localhost"}, Validity: 7 * 24 * time.Hour})
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = leaf.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"})
	fmt.Println("verified:", err == nil, "valid for", time.Until(leaf.Leaf.NotAfter).Round(24*time.Hour))
	// Output: verified: true valid for 168h0m0s
}
