package proxy

import "crypto/tls"

// Who is at the other end of a session, for an interceptor's own records
// (an audit log). Each is fixed once the login succeeded, so these may be
// called from NewSession on, by either direction.

// User is the role the client logged in as: the user of its startup
// message, which the server authenticated.
func (c *Conn) User() string { return c.s.user }

// Database is the database of the startup message (the user's name when
// the client named none, as PostgreSQL defaults it).
func (c *Conn) Database() string { return c.s.database }

// RemoteAddr is the client's address (host:port) as the listener accepted
// the connection.
func (c *Conn) RemoteAddr() string { return c.s.raw.RemoteAddr().String() }

// ClientCertSubject is the subject of the client's TLS certificate, as Go
// prints a distinguished name (RFC 4514: "CN=app1,O=Acme"), or "" when the
// client presented none. Certificates are only requested, and then
// verified against listen.tls.client_ca_file, when that file is set: a
// subject here is always a verified one.
func (c *Conn) ClientCertSubject() string {
	tc, ok := c.s.client.(*tls.Conn)
	if !ok {
		return ""
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	return certs[0].Subject.String()
}
