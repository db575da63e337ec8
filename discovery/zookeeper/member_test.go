package zookeeper

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseMember(t *testing.T) {
	t.Parallel()
	shard := 3
	tests := []struct {
		name    string
		data    string
		want    Member
		wantErr string // substring of the error; "" means no error
	}{
		{name: "nerve", data: `{"host":"10.0.0.5","port":31943,"name":"i-abc","weight":1}`,
			want: Member{Format: FormatNerve, Endpoint: Endpoint{"10.0.0.5", 31943}, Status: StatusAlive, Name: "i-abc", Weight: 1}},
		{name: "nerve quoted port, no weight", data: `{"host":"web-1.example.com","port":"8080"}`,
			want: Member{Format: FormatNerve, Endpoint: Endpoint{"web-1.example.com", 8080}, Status: StatusAlive}},
		{name: "nerve extra fields", data: `{"host":"::1","port":1,"labels":{"az":"a"},"haproxy_server_options":"backup"}`,
			want: Member{Format: FormatNerve, Endpoint: Endpoint{"::1", 1}, Status: StatusAlive}},
		{name: "serverset", data: `{"serviceEndpoint":{"host":"10.1.1.1","port":9092},"additionalEndpoints":{"http":{"host":"10.1.1.1","port":8080},"bad":{"host":"","port":1}},"status":"ALIVE","shard":3}`,
			want: Member{Format: FormatServerset, Endpoint: Endpoint{"10.1.1.1", 9092}, Status: StatusAlive, Shard: &shard,
				Additional: map[string]Endpoint{"http": {"10.1.1.1", 8080}}}},
		{name: "serverset dead", data: `{"serviceEndpoint":{"host":"h","port":1},"status":"DEAD"}`,
			want: Member{Format: FormatServerset, Endpoint: Endpoint{"h", 1}, Status: "DEAD"}},
		{name: "serverset no status", data: `{"serviceEndpoint":{"host":"h","port":1}}`,
			want: Member{Format: FormatServerset, Endpoint: Endpoint{"h", 1}, Status: StatusAlive}},
		{name: "empty", data: "", wantErr: "empty"},
		{name: "spaces", data: " \n", wantErr: "empty"},
		{name: "not json", data: "10.0.0.1:80", wantErr: "not a JSON object"},
		{name: "truncated", data: `{"host":"a","port":`, wantErr: "decoding JSON"},
		{name: "array", data: `[1,2]`, wantErr: "not a JSON object"},
		{name: "neither", data: `{"ip":"1.2.3.4"}`, wantErr: "neither nerve"},
		{name: "no port", data: `{"host":"a"}`, wantErr: "no port"},
		{name: "port zero", data: `{"host":"a","port":0}`, wantErr: "not 1-65535"},
		{name: "port big", data: `{"host":"a","port":70000}`, wantErr: "not 1-65535"},
		{name: "port float", data: `{"host":"a","port":80.5}`, wantErr: "not 1-65535"},
		{name: "port word", data: `{"host":"a","port":"http"}`, wantErr: "not 1-65535"},
		{name: "bad host", data: `{"host":"a b","port":1}`, wantErr: "not an IP address or a host name"},
		{name: "empty host", data: `{"host":"","port":1}`, wantErr: "no host"},
		{name: "negative weight", data: `{"host":"a","port":1,"weight":-1}`, wantErr: "weight"},
		{name: "serverset no endpoint host", data: `{"serviceEndpoint":{"port":1}}`, wantErr: "serviceEndpoint: no host"},
		{name: "serverset empty status", data: `{"serviceEndpoint":{"host":"a","port":1},"status":" "}`, wantErr: "empty status"},
		{name: "too big", data: `{"host":"a","port":1,"x":"` + strings.Repeat("x", maxMemberBytes) + `"}`, wantErr: "bytes, over"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseMember([]byte(tc.data))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseMember(%q) error = %v, want it to contain %q", tc.data, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMember(%q): %v", tc.data, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseMember(%q)\n got %+v\nwant %+v", tc.data, got, tc.want)
			}
		})
	}
}

// FuzzParseMember: any bytes either fail with an error or give a member
// whose endpoint is usable; never a panic.
func FuzzParseMember(f *testing.F) {
	for _, s := range []string{
		`{"host":"10.0.0.5","port":31943,"name":"i-abc","weight":1}`,
		`{"host":"h","port":"80"}`,
		`{"serviceEndpoint":{"host":"10.1.1.1","port":9092},"additionalEndpoints":{"http":{"host":"10.1.1.1","port":8080}},"status":"ALIVE","shard":0}`,
		`{"serviceEndpoint":{"host":"h","port":1},"status":"DEAD"}`,
		`{"host":"[::1]","port":1e3}`,
		`garbage`, ``, `{}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMember(data)
		if err != nil {
			if m.Format != "" {
				t.Fatalf("error %v with a member %+v", err, m)
			}
			return
		}
		if m.Endpoint.Port < 1 || m.Endpoint.Port > 65535 || m.Endpoint.Host == "" || !utf8.ValidString(m.Endpoint.Host) {
			t.Fatalf("bad endpoint %+v from %q", m.Endpoint, data)
		}
		if checkEndpoint(m.Endpoint) != nil {
			t.Fatalf("endpoint %+v fails checkEndpoint", m.Endpoint)
		}
		if m.Format != FormatNerve && m.Format != FormatServerset || m.Status == "" {
			t.Fatalf("member %+v has no format or status", m)
		}
	})
}

func TestParseServiceSpec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    ServiceSpec
		wantErr string
	}{
		{in: "kafka=/nerve/kafka:9092", want: ServiceSpec{"kafka", "/nerve/kafka", 9092}},
		{in: "web=/services/web", want: ServiceSpec{"web", "/services/web", 0}},
		{in: " db=/db:5432 ", want: ServiceSpec{"db", "/db", 5432}},
		{in: "root=/:80", want: ServiceSpec{"root", "/", 80}},
		{in: "kafka", wantErr: "no '='"},
		{in: "=/x", wantErr: "empty NAME"},
		{in: "Kafka=/x", wantErr: `try "kafka"`},
		{in: "my_svc=/x", wantErr: `try "my-svc"`},
		{in: "k=x:80", wantErr: "does not start with '/'"},
		{in: "k=/x:0", wantErr: "not a port"},
		{in: "k=/x:99999", wantErr: "not a port"},
		{in: "k=/x:http", wantErr: "not a port"},
		{in: "k=/x/", wantErr: "ends with '/'"},
		{in: "k=/x//y", wantErr: "empty segment"},
		{in: "k=/x/../y", wantErr: "relative segment"},
		{in: "k=", wantErr: "empty path"},
	}
	for _, tc := range tests {
		got, err := ParseServiceSpec(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseServiceSpec(%q) error = %v, want it to contain %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseServiceSpec(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if err == nil {
			if back, err := ParseServiceSpec(got.String()); err != nil || back != got {
				t.Errorf("round trip of %q via %q = %+v, %v", tc.in, got.String(), back, err)
			}
		}
	}
}

func TestParseMarathonZK(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    LeaderConfig
		wantErr string
	}{
		{in: "zk://zk1:2181,zk2:2181/marathon", want: LeaderConfig{Servers: []string{"zk1:2181", "zk2:2181"}, Path: "/marathon"}},
		{in: "zk://zk1/marathon/", want: LeaderConfig{Servers: []string{"zk1:2181"}, Path: "/marathon"}},
		{in: "zk://u:s3cret@zk1:2181/dcos/marathon", want: LeaderConfig{Servers: []string{"zk1:2181"}, Path: "/dcos/marathon", Auth: "u:s3cret"}},
		{in: "zk://[::1]:2181/m", want: LeaderConfig{Servers: []string{"[::1]:2181"}, Path: "/m"}},
		{in: "http://m:8080", wantErr: "want zk://"},
		{in: "zookeeper://u:s3cret@zk1:2181/marathon", wantErr: "want zk://"}, // a typo keeps the password hidden too
		{in: "zk://zk1:2181", wantErr: "no path"},
		{in: "zk:///marathon", wantErr: "no servers"},
		{in: "zk://zk1:99999/m", wantErr: "bad port"},
		{in: "zk://u:s3cret@zk1:x/m", wantErr: "bad port"},
		{in: "zk://nopass@zk1/m", wantErr: "user:pass"},
	}
	for _, tc := range tests {
		got, err := ParseMarathonZK(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseMarathonZK(%q) error = %v, want it to contain %q", tc.in, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("ParseMarathonZK(%q) error shows the password: %v", tc.in, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseMarathonZK(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	if !IsMarathonZK(" zk://a/b") || IsMarathonZK("http://a") {
		t.Error("IsMarathonZK")
	}
}

// The leader is the lowest sequence number, which differs from the lowest
// name once Curator's _c_<uuid> prefixes are there.
func TestBySeq(t *testing.T) {
	t.Parallel()
	children := []string{
		"_c_0a7e-latch-0000000012",
		"_c_ffff-latch-0000000003",
		"_c_1234-latch-0000000007",
		"not-a-latch",
		"latch-0000000005",
	}
	got := bySeq(children, latchSeq)
	var names []string
	for _, n := range got {
		names = append(names, n.name)
	}
	want := []string{"_c_ffff-latch-0000000003", "latch-0000000005", "_c_1234-latch-0000000007", "_c_0a7e-latch-0000000012"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("bySeq = %v, want %v", names, want)
	}
	legacy := bySeq([]string{"member_0000000002", "member_0000000010", "member_-00000000", "other"}, memberSeq)
	if len(legacy) != 3 || legacy[0].name != "member_-00000000" || legacy[2].name != "member_0000000010" {
		t.Fatalf("legacy order %v", legacy)
	}
}
