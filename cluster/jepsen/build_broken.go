package jepsen

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// BrokenTag is the build tag that compiles consentd's deliberately broken
// variants in (internal/broken); a node built with it runs the variant named
// by the CONSENTD_BROKEN environment variable it inherits from the runner.
const BrokenTag = "consentd_broken"

// BrokenEnv is the environment variable that picks a broken variant.
const BrokenEnv = "CONSENTD_BROKEN"

// BuildBinaryTags is BuildBinary with build tags, e.g. BrokenTag; the binary
// is named after the tags so that builds with different tags can share dir.
func BuildBinaryTags(ctx context.Context, dir string, race bool, tags ...string) (string, error) {
	if len(tags) == 0 {
		return BuildBinary(ctx, dir, race)
	}
	bin := filepath.Join(dir, "consentd-"+strings.Join(tags, "-"))
	args := []string{"build", "-o", bin, "-tags", strings.Join(tags, ",")}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "github.com/lmc-consent/consentd/cmd/consentd")
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build -tags %s consentd: %w\n%s", strings.Join(tags, ","), err, out)
	}
	return bin, nil
}
