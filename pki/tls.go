package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Files names the PEM files of one TLS identity: the CA bundle peers are
// verified against, this side's certificate (chain) and its key.
type Files struct {
	CA, Cert, Key string
}

// Validate says which file is missing from the set.
func (f Files) Validate(prefix string) error {
	var errs []error
	for flag, v := range map[string]string{"ca-file": f.CA, "cert-file": f.Cert, "key-file": f.Key} {
		if v == "" {
			errs = append(errs, fmt.Errorf("--%s%s is required", prefix, flag))
		}
	}
	return errors.Join(errs...)
}

// Source is a TLS identity read from Files and re-read when they change, so
// that a renewed certificate or a rotated CA takes effect without a restart.
// A change is noticed at the next handshake at most checkEvery after it was
// written; a set of files that does not load (half-written, mismatched key)
// is logged and the previous one stays in use.
type Source struct {
	files   Files
	cluster string
	log     *slog.Logger
	now     func() time.Time

	mu        sync.Mutex // serialises reloads
	lastCheck time.Time
	stamp     string
	cur       atomic.Pointer[material]
}

type material struct {
	pool *x509.CertPool
	cert *tls.Certificate
	id   Identity
}

const checkEvery = time.Second

// NewSource loads files for cluster; it fails if they do not form a usable
// identity of that cluster.
func NewSource(files Files, cluster string, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{files: files, cluster: cluster, log: log, now: time.Now}
	m, stamp, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(m)
	s.stamp, s.lastCheck = stamp, s.now()
	return s, nil
}

// Identity is the identity in this side's own certificate.
func (s *Source) Identity() Identity { return s.current().id }

func (s *Source) current() *material {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.now().Sub(s.lastCheck) < checkEvery {
		return s.cur.Load()
	}
	s.lastCheck = s.now()
	stamp, err := s.fileStamp()
	if err != nil || stamp == s.stamp {
		return s.cur.Load()
	}
	m, stamp, err := s.load()
	if err != nil {
		s.log.Error("TLS files changed but do not load; keeping the previous certificate", "err", err)
		s.stamp = stamp // do not retry a broken set on every handshake
		return s.cur.Load()
	}
	s.log.Info("TLS certificate reloaded", "identity", m.id.String(), "not_after", m.cert.Leaf.NotAfter)
	s.cur.Store(m)
	s.stamp = stamp
	return m
}

func (s *Source) fileStamp() (string, error) {
	var st string
	for _, p := range []string{s.files.CA, s.files.Cert, s.files.Key} {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		st += fmt.Sprintf("%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
	}
	return st, nil
}

func (s *Source) load() (*material, string, error) {
	stamp, err := s.fileStamp()
	if err != nil {
		return nil, "", fmt.Errorf("pki: %w", err)
	}
	caPEM, err := os.ReadFile(s.files.CA)
	if err != nil {
		return nil, stamp, fmt.Errorf("pki: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, stamp, fmt.Errorf("pki: %s holds no PEM certificate", s.files.CA)
	}
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return nil, stamp, fmt.Errorf("pki: %s / %s: %w", s.files.Cert, s.files.Key, err)
	}
	id, err := IdentityOf(cert.Leaf, s.cluster)
	if err != nil {
		return nil, stamp, fmt.Errorf("pki: own certificate %s: %w", s.files.Cert, err)
	}
	return &material{pool: pool, cert: &cert, id: id}, stamp, nil
}

// Verify checks a peer's chain against the current CA for usage and
// returns its identity.
func (s *Source) Verify(raw [][]byte, usage x509.ExtKeyUsage) (Identity, error) {
	if len(raw) == 0 {
		return Identity{}, errors.New("pki: peer sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return Identity{}, fmt.Errorf("pki: peer certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	m := s.current()
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots: m.pool, Intermediates: inter, CurrentTime: s.now(), KeyUsages: []x509.ExtKeyUsage{usage},
	}); err != nil {
		return Identity{}, fmt.Errorf("pki: peer certificate: %w", err)
	}
	return IdentityOf(certs[0], s.cluster)
}

// Accept decides whether a verified identity may use a listener.
type Accept func(Identity) error

// OnlyNodes accepts cluster nodes and nothing else: a caller's certificate
// can never speak raft or the node-to-node API.
func OnlyNodes(id Identity) error {
	if !id.IsNode() {
		return fmt.Errorf("pki: %s is not a node of the cluster", id)
	}
	return nil
}

// ServerConfig is the TLS configuration of a listener. With requireCert a
// client without a certificate fails the handshake; without it (REST, so
// that /livez works for probes) the handler must check for an identity.
// Certificates are verified here, against the current CA, because a static
// ClientCAs pool could not follow a CA rotation.
func (s *Source) ServerConfig(requireCert bool, accept Accept) *tls.Config {
	auth := tls.RequestClientCert
	if requireCert {
		auth = tls.RequireAnyClientCert
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: auth,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 && !requireCert {
				return nil
			}
			return s.verifyAndAccept(raw, x509.ExtKeyUsageClientAuth, accept)
		},
	}
}

// ClientConfig is the TLS configuration for dialing another node. The
// server is verified by identity (it must be a node of this cluster, with
// server usage), not by host name: nodes are addressed by IP as often as by
// name, and the identity is what matters.
func (s *Source) ClientConfig(accept Accept) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Go's own verification is replaced by VerifyPeerCertificate below,
		// which checks the chain against the current (reloadable) CA.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return s.verifyAndAccept(raw, x509.ExtKeyUsageServerAuth, accept)
		},
	}
}

func (s *Source) verifyAndAccept(raw [][]byte, usage x509.ExtKeyUsage, accept Accept) error {
	id, err := s.Verify(raw, usage)
	if err != nil || accept == nil {
		return err
	}
	return accept(id)
}

// PeerIdentity reads the identity of a peer whose handshake with a
// ServerConfig or ClientConfig succeeded (and so was verified).
func (s *Source) PeerIdentity(cs tls.ConnectionState) (Identity, bool) {
	if !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return Identity{}, false
	}
	id, err := IdentityOf(cs.PeerCertificates[0], s.cluster)
	return id, err == nil
}
