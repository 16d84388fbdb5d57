# Conveniences; the runner's flags are the real interface
# (go run ./cmd/consent-jepsen -h). Jepsen targets need root, ip and nft.

GO ?= go
JEPSEN_REPORT ?= jepsen-report
JEPSEN_OCTET ?= 77
# Extra runner flags, e.g. JEPSEN_FLAGS='-seed 42 -duration 90s -v'.
JEPSEN_FLAGS ?=

.PHONY: jepsen jepsen-long

# The four CI scenarios on three nodes.
jepsen:
	$(GO) run ./cmd/consent-jepsen -scenario ci -report $(JEPSEN_REPORT) -octet $(JEPSEN_OCTET) $(JEPSEN_FLAGS)

# Every scenario (membership changes included), five nodes, -race builds,
# three seeds: -long is -scenario all -nodes 5 -race -seeds 3.
jepsen-long:
	$(GO) run ./cmd/consent-jepsen -long -report $(JEPSEN_REPORT) -octet $(JEPSEN_OCTET) $(JEPSEN_FLAGS)
