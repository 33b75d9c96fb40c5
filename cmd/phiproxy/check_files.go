package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/proxy"
)

// certWarnBefore: a certificate expiring sooner than this is a warning.
const certWarnBefore = 30 * 24 * time.Hour

// checkFiles checks that the files the configuration names exist and that
// the secret ones are private. It reports whether all exist.
func checkFiles(r *checkReport, cfg *config, opts checkOptions) bool {
	files := cfg.file.Proxy.Files()
	k := cfg.file.Keys
	if k.KeyringFile != "" {
		files["keys.keyring_file"] = k.KeyringFile
	}
	if (k.Provider == "" || k.Provider == crypto.ProviderLocal) && k.Local.MasterKeyFile != "" && os.Getenv(crypto.EnvMasterKey) == "" {
		files["keys.local.master_key_file"] = k.Local.MasterKeyFile
	}
	secret := map[string]bool{"keys.keyring_file": true, "keys.local.master_key_file": true, "listen.tls.key_file": true}
	all := true
	for _, field := range slices.Sorted(maps.Keys(files)) {
		path := files[field]
		fi, err := os.Stat(path)
		if err != nil {
			all = false
			fix := fmt.Sprintf("create it, or point %s at the right file", field)
			if field == "keys.keyring_file" {
				fix = "phiproxy keys init --config FILE creates it"
			}
			if opts.offline && !opts.strict {
				r.warn(fmt.Sprintf("%s: %v", field, err), fix)
			} else {
				r.fail(fmt.Sprintf("%s: %v", field, err), fix)
			}
			continue
		}
		if secret[field] && fi.Mode().Perm()&0o077 != 0 {
			r.fail(fmt.Sprintf("%s %s has mode %04o: group or others may read a secret", field, path, fi.Mode().Perm()),
				fmt.Sprintf("chmod 600 %s (and keep it owned by the proxy's user)", path))
			continue
		}
		r.ok("%s %s", field, path)
	}
	return all
}

// checkCertificates checks the listen certificate (key match, validity,
// names) and the CA bundles.
func checkCertificates(r *checkReport, cfg *config) {
	lt := cfg.file.Proxy.Listen.TLS
	if lt.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(lt.CertFile, lt.KeyFile)
		if err != nil {
			r.fail(fmt.Sprintf("listen.tls: the certificate and key do not load as a pair: %v", err),
				"point listen.tls.key_file at the private key of listen.tls.cert_file (the PEM files of one certificate)")
		} else {
			leaf, _ := x509.ParseCertificate(pair.Certificate[0])
			checkValidity(r, "listen.tls.cert_file", lt.CertFile, leaf)
			checkNames(r, leaf, cfg.file.Proxy.Listen.Address)
		}
	}
	for field, path := range map[string]string{"listen.tls.client_ca_file": lt.ClientCAFile, "upstream.tls.ca_file": cfg.file.Proxy.Upstream.TLS.CAFile} {
		if path == "" || field == "upstream.tls.ca_file" && cfg.file.Proxy.Upstream.TLS.Mode == proxy.TLSModeDisable {
			continue
		}
		certs, err := readCerts(path)
		if err != nil {
			r.fail(fmt.Sprintf("%s: %v", field, err), "point it at a PEM bundle of CA certificates")
			continue
		}
		for _, c := range certs {
			checkValidity(r, field, path, c)
		}
	}
}

// checkValidity reports an expired, not yet valid or soon expiring
// certificate.
func checkValidity(r *checkReport, field, path string, c *x509.Certificate) {
	now := time.Now()
	subject := c.Subject.CommonName
	switch {
	case now.After(c.NotAfter):
		r.fail(fmt.Sprintf("%s %s: certificate %q expired on %s", field, path, subject, c.NotAfter.UTC().Format(time.DateOnly)),
			"issue a new certificate and replace the file, then restart the proxy")
	case now.Before(c.NotBefore):
		r.fail(fmt.Sprintf("%s %s: certificate %q is not valid before %s", field, path, subject, c.NotBefore.UTC().Format(time.RFC3339)),
			"check this host's clock, or wait")
	case c.NotAfter.Sub(now) < certWarnBefore:
		r.warn(fmt.Sprintf("%s %s: certificate %q expires on %s (in %d days)", field, path, subject, c.NotAfter.UTC().Format(time.DateOnly), int(c.NotAfter.Sub(now).Hours()/24)),
			"renew it before then")
	default:
		r.ok("%s: certificate %q valid until %s", field, subject, c.NotAfter.UTC().Format(time.DateOnly))
	}
}

// checkNames checks that the listen certificate covers the listen host,
// when that host is a name or a specific address.
func checkNames(r *checkReport, c *x509.Certificate, address string) {
	names := append(slices.Clone(c.DNSNames), ipStrings(c.IPAddresses)...)
	host, _, err := net.SplitHostPort(address)
	if err != nil || host == "" || host == "0.0.0.0" || host == "::" {
		r.ok("listen.tls.cert_file names %s (clients must connect with one of them)", strings.Join(names, ", "))
		return
	}
	if err := c.VerifyHostname(host); err != nil {
		r.warn(fmt.Sprintf("listen.tls.cert_file does not name the listen host %s (it names %s): clients with sslmode=verify-full must use one of its names", host, strings.Join(names, ", ")),
			"issue the certificate for the names clients use")
		return
	}
	r.ok("listen.tls.cert_file names the listen host %s", host)
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// readCerts parses every certificate of a PEM file.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: a certificate does not parse: %v", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return out, nil
}
