package jepsen

import (
	"encoding/json"
	"os"
	"sync"
	"time"
)

// nemesisLog appends realised nemesis actions to nemesis.jsonl as they
// happen, so a crashed run still shows what it did.
type nemesisLog struct {
	clock func() int64
	mu    sync.Mutex
	f     *os.File
}

func newNemesisLog(path string, clock func() int64) (*nemesisLog, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &nemesisLog{clock: clock, f: f}, nil
}

// log stamps ev with the run's clock and wall time, writes it and returns
// its time.
func (n *nemesisLog) log(ev NemesisEvent) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	ev.Time = n.clock()
	ev.Wall = time.Now().UTC().Format(time.RFC3339Nano)
	if n.f != nil {
		if b, err := json.Marshal(ev); err == nil {
			n.f.Write(append(b, '\n'))
		}
	}
	return ev.Time
}

func (n *nemesisLog) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.f != nil {
		n.f.Close()
		n.f = nil
	}
}
