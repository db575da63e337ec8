package dnsserver

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// apiService is one element of GET /v1/services/{service}, as mesos-dns
// writes it: the SRV record joined with its target's first address. The port
// is a string, as in mesos-dns.
type apiService struct {
	Service string `json:"service"`
	Host    string `json:"host"`
	IP      string `json:"ip"`
	Port    string `json:"port"`
}

// apiHost is one element of GET /v1/hosts/{host}.
type apiHost struct {
	Host string `json:"host"`
	IP   string `json:"ip"`
}

// APIHandler serves mesos-dns's HTTP API, for the admin listener:
//
//	GET /v1/services/{service}  e.g. /v1/services/_web._tcp.marathon.mesos.
//	GET /v1/hosts/{host}        e.g. /v1/hosts/web.marathon.mesos
//
// Both answer a JSON array from the current table, like the DNS answers. As
// in mesos-dns, a name without records gives 200 and one element whose
// fields are all empty.
func (s *Server) APIHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/services/{service}", s.serveAPIService)
	mux.HandleFunc("GET /v1/hosts/{host}", s.serveAPIHost)
	return mux
}

func (s *Server) serveAPIService(w http.ResponseWriter, r *http.Request) {
	service := r.PathValue("service")
	out := []apiService{}
	if rel, ok := s.zone.splitName(service); ok {
		snap := s.table.Snapshot()
		res := s.liveZone().resolve(snap, rel, dns.TypeSRV)
		for _, rec := range res.answer {
			if rec.typ != dns.TypeSRV {
				continue
			}
			ip := ""
			for _, x := range res.extra {
				if x.name == rec.target {
					ip = x.addr.String()
					break
				}
			}
			out = append(out, apiService{Service: service, Host: rec.target + ".", IP: ip, Port: strconv.Itoa(int(rec.port))})
		}
	}
	if len(out) == 0 {
		out = append(out, apiService{})
	}
	writeJSON(w, out)
}

func (s *Server) serveAPIHost(w http.ResponseWriter, r *http.Request) {
	host := strings.TrimSuffix(strings.ToLower(r.PathValue("host")), ".") + "."
	out := []apiHost{}
	if rel, ok := s.zone.splitName(host); ok {
		snap := s.table.Snapshot()
		for _, rec := range s.liveZone().resolve(snap, rel, dns.TypeANY).answer {
			if rec.typ == dns.TypeA || rec.typ == dns.TypeAAAA {
				out = append(out, apiHost{Host: host, IP: rec.addr.String()})
			}
		}
	}
	if len(out) == 0 {
		out = append(out, apiHost{})
	}
	writeJSON(w, out)
}

// liveZone is the zone as DNS answers now: without this instance in the
// lb names once Withdraw was called.
func (s *Server) liveZone() *zone {
	z := s.zone
	z.withdrawn = s.withdrawn.Load()
	return &z
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	_ = enc.Encode(v) // the client went away; nothing to do
}
