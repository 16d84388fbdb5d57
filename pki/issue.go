package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority able to issue node and caller certificates.
// The development CA of `consentd certs` is one; production clusters are
// expected to use their own CA and only the identity conventions.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte
}

// NewCA makes a self-signed ECDSA P-256 CA valid for validity.
func NewCA(cluster string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "consentd development CA for " + cluster, Organization: []string{"consentd"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Leaf is an issued certificate and its key, PEM-encoded.
type Leaf struct {
	CertPEM, KeyPEM []byte
}

// IssueOptions shape one certificate; the zero value of a field takes the
// usual choice.
type IssueOptions struct {
	NotBefore, NotAfter time.Time // default: now-1h .. now+validity
	Validity            time.Duration
}

// IssueNode issues a node certificate for raft id id, valid as a TLS server
// for hosts (IP addresses or DNS names) and as a client.
func (ca *CA) IssueNode(cluster, id string, hosts []string, o IssueOptions) (Leaf, error) {
	if !ValidName(id) {
		return Leaf{}, fmt.Errorf("pki: node id %q is not valid", id)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id, OrganizationalUnit: []string{"node"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	tmpl.URIs = append(tmpl.URIs, NodeURI(cluster, id))
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl, o)
}

// IssueCaller issues a client-only certificate for user subject of org with
// role.
func (ca *CA) IssueCaller(cluster, org string, role Role, subject string, o IssueOptions) (Leaf, error) {
	switch {
	case !ValidOrg(org):
		return Leaf{}, fmt.Errorf("pki: organisation %q is not an ODS code", org)
	case !role.Valid():
		return Leaf{}, fmt.Errorf("pki: unknown role %q", role)
	case !ValidName(subject):
		return Leaf{}, fmt.Errorf("pki: user id %q is not valid", subject)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: subject, Organization: []string{org}, OrganizationalUnit: []string{string(role)}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	tmpl.URIs = append(tmpl.URIs, CallerURI(cluster, org, role))
	return ca.issue(tmpl, o)
}

func (ca *CA) issue(tmpl *x509.Certificate, o IssueOptions) (Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, err
	}
	now := time.Now()
	if o.Validity == 0 {
		o.Validity = 365 * 24 * time.Hour
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(o.Validity)
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore, tmpl.NotAfter = o.NotBefore, o.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return Leaf{}, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Leaf{}, err
	}
	return Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// DevSet describes the files `consentd certs` writes.
type DevSet struct {
	Cluster string
	Nodes   []string // raft ids
	Hosts   []string // addresses every node certificate is valid for
	Callers []DevCaller
}

// DevCaller is one sample caller certificate.
type DevCaller struct {
	Name    string // file name stem
	Org     string
	Role    Role
	Subject string
}

// DefaultDevCallers is one caller per role, in two practices so that
// "practice A records as practice B" can be tried.
func DefaultDevCallers() []DevCaller {
	return []DevCaller{
		{Name: "practice", Org: "Y00001", Role: RolePractice, Subject: "gp-system-a"},
		{Name: "practice-b", Org: "Y00002", Role: RolePractice, Subject: "gp-system-b"},
		{Name: "reader", Org: "RR801", Role: RoleReader, Subject: "ooh-service"},
		{Name: "lmc-admin", Org: "LMC01", Role: RoleLMCAdmin, Subject: "lmc-operator"},
		{Name: "auditor", Org: "LMC01", Role: RoleAuditor, Subject: "caldicott-guardian"},
	}
}

// WriteDevSet creates dir (which must not hold a CA already) and writes
// ca.pem, ca-key.pem, <node>.pem/<node>-key.pem and <caller>.pem/-key.pem.
// Keys are written 0600.
func WriteDevSet(dir string, s DevSet) error {
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err == nil {
		return fmt.Errorf("pki: %s already holds a CA; remove it or choose another folder", dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := NewCA(s.Cluster, 5*365*24*time.Hour)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.pem":     ca.PEM,
		"ca-key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}
	for _, n := range s.Nodes {
		l, err := ca.IssueNode(s.Cluster, n, s.Hosts, IssueOptions{})
		if err != nil {
			return err
		}
		files[n+".pem"], files[n+"-key.pem"] = l.CertPEM, l.KeyPEM
	}
	for _, c := range s.Callers {
		l, err := ca.IssueCaller(s.Cluster, c.Org, c.Role, c.Subject, IssueOptions{})
		if err != nil {
			return err
		}
		files[c.Name+".pem"], files[c.Name+"-key.pem"] = l.CertPEM, l.KeyPEM
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
