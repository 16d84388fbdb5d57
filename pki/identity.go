package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Role is what a caller may do; see api's authorisation table.
type Role string

// The caller roles. A node is not a role: node certificates are a separate
// kind of identity.
const (
	RolePractice Role = "practice"  // read; record decisions stamped with its own ODS code
	RoleReader   Role = "reader"    // read only (hospital, out-of-hours service)
	RoleLMCAdmin Role = "lmc_admin" // cluster operations, entered-in-error corrections
	RoleAuditor  Role = "auditor"   // history with restricted reasons, the access log
)

// Roles lists every caller role.
func Roles() []Role { return []Role{RolePractice, RoleReader, RoleLMCAdmin, RoleAuditor} }

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	for _, k := range Roles() {
		if r == k {
			return true
		}
	}
	return false
}

// Identity is a verified peer: exactly one of NodeID or Org/Role is set.
type Identity struct {
	Cluster string
	NodeID  string // a consentd node
	Org     string // ODS code of a caller's organisation
	Role    Role
	Subject string // user or system id (certificate CN)
}

// IsNode reports whether the identity is a cluster node.
func (id Identity) IsNode() bool { return id.NodeID != "" }

func (id Identity) String() string {
	if id.IsNode() {
		return "node " + id.NodeID
	}
	return fmt.Sprintf("%s %s/%s", id.Role, id.Org, id.Subject)
}

// ErrNoIdentity is returned for a certificate that carries no consentd
// identity of this cluster.
var ErrNoIdentity = errors.New("pki: certificate carries no consentd identity for this cluster")

var (
	// ODS codes are 3 to 10 upper-case letters and digits (e.g. Y01234, RR8).
	odsPattern  = regexp.MustCompile(`^[A-Z0-9]{3,10}$`)
	namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

// NodeURI is the identity URI of node id in cluster.
func NodeURI(cluster, id string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: cluster, Path: "/node/" + id}
}

// CallerURI is the identity URI of a caller of org with role.
func CallerURI(cluster, org string, role Role) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: cluster, Path: "/org/" + org + "/role/" + string(role)}
}

// IdentityOf reads the identity of a verified leaf certificate. Exactly one
// consentd URI of this cluster must be present: two would let one
// certificate act as two parties.
func IdentityOf(cert *x509.Certificate, cluster string) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host != cluster {
			continue
		}
		id, err := parsePath(cluster, u.Path)
		if err != nil {
			return Identity{}, err
		}
		if !id.IsNode() {
			id.Subject = cert.Subject.CommonName
			if !namePattern.MatchString(id.Subject) {
				return Identity{}, fmt.Errorf("pki: caller certificate subject CN %q is not a valid user id", id.Subject)
			}
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, ErrNoIdentity
	case 1:
		return found[0], nil
	default:
		return Identity{}, fmt.Errorf("pki: certificate carries %d consentd identities; exactly one is allowed", len(found))
	}
}

func parsePath(cluster, path string) (Identity, error) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	switch {
	case len(parts) == 2 && parts[0] == "node" && namePattern.MatchString(parts[1]):
		return Identity{Cluster: cluster, NodeID: parts[1]}, nil
	case len(parts) == 4 && parts[0] == "org" && parts[2] == "role" && odsPattern.MatchString(parts[1]) && Role(parts[3]).Valid():
		return Identity{Cluster: cluster, Org: parts[1], Role: Role(parts[3])}, nil
	}
	return Identity{}, fmt.Errorf("pki: identity URI path %q is neither /node/<id> nor /org/<ODS>/role/<role>", path)
}

// ValidOrg reports whether s looks like an ODS code.
func ValidOrg(s string) bool { return odsPattern.MatchString(s) }

// ValidName reports whether s is a usable node or user id.
func ValidName(s string) bool { return namePattern.MatchString(s) }
