package proxy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCertRoles(t *testing.T) {
	m, err := parseCertRoles(map[string]string{
		"CN:app1":                  "app_role",
		"DN:CN=ops,OU=dba,O=Acme":  "ops_role",
		"DNS:Batch.Internal":       "batch_role",
		"URI:spiffe://acme/report": "report_role",
		"email:me@acme.example":    "me_role",
		"IP:10.0.0.7":              "ip_role",
	})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://acme/report")
	cn := func(names ...string) []pkix.AttributeTypeAndValue {
		var out []pkix.AttributeTypeAndValue
		for _, n := range names {
			out = append(out, pkix.AttributeTypeAndValue{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: n})
		}
		return out
	}
	for _, c := range []struct {
		name string
		cert *x509.Certificate
		want []string
	}{
		{"CN", &x509.Certificate{Subject: pkix.Name{CommonName: "app1", Organization: []string{"Acme"}, Names: cn("app1")}}, []string{"app_role"}},
		{"CN is case-sensitive", &x509.Certificate{Subject: pkix.Name{CommonName: "APP1", Names: cn("APP1")}}, nil},
		{"two CNs match no CN key", &x509.Certificate{Subject: pkix.Name{CommonName: "app1", Names: cn("evil", "app1")}}, nil},
		{"DN", &x509.Certificate{Subject: pkix.Name{CommonName: "ops", OrganizationalUnit: []string{"dba"}, Organization: []string{"Acme"}, Names: cn("ops")}}, []string{"ops_role"}},
		{"DN must be whole", &x509.Certificate{Subject: pkix.Name{CommonName: "ops", Organization: []string{"Acme"}, Names: cn("ops")}}, nil},
		{"DNS, case-insensitive", &x509.Certificate{DNSNames: []string{"batch.internal"}}, []string{"batch_role"}},
		{"URI", &x509.Certificate{URIs: []*url.URL{u}}, []string{"report_role"}},
		{"email", &x509.Certificate{EmailAddresses: []string{"me@acme.example"}}, []string{"me_role"}},
		{"IP", &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("10.0.0.7")}}, []string{"ip_role"}},
		{"several", &x509.Certificate{Subject: pkix.Name{CommonName: "app1", Names: cn("app1")}, DNSNames: []string{"batch.internal", "other"}}, []string{"app_role", "batch_role"}},
		{"unmapped", &x509.Certificate{Subject: pkix.Name{CommonName: "nobody", Names: cn("nobody")}}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if diff := cmp.Diff(c.want, m.roles(c.cert)); diff != "" {
				t.Errorf("roles (-want +got):\n%s", diff)
			}
		})
	}

	for key, wantErr := range map[string]string{
		"CN=app1":    `for a common name write "CN:app1"`,
		"app1":       "want CN:",
		"CN:":        "must not be empty",
		"IP:nope":    "not an IP",
		"serial:123": "want CN:",
	} {
		_, err := parseCertRoles(map[string]string{key: "r"})
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("parseCertRoles(%q) = %v, want an error containing %q", key, err, wantErr)
		}
	}
	if _, err := parseCertRoles(map[string]string{"DNS:a.b": "r1", "DNS:A.B": "r2"}); err == nil {
		t.Error("one identity mapped to two roles accepted")
	}
	if _, err := parseCertRoles(map[string]string{"CN:x": ""}); err == nil {
		t.Error("empty role accepted")
	}
}
