package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgerrcode"
)

// Client certificates as login identities (listen.tls.client_cert_roles).
//
// With client_ca_file the TLS handshake already requires a certificate that
// chains to that CA (and has the clientAuth usage). With client_cert_roles
// the certificate is also the identity: the startup user must be a role
// that one of the certificate's identities maps to, else the login is
// refused with 28000, as PostgreSQL's own cert method refuses a user name
// its ident map does not allow. Identities are written TYPE:value:
//
//	CN:app1                  the subject's common name (a subject with
//	                         several CNs matches no CN: key)
//	DN:CN=app1,O=Acme        the whole subject, RFC 4514 as Go and
//	                         `openssl x509 -noout -subject -nameopt RFC2253`
//	                         print it
//	DNS:app1.internal        a subjectAltName DNS name (case-insensitive)
//	URI:spiffe://acme/app1   a subjectAltName URI
//	email:app1@acme.example  a subjectAltName e-mail address
//	IP:10.0.0.7              a subjectAltName IP address
//
// How the upstream login works: the proxy cannot prove to PostgreSQL who
// the client is, and has no password for the role. It presents its own
// client certificate (upstream.tls.cert_file) on the upstream connection of
// such a session, and only of such a session, with the mapped role as the
// startup user. PostgreSQL trusts that certificate for exactly the roles
// the DBA lists: `hostssl ... <roles> <proxy address> cert map=phiproxy`
// in pg_hba.conf and `phiproxy <proxy certificate CN> <role>` lines in
// pg_ident.conf. Password logins never present it, so claiming a mapped
// role's name without the mapped certificate gets no further than the
// server's password check.

// certRoleMap maps certificate identities to roles; built once, read-only.
type certRoleMap struct {
	byIdentity map[string]string // normalized "TYPE:value" → role
}

// certIdentityTypes are the key prefixes, with whether the value is
// compared case-insensitively.
var certIdentityTypes = map[string]bool{"CN": false, "DN": false, "DNS": true, "URI": false, "email": false, "IP": false}

// parseCertRoles checks and normalizes listen.tls.client_cert_roles.
func parseCertRoles(m map[string]string) (*certRoleMap, error) {
	out := &certRoleMap{byIdentity: make(map[string]string, len(m))}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		role := m[k]
		typ, v, ok := strings.Cut(k, ":")
		if _, known := certIdentityTypes[typ]; !ok || !known {
			hint := ""
			if strings.HasPrefix(k, "CN=") {
				hint = fmt.Sprintf(" (for a common name write %q, for a whole subject %q)", "CN:"+k[3:], "DN:"+k)
			}
			return nil, fmt.Errorf("%q: want CN:, DN:, DNS:, URI:, email: or IP: and a value%s", k, hint)
		}
		if v == "" || role == "" {
			return nil, fmt.Errorf("%q: identity and role must not be empty", k)
		}
		if typ == "IP" {
			ip := net.ParseIP(v)
			if ip == nil {
				return nil, fmt.Errorf("%q: not an IP address", k)
			}
			v = ip.String()
		}
		id := identityKey(typ, v)
		if prev, dup := out.byIdentity[id]; dup && prev != role {
			return nil, fmt.Errorf("%q: maps to both %q and %q", k, prev, role)
		}
		out.byIdentity[id] = role
	}
	return out, nil
}

func identityKey(typ, v string) string {
	if certIdentityTypes[typ] {
		v = strings.ToLower(v)
	}
	return typ + ":" + v
}

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// identities lists a certificate's identities in the map's key form.
func certIdentities(cert *x509.Certificate) []string {
	var ids []string
	var cns []string
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidCommonName) {
			if s, ok := atv.Value.(string); ok {
				cns = append(cns, s)
			}
		}
	}
	if len(cns) == 1 {
		ids = append(ids, identityKey("CN", cns[0]))
	}
	ids = append(ids, identityKey("DN", cert.Subject.String()))
	for _, d := range cert.DNSNames {
		ids = append(ids, identityKey("DNS", d))
	}
	for _, u := range cert.URIs {
		ids = append(ids, identityKey("URI", u.String()))
	}
	for _, e := range cert.EmailAddresses {
		ids = append(ids, identityKey("email", e))
	}
	for _, ip := range cert.IPAddresses {
		ids = append(ids, identityKey("IP", ip.String()))
	}
	return ids
}

// roles returns the roles cert maps to, sorted, without duplicates.
func (m *certRoleMap) roles(cert *x509.Certificate) []string {
	var roles []string
	for _, id := range certIdentities(cert) {
		if r, ok := m.byIdentity[id]; ok && !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	sort.Strings(roles)
	return roles
}

// clientCertLogin decides, after the startup message, whether the session
// logs in by its client certificate: false when client_cert_roles is not
// configured; true when the certificate maps to the startup user; a
// *LoginError (28000, PostgreSQL's words for a failed cert login)
// otherwise.
func (s *Session) clientCertLogin() (bool, error) {
	m := s.srv.auth.certRoles.Load()
	if m == nil {
		return false, nil
	}
	var cert *x509.Certificate
	if tc, ok := s.client.(*tls.Conn); ok {
		if peer := tc.ConnectionState().PeerCertificates; len(peer) > 0 {
			cert = peer[0]
		}
	}
	if cert == nil {
		// A plaintext client (allow_plaintext): no certificate at all.
		return false, &LoginError{Code: pgerrcode.InvalidAuthorizationSpecification, Message: "connection requires a valid client certificate"}
	}
	s.log = s.log.With("client_cert", cert.Subject.String())
	roles := m.roles(cert)
	user := roleName(s.user)
	if !slices.Contains(roles, user) {
		if len(roles) == 0 {
			s.log.Info("client certificate maps to no role; login refused")
		} else {
			s.log.Info("client certificate does not map to the requested role; login refused", "mapped_roles", roles)
		}
		return false, &LoginError{Code: pgerrcode.InvalidAuthorizationSpecification,
			Message: fmt.Sprintf("certificate authentication failed for user %q", user)}
	}
	return true, nil
}
