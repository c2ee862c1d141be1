package auth

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// FuzzParseData: the registry file is edited by hand and restored from backups; whatever it holds,
// ParseData returns an error or a registry it accepts again once written back, and never panics.
// Seeds: testdata/fuzz/FuzzParseData, plus a real registry made here (a fresh CA and device).
//
//	go test -run '^$' -fuzz FuzzParseData -fuzztime 30s ./auth/
func FuzzParseData(f *testing.F) {
	ca, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "fuzz CA", KeyType: certs.ECDSAP256})
	if err != nil {
		f.Fatal(err)
	}
	reg, err := OpenRegistry(filepath.Join(f.TempDir(), "registry.json"))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := CreateDevice(reg, ca, NewDevice{Thing: Thing{Name: "sensor-1", Attributes: map[string]string{"floor": "2"}}, KeyType: certs.ECDSAP256, Validity: time.Hour}); err != nil {
		f.Fatal(err)
	}
	raw, err := os.ReadFile(reg.path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(`{"things":{},"certificates":{}}`))
	f.Add([]byte(`{"things":{"a":{"thingName":"b"}}}`))
	f.Add([]byte(`{"certificates":{"x":null}}`))

	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := ParseData(raw)
		if err != nil {
			return
		}
		again, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("accepted registry does not marshal: %v", err)
		}
		if _, err := ParseData(again); err != nil {
			t.Fatalf("accepted registry is refused once written back: %v\n%s", err, again)
		}
	})
}
