package marathonsim

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
)

// obj is a JSON object that keeps its key order. Marathon's serializers emit
// fields in a fixed order (marathon-api.md §2.1 lists it), and a fake that
// claims to be byte-faithful cannot go through a Go map, which sorts keys.
type obj []field

type field struct {
	k string
	v any
}

// add appends a field and returns the object, for building objects in order.
func (o obj) add(k string, v any) obj { return append(o, field{k, v}) }

// MarshalJSON writes the fields in order, compactly and without HTML escaping.
func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := encodeTo(&b, f.k); err != nil {
			return nil, err
		}
		b.WriteByte(':')
		if err := encodeTo(&b, f.v); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// encodeTo writes v as compact JSON. HTML escaping is off because Marathon's
// Play JSON/Jackson writers leave '<', '>' and '&' alone.
func encodeTo(b *bytes.Buffer, v any) error {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1) // Encode's trailing newline
	return nil
}

// marshal is json.Marshal without HTML escaping. The values it sees are built
// by this package, so an error is a bug and panics.
func marshal(v any) []byte {
	var b bytes.Buffer
	if err := encodeTo(&b, v); err != nil {
		panic("marathonsim: encoding JSON: " + err.Error())
	}
	return b.Bytes()
}

// stamp formats a time as Marathon's Timestamp does: UTC, always three
// millisecond digits (§2.1).
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// orNull is the timestamp, or JSON null for the zero time (0.8 to 1.5 write
// null where 1.6+ omit the field).
func orNull(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return stamp(t)
}

// newUUID returns a random RFC 4122 version 4 UUID. Marathon's are time-based
// (version 1) but have the same textual shape, which is all clients see.
func newUUID() string {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		panic("marathonsim: reading random bytes: " + err.Error())
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// canonicalID turns "shop/web", "/shop/web/" into Marathon's "/shop/web".
func canonicalID(id string) string {
	return "/" + strings.Trim(id, "/")
}

// safeAppID is an app id as it appears in task ids: "/shop/web" -> "shop_web" (§2.1).
func safeAppID(id string) string {
	return strings.ReplaceAll(strings.TrimPrefix(id, "/"), "/", "_")
}

// stampOrZero is stamp, or "" for the zero time.
func stampOrZero(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return stamp(t)
}
