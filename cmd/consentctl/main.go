// Command consentctl is the operator CLI for consentd: it speaks the public
// gRPC API of any node and prints the answers as JSON.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

const usage = `consentctl talks to any consentd node over gRPC and prints JSON.

Usage:
  consentctl [--addr H:P] [--timeout 10s] [--ca-file F --cert-file F --key-file F] COMMAND [ARGS]

On a TLS cluster give the CA and your caller certificate (a role that may do
the command: lmc_admin for add-member and remove-member). Without them
consentctl speaks plain TCP, for nodes started with --insecure.

Commands:
  status [--digest]                        this node's view of the cluster; --digest adds
                                           the register's state digest (reads all of it)
  kinds                                    the consent kinds registry
  get NHS [--stale]                        a patient's current consents
  history NHS [--kind K]                   a patient's decisions, oldest first
  record NHS KIND STATE [--channel C] [--request-id ID] [--expected-version N] [--reason R]
  check KIND NHS [NHS...]                  one kind for many patients
  add-member ID RAFT_ADDR GRPC_ADDR HTTP_ADDR
  remove-member ID

Exit status: 0 ok, 1 the server refused or failed, 2 usage. A write whose
outcome is unknown (UNAVAILABLE / DEADLINE_EXCEEDED) says so; retry it with
the same --request-id.

Global flags:
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("consentctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	addr := fs.String("addr", envOr("CONSENTCTL_ADDR", "127.0.0.1:9081"), "gRPC address of any node (env CONSENTCTL_ADDR)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline for the call")
	caFile := fs.String("ca-file", os.Getenv("CONSENTCTL_CA_FILE"), "PEM CA the node's certificate is verified against (env CONSENTCTL_CA_FILE)")
	certFile := fs.String("cert-file", os.Getenv("CONSENTCTL_CERT_FILE"), "your PEM client certificate (env CONSENTCTL_CERT_FILE)")
	keyFile := fs.String("key-file", os.Getenv("CONSENTCTL_KEY_FILE"), "its key (env CONSENTCTL_KEY_FILE)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	creds, err := transportCreds(*caFile, *certFile, *keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "consentctl:", err)
		return 2
	}
	cc, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintln(stderr, "consentctl:", err)
		return 2
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := call(ctx, consentv1.NewConsentServiceClient(cc), consentv1.NewClusterServiceClient(cc), fs.Arg(0), fs.Args()[1:])
	if errors.Is(err, errUsage) {
		fmt.Fprintln(stderr, "consentctl:", err)
		fs.Usage()
		return 2
	}
	if err != nil {
		st := status.Convert(err)
		fmt.Fprintf(stderr, "consentctl: %s: %s\n", st.Code(), st.Message())
		return 1
	}
	out, _ := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(resp)
	fmt.Fprintln(stdout, string(out))
	return 0
}

var errUsage = errors.New("usage")

// transportCreds is plain TCP with no files, mutual TLS with all three.
func transportCreds(caFile, certFile, keyFile string) (credentials.TransportCredentials, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return insecure.NewCredentials(), nil
	}
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, errors.New("--ca-file, --cert-file and --key-file go together")
	}
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{kp}, RootCAs: pool, MinVersion: tls.VersionTLS12}), nil
}

func envOr(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

func call(ctx context.Context, c consentv1.ConsentServiceClient, cl consentv1.ClusterServiceClient, cmd string, args []string) (proto.Message, error) {
	need := func(n int) error {
		if len(args) < n {
			return fmt.Errorf("%w: %s needs %d argument(s)", errUsage, cmd, n)
		}
		return nil
	}
	switch cmd {
	case "status":
		fs := flag.NewFlagSet("status", flag.ContinueOnError)
		digest := fs.Bool("digest", false, "include the state digest, to compare nodes (it reads the whole register)")
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		return cl.GetStatus(ctx, &consentv1.GetStatusRequest{IncludeDigest: *digest})
	case "kinds":
		return c.ListKinds(ctx, &consentv1.ListKindsRequest{})
	case "get":
		if err := need(1); err != nil {
			return nil, err
		}
		fs := flag.NewFlagSet("get", flag.ContinueOnError)
		stale := fs.Bool("stale", false, "read this node's copy without asking the leader")
		if err := fs.Parse(args[1:]); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		req := &consentv1.GetConsentsRequest{NhsNumber: args[0]}
		if *stale {
			req.Consistency = "stale"
		}
		return c.GetConsents(ctx, req)
	case "history":
		if err := need(1); err != nil {
			return nil, err
		}
		fs := flag.NewFlagSet("history", flag.ContinueOnError)
		kind := fs.String("kind", "", "only this kind")
		if err := fs.Parse(args[1:]); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		return allDecisions(ctx, c, &consentv1.ListDecisionsRequest{NhsNumber: args[0], Kind: *kind})
	case "record":
		if err := need(3); err != nil {
			return nil, err
		}
		fs := flag.NewFlagSet("record", flag.ContinueOnError)
		channel := fs.String("channel", "in_person", "in_person, paper_form, phone, online or import")
		reqID := fs.String("request-id", "", "idempotency key (generated by the node when empty)")
		reason := fs.String("reason", "", "free text")
		expected := fs.Int64("expected-version", -1, "compare-and-set on the current version (-1: off)")
		if err := fs.Parse(args[3:]); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		req := &consentv1.RecordDecisionRequest{NhsNumber: args[0], Kind: args[1], State: args[2], Channel: *channel,
			RequestId: *reqID, Reason: *reason, DecisionMaker: &consentv1.DecisionMaker{Type: "patient"}}
		if *expected >= 0 {
			v := uint64(*expected)
			req.ExpectedVersion = &v
		}
		return c.RecordDecision(ctx, req)
	case "check":
		if err := need(2); err != nil {
			return nil, err
		}
		return c.CheckConsents(ctx, &consentv1.CheckConsentsRequest{Kind: args[0], NhsNumbers: args[1:]})
	case "add-member":
		if err := need(4); err != nil {
			return nil, err
		}
		return cl.AddMember(ctx, &consentv1.AddMemberRequest{Id: args[0], RaftAddr: args[1], GrpcAddr: args[2], HttpAddr: args[3]})
	case "remove-member":
		if err := need(1); err != nil {
			return nil, err
		}
		return cl.RemoveMember(ctx, &consentv1.RemoveMemberRequest{Id: args[0]})
	default:
		return nil, fmt.Errorf("%w: unknown command %q (one of: %s)", errUsage, cmd,
			strings.Join([]string{"status", "kinds", "get", "history", "record", "check", "add-member", "remove-member"}, ", "))
	}
}

// allDecisions follows page tokens so that "history" shows every decision,
// whatever page size the node allows. Revision and read info are the last
// page's: the answer is at least that fresh.
func allDecisions(ctx context.Context, c consentv1.ConsentServiceClient, req *consentv1.ListDecisionsRequest) (*consentv1.ListDecisionsResponse, error) {
	var all []*consentv1.Decision
	for {
		resp, err := c.ListDecisions(ctx, req)
		if err != nil {
			return nil, err
		}
		all = append(all, resp.GetDecisions()...)
		if resp.GetNextPageToken() == "" {
			resp.Decisions = all
			return resp, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}
