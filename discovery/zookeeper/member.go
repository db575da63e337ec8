package zookeeper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pacer-lb/pacer/discovery"
)

// Member formats.
const (
	FormatNerve     = "nerve"
	FormatServerset = "serverset"
)

// StatusAlive is the serverset status of a member that takes traffic; nerve
// members are always alive (nerve deletes the node of an unhealthy one).
const StatusAlive = "ALIVE"

// maxMemberBytes bounds what ParseMember reads; real nodes are a few hundred
// bytes and ZooKeeper's own limit is 1 MB (jute.maxbuffer).
const maxMemberBytes = 64 << 10

// Endpoint is a host and port as a member announces it.
type Endpoint struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

// Member is one decoded member node.
type Member struct {
	Format   string
	Endpoint Endpoint // nerve host/port, serverset serviceEndpoint
	// Status is the serverset status ("ALIVE", "DEAD", "STARTING",
	// "STOPPING", "STOPPED", "WARNING"); StatusAlive for nerve members and
	// for serverset members that leave it out (Finagle's and synapse's
	// readers do not require it).
	Status string
	Name   string // nerve "name"
	Weight int    // nerve "weight"; 0 when absent (pacer does not weigh)
	Shard  *int   // serverset "shard"
	// Additional are the serverset additionalEndpoints, by name.
	Additional map[string]Endpoint
}

// Alive reports whether the member may take traffic.
func (m Member) Alive() bool { return m.Status == StatusAlive }

// wireMember is the union of both formats (airbnb/nerve
// lib/nerve/reporter/base.rb; Twitter commons ServiceInstance as written by
// Finagle and Aurora).
type wireMember struct {
	// nerve
	Host   *string         `json:"host"`
	Port   json.RawMessage `json:"port"`
	Name   string          `json:"name"`
	Weight json.RawMessage `json:"weight"`
	// serverset
	ServiceEndpoint     *wireEndpoint           `json:"serviceEndpoint"`
	AdditionalEndpoints map[string]wireEndpoint `json:"additionalEndpoints"`
	Status              *string                 `json:"status"`
	Shard               *int                    `json:"shard"`
}

type wireEndpoint struct {
	Host string          `json:"host"`
	Port json.RawMessage `json:"port"`
}

// ParseMember decodes a member node in nerve format
// {"host","port","name","weight"} or serverset format
// {"serviceEndpoint":{"host","port"},"additionalEndpoints":{...},"status","shard"}.
// The error says what is wrong, for the log line and /v1/services.
func ParseMember(data []byte) (Member, error) {
	data = bytes.TrimSpace(data)
	switch {
	case len(data) == 0:
		return Member{}, errors.New("empty node data")
	case len(data) > maxMemberBytes:
		return Member{}, fmt.Errorf("node data is %d bytes, over %d", len(data), maxMemberBytes)
	case data[0] != '{':
		return Member{}, errors.New("node data is not a JSON object")
	}
	var w wireMember
	if err := json.Unmarshal(data, &w); err != nil {
		return Member{}, fmt.Errorf("decoding JSON: %w", err)
	}
	if w.ServiceEndpoint != nil {
		return parseServerset(&w)
	}
	if w.Host != nil {
		return parseNerve(&w)
	}
	return Member{}, errors.New(`neither nerve ("host", "port") nor serverset ("serviceEndpoint")`)
}

func parseNerve(w *wireMember) (Member, error) {
	ep, err := endpoint(*w.Host, w.Port)
	if err != nil {
		return Member{}, err
	}
	m := Member{Format: FormatNerve, Endpoint: ep, Status: StatusAlive, Name: w.Name}
	if len(w.Weight) > 0 && string(w.Weight) != "null" {
		if m.Weight, err = number(w.Weight); err != nil || m.Weight < 0 {
			return Member{}, fmt.Errorf("weight %s is not a non-negative integer", w.Weight)
		}
	}
	return m, nil
}

func parseServerset(w *wireMember) (Member, error) {
	ep, err := endpoint(w.ServiceEndpoint.Host, w.ServiceEndpoint.Port)
	if err != nil {
		return Member{}, fmt.Errorf("serviceEndpoint: %w", err)
	}
	m := Member{Format: FormatServerset, Endpoint: ep, Status: StatusAlive, Shard: w.Shard}
	if w.Status != nil {
		m.Status = strings.ToUpper(strings.TrimSpace(*w.Status))
		if m.Status == "" {
			return Member{}, errors.New("empty status")
		}
	}
	for name, e := range w.AdditionalEndpoints {
		ae, err := endpoint(e.Host, e.Port)
		if err != nil {
			// Only serviceEndpoint is routed; a broken extra endpoint is
			// left out rather than failing the member.
			continue
		}
		if m.Additional == nil {
			m.Additional = make(map[string]Endpoint, len(w.AdditionalEndpoints))
		}
		m.Additional[name] = ae
	}
	return m, nil
}

// endpoint validates a host and a port given as a JSON number or string.
func endpoint(host string, rawPort json.RawMessage) (Endpoint, error) {
	host = strings.TrimSpace(host)
	if host == "" {
		return Endpoint{}, errors.New("no host")
	}
	if err := validHost(host); err != nil {
		return Endpoint{}, err
	}
	if len(rawPort) == 0 || string(rawPort) == "null" {
		return Endpoint{}, errors.New("no port")
	}
	port, err := number(rawPort)
	if err != nil || port < 1 || port > 65535 {
		return Endpoint{}, fmt.Errorf("port %s is not 1-65535", rawPort)
	}
	return Endpoint{Host: host, Port: port}, nil
}

// checkEndpoint validates an endpoint pacer announces.
func checkEndpoint(e Endpoint) error {
	if e.Host == "" {
		return errors.New("no host")
	}
	if err := validHost(e.Host); err != nil {
		return err
	}
	if e.Port < 1 || e.Port > 65535 {
		return fmt.Errorf("port %d is not 1-65535", e.Port)
	}
	return nil
}

// number reads a JSON integer, or a string holding one (nerve configs
// written by hand often quote ports).
func number(raw json.RawMessage) (int, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return strconv.Atoi(strings.TrimSpace(s))
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(n.String(), 10, 32)
	return int(v), err
}

// validHost accepts an IP literal (IPv6 with or without brackets) or a DNS
// host name.
func validHost(h string) error {
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("host %.20q... is too long", h)
	}
	if !discovery.IsHostname(h) {
		return fmt.Errorf("host %q is not an IP address or a host name", h)
	}
	return nil
}
