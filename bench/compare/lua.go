package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/template"
)

// The wrk scripts. Each thread numbers its requests; a write's id or key is
// nonce-run-thread-counter, where run is wrk's first script argument (one
// per run of the tool: the same script runs for the warm-up and every
// repetition, and each wrk starts counting at 1 again), so no two requests
// of the whole comparison share one.
// done() prints one machine-readable line (BENCH {...}) with wrk's own
// totals and exact percentiles in microseconds.

const luaCommon = `
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local counter = 0
local function nextIndex(n)
  counter = counter + 1
  return (tid * 7919 + counter) % n + 1
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%.0f,"p99_us":%.0f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`

const luaBase64 = `
local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1) ..
      (b and b64chars:sub(c3 + 1, c3 + 1) or "=") .. (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end
`

var luaTemplates = template.Must(template.New("").Funcs(template.FuncMap{"lua": luaString}).Parse(`
{{define "pool"}}local pool = {
{{range .Pool}}  {{lua .}},
{{end}}}
{{end}}

{{define "consentd-write"}}-- consentd RecordDecision over REST: a unique requestId per request.
{{template "pool" .}}local nonce = {{lua .Nonce}}
local states = { "consent_core", "dissent" }
local headers = { ["Content-Type"] = "application/json" }
function init(args)
  nonce = nonce .. "-" .. (args[1] or "")
end
function request()
  counter = counter + 1
  -- Write k goes to patient k mod #pool with the state of its round, so a
  -- patient's consecutive decisions alternate, as over gRPC.
  local k = tid * 7919 + counter
  local i = k % #pool + 1
  local body = '{"kind":"scr","state":"' .. states[math.floor(k / #pool) % 2 + 1] ..
    '","channel":"in_person","decisionMaker":{"type":"patient"},"requestId":"' ..
    nonce .. "-" .. tid .. "-" .. counter .. '"}'
  return wrk.format("POST", "/v1/patients/" .. pool[i] .. "/decisions", headers, body)
end
{{end}}

{{define "consentd-read"}}-- consentd GetConsents over REST ({{.Op}}).
{{template "pool" .}}local suffix = {{lua .Suffix}}
function request()
  return wrk.format("GET", "/v1/patients/" .. pool[nextIndex(#pool)] .. "/consents" .. suffix)
end
{{end}}

{{define "etcd-write"}}-- etcd Put over its gateway: a unique key per request, key and
-- value base64-encoded here as the gateway wants bytes fields.
local nonce = {{lua .Nonce}}
local value = {{lua .Value}}
local value64
local headers = { ["Content-Type"] = "application/json" }
function init(args)
  nonce = nonce .. "-" .. (args[1] or "")
  value64 = b64(value)
end
function request()
  counter = counter + 1
  local key = "bench/w/" .. nonce .. "-" .. tid .. "-" .. counter
  return wrk.format("POST", "/v3/kv/put", headers, '{"key":"' .. b64(key) .. '","value":"' .. value64 .. '"}')
end
{{end}}

{{define "etcd-read"}}-- etcd Range over its gateway ({{.Op}}); the pool is base64 already.
{{template "pool" .}}local extra = {{lua .Suffix}}
local headers = { ["Content-Type"] = "application/json" }
function request()
  return wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. pool[nextIndex(#pool)] .. '"' .. extra .. '}')
end
{{end}}
`))

type luaData struct {
	Op, Nonce, Value, Suffix string
	Pool                     []string
}

func renderLua(name string, d luaData, base64 bool) (string, error) {
	var b strings.Builder
	b.WriteString(luaCommon)
	if base64 {
		b.WriteString(luaBase64)
	}
	if err := luaTemplates.ExecuteTemplate(&b, name, d); err != nil {
		return "", err
	}
	return b.String(), nil
}

// consentdLua is the wrk script for op against consentd's REST API.
func consentdLua(op, nonce string, pool []string) (string, error) {
	switch op {
	case "write":
		return renderLua("consentd-write", luaData{Op: op, Nonce: nonce, Pool: pool}, false)
	case "read":
		return renderLua("consentd-read", luaData{Op: op, Pool: pool}, false)
	case "stale":
		return renderLua("consentd-read", luaData{Op: op, Pool: pool, Suffix: "?consistency=stale"}, false)
	}
	return "", fmt.Errorf("consentd: unknown op %q", op)
}

// etcdLua is the wrk script for op against etcd's gateway; pool holds the
// read keys (plain; encoded here).
func etcdLua(op, nonce, value string, pool []string) (string, error) {
	enc := make([]string, len(pool))
	for i, k := range pool {
		enc[i] = b64(k)
	}
	switch op {
	case "write":
		return renderLua("etcd-write", luaData{Op: op, Nonce: nonce, Value: value}, true)
	case "read":
		return renderLua("etcd-read", luaData{Op: op, Pool: enc}, false)
	case "stale":
		return renderLua("etcd-read", luaData{Op: op, Pool: enc, Suffix: `,"serializable":true`}, false)
	}
	return "", fmt.Errorf("etcd: unknown op %q", op)
}

// luaString quotes s as a Lua string literal.
func luaString(s string) string {
	// Go's %q escapes are a subset Lua understands for the ASCII we use
	// (\" \\ \n \t and \xHH, which LuaJIT accepts).
	return strconv.Quote(s)
}
