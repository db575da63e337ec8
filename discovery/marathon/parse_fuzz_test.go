package marathon

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzAppGroups: the GROUP label, as PACER_GROUP or HAPROXY_GROUP (PACER_
// wins). The groups are trimmed, non-empty and comma-free, the raw value is
// the label's trimmed, and joining the groups back reads as the same list.
func FuzzAppGroups(f *testing.F) {
	for _, s := range []string{"external", "external,internal", " a , ,b,", ",", "", "  ", "a,,a"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, v string, pacer bool) {
		labels := map[string]string{prefixHAProxy + "GROUP": v}
		if pacer {
			labels = map[string]string{prefixHAProxy + "GROUP": "haproxy-loses", prefixPacer + "GROUP": v}
		}
		groups, raw := appGroups(labels)
		if raw != strings.TrimSpace(v) {
			t.Fatalf("appGroups(%q): raw %q, want the value trimmed", v, raw)
		}
		for _, g := range groups {
			if g == "" || g != strings.TrimSpace(g) || strings.Contains(g, ",") {
				t.Fatalf("appGroups(%q) = %q: group %q", v, groups, g)
			}
		}
		if n := len(groups); n > strings.Count(v, ",")+1 {
			t.Fatalf("appGroups(%q) = %d groups from %d commas", v, n, strings.Count(v, ","))
		}
		again, _ := appGroups(map[string]string{prefixPacer + "GROUP": strings.Join(groups, " , ")})
		if !slices.Equal(again, groups) {
			t.Fatalf("appGroups(%q) = %q, but its join reads as %q", v, groups, again)
		}
	})
}

// FuzzParseBool: every spelling strconv.ParseBool reads means the same
// here; case (ASCII) and surrounding blanks do not matter; an error quotes
// the value.
func FuzzParseBool(f *testing.F) {
	for _, s := range []string{"true", "FALSE", " yes ", "On", "0", "1", "t", "F", "maybe", "", "tru"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, err := parseBool(v)
		if err != nil && !strings.Contains(err.Error(), strconv.Quote(v)) {
			t.Errorf("parseBool(%q): error %q does not quote the value", v, err)
		}
		if want, serr := strconv.ParseBool(strings.TrimSpace(v)); serr == nil && (err != nil || got != want) {
			t.Fatalf("parseBool(%q) = %v, %v; strconv.ParseBool reads %v", v, got, err, want)
		}
		for _, w := range []string{asciiUpper(v), strings.ToLower(v), " \t" + v + " "} {
			if g2, err2 := parseBool(w); (err2 == nil) != (err == nil) || g2 != got {
				t.Fatalf("parseBool(%q) = %v, %v, but parseBool(%q) = %v, %v", v, got, err, w, g2, err2)
			}
		}
	})
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// FuzzParseInterval: a check's interval label. A Go duration reads as
// time.ParseDuration reads it, a bare number as that many seconds; the
// result is within 10ms..1h and reads back the same from its String form.
func FuzzParseInterval(f *testing.F) {
	for _, s := range []string{"2s", "500ms", "2", "0.5", " 1m ", "10ms", "9ms", "1h", "1h0m1s", "3601", "NaN", "Inf", "-1", "1e3", "0x1p-2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, err := parseInterval(v)
		want, derr := time.ParseDuration(strings.TrimSpace(v))
		if derr != nil {
			fl, ferr := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if ferr != nil {
				if err == nil {
					t.Fatalf("parseInterval(%q) = %v: neither a duration nor a number", v, d)
				}
				return
			}
			want = time.Duration(fl * float64(time.Second))
			if fl != fl || fl*float64(time.Second) >= 1<<63 || fl*float64(time.Second) < -1<<63 {
				// NaN or out of int64: the conversion is not defined;
				// only the range check stands.
				if err == nil && (d < 10*time.Millisecond || d > time.Hour) {
					t.Fatalf("parseInterval(%q) = %v, out of range", v, d)
				}
				return
			}
		}
		inRange := want >= 10*time.Millisecond && want <= time.Hour
		switch {
		case inRange && (err != nil || d != want):
			t.Fatalf("parseInterval(%q) = %v, %v; want %v", v, d, err, want)
		case !inRange && err == nil:
			t.Fatalf("parseInterval(%q) = %v, outside 10ms..1h", v, d)
		case err == nil:
			if d2, err2 := parseInterval(d.String()); err2 != nil || d2 != d {
				t.Fatalf("parseInterval(%q) = %v, but %q reads as %v, %v", v, d, d.String(), d2, err2)
			}
		}
	})
}

// FuzzPlanStep: the three spellings of a deployment step (Marathon 1.x
// {"actions":[...]}, the bare action, 0.x's bare array) decode to the same
// actions: whatever decodes, written back in each spelling, reads the same.
func FuzzPlanStep(f *testing.F) {
	for _, s := range []string{
		`{"actions":[{"action":"ScaleApplication","app":"/a"}]}`,
		`{"action":"RestartApplication","app":"/b"}`,
		`[{"type":"StartApplication","app":"c"},{"type":"StopApplication","pod":"/p"}]`,
		`{"actions":[{"action":"A","app":"/a"}],"action":"B","app":"/b"}`,
		`{"pod":"/p","action":"StartPod"}`,
		`null`, `[]`, `{}`, ` [ ] `, `"x"`, `5`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s planStep
		if json.Unmarshal(data, &s) != nil {
			return
		}
		if trimmed := strings.TrimSpace(string(data)); strings.HasPrefix(trimmed, "[") {
			var want []planAction
			if err := json.Unmarshal(data, &want); err != nil || !sameActions(s.Actions, want) {
				t.Fatalf("%s: %+v, but as a bare array %+v (%v)", data, s.Actions, want, err)
			}
		}
		arr, _ := json.Marshal(s.Actions)
		obj, _ := json.Marshal(map[string]any{"actions": s.Actions})
		forms := map[string][]byte{"array": arr, "object": obj}
		if len(s.Actions) == 1 && s.Actions[0].App != "" {
			forms["bare action"], _ = json.Marshal(s.Actions[0])
		}
		for name, b := range forms {
			var again planStep
			if err := json.Unmarshal(b, &again); err != nil || !sameActions(again.Actions, s.Actions) {
				t.Fatalf("%s: %+v, but written as %s %s it reads %+v (%v)", data, s.Actions, name, b, again.Actions, err)
			}
		}
		// Every step's apps are named by appIDs, as absolute ids.
		ev := event{EventType: evDeploymentInfo, CurrentStep: &s}
		ids, _ := ev.appIDs()
		for _, a := range s.Actions {
			if id := normalizeID(a.App); id != "" && !slices.Contains(ids, id) {
				t.Fatalf("%s: app %q (%q) missing from appIDs %q", data, a.App, id, ids)
			}
		}
	})
}

func sameActions(a, b []planAction) bool { return slices.Equal(a, b) }
