//go:build !linux

package jepsen

import (
	"context"
	"errors"
)

var errNotLinux = errors.New("jepsen scenarios need Linux network namespaces, nftables, root, ip and nft")

// Prerequisites reports that scenarios cannot run here.
func Prerequisites() error { return errNotLinux }

// Run cannot run a scenario off Linux.
func Run(ctx context.Context, cfg Config) (Results, error) { return Results{}, errNotLinux }
